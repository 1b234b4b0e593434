"""The store: every read and write of the app's database goes through `Store`.

SQLite (WAL) is the source of truth; the FAISS indexes are derived from it. One engine per store and
one session per operation (`with self.session.begin()`), so a method is one transaction and objects
never leak out attached to a session: methods return frozen records and numpy arrays.

The indexer's unit of work is `write_batch`: the frames of one batch, their detections and routing
thumbnails, and the video's resume point (`last_committed_frame`) are written in ONE transaction, so a
crash loses at most the batch in flight and a restart resumes right after the last committed frame.

Only portable SQL (Core/ORM constructs, bound parameters, INSERT..RETURNING which SQLite >= 3.35 and
PostgreSQL both support), so `postgresql+psycopg://...` works through the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from sqlalchemy import Engine, create_engine, delete, event, func, insert, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from app.store.blobs import decode_embeddings, decode_mask_png, encode_embedding, encode_mask_png, file_sha256
from app.store.models import (
    SCHEMA_VERSION,
    VIDEO_STATUSES,
    Base,
    Detection,
    Frame,
    Model,
    RoutingThumbnail,
    SchemaVersion,
    Video,
    utcnow,
)

if TYPE_CHECKING:
    from app.config import AppConfig

log = logging.getLogger(__name__)


class VideoMeta(Protocol):
    """What the store keeps of a video's metadata (`app.video.VideoInfo` provides it)."""

    fps: float
    n_frames: int
    width: int
    height: int
    duration_s: float
    codec: str


class SchemaVersionError(ValueError):
    """The database was created by another version of the app (or by something else)."""


# -- records returned to callers ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRecord:
    id: int
    name: str
    revision: str
    config_hash: str
    embedding_dim: int


@dataclass(frozen=True)
class VideoRecord:
    id: int
    content_hash: str
    path: str
    name: str
    fps: float
    n_frames: int
    width: int
    height: int
    duration_s: float
    codec: str
    status: str
    error: str | None
    model_id: int
    last_committed_frame: int
    created_at: datetime
    updated_at: datetime

    @property
    def resume_frame(self) -> int:
        """First frame index still to process (0 for a new video)."""
        return self.last_committed_frame + 1


@dataclass(frozen=True)
class DetectionRecord:
    """A detection with its frame and video, as search results need them."""

    id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float
    frame_id: int
    frame_index: int
    timestamp_s: float
    video_id: int
    video_name: str
    video_path: str


