"""Database schema (SQLAlchemy 2.0 typed ORM): models, videos, frames, detections, routing thumbnails.

Only portable types and constraints (Integer, Float, String, Text, LargeBinary, DateTime, CHECK,
UNIQUE, ON DELETE CASCADE), so the same schema serves SQLite and PostgreSQL. Deleting a video deletes
its frames, detections and thumbnails in the database itself (foreign keys with ON DELETE CASCADE;
SQLite enforces them because the store turns `PRAGMA foreign_keys` on for every connection).

Bump SCHEMA_VERSION with any change to these tables: a store refuses a database of another version.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 1
VIDEO_STATUSES = ("pending", "indexing", "done", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), bytes: LargeBinary, float: Float}


class SchemaVersion(Base):
    """One row: the schema version the database was created with."""

    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int]


class Model(Base):
    """A person-search model; its embeddings live in their own space (and FAISS index)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "revision", "config_hash", name="uq_models_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    revision: Mapped[str] = mapped_column(String(100), default="")
    config_hash: Mapped[str] = mapped_column(String(64))
    embedding_dim: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    videos: Mapped[list[Video]] = relationship(back_populates="model", passive_deletes=True)


class Video(Base):
    """A video indexed with one model; (content hash, model) is unique, so a re-added file is found again."""

    __tablename__ = "videos"
    __table_args__ = (
        UniqueConstraint("content_hash", "model_id", name="uq_videos_hash_model"),
        CheckConstraint(f"status IN {VIDEO_STATUSES!r}", name="ck_videos_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the file, hex
    path: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(255))
    fps: Mapped[float]
    n_frames: Mapped[int]
    width: Mapped[int]
    height: Mapped[int]
    duration_s: Mapped[float]
    codec: Mapped[str] = mapped_column(String(32), default="unknown")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    last_committed_frame: Mapped[int] = mapped_column(default=-1)  # resume point: -1 = nothing written
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship(back_populates="videos")
    frames: Mapped[list[Frame]] = relationship(back_populates="video", passive_deletes=True)


class Frame(Base):
    """A sampled frame that was processed (it exists even when nobody was detected in it)."""

    __tablename__ = "frames"
    __table_args__ = (UniqueConstraint("video_id", "frame_index", name="uq_frames_video_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    frame_index: Mapped[int]
    timestamp_s: Mapped[float]

    video: Mapped[Video] = relationship(back_populates="frames")
    detections: Mapped[list[Detection]] = relationship(back_populates="frame", passive_deletes=True)


class Detection(Base):
    """A detected person: box in frame pixels (x1, y1, x2, y2), score, float32 embedding blob."""

    __tablename__ = "detections"
    __table_args__ = (Index("ix_detections_frame_id", "frame_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)  # also the FAISS id
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"))
    x1: Mapped[float]
    y1: Mapped[float]
    x2: Mapped[float]
    y2: Mapped[float]
    score: Mapped[float]
    embedding: Mapped[bytes]  # little-endian float32, embedding_dim values

    frame: Mapped[Frame] = relationship(back_populates="detections")


class RoutingThumbnail(Base):
    """One expert's spatial mask for one adapted layer and task in one frame, as a grey PNG."""

    __tablename__ = "routing_thumbnails"
    __table_args__ = (
        UniqueConstraint("frame_id", "task", "layer", "expert", name="uq_thumbnails_identity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(32))
    layer: Mapped[str] = mapped_column(String(200))
    expert: Mapped[int]
    png: Mapped[bytes]
