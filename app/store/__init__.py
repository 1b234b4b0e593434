"""The app database (SQLAlchemy 2.0; SQLite by default, PostgreSQL through the same code).

`models.py` holds the schema, `repository.py` the `Store` (all reads and writes), `blobs.py` the
encodings of embeddings and mask thumbnails.
"""

from app.store.blobs import decode_mask_png, encode_mask_png, file_sha256, id_checksum
from app.store.models import SCHEMA_VERSION, VIDEO_STATUSES
from app.store.repository import (
    DetectionRecord,
    FrameWrite,
    ModelRecord,
    SchemaVersionError,
    Store,
    VideoRecord,
    make_engine,
)

__all__ = [
    "SCHEMA_VERSION",
    "VIDEO_STATUSES",
    "DetectionRecord",
    "FrameWrite",
    "ModelRecord",
    "SchemaVersionError",
    "Store",
    "VideoRecord",
    "decode_mask_png",
    "encode_mask_png",
    "file_sha256",
    "id_checksum",
    "make_engine",
]