@dataclass
class FrameWrite:
    """What the indexer writes for one processed frame (boxes may be empty)."""

    frame_index: int
    timestamp_s: float
    boxes: np.ndarray  # (N, 4) float, x1 y1 x2 y2 in frame pixels
    scores: np.ndarray  # (N,)
    embeddings: np.ndarray  # (N, D) float32
    masks: Mapping[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (task, layer) -> (E, h, w)


def _aware(t: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _video_record(v: Video) -> VideoRecord:
    return VideoRecord(
        id=v.id, content_hash=v.content_hash, path=v.path, name=v.name, fps=v.fps, n_frames=v.n_frames,
        width=v.width, height=v.height, duration_s=v.duration_s, codec=v.codec, status=v.status,
        error=v.error, model_id=v.model_id, last_committed_frame=v.last_committed_frame,
        created_at=_aware(v.created_at), updated_at=_aware(v.updated_at),
    )


def _model_record(m: Model) -> ModelRecord:
    return ModelRecord(id=m.id, name=m.name, revision=m.revision, config_hash=m.config_hash,
                       embedding_dim=m.embedding_dim)


_DETECTION_COLUMNS = (
    Detection.id, Detection.x1, Detection.y1, Detection.x2, Detection.y2, Detection.score,
    Frame.id, Frame.frame_index, Frame.timestamp_s, Video.id, Video.name, Video.path,
)


def _detection_record(row: Any) -> DetectionRecord:
    det_id, x1, y1, x2, y2, score, frame_id, frame_index, ts, video_id, name, path = row
    return DetectionRecord(id=det_id, box=(x1, y1, x2, y2), score=score, frame_id=frame_id,
                           frame_index=frame_index, timestamp_s=ts, video_id=video_id, video_name=name,
                           video_path=path)


# -- engine ------------------------------------------------------------------------------------------


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per connection: enforce foreign keys (cascades), WAL so readers never block the indexer."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints, safe with WAL
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str, echo: bool = False) -> Engine:
    """An engine for `url`; SQLite files get their folder created and the per-connection pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


# -- the store ---------------------------------------------------------------------------------------


class Store:
    """Typed access to the app database. `Store(url)` creates the schema or checks its version."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._init_schema()
        except Exception:
            self.engine.dispose()
            raise

    @classmethod
    def from_config(cls, config: AppConfig) -> Store:
        """From an `AppConfig` (its `db_url`)."""
        return cls(config.db_url)

    @property
    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def _init_schema(self) -> None:
        tables = set(inspect(self.engine).get_table_names())
        ours = set(Base.metadata.tables)
        if SchemaVersion.__tablename__ not in tables:
            if tables & ours:
                raise SchemaVersionError(
                    f"database {self._safe_url} has app tables but no schema_version table; it was not "
                    "created by this app version; use a new database or migrate it")
            Base.metadata.create_all(self.engine)
            try:
                with self.session.begin() as s:
                    s.add(SchemaVersion(id=1, version=SCHEMA_VERSION))
            except IntegrityError:  # another process created it at the same moment
                pass
        with self.session() as s:
            found = s.scalars(select(SchemaVersion.version)).all()
        if found != [SCHEMA_VERSION]:
            raise SchemaVersionError(
                f"database {self._safe_url} has schema version {found[0] if found else 'none'}, this app "
                f"needs version {SCHEMA_VERSION}; use a new database or migrate it")
        Base.metadata.create_all(self.engine)  # no-op unless a table was dropped by hand

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- models --------------------------------------------------------------------------------------

    def register_model(self, name: str, config_hash: str, embedding_dim: int,
                       revision: str = "") -> ModelRecord:
        """The model with this (name, revision, config hash), created on first use."""
        if embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        query = select(Model).where(Model.name == name, Model.revision == revision,
                                    Model.config_hash == config_hash)
        with self.session.begin() as s:
            model = s.scalars(query).one_or_none()
            if model is None:
                model = Model(name=name, revision=revision, config_hash=config_hash,
                              embedding_dim=embedding_dim)
                s.add(model)
                s.flush()
            elif model.embedding_dim != embedding_dim:
                raise ValueError(f"model {name}@{revision} ({config_hash}) is registered with embedding_dim "
                                 f"{model.embedding_dim}, not {embedding_dim}")
            return _model_record(model)

    def get_model(self, model_id: int) -> ModelRecord:
        with self.session() as s:
            model = s.get(Model, model_id)
            if model is None:
                raise KeyError(f"no model with id {model_id}")
            return _model_record(model)

    def list_models(self) -> list[ModelRecord]:
        with self.session() as s:
            return [_model_record(m) for m in s.scalars(select(Model).order_by(Model.id))]

    # -- videos --------------------------------------------------------------------------------------

    def add_video(self, path: str | Path, model_id: int, info: VideoMeta, *, content_hash: str | None = None,
                  name: str | None = None) -> tuple[VideoRecord, bool]:
        """Registers a video for `model_id` from its `VideoInfo`; returns (record, created). A file whose
        content was already added for this model returns the existing record and created=False."""
        path = Path(path)
        content_hash = content_hash or file_sha256(path)
        existing = select(Video).where(Video.content_hash == content_hash, Video.model_id == model_id)
        try:
            with self.session.begin() as s:
                found = s.scalars(existing).one_or_none()
                if found is not None:
                    return _video_record(found), False
                if s.get(Model, model_id) is None:
                    raise KeyError(f"no model with id {model_id}")
                video = Video(
                    content_hash=content_hash, path=str(path.resolve()), name=name or path.name,
                    fps=info.fps, n_frames=info.n_frames, width=info.width, height=info.height,
                    duration_s=info.duration_s, codec=info.codec, status="pending", model_id=model_id,
                )
                s.add(video)
                s.flush()
                return _video_record(video), True
        except IntegrityError:  # a concurrent add of the same file won the race
            with self.session() as s:
                return _video_record(s.scalars(existing).one()), False

    def _one_video(self, query: Any) -> Video:
        with self.session() as s:
            return s.scalars(query).one()

    def get_video(self, video_id: int) -> VideoRecord:
        with self.session() as s:
            video = s.get(Video, video_id)
            if video is None:
                raise KeyError(f"no video with id {video_id}")
            return _video_record(video)

    def list_videos(self, model_id: int | None = None, status: str | None = None) -> list[VideoRecord]:
        query = select(Video).order_by(Video.id)
        if model_id is not None:
            query = query.where(Video.model_id == model_id)
        if status is not None:
            query = query.where(Video.status == status)
        with self.session() as s:
            return [_video_record(v) for v in s.scalars(query)]

    def set_status(self, video_id: int, status: str, error: str | None = None) -> None:
        """Moves a video to `status` (pending | indexing | done | failed); `error` says why it failed."""
        if status not in VIDEO_STATUSES:
            raise ValueError(f"status must be one of {VIDEO_STATUSES}, got {status!r}")
        with self.session.begin() as s:
            done = s.execute(update(Video).where(Video.id == video_id)
                             .values(status=status, error=error, updated_at=utcnow()))
            if done.rowcount != 1:
                raise KeyError(f"no video with id {video_id}")

    def remove_video(self, video_id: int) -> np.ndarray:
        """Deletes a video and (by cascade) its frames, detections and thumbnails; returns the removed
        detection ids (int64) so that the caller can drop them from the vector index."""
        ids_query = (select(Detection.id).join(Frame, Detection.frame_id == Frame.id)
                     .where(Frame.video_id == video_id))
        with self.session.begin() as s:
            ids = np.fromiter(s.scalars(ids_query), dtype=np.int64)
            done = s.execute(delete(Video).where(Video.id == video_id))
            if done.rowcount != 1:
                raise KeyError(f"no video with id {video_id}")
        return ids

    # -- the indexer's batch write ------------------------------------------------------------------

    def write_batch(self, video_id: int, frames: Sequence[FrameWrite]) -> np.ndarray:
        """Writes processed frames with their detections and thumbnails and advances the video's resume
        point, all in one transaction. Frame indices must increase and follow the resume point.
        Returns the new detection ids (int64), in input order (frame by frame, box by box)."""
        if not frames:
            return np.zeros(0, np.int64)
        indices = [f.frame_index for f in frames]
        if any(b <= a for a, b in zip(indices, indices[1:], strict=False)):
            raise ValueError(f"write_batch: frame indices must increase strictly, got {indices}")
        with self.session.begin() as s:
            video = s.get(Video, video_id)
            if video is None:
                raise KeyError(f"no video with id {video_id}")
            if indices[0] <= video.last_committed_frame:
                raise ValueError(f"write_batch: frame {indices[0]} of video {video_id} is at or before its "
                                 f"last committed frame {video.last_committed_frame}")
            dim = s.get_one(Model, video.model_id).embedding_dim
            det_rows, thumb_rows = self._batch_rows(frames, dim)
            frame_ids = s.scalars(
                insert(Frame).returning(Frame.id, sort_by_parameter_order=True),
                [{"video_id": video_id, "frame_index": f.frame_index, "timestamp_s": float(f.timestamp_s)}
                 for f in frames],
            ).all()
            for row in det_rows:
                row["frame_id"] = frame_ids[row.pop("frame")]
            for row in thumb_rows:
                row["frame_id"] = frame_ids[row.pop("frame")]
            det_ids: list[int] = []
            if det_rows:
                det_ids = list(s.scalars(
                    insert(Detection).returning(Detection.id, sort_by_parameter_order=True), det_rows))
            if thumb_rows:
                s.execute(insert(RoutingThumbnail), thumb_rows)
            video.last_committed_frame = indices[-1]
            if video.status == "pending":
                video.status = "indexing"
            video.updated_at = utcnow()
        return np.asarray(det_ids, dtype=np.int64)

    @staticmethod
    def _batch_rows(frames: Sequence[FrameWrite], dim: int) -> tuple[list[dict], list[dict]]:
        """Validated insert rows; 'frame' is the position in the batch, replaced by the frame id later."""
        det_rows: list[dict] = []
        thumb_rows: list[dict] = []
        for pos, f in enumerate(frames):
            boxes = np.asarray(f.boxes, dtype=np.float64)
            scores = np.asarray(f.scores, dtype=np.float64)
            emb = np.asarray(f.embeddings, dtype=np.float32)
            n = len(scores)
            if scores.shape != (n,) or boxes.reshape(-1).size != 4 * n or emb.reshape(-1).size != dim * n:
                raise ValueError(f"frame {f.frame_index}: boxes {boxes.shape}, scores {scores.shape} and "
                                 f"embeddings {emb.shape} do not match (N, 4), (N,), (N, {dim})")
            boxes, emb = boxes.reshape(n, 4), emb.reshape(n, dim)
            if not np.isfinite(emb).all() or not np.isfinite(boxes).all():
                raise ValueError(f"frame {f.frame_index}: boxes and embeddings must be finite")
            for box, score, vec in zip(boxes, scores, emb, strict=True):
                x1, y1, x2, y2 = (float(v) for v in box)
                det_rows.append({"frame": pos, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": float(score),
                                 "embedding": encode_embedding(vec)})
            for (task, layer), masks in f.masks.items():
                masks = np.asarray(masks)
                if masks.ndim != 3:
                    raise ValueError(f"frame {f.frame_index}: masks for ({task}, {layer}) must be "
                                     f"(experts, h, w), got shape {masks.shape}")
                for expert, mask in enumerate(masks):
                    thumb_rows.append({"frame": pos, "task": task, "layer": layer, "expert": expert,
                                       "png": encode_mask_png(mask)})
        return det_rows, thumb_rows

    # -- embeddings (the vector index is rebuilt from these) --------------------------------------

    def _model_detections(self, model_id: int) -> Any:
        return (select(Detection.id).join(Frame, Detection.frame_id == Frame.id)
                .join(Video, Frame.video_id == Video.id).where(Video.model_id == model_id))

    def iter_embeddings(self, model_id: int,
                        chunk_size: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields (ids int64 (n,), vectors float32 (n, dim)) for every detection of a model, by id order,
        one short read transaction per chunk (keyset pagination, so writers are never blocked long)."""
        dim = self.get_model(model_id).embedding_dim
        last = -1
        while True:
            query = (self._model_detections(model_id).add_columns(Detection.embedding)
                     .where(Detection.id > last).order_by(Detection.id).limit(chunk_size))
            with self.session() as s:
                rows = s.execute(query).all()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, decode_embeddings([r[1] for r in rows], dim)
            last = int(ids[-1])

    def embedding_ids(self, model_id: int) -> np.ndarray:
        """Sorted int64 ids of every detection of a model (what its vector index must hold)."""
        with self.session() as s:
            result = s.execute(self._model_detections(model_id).order_by(Detection.id))
            return np.fromiter(result.scalars(), dtype=np.int64)

    def get_embeddings(self, ids: Sequence[int]) -> np.ndarray:
        """float32 (len(ids), dim) embeddings in the order of `ids`; an unknown id is a KeyError."""
        ids = [int(i) for i in ids]
        query = (select(Detection.id, Detection.embedding, Model.embedding_dim)
                 .join(Frame, Detection.frame_id == Frame.id).join(Video, Frame.video_id == Video.id)
                 .join(Model, Video.model_id == Model.id).where(Detection.id.in_(ids)))
        with self.session() as s:
            rows = {r[0]: r for r in s.execute(query)}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise KeyError(f"no detection with id {missing[0]}")
        if not ids:
            return np.zeros((0, 0), np.float32)
        dims = {rows[i][2] for i in ids}
        if len(dims) != 1:
            raise ValueError("get_embeddings: the ids belong to models with different embedding sizes")
        return decode_embeddings([rows[i][1] for i in ids], dims.pop())

    # -- detections for search results --------------------------------------------------------------

    def fetch_detections(self, ids: Sequence[int]) -> list[DetectionRecord]:
        """Detections with their frame and video, in the order of `ids` (unknown ids are left out), in
        one join query."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        query = (select(*_DETECTION_COLUMNS).join(Frame, Detection.frame_id == Frame.id)
                 .join(Video, Frame.video_id == Video.id).where(Detection.id.in_(ids)))
        with self.session() as s:
            found = {r[0]: _detection_record(r) for r in s.execute(query)}
        return [found[i] for i in ids if i in found]

    def frame_detections(self, video_id: int, frame_index: int) -> list[DetectionRecord]:
        """The detections of one frame of a video, by descending score."""
        query = (select(*_DETECTION_COLUMNS).join(Frame, Detection.frame_id == Frame.id)
                 .join(Video, Frame.video_id == Video.id)
                 .where(Video.id == video_id, Frame.frame_index == frame_index)
                 .order_by(Detection.score.desc(), Detection.id))
        with self.session() as s:
            return [_detection_record(r) for r in s.execute(query)]

    def list_frames(self, video_id: int) -> list[tuple[int, float, int]]:
        """(frame_index, timestamp_s, n_detections) of every processed frame of a video, in order."""
        query = (select(Frame.frame_index, Frame.timestamp_s, func.count(Detection.id))
                 .outerjoin(Detection, Detection.frame_id == Frame.id).where(Frame.video_id == video_id)
                 .group_by(Frame.id, Frame.frame_index, Frame.timestamp_s).order_by(Frame.frame_index))
        with self.session() as s:
            return [(int(i), float(t), int(n)) for i, t, n in s.execute(query)]

    def get_routing(self, video_id: int, frame_index: int) -> dict[tuple[str, str], np.ndarray]:
        """Expert-mask thumbnails of one frame: (task, layer) -> float32 (experts, h, w) in [0, 1]."""
        query = (select(RoutingThumbnail.task, RoutingThumbnail.layer, RoutingThumbnail.expert,
                        RoutingThumbnail.png).join(Frame, RoutingThumbnail.frame_id == Frame.id)
                 .where(Frame.video_id == video_id, Frame.frame_index == frame_index)
                 .order_by(RoutingThumbnail.task, RoutingThumbnail.layer, RoutingThumbnail.expert))
        grouped: dict[tuple[str, str], list[np.ndarray]] = {}
        with self.session() as s:
            for task, layer, _expert, png in s.execute(query):
                grouped.setdefault((task, layer), []).append(decode_mask_png(png))
        return {key: np.stack(masks) for key, masks in grouped.items()}

    # -- stats ---------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts of every table, videos per status, and the database file size for SQLite."""
        with self.session() as s:
            out: dict[str, Any] = {
                "models": s.scalar(select(func.count(Model.id))),
                "videos": s.scalar(select(func.count(Video.id))),
                "frames": s.scalar(select(func.count(Frame.id))),
                "detections": s.scalar(select(func.count(Detection.id))),
                "routing_thumbnails": s.scalar(select(func.count(RoutingThumbnail.id))),
                "videos_by_status": dict.fromkeys(VIDEO_STATUSES, 0),
            }
            for status, n in s.execute(select(Video.status, func.count(Video.id)).group_by(Video.status)):
                out["videos_by_status"][status] = n
        database = self.engine.url.database
        if self.engine.url.get_backend_name() == "sqlite" and database and Path(database).exists():
            out["db_bytes"] = Path(database).stat().st_size
        return out
