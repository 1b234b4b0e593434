"""Planning a SynthPS split: every decision made, no pixel drawn.

The plan fixes cameras, identities, which identity appears in which frame of which camera, every
pose, prop, occluder and query. Rendering then only paints it, so tests can check the standard
split's protocol (counts, cameras per identity, hard negatives, queries) in well under a second.

Randomness: each part draws from its own ``numpy`` Generator seeded by ``[seed, tag, ...]``, and each
frame from its own, so one frame's content does not depend on how many random numbers another used.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .compose import Item, PersonItem, item_depth
from .draw import layers_bounds
from .figure import Pose, person_extent
from .identities import Identity, make_identities, random_identity
from .presets import SynthPSPreset, get_preset
from .props import DISTRACTOR_KINDS, OCCLUDER_KINDS, Prop, prop_layers, random_prop
from .scenes import NOISE_MARGIN, Camera, make_cameras

SPLITS = ("train", "test")
_TAG = {"cameras": 0, "train": 1, "test": 2, "queries": 5}
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FramePlan:
    """Everything in one still frame, in drawing order (far to near)."""

    split: str
    camera: int
    frame: int  # frame number within its camera and split
    items: tuple[Item, ...]
    noise_offset: tuple[int, int]
    boxes: tuple[Box, ...] = ()  # analytic extent of each item (the rendered box is within ~1 px)

    @property
    def image_path(self) -> str:
        """Path relative to the split folder."""
        return f"images/{self.split}/c{self.camera}_f{self.frame:05d}.jpg"

    @property
    def persons(self) -> list[tuple[int, PersonItem]]:
        return [(i, it) for i, it in enumerate(self.items) if isinstance(it, PersonItem)]

    @property
    def props(self) -> list[Prop]:
        return [it for it in self.items if isinstance(it, Prop)]


@dataclass(frozen=True)
class QueryPlan:
    """A query: person ``item_index`` of test frame ``frame_index``."""

    frame_index: int
    item_index: int
    pid: int
    camera: int


@dataclass
class SplitPlan:
    """A whole split, decided: see ``stats()`` for its counts."""

    seed: int
    preset: SynthPSPreset
    cameras: list[Camera]
    identities: list[Identity]  # training identities first, then test identities
    train_frames: list[FramePlan]
    test_frames: list[FramePlan]
    queries: list[QueryPlan]

    def frames(self, split: str) -> list[FramePlan]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.train_frames if split == "train" else self.test_frames

    def cameras_of(self, split: str) -> dict[int, set[int]]:
        """pid -> cameras where that identity appears in ``split``."""
        out: dict[int, set[int]] = defaultdict(set)
        for fp in self.frames(split):
            for _, p in fp.persons:
                if p.identity.pid >= 0:
                    out[p.identity.pid].add(fp.camera)
        return dict(out)

    def hard_negative_pairs(self, split: str) -> list[tuple[int, int]]:
        """(original pid, hard-negative pid) pairs whose members both appear in ``split``."""
        present = self.cameras_of(split)
        return [
            (i.hard_negative_of, i.pid)
            for i in self.identities
            if i.hard_negative_of is not None and i.pid in present and i.hard_negative_of in present
        ]

    def stats(self) -> dict:
        """Counts that describe the split (README, tests)."""
        out: dict = {
            "seed": self.seed,
            "preset": self.preset.name,
            "cameras": len(self.cameras),
            "image_size": list(self.preset.image_size),
        }
        for split in SPLITS:
            frames = self.frames(split)
            cams = self.cameras_of(split)
            persons = [p for fp in frames for _, p in fp.persons]
            props = [p for fp in frames for p in fp.props]
            out[split] = {
                "frames": len(frames),
                "identities": len(cams),
                "identities_in_2plus_cameras": sum(len(c) >= 2 for c in cams.values()),
                "cameras_used": len({fp.camera for fp in frames}),
                "labelled_persons": sum(p.identity.pid >= 0 for p in persons),
                "unlabelled_persons": sum(p.identity.pid < 0 for p in persons),
                "distractors": sum(not p.occluder for p in props),
                "occluders": sum(p.occluder for p in props),
                "hard_negative_pairs": len(self.hard_negative_pairs(split)),
            }
        out["queries"] = len(self.queries)
        out["query_identities"] = len({q.pid for q in self.queries})
        return out


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def _iou(a: Box, b: Box) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _covered(box: Box, by: Box) -> float:
    """Share of ``box`` inside ``by``."""
    iw = min(box[2], by[2]) - max(box[0], by[0])
    ih = min(box[3], by[3]) - max(box[1], by[1])
    return 0.0 if iw <= 0 or ih <= 0 else iw * ih / ((box[2] - box[0]) * (box[3] - box[1]))


def item_extent(item: Item) -> Box:
    if isinstance(item, PersonItem):
        return person_extent(item.identity, item.pose)
    return layers_bounds(prop_layers(item))


def estimated_visibility(boxes: list[Box], index: int, grid: int = 12) -> float:
    """Share of ``boxes[index]`` not covered by the boxes drawn after it (counted on a sample grid)."""
    x1, y1, x2, y2 = boxes[index]
    later = boxes[index + 1 :]
    if not later:
        return 1.0
    xs = np.linspace(x1, x2, grid)[None, :]
    ys = np.linspace(y1, y2, grid * 2)[:, None]
    hidden = np.zeros((grid * 2, grid), bool)
    for bx1, by1, bx2, by2 in later:
        hidden |= (xs >= bx1) & (xs <= bx2) & (ys >= by1) & (ys <= by2)
    return 1.0 - float(hidden.mean())


def _place_person(
    rng: np.random.Generator, ident: Identity, cam: Camera, taken: list[Box]
) -> tuple[PersonItem, Box] | None:
    """A pose fully inside the frame that overlaps the people already placed as little as possible.

    Gait and facing are drawn once; positions are then tried with the box of a unit-height figure,
    scaled and shifted (the figure's geometry is linear in its height and position).
    """
    h, w = cam.size
    phase = float(rng.uniform(0.0, 2 * math.pi))
    facing = int(rng.choice([-1, 1, 0], p=[0.4, 0.4, 0.2]))
    ux1, uy1, ux2, uy2 = person_extent(ident, Pose(0.0, 0.0, 1.0, phase, facing))
    best: tuple[float, Pose, Box] | None = None
    for _ in range(25):
        fy = float(rng.uniform(*cam.foot_range))
        fx = float(rng.uniform(0.05, 0.95)) * w
        ph = cam.person_height(fy) * ident.height
        box = (fx + ph * ux1, fy + ph * uy1, fx + ph * ux2, fy + ph * uy2)
        if box[0] < 1 or box[1] < 1 or box[2] > w - 1 or box[3] > h:
            continue
        overlap = max((_iou(box, t) for t in taken), default=0.0)
        if best is None or overlap < best[0]:
            best = (overlap, Pose(fx, fy, ph, phase, facing), box)
        if overlap <= 0.1:
            break
    if best is None or best[0] > (0.5 if ident.pid >= 0 else 0.3):
        return None
    return PersonItem(ident, best[1]), best[2]


def _place_distractor(
    rng: np.random.Generator, cam: Camera, people: list[PersonItem], boxes: list[Box]
) -> Prop | None:
    """A distractor that hides no more than a quarter of anyone behind it."""
    w = cam.size[1]
    kind = DISTRACTOR_KINDS[int(rng.integers(len(DISTRACTOR_KINDS)))]
    for _ in range(10):
        fy = float(rng.uniform(*cam.foot_range))
        prop = random_prop(rng, kind, float(rng.uniform(0.0, w)), fy, cam.person_height(fy))
        pbox = layers_bounds(prop_layers(prop))
        if all(
            not (p.pose.foot_y < fy and _covered(b, pbox) > 0.25) and _iou(b, pbox) < 0.4
            for p, b in zip(people, boxes, strict=True)
        ):
            return prop
    return None


def _place_occluder(rng: np.random.Generator, target: PersonItem) -> Prop:
    """A foreground object just in front of ``target`` that hides part of them."""
    kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
    ht = target.pose.height
    fy = target.pose.foot_y + float(rng.uniform(0.02, 0.08)) * ht
    if kind == "pillar":
        side = 1.0 if rng.random() < 0.5 else -1.0
        fx = target.pose.foot_x + side * float(rng.uniform(0.12, 0.25)) * ht
    else:
        fx = target.pose.foot_x + float(rng.uniform(-0.3, 0.3)) * ht
    return random_prop(rng, kind, fx, fy, ht)


def plan_frame(
    rng: np.random.Generator,
    split: str,
    cam: Camera,
    frame: int,
    identities: list[Identity],
    preset: SynthPSPreset,
) -> FramePlan:
    """Places the given identities, unlabelled passers-by, distractors and maybe an occluder."""
    n_unl = int(rng.integers(preset.unlabelled_per_frame[0], preset.unlabelled_per_frame[1] + 1))
    if not identities and n_unl == 0:
        n_unl = 1  # no empty frames
    people: list[PersonItem] = []
    boxes: list[Box] = []
    for ident in list(identities) + [random_identity(rng, -1) for _ in range(n_unl)]:
        placed = _place_person(rng, ident, cam, boxes)
        if placed is not None:
            people.append(placed[0])
            boxes.append(placed[1])
    props: list[Prop] = []
    for _ in range(int(rng.integers(preset.distractors_per_frame[0], preset.distractors_per_frame[1] + 1))):
        prop = _place_distractor(rng, cam, people, boxes)
        if prop is not None:
            props.append(prop)
    if people and rng.random() < preset.occlusion_prob:
        props.append(_place_occluder(rng, people[int(rng.integers(len(people)))]))
    items: list[Item] = [*people, *props]
    extents = [*boxes, *(layers_bounds(prop_layers(p)) for p in props)]
    order = sorted(range(len(items)), key=lambda k: item_depth(items[k]))  # stable: far to near
    offset = rng.integers(0, NOISE_MARGIN, size=2)
    return FramePlan(
        split,
        cam.cid,
        frame,
        tuple(items[k] for k in order),
        (int(offset[0]), int(offset[1])),
        tuple(extents[k] for k in order),
    )


def _assign_appearances(
    rng: np.random.Generator, identities: list[Identity], frames_per_cam: list[int], preset: SynthPSPreset
) -> list[list[list[Identity]]]:
    """camera -> frame -> identities in it; each identity visits 2+ cameras, a few frames in each."""
    n_cams = len(frames_per_cam)
    queue: list[list[Identity]] = [[] for _ in range(n_cams)]
    for ident in identities:
        k = int(rng.integers(preset.cameras_per_id[0], preset.cameras_per_id[1] + 1))
        for c in sorted(rng.choice(n_cams, size=min(k, n_cams), replace=False).tolist()):
            a = int(rng.integers(preset.appearances_per_camera[0], preset.appearances_per_camera[1] + 1))
            queue[c] += [ident] * max(a, 1)
    slots: list[list[list[Identity]]] = [[[] for _ in range(n)] for n in frames_per_cam]
    for c in range(n_cams):
        if not slots[c]:
            continue
        cursor = int(rng.integers(len(slots[c])))
        for j in rng.permutation(len(queue[c])).tolist():
            ident = queue[c][j]
            for t in range(len(slots[c])):  # next frame round the cycle that lacks this identity
                slot = slots[c][(cursor + t) % len(slots[c])]
                if all(o.pid != ident.pid for o in slot):
                    slot.append(ident)
                    break
            cursor += 1
    return slots


def plan_frames(
    seed: int, split: str, identities: list[Identity], cameras: list[Camera], preset: SynthPSPreset
) -> list[FramePlan]:
    """All frames of one split, camera by camera."""
    n_frames = preset.train_frames if split == "train" else preset.test_frames
    n_cams = len(cameras)
    per_cam = [n_frames // n_cams + (1 if c < n_frames % n_cams else 0) for c in range(n_cams)]
    slots = _assign_appearances(_rng(seed, _TAG[split], 1), identities, per_cam, preset)
    return [
        plan_frame(_rng(seed, _TAG[split], 2, c, f), split, cameras[c], f, slots[c][f], preset)
        for c in range(n_cams)
        for f in range(per_cam[c])
    ]


def plan_queries(
    seed: int, frames: list[FramePlan], per_id: int, min_visibility: float = 0.85
) -> list[QueryPlan]:
    """PRW-style queries: for identities seen by >= 2 cameras, the largest clean view in ``per_id`` cameras.

    Clean = at least ``min_visibility`` of its box free of later-drawn boxes (estimated from geometry).
    """
    rng = _rng(seed, _TAG["queries"])
    views: dict[int, list[tuple[float, float, int, int, int]]] = defaultdict(list)
    for fi, fp in enumerate(frames):
        labelled = [(ii, p) for ii, p in fp.persons if p.identity.pid >= 0]
        for ii, p in labelled:
            vis = estimated_visibility(list(fp.boxes), ii)
            views[p.identity.pid].append((vis, p.pose.height, fi, ii, fp.camera))
    queries = []
    for pid in sorted(views):
        cams = sorted({v[4] for v in views[pid]})
        if len(cams) < 2:
            continue
        clean = [v for v in views[pid] if v[0] >= min_visibility]
        for c in rng.permutation(sorted({v[4] for v in clean}))[:per_id].tolist():
            _, _, fi, ii, cam = max((v for v in clean if v[4] == c), key=lambda v: (v[1], -v[2]))
            queries.append(QueryPlan(fi, ii, pid, cam))
    return queries


def plan_split(seed: int, preset: str | SynthPSPreset = "standard") -> SplitPlan:
    """Decides a whole split (deterministic in ``seed``); training and test identities are disjoint."""
    preset = get_preset(preset)
    cameras = make_cameras(
        _rng(seed, _TAG["cameras"]), preset.n_cameras, preset.image_size, preset.min_person_height
    )
    n_train = preset.train_ids
    train_ids = make_identities(
        _rng(seed, _TAG["train"], 0), list(range(n_train)), preset.hard_negative_fraction
    )
    test_ids = make_identities(
        _rng(seed, _TAG["test"], 0),
        list(range(n_train, n_train + preset.test_ids)),
        preset.hard_negative_fraction,
    )
    train_frames = plan_frames(seed, "train", train_ids, cameras, preset)
    test_frames = plan_frames(seed, "test", test_ids, cameras, preset)
    queries = plan_queries(seed, test_frames, preset.queries_per_id)
    return SplitPlan(seed, preset, cameras, train_ids + test_ids, train_frames, test_frames, queries)
