"""`Engine`: one app session - settings, store, per-model vector indexes and (lazily) the model.

The CLI and the Gradio UI both talk to an `Engine`, never to the parts directly, so that each question
("which index holds this detection?", "is the index in step with the database?") is answered once.

- The model is loaded only when needed (indexing, search by uploaded image): search by detection id
  or by click, stats, export, reindex and remove work without it (and without importing torch).
- A model's identity in the store is its name plus a fingerprint (sha256) of its config and weights
  (ours: kept in the store's `config_hash` column): two checkpoints with the same config but other
  weights embed people differently, so their detections must not share an index.
- Each model's FAISS index is opened on first use and checked against SQLite (`sync_with_store`),
  which rebuilds it when the file is missing, damaged, or disagrees with the database (after a crash).
- Thread safety: store calls are one transaction each, vector indexes lock themselves, and inference
  calls go through `model_lock`, so searches may run in threads while a video is being indexed (a search
  by uploaded image then waits for the batch in flight).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.config import AppConfig
from app.preview import remove_unused_preview
from app.search import Hit, Searcher, SearchFilters, SearchResult, crop_hits
from app.store import Store, VideoRecord
from app.vector_index import IndexParams, SyncReport, VectorIndex, index_path, sync_with_store
from app.video import open_video

if TYPE_CHECKING:
    from app.indexer import IndexOptions, IndexResult, ProgressCallback
    from fslora.models import FSLoRAPersonSearch

log = logging.getLogger(__name__)

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent.parent / "weights" / "fslora-mobilenetv2-real"
"""The demo checkpoint shipped with the app, used when no model is named."""

EXPORT_FIELDS = ("detection_id", "model_id", "video_id", "video_name", "video_path", "frame_index",
                 "timestamp_s", "x1", "y1", "x2", "y2", "score")


class NoModelError(ValueError):
    """No model was named and no bundled checkpoint exists (or the named one cannot be loaded)."""


def model_fingerprint(model: FSLoRAPersonSearch) -> str:
    """sha256 of the model's config and inference weights: equal fingerprints = same embedding space."""
    import torch  # noqa: PLC0415  (torch only when a model is used)

    from fslora.models.checkpoint import inference_state_dict  # noqa: PLC0415

    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(inference_state_dict(model).items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Engine:
    """An app session over one database.

    Args:
        config: app settings (data folder, database URL, sampling, index tuning).
        model: an already built model (tests, the UI's demo); wins over `model_source`.
        model_source: a checkpoint folder or Hub repo id, loaded on first use; None = the bundled one.
        revision: Hub revision of `model_source`.
        device: where the model runs (None: CUDA when available).
        threads: torch CPU threads, set when the model is loaded (None: torch's default).
    """

    def __init__(self, config: AppConfig | None = None, *, model: FSLoRAPersonSearch | None = None,
                 model_source: str | Path | None = None, revision: str | None = None,
                 device: str | None = None, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.config = config or AppConfig()
        self.params = IndexParams.from_config(self.config)
        self.store = Store.from_config(self.config)
        self._model = model
        self._model_source = model_source
        self._revision = revision
        self._device = device
        self._threads = threads
        self._model_id: int | None = None
        self._indexes: dict[int, VectorIndex] = {}
        self._lock = threading.RLock()  # lazy loads
        self.model_lock = threading.Lock()  # one inference at a time
        self.sync_reports: dict[int, SyncReport] = {}

    # -- lifetime -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the database. Index files need no saving here: every change saves its index (the
        indexer per video and periodically, remove and reindex at once), and a read-only session must
        not overwrite a newer file written by another process."""
        with self._lock:
            self._indexes.clear()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the model ------------------------------------------------------------------------------------

    @property
    def model(self) -> FSLoRAPersonSearch:
        """The person-search model, loaded on first use."""
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
            return self._model

    def _load_model(self) -> FSLoRAPersonSearch:
        import torch  # noqa: PLC0415  (torch only when needed)

        from fslora.models import FSLoRAPersonSearch  # noqa: PLC0415

        if self._threads is not None:
            torch.set_num_threads(self._threads)

        source = self._model_source
        if source is None:
            if not BUNDLED_CHECKPOINT.is_dir():
                raise NoModelError(f"no model: name a checkpoint folder or Hub repo id (--model); the "
                                   f"bundled checkpoint {BUNDLED_CHECKPOINT} does not exist")
            source = BUNDLED_CHECKPOINT
        try:
            return FSLoRAPersonSearch.from_pretrained(source, revision=self._revision, device=self._device)
        except (OSError, ValueError) as exc:
            raise NoModelError(f"cannot load model {source}: {exc}") from exc

    @property
    def model_id(self) -> int:
        """The store id of the loaded model (registered on first use)."""
        with self._lock:
            if self._model_id is None:
                model = self.model
                record = self.store.register_model(model.config.name, model_fingerprint(model),
                                                   model.embedding_dim, revision=self._revision or "")
                self._model_id = record.id
            return self._model_id

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """Embedding (dim,) of a whole uint8 RGB crop, as a query."""
        h, w = image.shape[:2]
        box = np.array([[0.0, 0.0, float(w), float(h)]], np.float32)
        with self.model_lock:
            return self.model.embed_boxes([image], [box])[0][0].numpy()

    # -- vector indexes -------------------------------------------------------------------------------

    def index_file(self, model_id: int) -> Path:
        return index_path(self.config.index_dir, model_id)

    def vector_index(self, model_id: int) -> VectorIndex:
        """The vector index of a model, opened and checked against the store on first use."""
        with self._lock:
            if model_id not in self._indexes:
                dim = self.store.get_model(model_id).embedding_dim  # KeyError for an unknown model
                file = self.index_file(model_id)
                if not file.exists() and not len(self.store.embedding_ids(model_id)):
                    index = VectorIndex(dim, self.params)  # a new model: nothing to rebuild, nothing to warn
                    report = SyncReport(rebuilt=False, reason="new, empty", count=0)
                else:
                    index, report = sync_with_store(file, self.store, model_id, self.params)
                self._indexes[model_id] = index
                self.sync_reports[model_id] = report
            return self._indexes[model_id]

    def reindex(self, model_id: int | None = None) -> dict[int, int]:
        """Rebuilds the FAISS index of one model (or every model) from SQLite; returns {model id: vectors}."""
        ids = [model_id] if model_id is not None else [m.id for m in self.store.list_models()]
        out = {}
        with self._lock:
            for mid in ids:
                dim = self.store.get_model(mid).embedding_dim
                expected = len(self.store.embedding_ids(mid))
                index = VectorIndex.build(self.store.iter_embeddings(mid), dim, self.params,
                                          expected_count=expected)
                index.save(self.index_file(mid))
                self._indexes[mid] = index
                out[mid] = len(index)
        return out

    # -- indexing -------------------------------------------------------------------------------------

    def index_video(self, path: str | Path, *, options: IndexOptions | None = None,
                    cancel: threading.Event | None = None, progress: ProgressCallback | None = None,
                    name: str | None = None) -> IndexResult:
        """Indexes one video with the model (see `app.indexer.Indexer.index_video`). The file is opened
        first, so a bad one fails fast, before the model is loaded and with nothing written."""
        from app.indexer import Indexer  # noqa: PLC0415

        with open_video(path, self.config) as reader:
            model_id = self.model_id
            indexer = Indexer(self.store, self.model, model_id, self.vector_index(model_id),
                              self.index_file(model_id), self.config, options, model_lock=self.model_lock)
            return indexer.index_reader(reader, name=name, cancel=cancel, progress=progress)

    def remove_video(self, video_id: int) -> int:
        """Deletes a video, its rows, its vectors and (when no other stored video has the same content)
        its browser preview; returns how many detections went."""
        video = self.store.get_video(video_id)
        index = self.vector_index(video.model_id)
        ids = self.store.remove_video(video_id)
        index.remove(ids)
        index.save(self.index_file(video.model_id))
        remove_unused_preview(self.config, self.store.list_videos(), video.content_hash)
        return len(ids)

    # -- search ---------------------------------------------------------------------------------------

    def searcher(self, model_id: int | None = None) -> Searcher:
        """A searcher over one model's detections (default: the loaded model's)."""
        model_id = self.model_id if model_id is None else model_id
        embed = self.embed_image if model_id == self._model_id else None
        return Searcher(self.store, self.vector_index(model_id), model_id, embed)

    def _model_of_detection(self, detection_id: int) -> int:
        found = self.store.fetch_detections([detection_id])
        if not found:
            raise ValueError(f"no detection with id {detection_id}")
        return self.store.get_video(found[0].video_id).model_id

    def search_detection(self, detection_id: int, top_k: int = 10,
                         filters: SearchFilters | None = None) -> SearchResult:
        searcher = self.searcher(self._model_of_detection(detection_id))
        return searcher.search(searcher.query_detection(detection_id), top_k, filters)

    def search_click(self, video_id: int, frame_index: int, x: float, y: float, top_k: int = 10,
                     filters: SearchFilters | None = None) -> SearchResult:
        try:
            model_id = self.store.get_video(video_id).model_id
        except KeyError:
            raise ValueError(f"no video with id {video_id}") from None
        searcher = self.searcher(model_id)
        return searcher.search(searcher.query_click(video_id, frame_index, x, y), top_k, filters)

    def search_image(self, image: np.ndarray, top_k: int = 10,
                     filters: SearchFilters | None = None) -> SearchResult:
        searcher = Searcher(self.store, self.vector_index(self.model_id), self.model_id, self.embed_image)
        return searcher.search(searcher.query_image(image), top_k, filters)

    def crops(self, hits: list[Hit], pad: float = 0.1) -> list[np.ndarray]:
        """RGB crops of hits, read from their video files."""
        return crop_hits(hits, pad, self.config)

    # -- videos, stats, export -------------------------------------------------------------------------

    def resolve_video(self, spec: str | int) -> VideoRecord:
        """A video by id, file name or path; ValueError when none or several match."""
        text = str(spec).strip()
        if text.isdigit():
            try:
                return self.store.get_video(int(text))
            except KeyError:
                raise ValueError(f"no video with id {text}") from None
        resolved = str(Path(text).expanduser().resolve())
        matches = [v for v in self.store.list_videos() if text in (v.name, v.path) or v.path == resolved]
        if not matches:
            raise ValueError(f"no video named {text!r} (use `stats` to list them)")
        if len(matches) > 1:
            ids = [v.id for v in matches]
            raise ValueError(f"{len(matches)} videos match {text!r} (ids {ids}); name one by its id")
        return matches[0]

    def stats(self) -> dict[str, Any]:
        """Database counts, the videos and, per model, the vector index size."""
        out = self.store.stats()
        out["models_detail"] = []
        for m in self.store.list_models():
            out["models_detail"].append({"id": m.id, "name": m.name, "revision": m.revision,
                                         "embedding_dim": m.embedding_dim,
                                         "index_vectors": len(self.vector_index(m.id)),
                                         "index_file": str(self.index_file(m.id))})
        out["videos_detail"] = [
            {"id": v.id, "name": v.name, "status": v.status, "model_id": v.model_id, "frames": v.n_frames,
             "fps": v.fps, "duration_s": v.duration_s, "indexed_frames": len(self.store.list_frames(v.id)),
             "error": v.error, "path": v.path}
            for v in self.store.list_videos()
        ]
        return out

    def export_rows(self, chunk: int = 2000) -> Iterator[dict[str, Any]]:
        """Every detection as a flat dict (`EXPORT_FIELDS`), model by model, by id."""
        for m in self.store.list_models():
            ids = self.store.embedding_ids(m.id)
            for lo in range(0, len(ids), chunk):
                for d in self.store.fetch_detections(ids[lo:lo + chunk].tolist()):
                    x1, y1, x2, y2 = d.box
                    yield {"detection_id": d.id, "model_id": m.id, "video_id": d.video_id,
                           "video_name": d.video_name, "video_path": d.video_path,
                           "frame_index": d.frame_index, "timestamp_s": d.timestamp_s,
                           "x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": d.score}
