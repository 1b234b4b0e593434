"""Binary encodings of what the store keeps as blobs: embeddings and expert-mask thumbnails.

Embeddings are raw little-endian float32 (portable, no pickle, decodes with one `np.frombuffer` for a
whole chunk). Masks in [0, 1] are 8-bit grey PNGs: lossless at that depth and a few hundred bytes for
a 32x32 thumbnail.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

EMBEDDING_DTYPE = np.dtype("<f4")


def encode_embedding(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=EMBEDDING_DTYPE).tobytes()


def decode_embeddings(blobs: list[bytes], dim: int) -> np.ndarray:
    """(N, dim) float32 from N blobs; a blob of the wrong size is an error, not a silent reshape."""
    if not blobs:
        return np.zeros((0, dim), np.float32)
    raw = b"".join(blobs)
    if len(raw) != len(blobs) * dim * EMBEDDING_DTYPE.itemsize:
        raise ValueError(f"embedding blobs do not all hold {dim} float32 values")
    return np.frombuffer(raw, dtype=EMBEDDING_DTYPE).reshape(len(blobs), dim).astype(np.float32)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A 2-D mask with values in [0, 1] as an 8-bit grey PNG."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    grey = np.clip(np.rint(mask * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", grey)
    if not ok:
        raise ValueError(f"cannot encode a mask of shape {mask.shape} as PNG")
    return buf.tobytes()


def decode_mask_png(data: bytes) -> np.ndarray:
    """float32 (H, W) in [0, 1] from `encode_mask_png` bytes."""
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError("routing thumbnail blob is not a valid PNG")
    return grey.astype(np.float32) / 255.0


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content (streamed), the identity used to find a re-added video."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def id_checksum(ids: np.ndarray) -> str:
    """Order-independent fingerprint of a set of int64 ids (sha256 of the sorted values)."""
    ids = np.sort(np.asarray(ids, dtype="<i8").ravel())
    return hashlib.sha256(ids.tobytes()).hexdigest()
