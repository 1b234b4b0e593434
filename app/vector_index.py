"""FAISS index of one model's detection embeddings (ids = detection ids of the store).

Why this shape:
- Inner product on L2-normalised vectors = cosine similarity; vectors and queries are normalised here,
  so a caller cannot forget it.
- Exact search (`IndexFlatIP`) while the collection is small; past `ann_threshold` vectors the index
  becomes approximate, of kind `ann_kind`. All kinds sit in an `IndexIDMap2`, which maps our int64 ids
  and reconstructs a stored vector by id.
- `ann_kind="pq_refine"` (default, ours): `IndexPQFastScan` (4-bit PQ, SIMD scan of all codes) proposes
  `refine_k_factor * k` candidates that `IndexRefineFlat` re-ranks with the exact vectors. Why not
  HNSW, as DESIGN.md first said: bench/bench_search.py on random unit 256-d vectors (2 busy cores)
  measured HNSW (M 32, efC 64) at 100k at recall@10 0.89 for 21 ms/query (ef 1024) - no better than
  exact search - and 164 s to build, while PQ128x4fs + refine (k_factor 50) reaches recall@10 0.99 at
  1M in ~5 ms (~7 ms with the SQLite join) and builds from SQLite in ~40 s. Build time matters here:
  the index is rebuilt from SQLite at open when it disagrees, and the flat -> approximate switch
  happens inside the indexer's `add`.
  Removal rebuilds the index from its own exact vectors, reusing the trained codebooks (seconds at 1M).
- `ann_kind="hnsw"`: `IndexHNSWFlat` (inner product), kept for data with low intrinsic dimension,
  where it is faster. HNSW cannot remove vectors; removal (ours) tombstones the entry: its id in the
  id map becomes -1 and searches pass a selector that excludes -1, so tombstones live inside the FAISS
  file itself; once they pass a quarter of the entries the index is rebuilt from its live vectors.
- Searches run on `search_threads` OpenMP threads (default 1). The app searches one query at a time,
  which FAISS cannot split usefully below ~1M flat vectors, and OpenMP's spinning threads cost tens of
  milliseconds per call when the cores are busy (measured: flat 10k, 0.3 ms on 1 thread vs 36 ms on 2
  while the indexer runs). `omp_set_num_threads` is per calling thread (libgomp), so builds running in
  other threads keep their own setting.
- SQLite is the source of truth. The file is written atomically (temp file in the same folder, fsync,
  `os.replace`, fsync of the folder) behind a small header with a CRC32 of the payload, so a torn or
  corrupted file is detected; `sync_with_store` compares the count and an id-set checksum with the
  store at open and rebuilds from the stored embeddings when anything disagrees.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np

from app.store.blobs import id_checksum

if TYPE_CHECKING:
    from app.config import AppConfig

log = logging.getLogger(__name__)

_MAGIC = b"FSLORA-FAISS\n"
_FORMAT = 1
_TOMBSTONE = -1
_COMPACT_FRACTION = 0.25  # rebuild an HNSW index once this share of its entries are tombstones


class IndexFileError(ValueError):
    """An index file is missing its header, truncated, corrupted or of another shape."""


ANN_KINDS = ("pq_refine", "hnsw")


@dataclass(frozen=True)
class IndexParams:
    """When to switch from exact to approximate search, and how to build and search each kind."""

    ann_threshold: int = 100_000  # vectors above which the index becomes `ann_kind`
    ann_kind: str = "pq_refine"  # "pq_refine" | "hnsw"
    pq_m: int = 128  # 4-bit sub-quantizers (must divide the dimension): 64-byte codes at dim 256
    pq_train_size: int = 20_000  # vectors sampled to train the PQ codebooks
    refine_k_factor: int = 50  # PQ candidates re-ranked exactly = k_factor * k
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    search_threads: int = 1  # OpenMP threads per search call; 0 = FAISS default (all cores)

    def __post_init__(self) -> None:
        if self.ann_kind not in ANN_KINDS:
            raise ValueError(f"IndexParams.ann_kind must be one of {ANN_KINDS}, got {self.ann_kind!r}")
        for name in ("pq_m", "pq_train_size", "refine_k_factor", "hnsw_m", "hnsw_ef_construction",
                     "hnsw_ef_search"):
            if getattr(self, name) <= 0:
                raise ValueError(f"IndexParams.{name} must be positive, got {getattr(self, name)!r}")
        if self.ann_threshold < 0 or self.search_threads < 0:
            raise ValueError("IndexParams.ann_threshold and search_threads must be >= 0")

    @classmethod
    def from_config(cls, config: AppConfig) -> IndexParams:
        """From an `AppConfig` (fields of the same names)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def _as_matrix(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """A normalised float32 C-contiguous copy of (n, dim) `vectors` (a single (dim,) vector is n = 1)."""
    x = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {np.shape(vectors)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    x = np.ascontiguousarray(x)
    faiss.normalize_L2(x)
    return x


class VectorIndex:
    """A cosine-similarity index over (id, vector) pairs; thread-safe (one lock around every call)."""

    def __init__(self, dim: int, params: IndexParams | None = None, *, kind: str = "flat",
                 train_vectors: np.ndarray | None = None) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if kind not in ("flat", *ANN_KINDS):
            raise ValueError(f"kind must be 'flat' or one of {ANN_KINDS}, got {kind!r}")
        self.dim = dim
        self.params = params or IndexParams()
        self._lock = threading.RLock()
        self._set_index(self._new_index(kind, train_vectors))

    # -- construction ---------------------------------------------------------------------------------

    def _set_index(self, index: faiss.IndexIDMap2) -> None:
        self._index = index
        inner = faiss.downcast_index(index.index)
        self._kind = "hnsw" if isinstance(inner, faiss.IndexHNSW) else \
            "pq_refine" if isinstance(inner, faiss.IndexRefine) else "flat"
        self._tombstones = int(np.count_nonzero(self._id_map() == _TOMBSTONE)) if index.ntotal else 0

    def _new_index(self, kind: str, train_vectors: np.ndarray | None = None,
                   trained_base: faiss.Index | None = None) -> faiss.IndexIDMap2:
        """An empty index of `kind`; pq_refine needs `train_vectors` or a trained base to copy."""
        p = self.params
        if kind == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = p.hnsw_ef_construction
            inner.hnsw.efSearch = p.hnsw_ef_search
        else:
            if trained_base is not None:
                base = faiss.clone_index(trained_base)
                base.reset()  # keeps the codebooks, drops the codes
            else:
                if self.dim % p.pq_m:
                    raise ValueError(f"IndexParams.pq_m={p.pq_m} must divide the dimension {self.dim}")
                if train_vectors is None or len(train_vectors) < 16 * 39:
                    raise ValueError("a pq_refine index needs at least 624 training vectors")
                base = faiss.IndexPQFastScan(self.dim, p.pq_m, 4, faiss.METRIC_INNER_PRODUCT)
                rng = np.random.default_rng(0)
                sample = train_vectors[rng.permutation(len(train_vectors))[:p.pq_train_size]]
                base.train(np.ascontiguousarray(sample))
            inner = faiss.IndexRefineFlat(base)
            inner.own_fields = True  # the refine index frees its base ...
            base.this.disown()  # ... and Python must not free it a second time
            inner.k_factor = p.refine_k_factor
        index = faiss.IndexIDMap2(inner)
        index.own_fields = True
        inner.this.disown()
        return index

    @classmethod
    def build(cls, batches: Iterable[tuple[np.ndarray, np.ndarray]], dim: int,
              params: IndexParams | None = None, *, expected_count: int = 0) -> VectorIndex:
        """An index filled from (ids, vectors) batches. With `expected_count` past the threshold, an HNSW
        index is built directly; a pq_refine one is trained on the first batches (>= pq_train_size)."""
        params = params or IndexParams()
        if expected_count <= params.ann_threshold:
            index = cls(dim, params)
            for ids, vectors in batches:
                index.add(ids, vectors)
            return index
        if params.ann_kind == "hnsw":
            index = cls(dim, params, kind="hnsw")
            for ids, vectors in batches:
                index.add(ids, vectors)
            return index
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        index = None
        for ids, vectors in batches:
            if index is None:
                pending.append((np.asarray(ids, np.int64), _as_matrix(vectors, dim, "vectors")))
                if sum(len(i) for i, _ in pending) < min(params.pq_train_size, expected_count):
                    continue
                train = np.concatenate([v for _, v in pending])
                index = cls(dim, params, kind="pq_refine", train_vectors=train)
                for pending_ids, pending_vectors in pending:
                    index.add(pending_ids, pending_vectors)
                pending = []
            else:
                index.add(ids, vectors)
        if index is None:  # fewer vectors than announced: build from what there is
            return cls.build(pending, dim, params)
        return index

    # -- properties -----------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """'flat' (exact), 'pq_refine' or 'hnsw' (approximate)."""
        return self._kind

    def _id_map(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map)

    def ids(self) -> np.ndarray:
        """Sorted int64 ids held (tombstones excluded)."""
        with self._lock:
            ids = self._id_map()
        return np.sort(ids[ids != _TOMBSTONE])

    def checksum(self) -> str:
        """`id_checksum` of the ids held: equal to the store's when both hold the same detections."""
        return id_checksum(self.ids())

    @property
    def n_tombstones(self) -> int:
        """Removed entries still in an HNSW graph (0 for the other kinds)."""
        return self._tombstones

    def __len__(self) -> int:
        return int(self._index.ntotal) - self._tombstones

    # -- mutation -------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Adds vectors under their (new, non-negative) int64 ids; past the threshold a flat index is
        first rebuilt as `ann_kind` (one-off: training / graph building over all vectors)."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        x = _as_matrix(vectors, self.dim, "vectors")
        if len(ids) != len(x):
            raise ValueError(f"add: {len(ids)} ids for {len(x)} vectors")
        if len(ids) == 0:
            return
        if (ids < 0).any() or len(np.unique(ids)) != len(ids):
            raise ValueError("add: ids must be non-negative and distinct")
        with self._lock:
            clash = ids[np.isin(ids, self._id_map())]
            if len(clash):
                raise ValueError(f"add: id {int(clash[0])} is already in the index")
            if self.kind == "flat" and len(self) + len(ids) > self.params.ann_threshold:
                self._rebuild(self.params.ann_kind, extra=x)
            self._index.add_with_ids(x, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Removes the given ids (unknown ones are ignored); returns how many were removed."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = ids[ids != _TOMBSTONE]
        if len(ids) == 0:
            return 0
        with self._lock:
            if self.kind == "flat":
                return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
            id_map = self._id_map()
            hit = np.isin(id_map, ids)
            removed = int(hit.sum())
            if not removed:
                return 0
            id_map[hit] = _TOMBSTONE
            faiss.copy_array_to_vector(id_map, self._index.id_map)
            self._index.construct_rev_map()
            self._tombstones += removed
            if self.kind == "pq_refine" or self._tombstones > _COMPACT_FRACTION * self._index.ntotal:
                self._rebuild(self.kind if len(self) > self.params.ann_threshold else "flat")
            return removed

    def _rebuild(self, kind: str, extra: np.ndarray | None = None) -> None:
        """Re-creates the index as `kind` from its live (exact) vectors, dropping tombstones; a pq_refine
        index keeps its codebooks, a new one trains on the live vectors plus `extra`."""
        id_map = self._id_map()
        live = np.flatnonzero(id_map != _TOMBSTONE)
        vectors = self._index.index.reconstruct_n(0, self._index.ntotal)[live]
        log.info("rebuilding %s index of %d vectors as %s", self.kind, len(live), kind)
        trained = None
        if kind == "pq_refine" and self.kind == "pq_refine":
            trained = faiss.downcast_index(faiss.downcast_index(self._index.index).base_index)
        train = vectors if extra is None else np.concatenate([vectors, extra])
        index = self._new_index(kind, train_vectors=train, trained_base=trained)
        if len(live):
            index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(id_map[live]))
        self._set_index(index)

    # -- queries --------------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine similarity: (ids int64 (n, k'), similarities float32 (n, k')), best first, with
        k' = min(k, len(self)); a slot an approximate index could not fill holds id -1."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        q = _as_matrix(queries, self.dim, "queries")
        threads = faiss.omp_get_max_threads()
        if self.params.search_threads:
            faiss.omp_set_num_threads(self.params.search_threads)
        try:
            return self._search(q, k)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            k_eff = min(k, len(self))
            if k_eff == 0:
                return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
            if self.kind == "flat":
                sims, ids = self._index.search(q, k_eff)
            elif self.kind == "pq_refine":
                params = faiss.IndexRefineSearchParameters(k_factor=float(self.params.refine_k_factor))
                sims, ids = self._index.search(q, k_eff, params=params)
            else:
                params = faiss.SearchParametersHNSW(efSearch=max(self.params.hnsw_ef_search, k_eff))
                if self._tombstones:
                    dead = faiss.IDSelectorBatch(np.array([_TOMBSTONE], np.int64))
                    keep = faiss.IDSelectorNot(dead)
                    params.sel = keep  # `dead` and `keep` stay referenced until the search returns
                sims, ids = self._index.search(q, k_eff, params=params)
        return ids.astype(np.int64), sims.astype(np.float32)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (normalised) vectors of `ids`, float32 (n, dim); an unknown id is a KeyError."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty((len(ids), self.dim), np.float32)
        with self._lock:
            for row, i in enumerate(ids):
                try:
                    out[row] = self._index.reconstruct(int(i))  # tombstones are not in the reverse map
                except RuntimeError:
                    raise KeyError(f"id {int(i)} is not in the index") from None
        return out

    # -- persistence ----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Writes the index atomically: a reader sees the old file or the new one, never a torn one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            payload = faiss.serialize_index(self._index)
            header = {"format": _FORMAT, "dim": self.dim, "kind": self.kind, "count": len(self),
                      "payload_bytes": int(payload.nbytes), "crc32": zlib.crc32(payload)}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(_MAGIC + json.dumps(header).encode() + b"\n")
                fh.write(memoryview(payload))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: str | Path, params: IndexParams | None = None) -> VectorIndex:
        """Reads a file written by `save`; FileNotFoundError if absent, IndexFileError if unusable."""
        path = Path(path)
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            raise IndexFileError(f"index file {path}: not an index file (bad magic)")
        end = data.find(b"\n", len(_MAGIC))
        try:
            header = json.loads(data[len(_MAGIC):end])
            dim, size, crc = int(header["dim"]), int(header["payload_bytes"]), int(header["crc32"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexFileError(f"index file {path}: unreadable header ({exc})") from exc
        if header.get("format") != _FORMAT:
            raise IndexFileError(f"index file {path}: format {header.get('format')}, expected {_FORMAT}")
        payload = np.frombuffer(data, dtype=np.uint8, offset=end + 1)
        if payload.nbytes != size:
            raise IndexFileError(f"index file {path}: truncated ({payload.nbytes} of {size} payload bytes)")
        if zlib.crc32(payload) != crc:
            raise IndexFileError(f"index file {path}: corrupted (CRC32 mismatch)")
        try:
            index = faiss.deserialize_index(payload)
        except RuntimeError as exc:
            raise IndexFileError(f"index file {path}: FAISS cannot read it ({str(exc)[:200]})") from exc
        if not isinstance(index, faiss.IndexIDMap2) or index.d != dim:
            raise IndexFileError(f"index file {path}: holds a {type(index).__name__} of dim {index.d}, "
                                 f"expected an IndexIDMap2 of dim {dim}")
        out = cls(dim, params)
        out._set_index(index)
        return out


# -- keeping the index in step with the store ------------------------------------------------------------


class EmbeddingSource(Protocol):
    """What `sync_with_store` needs from `app.store.Store`."""

    def get_model(self, model_id: int) -> Any: ...

    def embedding_ids(self, model_id: int) -> np.ndarray: ...

    def iter_embeddings(
        self, model_id: int, chunk_size: int = ...
    ) -> Iterable[tuple[np.ndarray, np.ndarray]]: ...


@dataclass(frozen=True)
class SyncReport:
    rebuilt: bool
    reason: str  # why it was rebuilt, or "in sync"
    count: int


def index_path(index_dir: str | Path, model_id: int) -> Path:
    """Where the index of a model lives."""
    return Path(index_dir) / f"model-{model_id}.faiss"


def sync_with_store(path: str | Path, store: EmbeddingSource, model_id: int,
                    params: IndexParams | None = None) -> tuple[VectorIndex, SyncReport]:
    """Opens the index at `path` and checks it against the store (count and id-set checksum); when the
    file is missing, unreadable or disagrees, rebuilds it from the stored embeddings and saves it."""
    dim = int(store.get_model(model_id).embedding_dim)
    truth = store.embedding_ids(model_id)
    reason = ""
    try:
        index = VectorIndex.load(path, params)
    except FileNotFoundError:
        reason = "index file missing"
    except IndexFileError as exc:
        reason = str(exc)
    else:
        if index.dim != dim:
            reason = f"index dim {index.dim} != model embedding dim {dim}"
        elif len(index) != len(truth):
            reason = f"index holds {len(index)} vectors, the store {len(truth)}"
        elif index.checksum() != id_checksum(truth):
            reason = "index ids differ from the store's"
    if not reason:
        return index, SyncReport(rebuilt=False, reason="in sync", count=len(index))
    log.warning("rebuilding vector index %s of model %d from the store: %s", path, model_id, reason)
    index = VectorIndex.build(store.iter_embeddings(model_id), dim, params, expected_count=len(truth))
    index.save(path)
    return index, SyncReport(rebuilt=True, reason=reason, count=len(index))
