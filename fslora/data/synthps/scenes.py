"""Cameras: a procedural background, a ground-plane perspective and a light per camera.

Each camera looks at a back wall (plain gradient, bricks, windows or smooth noise) standing on a
floor (perspective tiles, planks, asphalt noise or a plain gradient). People stand on the floor and
their pixel height grows linearly with how far below the horizon their feet are. Each camera has its
own light: a per-channel gain (brightness and colour cast), a left-right light gradient and a
vignette, plus its own sensor noise, so the same person looks different from camera to camera.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import cv2
import numpy as np

from .identities import RGB

WALL_STYLES = ("gradient", "bricks", "windows", "noise")
FLOOR_STYLES = ("tiles", "planks", "asphalt", "plain")
WALL_COLOURS: list[RGB] = [
    (200, 190, 170),
    (150, 160, 175),
    (175, 120, 95),
    (120, 130, 120),
    (215, 215, 205),
    (95, 95, 110),
]
FLOOR_COLOURS: list[RGB] = [(140, 135, 125), (95, 95, 100), (170, 150, 120), (110, 120, 105), (185, 180, 170)]
NOISE_MARGIN = 32


@dataclass(frozen=True)
class Camera:
    """Geometry, look and light of one camera (all sizes in pixels)."""

    cid: int
    size: tuple[int, int]  # (height, width)
    horizon: float  # y of the vanishing line
    scale: float  # person height per pixel of foot below the horizon
    floor_top: float  # y where the back wall meets the floor
    foot_range: tuple[float, float]  # y band of people's feet
    wall_style: str
    floor_style: str
    wall_colour: RGB
    wall_colour2: RGB
    floor_colour: RGB
    floor_colour2: RGB
    gain: tuple[float, float, float]  # per-channel light (brightness x colour cast)
    light_slope: float  # left-to-right light gradient
    vignette: float
    noise_sigma: float
    seed: int  # texture details of the background

    def person_height(self, foot_y: float) -> float:
        """Pixel height of an average person whose feet are at ``foot_y``."""
        return self.scale * (foot_y - self.horizon)

    def light_at(self, x: float) -> np.ndarray:
        """Per-channel light on an object at column ``x`` (people are lit like the background there)."""
        w = self.size[1]
        return np.asarray(self.gain, np.float32) * np.float32(1.0 + self.light_slope * (x / w - 0.5))

    def to_dict(self) -> dict:
        return asdict(self)

    @cached_property
    def background(self) -> np.ndarray:
        """The lit background image, RGB uint8 (H, W, 3); built once per camera."""
        return render_background(self)

    @cached_property
    def noise(self) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative parts of a sensor-noise tile, a margin larger than the frame."""
        h, w = self.size
        rng = np.random.default_rng([self.seed, 1])
        n = rng.normal(0.0, self.noise_sigma, size=(h + NOISE_MARGIN, w + NOISE_MARGIN, 3)).astype(np.float32)
        return np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)


