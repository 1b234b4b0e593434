"""The person-search evaluation protocols of CUHK-SYSU, PRW and PoseTrack21, as pure functions.

Every protocol takes the ground truth as shared records (`ImageRecord` for the gallery frames,
`QueryRecord` for the queries), the model's per-image detections (anything with `boxes` (N, 4) xyxy in
image pixels, `scores` (N,) and `embeddings` (N, D) - `fslora.models.Detections`, a dict with those keys,
tensors or numpy arrays) and one embedding per query, and returns

    {"mAP", "top1", "top5", "top10", "det_ap", "det_recall", "num_queries", "num_queries_without_gt"}

with metrics as fractions in [0, 1]. Only detections scoring >= `det_thresh` (0.5, the standard value)
take part, in search and detection alike. Galleries differ per protocol:

- CUHK-SYSU: each query's gallery is its list from `TestG{N}.mat` (N in 50..4000, default 100); other
  test images are ignored. (`fslora.data.cuhk_sysu.load_cuhk_sysu` reads the lists into
  `PersonSearchSplit.query_gallery`; `evaluate_split` picks the rule from the split.)
- PRW: the whole test set except the query's own frame; the multi-view variant also drops every frame
  of the query's camera, so only cross-camera matches count.
- PoseTrack21 (ours: "like PRW"): the whole gallery except the query's frame; `cross_video=True` also
  drops the query's video (our loader stores the video as the camera).

The query person's ground truth in a gallery frame is the box with the query's pid in that frame's
record; detection ground truth is every annotated person, labelled or not. Queries whose person never
appears in their gallery cannot be scored; they are left out of mAP / top-k and counted in
`num_queries_without_gt` (the standard code would divide by zero).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from fslora.data.records import ImageRecord, PersonSearchSplit, QueryRecord
from fslora.evaluation.metrics import detection_ap_recall, rank_gallery

__all__ = [
    "DEFAULT_TOPK",
    "evaluate_cuhk_sysu",
    "evaluate_posetrack21",
    "evaluate_prw",
    "evaluate_search",
    "evaluate_split",
    "listed_gallery_rule",
    "whole_set_rule",
]

DEFAULT_TOPK: tuple[int, ...] = (1, 5, 10)

DetectionsInput = Mapping[str, Any] | Sequence[Any]
"""Per-image detections: a mapping image_path -> detections, or a sequence aligned with the records."""


def _numpy(x: Any, dtype: type = np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=dtype)


def _field(det: Any, name: str, path: str) -> np.ndarray:
    value = det[name] if isinstance(det, Mapping) else getattr(det, name, None)
    if value is None:
        raise ValueError(f"detections for {path!r} have no {name!r}")
    return _numpy(value)


@dataclass(frozen=True)
class _Gallery:
    """All gallery detections flattened into arrays, so each query costs one matrix-vector product."""

    records: list[ImageRecord]
    boxes: np.ndarray  # (M, 4) kept detections
    scores: np.ndarray  # (M,)
    embeddings: np.ndarray  # (M, D)
    image: np.ndarray  # (M,) image index of each detection
    occurrences: dict[int, dict[int, np.ndarray]]  # pid -> image index -> gt box

    @classmethod
    def build(
        cls, records: Sequence[ImageRecord], detections: DetectionsInput, det_thresh: float, dim: int
    ) -> _Gallery:
        """Keeps the detections scoring >= `det_thresh`; `dim` is the query embedding size."""
        records = list(records)
        if not records:
            raise ValueError("records is empty: a protocol needs at least one gallery image")
        if len({r.image_path for r in records}) != len(records):
            raise ValueError("records list the same image_path more than once")
        if isinstance(detections, Mapping):
            missing = [r.image_path for r in records if r.image_path not in detections]
            if missing:
                raise ValueError(f"no detections for {len(missing)} gallery image(s), e.g. {missing[0]!r}")
            per_image = [detections[r.image_path] for r in records]
        else:
            if len(detections) != len(records):
                raise ValueError(f"got detections for {len(detections)} images but {len(records)} records")
            per_image = list(detections)
        boxes, scores, embs, image = [], [], [], []
        for i, (rec, det) in enumerate(zip(records, per_image, strict=True)):
            b = _field(det, "boxes", rec.image_path).reshape(-1, 4)
            s = _field(det, "scores", rec.image_path).reshape(-1)
            e = _field(det, "embeddings", rec.image_path)
            if e.ndim != 2 or e.shape[1] != dim:
                raise ValueError(
                    f"detections for {rec.image_path!r}: embeddings {e.shape} != query size {dim}"
                )
            if not b.shape[0] == s.shape[0] == e.shape[0]:
                raise ValueError(
                    f"detections for {rec.image_path!r}: {b.shape[0]} boxes, {s.shape[0]} scores, "
                    f"{e.shape[0]} embeddings"
                )
            keep = s >= det_thresh
            boxes.append(b[keep])
            scores.append(s[keep])
            embs.append(e[keep])
            image.append(np.full(int(keep.sum()), i, dtype=np.int64))
        occurrences: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
        for i, rec in enumerate(records):
            for person in rec.persons:
                if person.pid >= 0:
                    occurrences[person.pid][i] = np.asarray(person.box, dtype=np.float64)
        return cls(
            records=records,
            boxes=np.concatenate(boxes),
            scores=np.concatenate(scores),
            embeddings=np.concatenate(embs),
            image=np.concatenate(image),
            occurrences=dict(occurrences),
        )

    def similarities(self, query_embeddings: np.ndarray, chunk: int = 64) -> Iterator[np.ndarray]:
        """Each query's dot products with every kept detection; a block of queries per matrix product."""
        for start in range(0, query_embeddings.shape[0], chunk):
            yield from query_embeddings[start : start + chunk] @ self.embeddings.T

    def detection_scores(self, iou_threshold: float) -> tuple[float, float]:
        gts = [np.array([p.box for p in r.persons], dtype=np.float64).reshape(-1, 4) for r in self.records]
        splits = np.searchsorted(self.image, np.arange(1, len(self.records)))  # image ids are sorted
        det_boxes = np.split(self.boxes, splits)
        det_scores = np.split(self.scores, splits)
        result = detection_ap_recall(gts, det_boxes, det_scores, iou_threshold)
        return result.ap, result.recall


