"""The indexer: sampled video frames -> person detections -> SQLite rows + FAISS vectors.

Pipeline (DESIGN.md §7): a decode thread reads batches of `batch_frames` sampled frames into a bounded
queue while the calling thread runs `model.detect` on the previous batch and writes it, so decoding
overlaps inference and memory stays bounded (`prefetch_batches` decoded batches at most).

Crash safety: each batch is ONE store transaction (`Store.write_batch`: frames, detections, mask
thumbnails and the video's resume point). Vectors are added to the in-memory FAISS index after the
commit and the index file is saved atomically every `save_every_s` and at the end of a video. A crash
therefore loses at most the batch in flight; the next run starts from the video's resume point (no
duplicate rows) and `sync_with_store` rebuilds an index file that lags or leads the database (no
orphan vectors): SQLite is the truth, FAISS is derived.

Other behaviour:
- A file whose content (sha256) is already indexed by the same model is skipped, whatever its path.
- Bad input: a file that does not open as a video (`VideoError`) writes nothing and the error is
  re-raised; a decode error midway marks the video `failed` with the message (batches committed
  before it stay; a later run retries from the resume point) and is re-raised.
- Cancellation (`threading.Event`) stops after the batch in flight; the video stays `indexing` and a
  later run resumes it.
- Routing thumbnails (ours): with `capture_routing`, every adapted layer's expert masks of each frame
  are shrunk (area interpolation) so their longer side is at most `mask_thumbnail_size` and stored as
  8-bit PNGs by the store; `routing_layers` (a regex) keeps fewer layers when space matters.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from app.config import AppConfig
from app.store import FrameWrite, Store, VideoRecord, file_sha256
from app.vector_index import VectorIndex
from app.video import VideoError, VideoReader, open_video

if TYPE_CHECKING:
    from fslora.models import Detections, FSLoRAPersonSearch

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker on the decode queue
_POLL_S = 0.1  # how often blocked queue calls look at the stop / cancel events


@dataclass(frozen=True)
class IndexOptions:
    """How a video is indexed beyond what `AppConfig` says (per run, chosen by the caller)."""

    capture_routing: bool = False
    """Store the adapters' expert-mask thumbnails of every frame (for the UI's overlays)."""
    routing_layers: str = ""
    """Regex on qualified layer names whose masks are kept (empty = every adapted layer)."""
    save_every_s: float = 30.0
    """The vector index file is saved at most this often while indexing (and always at the end)."""
    prefetch_batches: int = 2
    """Decoded batches allowed to wait for the model (bounds memory)."""

    def __post_init__(self) -> None:
        if not self.save_every_s >= 0:
            raise ValueError(f"IndexOptions.save_every_s must be >= 0, got {self.save_every_s!r}")
        if isinstance(self.prefetch_batches, bool) or not isinstance(self.prefetch_batches, int) \
                or self.prefetch_batches < 1:
            raise ValueError(
                f"IndexOptions.prefetch_batches must be an int >= 1, got {self.prefetch_batches!r}")
        try:
            re.compile(self.routing_layers)
        except re.error as exc:
            raise ValueError(f"IndexOptions.routing_layers is not a valid regex: {exc}") from exc


@dataclass(frozen=True)
class Progress:
    """Where the indexing of one video stands (passed to the progress callback after each batch)."""

    video_id: int
    video_name: str
    frames_done: int
    frames_total: int
    elapsed_s: float
    eta_s: float | None  # None until a batch was timed


@dataclass(frozen=True)
class IndexResult:
    """What one `index_video` call did."""

    video: VideoRecord  # the record at the end of the call
    outcome: Literal["done", "skipped", "cancelled"]
    frames: int  # frames processed by this call
    detections: int  # detections written by this call


ProgressCallback = Callable[[Progress], None]


@dataclass
class _Batch:
    indices: list[int]
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB


class Indexer:
    """Indexes videos with one model into a store and that model's vector index.

    Args:
        store: the database.
        model: the person-search model (`detect` is the only method used).
        model_id: the model's id in the store (`Store.register_model`).
        index: the model's vector index, already in step with the store (`sync_with_store`).
        index_file: where `index` is saved.
        config: sampling rate, batch size, score threshold, thumbnail size, decoding limits.
        options: per-run choices (routing thumbnails, save interval, prefetch depth).
        model_lock: held around each `detect` call when the model is shared with other threads.
    """

    def __init__(self, store: Store, model: FSLoRAPersonSearch, model_id: int, index: VectorIndex,
                 index_file: str | Path, config: AppConfig, options: IndexOptions | None = None,
                 model_lock: AbstractContextManager[Any] | None = None) -> None:
        self.store = store
        self.model = model
        self.model_id = model_id
        self.index = index
        self.index_file = Path(index_file)
        self.config = config
        self.options = options or IndexOptions()
        self._model_lock = model_lock or nullcontext()
        self._routing_re = re.compile(self.options.routing_layers) if self.options.routing_layers else None
        self._last_save = time.monotonic()
        if self.options.capture_routing and not getattr(model.config, "use_adapters", True):
            raise ValueError("IndexOptions.capture_routing needs a model with adapters (use_adapters=True)")

    # -- public ---------------------------------------------------------------------------------------

    def index_video(self, path: str | Path, *, name: str | None = None,
                    cancel: threading.Event | None = None,
                    progress: ProgressCallback | None = None) -> IndexResult:
        """Indexes (or resumes, or skips) one video file; see the module docstring for the guarantees.

        Raises `VideoError` for a file that is not a usable video (nothing written) or that fails to
        decode midway (video marked failed).
        """
        with open_video(path, self.config) as reader:  # VideoError here: nothing is written
            return self.index_reader(reader, name=name, cancel=cancel, progress=progress)

    def index_reader(self, reader: VideoReader, *, name: str | None = None,
                     cancel: threading.Event | None = None,
                     progress: ProgressCallback | None = None) -> IndexResult:
        """`index_video` for a video the caller has already opened (validated) with `open_video`."""
        path = reader.path
        video, _created = self.store.add_video(path, self.model_id, reader.info,
                                               content_hash=file_sha256(path), name=name)
        if video.status == "done":
            log.info("%s: already indexed by this model as video %d, skipped", path, video.id)
            return IndexResult(video, "skipped", 0, 0)
        if video.status != "indexing":
            self.store.set_status(video.id, "indexing")
        sampled = reader.sample_indices(self.config.sample_fps)
        todo = [i for i in sampled if i >= video.resume_frame]
        try:
            frames, detections, cancelled = self._run(reader, video, todo, len(sampled), cancel, progress)
        except Exception as exc:
            message = str(exc) if isinstance(exc, VideoError) else f"{type(exc).__name__}: {exc}"
            self.store.set_status(video.id, "failed", message)
            self.save_index()
            raise
        self.save_index()
        if cancelled:
            log.info("%s: cancelled after %d frames; a later run resumes it", path, frames)
            return IndexResult(self.store.get_video(video.id), "cancelled", frames, detections)
        self.store.set_status(video.id, "done")
        return IndexResult(self.store.get_video(video.id), "done", frames, detections)

    def save_index(self) -> None:
        """Saves the vector index file atomically now."""
        self.index.save(self.index_file)
        self._last_save = time.monotonic()

    # -- the pipeline ---------------------------------------------------------------------------------

    def _run(self, reader: VideoReader, video: VideoRecord, todo: list[int], total: int,
             cancel: threading.Event | None, progress: ProgressCallback | None) -> tuple[int, int, bool]:
        """Decode thread + inference/write loop; returns (frames, detections, cancelled)."""
        size = self.config.batch_frames
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        q: queue.Queue[Any] = queue.Queue(maxsize=self.options.prefetch_batches)
        stop = threading.Event()
        decoder = threading.Thread(target=_decode, args=(reader, batches, q, stop, cancel),
                                   name=f"decode-video-{video.id}", daemon=True)
        done_before, frames, detections = total - len(todo), 0, 0
        started = time.monotonic()
        decoder.start()
        try:
            while True:
                item = _get(q, cancel)
                if item is None:  # cancelled
                    return frames, detections, True
                if item is _END:
                    return frames, detections, False
                if isinstance(item, BaseException):
                    raise item
                detections += self._process(video, item)
                frames += len(item.indices)
                if progress is not None:
                    elapsed = time.monotonic() - started
                    left = total - done_before - frames
                    progress(Progress(video.id, video.name, done_before + frames, total, elapsed,
                                      elapsed / frames * left))
                if time.monotonic() - self._last_save >= self.options.save_every_s:
                    self.save_index()
        finally:
            stop.set()
            decoder.join()

    def _process(self, video: VideoRecord, batch: _Batch) -> int:
        """Detects, commits one batch, then adds its vectors to the index; returns the detection count."""
        images = list(batch.frames)
        with self._model_lock:
            found = self.model.detect(images, score_thresh=self.config.score_thresh,
                                      capture_routing=self.options.capture_routing)
        writes = [self._frame_write(index, index / video.fps, det)
                  for index, det in zip(batch.indices, found, strict=True)]
        ids = self.store.write_batch(video.id, writes)
        if len(ids):
            self.index.add(ids, np.concatenate([w.embeddings for w in writes]))
        return len(ids)

    def _frame_write(self, frame_index: int, timestamp_s: float, det: Detections) -> FrameWrite:
        masks = self._thumbnails(det.routing) if det.routing else {}
        return FrameWrite(frame_index=frame_index, timestamp_s=timestamp_s,
                          boxes=det.boxes.numpy().astype(np.float64), scores=det.scores.numpy(),
                          embeddings=np.ascontiguousarray(det.embeddings.numpy(), dtype=np.float32),
                          masks=masks)

    def _thumbnails(self, routing: dict[str, dict[str, Any]]) -> dict[tuple[str, str], np.ndarray]:
        """(task, layer) -> (experts, h, w) float32 masks, longer side <= mask_thumbnail_size."""
        out = {}
        for layer, by_task in routing.items():
            if self._routing_re is not None and not self._routing_re.search(layer):
                continue
            for task, record in by_task.items():
                out[(task, layer)] = shrink_masks(record.expert_masks[0].numpy(),
                                                  self.config.mask_thumbnail_size)
        return out


def shrink_masks(masks: np.ndarray, max_side: int) -> np.ndarray:
    """(E, h, w) masks area-averaged so that max(h, w) <= max_side (never enlarged)."""
    masks = np.asarray(masks, dtype=np.float32)
    h, w = masks.shape[-2:]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return masks
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([cv2.resize(m, size, interpolation=cv2.INTER_AREA) for m in masks])


# -- decode thread helpers ---------------------------------------------------------------------------


def _decode(reader: VideoReader, batches: Sequence[list[int]], q: queue.Queue[Any], stop: threading.Event,
            cancel: threading.Event | None) -> None:
    """Reads each batch of frames into `q`, then `_END`; an error is passed on through the queue."""
    try:
        for indices in batches:
            if stop.is_set() or (cancel is not None and cancel.is_set()):
                return
            if not _put(q, _Batch(indices, reader.frames(indices)), stop):
                return
    except BaseException as exc:  # noqa: BLE001  (handed to the consumer, which re-raises it)
        _put(q, exc, stop)
        return
    _put(q, _END, stop)


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Blocking put that gives up when `stop` is set (the consumer has left); True if queued."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], cancel: threading.Event | None) -> Any:
    """Blocking get that returns None as soon as `cancel` is set."""
    while True:
        if cancel is not None and cancel.is_set():
            return None
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
