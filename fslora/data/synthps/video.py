"""SynthPS videos: people walking through one camera's scene, with known identities per frame.

People enter from one side and leave at the other along slightly diagonal paths (so their size
changes with depth), some cross each other, some pass behind a foreground occluder, and one comes
back later. Videos of the same ``seed`` share one pool of identities, so ``camera=0`` and
``camera=1`` show the same people in two different scenes: a cross-video search demo with ground
truth. The JSON sidecar lists, for every frame, each visible person's box, identity and visibility.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .compose import Item, PersonItem, item_depth, render_frame
from .figure import Pose
from .identities import Identity, make_identities
from .props import DISTRACTOR_KINDS, OCCLUDER_KINDS, Prop, random_prop
from .scenes import NOISE_MARGIN, Camera, make_cameras

MIN_VISIBILITY = 0.1
STRIDE = 0.8  # body heights per gait cycle (two steps)
_TAG_IDS, _TAG_CAMS, _TAG_WALKS = 20, 21, 22


@dataclass(frozen=True)
class Walk:
    """One pass of a person through the scene: straight line from (x0, y0) at t0 to (x1, y1) at t1."""

    identity: Identity
    t0: float
    t1: float
    x0: float
    x1: float
    y0: float
    y1: float
    phase0: float

    def pose_at(self, t: float, cam: Camera) -> Pose | None:
        if not self.t0 <= t <= self.t1:
            return None
        a = (t - self.t0) / (self.t1 - self.t0)
        x, y = self.x0 + a * (self.x1 - self.x0), self.y0 + a * (self.y1 - self.y0)
        height = cam.person_height(y) * self.identity.height
        mean_h = cam.person_height((self.y0 + y) / 2) * self.identity.height
        travelled = math.hypot(x - self.x0, y - self.y0)
        facing = 1 if self.x1 >= self.x0 else -1
        return Pose(x, y, height, self.phase0 + 2 * math.pi * travelled / (STRIDE * mean_h), facing)


def video_identities(seed: int, n_people: int) -> list[Identity]:
    """The identity pool shared by every video of ``seed`` (pids 0..n_people-1)."""
    return make_identities(np.random.default_rng([seed, _TAG_IDS]), list(range(n_people)), 0.3)


def video_camera(seed: int, camera: int, size: tuple[int, int]) -> Camera:
    cams = make_cameras(np.random.default_rng([seed, _TAG_CAMS]), camera + 1, size, min_person_height=60.0)
    return cams[camera]


def _walk(
    rng: np.random.Generator,
    ident: Identity,
    cam: Camera,
    t_start: float,
    direction: int,
    y_band: tuple[float, float] | None = None,
    meet: tuple[float, float] | None = None,
) -> Walk:
    """A pass entering off-screen on one side; ``meet`` = (time, x) forces where it is at a moment."""
    w = cam.size[1]
    lo, hi = y_band or cam.foot_range
    y0 = float(rng.uniform(lo, hi))
    y1 = float(np.clip(y0 + rng.uniform(-0.25, 0.25) * (hi - lo), lo, hi))
    h_mid = cam.person_height((y0 + y1) / 2) * ident.height
    margin = 0.45 * h_mid
    x0, x1 = (-margin, w + margin) if direction > 0 else (w + margin, -margin)
    speed = float(rng.uniform(0.55, 0.85)) * h_mid  # px per second
    duration = abs(x1 - x0) / speed
    if meet is not None:
        t_meet, x_meet = meet
        t_start = t_meet - abs(x_meet - x0) / speed
    return Walk(ident, t_start, t_start + duration, x0, x1, y0, y1, float(rng.uniform(0, 2 * math.pi)))


def plan_video(
    seed: int, camera: int, size: tuple[int, int], duration_s: float, n_people: int
) -> tuple[Camera, list[Identity], list[Walk], list[Prop]]:
    """Decides the scene, the static props and every walk of one video."""
    if n_people < 3:
        raise ValueError(
            f"render_video: n_people must be >= 3 (a crossing and a return need them), got {n_people}"
        )
    cam = video_camera(seed, camera, size)
    people = video_identities(seed, n_people)
    rng = np.random.default_rng([seed, _TAG_WALKS, camera])
    lo, hi = cam.foot_range
    w = cam.size[1]

    occ_y = lo + float(rng.uniform(0.55, 0.75)) * (hi - lo)
    occ_kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
    props = [random_prop(rng, occ_kind, float(rng.uniform(0.35, 0.65)) * w, occ_y, cam.person_height(occ_y))]
    for _ in range(int(rng.integers(1, 4))):
        y = float(rng.uniform(lo, hi))
        props.append(
            random_prop(
                rng,
                DISTRACTOR_KINDS[int(rng.integers(len(DISTRACTOR_KINDS)))],
                float(rng.choice([rng.uniform(0.02, 0.2), rng.uniform(0.8, 0.98)])) * w,
                y,
                cam.person_height(y),
            )
        )

    walks: list[Walk] = []
    behind = (lo, occ_y - 0.08 * (hi - lo))
    # person 0 passes behind the occluder, leaves, and comes back the other way later
    first = _walk(rng, people[0], cam, float(rng.uniform(-2.0, 0.15 * duration_s)), 1, behind)
    walks.append(first)
    walks.append(_walk(rng, people[0], cam, first.t1 + float(rng.uniform(1.0, 3.0)), -1))
    # persons 1 and 2 cross each other mid-frame
    t_meet = float(rng.uniform(0.3, 0.7)) * duration_s
    x_meet = float(rng.uniform(0.35, 0.65)) * w
    y_meet = (lo + float(rng.uniform(0.2, 0.5)) * (hi - lo), lo + float(rng.uniform(0.5, 0.8)) * (hi - lo))
    walks.append(_walk(rng, people[1], cam, 0.0, 1, (y_meet[0], y_meet[0] + 1), (t_meet, x_meet)))
    walks.append(_walk(rng, people[2], cam, 0.0, -1, (y_meet[1], y_meet[1] + 1), (t_meet, x_meet)))
    for ident in people[3:]:
        walks.append(
            _walk(rng, ident, cam, float(rng.uniform(-3.0, duration_s - 4.0)), int(rng.choice([-1, 1])))
        )
    return cam, people, walks, props


def render_video(
    path: str | os.PathLike,
    seed: int,
    *,
    camera: int = 0,
    size: tuple[int, int] = (384, 640),
    fps: float = 10.0,
    duration_s: float = 20.0,
    n_people: int = 6,
    write_sidecar: bool = True,
) -> dict[str, Any]:
    """Renders an MP4 (mp4v) of people walking through camera ``camera``'s scene.

    Returns the sidecar dict (also written next to the video as ``<name>.json`` unless
    ``write_sidecar`` is False): video facts, the identities, and per frame the persons' boxes
    (x1, y1, x2, y2 pixels), pids and visibility.
    """
    if fps <= 0 or duration_s <= 0:
        raise ValueError(
            f"render_video: fps and duration_s must be > 0, got fps={fps}, duration_s={duration_s}"
        )
    cam, people, walks, props = plan_video(seed, camera, size, duration_s, n_people)
    h, w = cam.size
    n_frames = int(round(duration_s * fps))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise ValueError(f"render_video: OpenCV cannot write an mp4v video to {path}")
    frames = []
    try:
        for i in range(n_frames):
            t = i / fps
            items: list[Item] = list(props)
            for walk in walks:
                pose = walk.pose_at(t, cam)
                if pose is not None:
                    items.append(PersonItem(walk.identity, pose))
            items.sort(key=item_depth)
            rgb, rendered = render_frame(cam, items, ((i * 7) % NOISE_MARGIN, (i * 13) % NOISE_MARGIN))
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            persons = [
                {"box": [round(v, 2) for v in p.box], "pid": p.pid, "visibility": round(p.visibility, 3)}
                for p in rendered
                if p.box is not None and p.visibility >= MIN_VISIBILITY
            ]
            frames.append({"frame": i, "time": round(t, 4), "persons": persons})
    finally:
        writer.release()
    sidecar = {
        "format": "synthps-video",
        "version": 1,
        "video": path.name,
        "seed": seed,
        "camera": camera,
        "fps": float(fps),
        "width": w,
        "height": h,
        "num_frames": n_frames,
        "duration_s": n_frames / fps,
        "identities": [i.to_dict() for i in people],
        "frames": frames,
    }
    if write_sidecar:
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    return sidecar
