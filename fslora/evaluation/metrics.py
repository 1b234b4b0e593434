"""Ranking and detection metrics for person search, computed the standard way.

Person search scores a query against every *detected* box of its gallery, so a ranking can miss people
the detector never found. The standard protocol (OIM / NAE / SeqNet) handles that with a recall ceiling:
search AP = (AP over the ranked detections) x (ground truths found / ground truths present), which is the
same as summing precision at every true positive and dividing by the number of ground-truth occurrences.
`average_precision(scores, labels, num_positives)` computes exactly that, so one function serves both
search and detection AP. Ties in score form one threshold (as in scikit-learn's `average_precision_score`),
so the result does not depend on the order of tied items.

Search labelling rule: in each gallery image, the highest-similarity detection whose IoU with the query
person's ground-truth box reaches the threshold is the single true positive (a person counts once).
The threshold is 0.5, or for small boxes `min(0.5, w*h / ((w+10)*(h+10)))` - the CUHK-SYSU / PRW rule,
which forgives the proportionally larger localisation error on tiny people.

Detection matching is greedy by score inside each image: every detection, best score first, takes the
unmatched ground-truth box it overlaps most at IoU >= threshold (COCO-style), otherwise it is a false
positive. Detection AP carries the same recall ceiling (unmatched ground truths count as misses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torchvision.ops import box_iou

__all__ = [
    "DetectionScores",
    "Ranking",
    "average_precision",
    "box_iou_np",
    "detection_ap_recall",
    "rank_gallery",
    "search_iou_threshold",
    "top_k_hit",
]


def _boxes(x: ArrayLike, name: str) -> np.ndarray:
    """(N, 4) float64 array; a ValueError naming `name` for any other shape."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as x1, y1, x2, y2; got {arr.shape}")
    return arr


