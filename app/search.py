"""Person search over indexed videos: build a query, rank every stored detection, group the hits.

A query is one embedding, from a stored detection (by id, or by a click on a frame) or from an
uploaded image crop (the model embeds the whole crop as one box). Ranking is cosine similarity in the
model's FAISS index; filters (videos, time range, min detection score, the query's own video) are
applied to the ranked candidates, fetching more candidates until `top_k` pass or the index is
exhausted, so a filter never silently shortens the list while matches remain.

Results come two ways: raw hits (one per detection, best first) and appearances - the hits of one
video on consecutive sampled frames merged into one time span (ours: purely temporal, as the UI shows
"person seen from t0 to t1"; at 1-2 sampled fps a walking person moves more than a body width between
samples, so box overlap is no reliable link), represented by their best-matching frame.

Clicks: the person whose box holds the click point; when boxes overlap, the one whose centre is
nearest (it is the person in front at that point far more often than the larger box). A click on
nobody is a clear `ValueError`.

`precision_at_k` and `sidecar_pid` measure search quality on SynthPS videos, whose JSON sidecars give
each frame's true boxes and identities.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.config import AppConfig
from app.store import DetectionRecord, Store
from app.vector_index import VectorIndex
from app.video import open_video

Box = tuple[float, float, float, float]
ImageEmbedder = Callable[[np.ndarray], np.ndarray]
"""uint8 RGB crop (H, W, 3) -> float32 (dim,) embedding of the whole crop."""

MIN_CROP_SIDE = 8  # pixels; smaller uploads carry no identity


@dataclass(frozen=True)
class SearchFilters:
    """Which stored detections may be returned."""

    video_ids: frozenset[int] | None = None  # only these videos (None = all)
    start_s: float | None = None  # detections at or after this time in their video
    end_s: float | None = None  # ... and at or before this one
    min_score: float = 0.0  # minimum detection score
    exclude_query_video: bool = False  # drop hits from the video the query came from

    def __post_init__(self) -> None:
        if self.video_ids is not None:
            object.__setattr__(self, "video_ids", frozenset(int(v) for v in self.video_ids))
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"SearchFilters.min_score must be in [0, 1], got {self.min_score!r}")
        if self.start_s is not None and self.end_s is not None and self.start_s > self.end_s:
            raise ValueError(f"SearchFilters: start_s ({self.start_s}) is after end_s ({self.end_s})")

    def accepts(self, det: DetectionRecord, query_video_id: int | None) -> bool:
        if self.video_ids is not None and det.video_id not in self.video_ids:
            return False
        if self.exclude_query_video and query_video_id is not None and det.video_id == query_video_id:
            return False
        if self.start_s is not None and det.timestamp_s < self.start_s:
            return False
        if self.end_s is not None and det.timestamp_s > self.end_s:
            return False
        return det.score >= self.min_score


@dataclass(frozen=True)
class Query:
    """What is searched for: an embedding and where it came from."""

    embedding: np.ndarray = field(repr=False)  # float32 (dim,)
    source: str  # "detection" | "click" | "image"
    detection: DetectionRecord | None = None  # the stored detection it came from, if any

    @property
    def video_id(self) -> int | None:
        return self.detection.video_id if self.detection is not None else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.detection is not None:
            d = self.detection
            out.update(detection_id=d.id, video_id=d.video_id, video_name=d.video_name,
                       frame_index=d.frame_index, timestamp_s=d.timestamp_s, box=list(d.box), score=d.score)
        return out


@dataclass(frozen=True)
class Hit:
    """One ranked detection."""

    detection_id: int
    video_id: int
    video_name: str
    video_path: str
    frame_index: int
    timestamp_s: float
    box: Box  # x1, y1, x2, y2 in frame pixels
    score: float  # detection confidence
    similarity: float  # cosine similarity to the query

    @classmethod
    def from_record(cls, det: DetectionRecord, similarity: float) -> Hit:
        return cls(det.id, det.video_id, det.video_name, det.video_path, det.frame_index, det.timestamp_s,
                   tuple(float(v) for v in det.box), float(det.score), float(similarity))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["box"] = list(self.box)
        return out


@dataclass(frozen=True)
class Appearance:
    """Hits of one video on consecutive sampled frames: one time span, shown by its best hit."""

    video_id: int
    video_name: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    best: Hit
    hits: tuple[Hit, ...]

    @property
    def similarity(self) -> float:
        return self.best.similarity

    def to_dict(self) -> dict[str, Any]:
        return {"video_id": self.video_id, "video_name": self.video_name, "start_frame": self.start_frame,
                "end_frame": self.end_frame, "start_s": self.start_s, "end_s": self.end_s,
                "similarity": self.similarity, "best": self.best.to_dict(),
                "detection_ids": [h.detection_id for h in self.hits]}


@dataclass(frozen=True)
class SearchResult:
    query: Query
    hits: list[Hit]
    appearances: list[Appearance]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query.to_dict(), "hits": [h.to_dict() for h in self.hits],
                "appearances": [a.to_dict() for a in self.appearances]}


class Searcher:
    """Searches the detections of one model.

    Args:
        store: the database.
        index: the model's vector index (in step with the store).
        model_id: the model whose detections are searched.
        embed_image: embeds an uploaded crop (only `query_image` needs it).
    """

    def __init__(self, store: Store, index: VectorIndex, model_id: int,
                 embed_image: ImageEmbedder | None = None) -> None:
        self.store = store
        self.index = index
        self.model_id = model_id
        self.embed_image = embed_image

    # -- queries --------------------------------------------------------------------------------------

    def query_detection(self, detection_id: int) -> Query:
        """The query of a stored detection; ValueError if there is none of this model."""
        found = self.store.fetch_detections([detection_id])
        if not found:
            raise ValueError(f"no detection with id {detection_id}")
        det = found[0]
        if self.store.get_video(det.video_id).model_id != self.model_id:
            raise ValueError(f"detection {detection_id} was made by another model than model {self.model_id}")
        embedding = self.store.get_embeddings([detection_id])[0]
        return Query(embedding, "detection", det)

    def detection_at(self, video_id: int, frame_index: int, x: float, y: float) -> DetectionRecord:
        """The detection clicked at (x, y) in frame `frame_index` of a video (see the module docstring)."""
        video = self.store.get_video(video_id)  # KeyError for an unknown video
        dets = self.store.frame_detections(video_id, frame_index)
        if not dets:
            frames = self.store.list_frames(video_id)
            if not any(f[0] == frame_index for f in frames):
                hint = ""
                if frames:
                    nearest = min(frames, key=lambda f: abs(f[0] - frame_index))[0]
                    hint = f"; the nearest indexed frame is {nearest}"
                raise ValueError(
                    f"frame {frame_index} of video {video_id} ({video.name}) is not indexed{hint}")
        picked = pick_detection([d.box for d in dets], x, y)
        if picked is None:
            raise ValueError(f"the click at ({x:g}, {y:g}) hits nobody in frame {frame_index} of video "
                             f"{video_id} ({video.name}); {len(dets)} people detected there")
        return dets[picked]

    def query_click(self, video_id: int, frame_index: int, x: float, y: float) -> Query:
        det = self.detection_at(video_id, frame_index, x, y)
        return Query(self.store.get_embeddings([det.id])[0], "click", det)

    def query_image(self, image: np.ndarray) -> Query:
        """The query of an uploaded crop (uint8 RGB (H, W, 3), the whole crop is the person)."""
        if self.embed_image is None:
            raise ValueError("searching by image needs the model (this searcher has no embed_image)")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"the query image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
        if min(image.shape[:2]) < MIN_CROP_SIDE:
            raise ValueError(f"the query image is {image.shape[1]}x{image.shape[0]} pixels; "
                             f"it needs at least {MIN_CROP_SIDE} pixels per side")
        embedding = np.asarray(self.embed_image(image), dtype=np.float32).reshape(-1)
        return Query(embedding, "image", None)

    # -- ranking --------------------------------------------------------------------------------------

    def search(self, query: Query, top_k: int = 10, filters: SearchFilters | None = None,
               max_gap_frames: int = 1) -> SearchResult:
        """Top-k hits across every video of the model, and the same hits grouped into appearances."""
        hits = self.rank(query, top_k, filters)
        return SearchResult(query, hits, self.appearances(hits, max_gap_frames))

    def rank(self, query: Query, top_k: int = 10, filters: SearchFilters | None = None) -> list[Hit]:
        """The `top_k` best hits passing `filters`, best first."""
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        filters = filters or SearchFilters()
        total = len(self.index)
        k = min(total, max(4 * top_k, 32))
        while k > 0:
            ids, sims = self.index.search(query.embedding, k)
            ids, sims = ids[0], sims[0]
            similarity = {int(i): float(s) for i, s in zip(ids, sims, strict=True) if i >= 0}
            records = self.store.fetch_detections(list(similarity))  # rows removed meanwhile drop out
            hits = [Hit.from_record(r, similarity[r.id]) for r in records
                    if filters.accepts(r, query.video_id)]
            if len(hits) >= top_k or k >= total:
                return hits[:top_k]
            k = min(total, 4 * k)
        return []

    def appearances(self, hits: Sequence[Hit], max_gap_frames: int = 1) -> list[Appearance]:
        """Hits grouped per video into runs of sampled frames at most `max_gap_frames` apart (1 = only
        consecutive sampled frames), best appearance first."""
        if max_gap_frames < 1:
            raise ValueError(f"max_gap_frames must be >= 1, got {max_gap_frames}")
        by_video: dict[int, list[Hit]] = {}
        for hit in hits:
            by_video.setdefault(hit.video_id, []).append(hit)
        out = []
        for video_id, video_hits in by_video.items():
            position = {f[0]: i for i, f in enumerate(self.store.list_frames(video_id))}
            out.extend(group_appearances(video_hits, position, max_gap_frames))
        out.sort(key=lambda a: (-a.similarity, a.video_id, a.start_frame))
        return out


def group_appearances(hits: Iterable[Hit], position: Mapping[int, int], max_gap_frames: int = 1) -> list[
        Appearance]:
    """Groups the hits of ONE video: `position` maps a frame index to its rank among the sampled frames."""
    ordered = sorted(hits, key=lambda h: (h.frame_index, -h.similarity))
    runs: list[list[Hit]] = []
    for hit in ordered:
        if runs and position[hit.frame_index] - position[runs[-1][-1].frame_index] <= max_gap_frames:
            runs[-1].append(hit)
        else:
            runs.append([hit])
    out = []
    for run in runs:
        best = max(run, key=lambda h: h.similarity)
        out.append(Appearance(best.video_id, best.video_name, run[0].frame_index, run[-1].frame_index,
                              run[0].timestamp_s, run[-1].timestamp_s, best, tuple(run)))
    return out


def pick_detection(boxes: Sequence[Box], x: float, y: float) -> int | None:
    """Index of the box holding (x, y) whose centre is nearest to it (then the smaller box), or None."""
    best, best_key = None, None
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if not (x1 <= x <= x2 and y1 <= y <= y2):
            continue
        key = (math.hypot((x1 + x2) / 2 - x, (y1 + y2) / 2 - y), (x2 - x1) * (y2 - y1))
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


# -- crops --------------------------------------------------------------------------------------------


def crop_hits(hits: Sequence[Hit], pad: float = 0.1, config: AppConfig | None = None) -> list[np.ndarray]:
    """RGB crops (uint8) of the hits' boxes grown by `pad` x their size, read from the video files
    (random access; each video is opened once)."""
    crops: list[np.ndarray | None] = [None] * len(hits)
    by_path: dict[str, list[int]] = {}
    for i, hit in enumerate(hits):
        by_path.setdefault(hit.video_path, []).append(i)
    for path, positions in by_path.items():
        with open_video(Path(path), config) as reader:
            for i in positions:
                crops[i] = reader.crop(hits[i].frame_index, hits[i].box, pad=pad)
    return [c for c in crops if c is not None]


def crop_hit(hit: Hit, pad: float = 0.1, config: AppConfig | None = None) -> np.ndarray:
    """The RGB crop of one hit (see `crop_hits`)."""
    return crop_hits([hit], pad, config)[0]


# -- quality on SynthPS videos ------------------------------------------------------------------------


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def sidecar_pid(sidecar: Mapping[str, Any], frame_index: int, box: Sequence[float],
                min_iou: float = 0.5) -> int | None:
    """The identity of the sidecar person best overlapping `box` in `frame_index` (IoU >= min_iou), or
    None when the box matches nobody (a false detection)."""
    frames = sidecar["frames"]
    if not 0 <= frame_index < len(frames) or frames[frame_index]["frame"] != frame_index:
        raise ValueError(f"sidecar of {sidecar.get('video')!r} has no frame {frame_index}")
    best, best_iou = None, min_iou
    for person in frames[frame_index]["persons"]:
        iou = _iou(box, person["box"])
        if iou >= best_iou:
            best, best_iou = int(person["pid"]), iou
    return best


def hit_pids(hits: Sequence[Hit], sidecars: Mapping[int, Mapping[str, Any]], min_iou: float = 0.5) -> list[
        int | None]:
    """The true identity of each hit from the sidecar of its video (None: unmatched or no sidecar)."""
    return [sidecar_pid(sidecars[h.video_id], h.frame_index, h.box, min_iou) if h.video_id in sidecars
            else None for h in hits]


def precision_at_k(pids: Sequence[int | None], query_pid: int, k: int = 10) -> float:
    """Share of the first k ranked hits that show the query's identity; missing hits count as misses
    (so a short list is not rewarded)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return sum(1 for pid in pids[:k] if pid is not None and pid == query_pid) / k