GalleryRule = Callable[[int, QueryRecord], np.ndarray]
"""(query index, query) -> boolean mask over the gallery images that may be searched."""


def evaluate_search(
    records: Sequence[ImageRecord],
    detections: DetectionsInput,
    queries: Sequence[QueryRecord],
    query_embeddings: ArrayLike | torch.Tensor,
    gallery_rule: GalleryRule | None = None,
    *,
    det_thresh: float = 0.5,
    iou_threshold: float = 0.5,
    small_box_rule: bool = True,
    topk: Sequence[int] = DEFAULT_TOPK,
    per_query: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Search mAP / top-k and detection AP / recall; the protocols differ only in `gallery_rule`
    (default: every gallery image except the query's own frame).

    `per_query`, when given, receives one entry per scored query (``query`` index, ``image``, ``pid``,
    ``ap``, ``top{k}``): what a paired comparison of two models on the same queries needs
    (`fslora.evaluation.compare`)."""
    q_emb = _numpy(query_embeddings)
    if q_emb.ndim != 2 or q_emb.shape[0] != len(queries):
        raise ValueError(f"query_embeddings must be ({len(queries)}, D); got {q_emb.shape}")
    gallery = _Gallery.build(records, detections, det_thresh, q_emb.shape[1])
    rule = gallery_rule or whole_set_rule(records)
    aps: list[float] = []
    hits: dict[int, list[bool]] = {k: [] for k in topk}
    skipped = 0
    for qi, (query, similarities) in enumerate(zip(queries, gallery.similarities(q_emb), strict=True)):
        allowed = np.asarray(rule(qi, query), dtype=bool)
        gt = {i: box for i, box in gallery.occurrences.get(query.pid, {}).items() if allowed[i]}
        if not gt:
            skipped += 1
            continue
        keep = allowed[gallery.image]
        ranking = rank_gallery(
            similarities[keep],
            gallery.boxes[keep],
            gallery.image[keep],
            gt,
            iou_threshold=iou_threshold,
            small_box_rule=small_box_rule,
        )
        aps.append(ranking.ap)
        for k in topk:
            hits[k].append(ranking.top_k(k))
        if per_query is not None:
            entry = {"query": qi, "image": query.image_path, "pid": query.pid, "ap": ranking.ap}
            per_query.append(entry | {f"top{k}": hits[k][-1] for k in topk})
    det_ap, det_recall = gallery.detection_scores(iou_threshold)
    result: dict[str, float] = {"mAP": float(np.mean(aps)) if aps else 0.0}
    for k in topk:
        result[f"top{k}"] = float(np.mean(hits[k])) if hits[k] else 0.0
    result.update(
        det_ap=det_ap,
        det_recall=det_recall,
        num_queries=len(aps),
        num_queries_without_gt=skipped,
    )
    return result


def evaluate_cuhk_sysu(
    records: Sequence[ImageRecord],
    detections: DetectionsInput,
    queries: Sequence[QueryRecord],
    query_embeddings: ArrayLike | torch.Tensor,
    galleries: Sequence[Sequence[int | str]],
    **kwargs: Any,
) -> dict[str, float]:
    """CUHK-SYSU: query i is searched in the images `galleries[i]` only (its TestG{N}.mat list), given
    as indices into `records` (`PersonSearchSplit.query_gallery`) or as image paths."""
    if len(galleries) != len(queries):
        raise ValueError(f"galleries has {len(galleries)} lists for {len(queries)} queries")
    rule = listed_gallery_rule(records, galleries)
    return evaluate_search(records, detections, queries, query_embeddings, rule, **kwargs)


def whole_set_rule(records: Sequence[ImageRecord], exclude_camera: bool = False) -> GalleryRule:
    """Gallery = every image but the query's own frame (and, with `exclude_camera`, its camera)."""
    index = {r.image_path: i for i, r in enumerate(records)}
    cameras = np.array([r.camera for r in records], dtype=np.int64)

    def rule(_: int, query: QueryRecord) -> np.ndarray:
        allowed = np.ones(len(records), dtype=bool)
        own = index.get(query.image_path)
        if own is not None:
            allowed[own] = False
        if exclude_camera:
            allowed &= cameras != query.camera
        return allowed

    return rule


def listed_gallery_rule(
    records: Sequence[ImageRecord], galleries: Sequence[Sequence[int | str]]
) -> GalleryRule:
    """Gallery of query i = exactly the images `galleries[i]` (indices into `records` or image paths)."""
    index = {r.image_path: i for i, r in enumerate(records)}
    masks = []
    for qi, members in enumerate(galleries):
        mask = np.zeros(len(records), dtype=bool)
        for member in members:
            if isinstance(member, str):
                if member not in index:
                    raise ValueError(f"gallery of query {qi} lists {member!r}, not among the records")
                mask[index[member]] = True
            elif 0 <= int(member) < len(records):
                mask[int(member)] = True
            else:
                raise ValueError(f"gallery of query {qi} lists image {member} of {len(records)}")
        masks.append(mask)
    return lambda qi, _: masks[qi]


def evaluate_prw(
    records: Sequence[ImageRecord],
    detections: DetectionsInput,
    queries: Sequence[QueryRecord],
    query_embeddings: ArrayLike | torch.Tensor,
    *,
    multi_view: bool = False,
    **kwargs: Any,
) -> dict[str, float]:
    """PRW: the whole test set minus the query frame; `multi_view` also drops the query's camera."""
    rule = whole_set_rule(records, exclude_camera=multi_view)
    return evaluate_search(records, detections, queries, query_embeddings, rule, **kwargs)


def evaluate_posetrack21(
    records: Sequence[ImageRecord],
    detections: DetectionsInput,
    queries: Sequence[QueryRecord],
    query_embeddings: ArrayLike | torch.Tensor,
    *,
    cross_video: bool = False,
    **kwargs: Any,
) -> dict[str, float]:
    """PoseTrack21: like PRW (query frame excluded); `cross_video` also drops the query's video."""
    rule = whole_set_rule(records, exclude_camera=cross_video)
    return evaluate_search(records, detections, queries, query_embeddings, rule, **kwargs)


def evaluate_split(
    split: PersonSearchSplit,
    detections: DetectionsInput,
    query_embeddings: ArrayLike | torch.Tensor,
    *,
    exclude_camera: bool = False,
    **kwargs: Any,
) -> dict[str, float]:
    """Evaluate on a loaded split: its per-query galleries when it has them (CUHK-SYSU), else the
    whole gallery minus the query frame (PRW, PoseTrack21, SynthPS); `exclude_camera` gives PRW's
    multi-view variant. `detections` are for `split.gallery`."""
    if split.query_gallery is not None:
        if exclude_camera:
            raise ValueError(f"exclude_camera does not apply to {split.name}: it lists each query's gallery")
        rule = listed_gallery_rule(split.gallery, split.query_gallery)
    else:
        rule = whole_set_rule(split.gallery, exclude_camera=exclude_camera)
    return evaluate_search(split.gallery, detections, split.queries, query_embeddings, rule, **kwargs)