def box_iou_np(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes, via `torchvision.ops.box_iou`, as a numpy array."""
    ta = torch.from_numpy(_boxes(a, "a"))
    tb = torch.from_numpy(_boxes(b, "b"))
    return box_iou(ta, tb).numpy()


def search_iou_threshold(gt_box: ArrayLike, base: float = 0.5, small_box_rule: bool = True) -> float:
    """IoU a detection needs with `gt_box` to count as the query person.

    With `small_box_rule` the CUHK-SYSU / PRW relaxation `min(base, w*h / ((w+10)*(h+10)))` applies,
    e.g. a 20x40 box needs only 800 / 1500 = 0.533 -> 0.5, a 10x20 box 200 / 600 = 0.333.
    """
    box = _boxes(gt_box, "gt_box")
    if box.shape[0] != 1:
        raise ValueError(f"gt_box must be a single box; got {box.shape[0]}")
    if not small_box_rule:
        return float(base)
    w = box[0, 2] - box[0, 0]
    h = box[0, 3] - box[0, 1]
    return float(min(base, (w * h) / ((w + 10.0) * (h + 10.0))))


def _scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    lab = np.asarray(labels).ravel().astype(bool)
    if s.shape != lab.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {lab.shape[0]}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, lab


def _ap(scores: np.ndarray, labels: np.ndarray, total: int) -> float:
    """AP read at each positive over every item scoring at least as high (so a tie group is one
    threshold, as in scikit-learn): one sort of the scores, then a binary search per positive."""
    found = int(labels.sum())
    if total < found:
        raise ValueError(f"num_positives={total} is smaller than the {found} positive labels")
    if total == 0 or found == 0:
        return 0.0
    ascending = np.sort(scores)
    pos = np.sort(scores[labels])
    at_least = scores.size - np.searchsorted(ascending, pos, side="left")
    tp_at_least = found - np.searchsorted(pos, pos, side="left")  # tied positives included
    return float(np.sum(tp_at_least / at_least) / total)


def _best_hit_rank(scores: np.ndarray, labels: np.ndarray) -> int | None:
    """0-based rank of the first positive in the best-first order (ties keep input order)."""
    if not labels.any():
        return None
    pos = np.flatnonzero(labels)
    j = pos[np.argmax(scores[pos])]  # argmax picks the earliest of tied positives
    return int(np.count_nonzero(scores > scores[j]) + np.count_nonzero(scores[:j] == scores[j]))


def average_precision(scores: ArrayLike, labels: ArrayLike, num_positives: int | None = None) -> float:
    """Non-interpolated AP of a scored list, capped by the positives the list never contains.

    `num_positives` is the number of relevant items that exist (default: those in `labels`); when it is
    larger than `labels.sum()` the missing ones lower the result (the person-search recall ceiling).
    Returns 0.0 when nothing is relevant.
    """
    s, lab = _scores_labels(scores, labels)
    return _ap(s, lab, int(lab.sum()) if num_positives is None else int(num_positives))


def top_k_hit(scores: ArrayLike, labels: ArrayLike, k: int) -> bool:
    """Whether a relevant item is among the `k` best-scored (ties keep their input order)."""
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    rank = _best_hit_rank(*_scores_labels(scores, labels))
    return rank is not None and rank < k


@dataclass(frozen=True)
class Ranking:
    """One query's gallery detections: similarity, whether it is the query person, and how many
    ground-truth occurrences of the person the gallery holds (found or not)."""

    scores: np.ndarray
    labels: np.ndarray
    num_gt: int

    @property
    def num_found(self) -> int:
        return int(self.labels.sum())

    @property
    def ap(self) -> float:
        return average_precision(self.scores, self.labels, self.num_gt)

    def top_k(self, k: int) -> bool:
        return top_k_hit(self.scores, self.labels, k)


def rank_gallery(
    similarities: ArrayLike,
    det_boxes: ArrayLike,
    det_image: ArrayLike,
    gt_boxes: Mapping[int, ArrayLike],
    *,
    iou_threshold: float = 0.5,
    small_box_rule: bool = True,
) -> Ranking:
    """Label a query's scored gallery detections and return its `Ranking`.

    `similarities[i]` is the query's similarity to detection i (the protocols use the dot product of
    L2-normalised embeddings), `det_image[i]` the gallery image (any int id) it belongs to, and
    `gt_boxes` maps the ids of the gallery images that contain the query person to that person's box.
    Per image only the most similar detection that overlaps the ground truth enough is a true positive;
    a ground truth with no such detection still counts in `num_gt` (the recall ceiling).
    """
    scores = np.asarray(similarities, dtype=np.float64).ravel()
    boxes = np.asarray(det_boxes)
    image = np.asarray(det_image).ravel()
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"det_boxes must have shape (N, 4); got {boxes.shape}")
    if not scores.shape[0] == boxes.shape[0] == image.shape[0]:
        raise ValueError(
            f"similarities, det_boxes and det_image differ in length: "
            f"{scores.shape[0]}, {boxes.shape[0]}, {image.shape[0]}"
        )
    labels = np.zeros(scores.shape[0], dtype=bool)
    ids = list(gt_boxes)
    if ids and scores.size:
        gts = np.concatenate([_boxes(gt_boxes[i], f"gt_boxes[{i}]") for i in ids])
        thresholds = np.array([search_iou_threshold(g, iou_threshold, small_box_rule) for g in gts])
        column = {image_id: c for c, image_id in enumerate(ids)}
        # Detections in images with a ground truth, each paired with that image's column.
        det_idx = np.flatnonzero(np.isin(image, ids))
        det_col = np.array([column[i] for i in image[det_idx].tolist()], dtype=np.int64)
        if det_idx.size:
            ious = box_iou_np(boxes[det_idx], gts)[np.arange(det_idx.size), det_col]
            hit = ious >= thresholds[det_col]
            det_idx, det_col = det_idx[hit], det_col[hit]
            # Per image keep the most similar hit: sort by (image column, -similarity), take firsts.
            order = np.lexsort((-scores[det_idx], det_col))
            first = np.ones(order.size, dtype=bool)
            first[1:] = det_col[order][1:] != det_col[order][:-1]
            labels[det_idx[order][first]] = True
    return Ranking(scores=scores, labels=labels, num_gt=len(gt_boxes))


@dataclass(frozen=True)
class DetectionScores:
    """Detection AP (with the recall ceiling) and recall at one IoU threshold over a set of images."""

    ap: float
    recall: float
    num_gt: int
    num_tp: int


def _match_image(gt: np.ndarray, boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy by score: each detection takes the free ground truth it overlaps most (IoU >= threshold)."""
    tp = np.zeros(boxes.shape[0], dtype=bool)
    if gt.shape[0] == 0 or boxes.shape[0] == 0:
        return tp
    ious = box_iou_np(boxes, gt)
    free = np.ones(gt.shape[0], dtype=bool)
    for j in np.argsort(-scores, kind="stable"):
        cand = np.where(free & (ious[j] >= iou_threshold), ious[j], -1.0)
        best = int(np.argmax(cand))
        if cand[best] >= 0:
            free[best] = False
            tp[j] = True
    return tp


def detection_ap_recall(
    gt_boxes: Sequence[ArrayLike],
    det_boxes: Sequence[ArrayLike],
    det_scores: Sequence[ArrayLike],
    iou_threshold: float = 0.5,
) -> DetectionScores:
    """Detection AP and recall over images given as parallel lists (one entry per image)."""
    if not len(gt_boxes) == len(det_boxes) == len(det_scores):
        raise ValueError(
            f"gt_boxes, det_boxes and det_scores must list the same images: "
            f"{len(gt_boxes)}, {len(det_boxes)}, {len(det_scores)}"
        )
    all_scores: list[np.ndarray] = []
    all_tp: list[np.ndarray] = []
    num_gt = 0
    for i, (gt, boxes, scores) in enumerate(zip(gt_boxes, det_boxes, det_scores, strict=True)):
        g = _boxes(gt, f"gt_boxes[{i}]")
        b = _boxes(boxes, f"det_boxes[{i}]")
        s = np.asarray(scores, dtype=np.float64).ravel()
        if s.shape[0] != b.shape[0]:
            raise ValueError(f"det_scores[{i}] has {s.shape[0]} scores for {b.shape[0]} boxes")
        all_scores.append(s)
        all_tp.append(_match_image(g, b, s, iou_threshold))
        num_gt += g.shape[0]
    scores_cat = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp_cat = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    num_tp = int(tp_cat.sum())
    return DetectionScores(
        ap=average_precision(scores_cat, tp_cat, num_gt),
        recall=num_tp / num_gt if num_gt else 0.0,
        num_gt=num_gt,
        num_tp=num_tp,
    )