def make_cameras(
    rng: np.random.Generator, n: int, size: tuple[int, int], min_person_height: float
) -> list[Camera]:
    """``n`` cameras with distinct looks (styles cycle so any four cameras differ)."""
    h, w = size
    cams = []
    wall_order = rng.permutation(len(WALL_STYLES))
    floor_order = rng.permutation(len(FLOOR_STYLES))
    for cid in range(n):
        horizon = float(rng.uniform(0.26, 0.42)) * h
        foot_max = h - 3.0
        scale = float(rng.uniform(0.5, 0.6)) * h / (foot_max - horizon)
        foot_min = horizon + min_person_height / scale
        floor_top = min(horizon + float(rng.uniform(0.05, 0.25)) * (h - horizon), foot_min - 6.0)
        cast = rng.uniform(0.88, 1.12, size=3)
        gain = cast / cast.mean() * rng.uniform(0.75, 1.15)
        cams.append(
            Camera(
                cid=cid,
                size=(h, w),
                horizon=horizon,
                scale=scale,
                floor_top=floor_top,
                foot_range=(foot_min, foot_max),
                wall_style=WALL_STYLES[int(wall_order[cid % len(WALL_STYLES)])],
                floor_style=FLOOR_STYLES[int(floor_order[cid % len(FLOOR_STYLES)])],
                wall_colour=WALL_COLOURS[int(rng.integers(len(WALL_COLOURS)))],
                wall_colour2=WALL_COLOURS[int(rng.integers(len(WALL_COLOURS)))],
                floor_colour=FLOOR_COLOURS[int(rng.integers(len(FLOOR_COLOURS)))],
                floor_colour2=FLOOR_COLOURS[int(rng.integers(len(FLOOR_COLOURS)))],
                gain=(float(gain[0]), float(gain[1]), float(gain[2])),
                light_slope=float(rng.uniform(-0.35, 0.35)),
                vignette=float(rng.uniform(0.0, 0.35)),
                noise_sigma=float(rng.uniform(1.5, 5.0)),
                seed=int(rng.integers(2**31)),
            )
        )
    return cams


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: random cells upsampled bicubically."""
    small = rng.random((max(2, h * cells // w), cells)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def _mix(c1: RGB, c2: RGB, t: np.ndarray) -> np.ndarray:
    a, b = np.asarray(c1, np.float32), np.asarray(c2, np.float32)
    return a + (b - a) * t[..., None]


def _wall(cam: Camera, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if cam.wall_style == "gradient":
        img = _mix(
            cam.wall_colour, cam.wall_colour2, ys / max(h - 1, 1) * 0.8 + _smooth_noise(rng, h, w, 6) * 0.2
        )
    elif cam.wall_style == "bricks":
        bh = max(4.0, h / 14)
        bw = bh * 2.2
        row = np.floor(ys / bh)
        mortar = ((ys % bh) < 1.2) | (((xs + (row % 2) * bw / 2) % bw) < 1.2)
        tone = rng.random(4096).astype(np.float32)  # one random shade per brick
        idx = (row * 131 + np.floor((xs + (row % 2) * bw / 2) / bw)).astype(np.int64) % tone.size
        img = _mix(cam.wall_colour, cam.wall_colour2, tone[idx] * 0.35)
        img[mortar] = img[mortar] * 0.6 + 90
    elif cam.wall_style == "windows":
        img = _mix(cam.wall_colour, cam.wall_colour2, _smooth_noise(rng, h, w, 4) * 0.3)
        cell_w, cell_h = w / float(rng.integers(5, 9)), max(h / 2.5, 8.0)
        inx = ((xs % cell_w) > 0.25 * cell_w) & ((xs % cell_w) < 0.75 * cell_w)
        iny = ((ys % cell_h) > 0.2 * cell_h) & ((ys % cell_h) < 0.75 * cell_h)
        lit_ = (np.floor(xs / cell_w) * 7 + np.floor(ys / cell_h) * 3) % 5 == 0
        glass = np.where(lit_, 1.0, 0.0)[..., None] * np.array([230, 220, 160], np.float32) + np.where(
            lit_, 0.0, 1.0
        )[..., None] * np.array([60, 75, 95], np.float32)
        img = np.where((inx & iny)[..., None], glass, img)
    else:  # smooth noise at two scales: hedges, concrete, foliage
        t = _smooth_noise(rng, h, w, 12) * 0.6 + _smooth_noise(rng, h, w, 40) * 0.4
        img = _mix(cam.wall_colour, cam.wall_colour2, t)
    return img


def _floor(cam: Camera, rng: np.random.Generator, y0: int, h: int, w: int) -> np.ndarray:
    ss = 2  # supersampling keeps perspective lines smooth
    ys, xs = np.mgrid[0 : (h - y0) * ss, 0 : w * ss].astype(np.float32) / ss
    ys += y0
    depth = 1.0 / np.maximum(ys - cam.horizon, 1.0)  # proportional to distance from the camera
    wx = (xs - w / 2) * depth  # ground-plane coordinates
    wz = depth * 200.0
    if cam.floor_style == "tiles":
        t = ((np.floor(wx * 6) + np.floor(wz * 6)) % 2).astype(np.float32)
        grout = ((wx * 6) % 1 < 0.04) | ((wz * 6) % 1 < 0.04)
        img = _mix(cam.floor_colour, cam.floor_colour2, t * 0.6)
        img[grout] *= 0.7
    elif cam.floor_style == "planks":
        t = (np.floor(wx * 10) % 3).astype(np.float32) / 3
        img = _mix(cam.floor_colour, cam.floor_colour2, t * 0.5)
        img[(wx * 10) % 1 < 0.05] *= 0.75
    elif cam.floor_style == "asphalt":
        fine = rng.random(ys.shape).astype(np.float32)
        img = _mix(cam.floor_colour, (70, 70, 72), fine * 0.35 + _smooth_noise(rng, *ys.shape, 10) * 0.3)
    else:
        img = _mix(cam.floor_colour, cam.floor_colour2, (ys - y0) / max(h - y0, 1))
    return cv2.resize(img, (w, h - y0), interpolation=cv2.INTER_AREA)


def render_background(cam: Camera) -> np.ndarray:
    """Wall + floor, then the camera's light (gain, gradient, vignette); RGB uint8."""
    h, w = cam.size
    rng = np.random.default_rng([cam.seed, 0])
    y0 = int(round(cam.floor_top))
    img = np.empty((h, w, 3), np.float32)
    img[:y0] = _wall(cam, rng, y0, w)
    img[y0:] = _floor(cam, rng, y0, h, w)
    img[max(y0 - 1, 0) : y0 + 1] *= 0.75  # skirting line where the wall meets the floor
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    gradient = 1.0 + cam.light_slope * (xs / w - 0.5)
    r2 = ((xs[None, :] - w / 2) / (w / 2)) ** 2 + ((ys[:, None] - h / 2) / (h / 2)) ** 2
    light = gradient[None, :] * (1.0 - cam.vignette * 0.5 * r2)
    img *= light[..., None] * np.asarray(cam.gain, np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
