"""Tracklets: a detector's boxes linked frame to frame, as pseudo-identities for OIM on unlabelled video.

Real footage has people but no identity labels. Linking a teacher detector's boxes across consecutive
frames (Hungarian assignment on IoU, as SORT-style trackers do without the motion model) gives short,
reliable identities: a person keeps one id while their box keeps overlapping their previous one. A track
survives ``max_gap`` frames without a match (a missed detection, an occlusion); tracks shorter than
``min_length`` frames stay unlabelled (-1), since a one-frame "identity" teaches OIM nothing and a
fragment is most often a false box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from fslora.data.records import UNLABELLED


@dataclass(frozen=True)
class TrackletConfig:
    """How boxes are linked: IoU to accept a link, frames a lost track waits, shortest kept track."""

    iou_min: float = 0.3
    max_gap: int = 3
    min_length: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_min <= 1.0:
            raise ValueError(f"iou_min must be in (0, 1], got {self.iou_min}")
        if self.max_gap < 0 or self.min_length < 1:
            raise ValueError(f"need max_gap >= 0 and min_length >= 1, got {self.max_gap}, {self.min_length}")


def link_tracklets(frames: Sequence[np.ndarray], config: TrackletConfig | None = None) -> list[np.ndarray]:
    """Per frame, one id per box (the same id = the same track), ids ``0..K-1`` by first appearance.

    ``frames[t]`` is an ``(N_t, 4)`` array of ``x1, y1, x2, y2`` boxes of consecutive sampled frames.
    Boxes of tracks shorter than ``config.min_length`` get ``UNLABELLED``.
    """
    cfg = config or TrackletConfig()
    raw: list[np.ndarray] = []
    last_box: dict[int, np.ndarray] = {}
    last_seen: dict[int, int] = {}
    lengths: dict[int, int] = {}
    next_id = 0
    for t, boxes in enumerate(frames):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        alive = [k for k, seen in last_seen.items() if t - seen <= cfg.max_gap + 1]
        if alive and len(boxes):
            prev = torch.from_numpy(np.stack([last_box[k] for k in alive]))
            iou = box_iou(prev, torch.from_numpy(boxes)).numpy()
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= cfg.iou_min:
                    ids[c] = alive[r]
        for j in range(len(boxes)):
            if ids[j] < 0:
                ids[j] = next_id
                next_id += 1
            k = int(ids[j])
            last_box[k] = boxes[j]
            last_seen[k] = t
            lengths[k] = lengths.get(k, 0) + 1
        raw.append(ids)
    kept = sorted(k for k, n in lengths.items() if n >= cfg.min_length)
    renumber = {k: i for i, k in enumerate(kept)}
    return [np.array([renumber.get(int(k), UNLABELLED) for k in ids], dtype=np.int64) for ids in raw]
