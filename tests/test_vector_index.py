"""app/vector_index.py: real FAISS indexes, real files, and a real SQLite store as the source of truth."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from app.store import FrameWrite, Store
from app.vector_index import IndexFileError, IndexParams, VectorIndex, index_path, sync_with_store
from app.video import VideoInfo

DIM = 32
EXACT = IndexParams(ann_threshold=10**9)
HNSW = IndexParams(ann_threshold=650, ann_kind="hnsw", hnsw_m=16)
PQ = IndexParams(ann_threshold=650, ann_kind="pq_refine", pq_m=8, refine_k_factor=50)


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top_k(data: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :k]
    return ids[order]


@pytest.mark.parametrize("params", [EXACT, HNSW, PQ], ids=["flat", "hnsw", "pq_refine"])
def test_add_search_remove(params: IndexParams) -> None:
    data = unit_vectors(1000)
    ids = np.arange(1000, dtype=np.int64) * 7 + 3  # ids are detection ids, not positions
    index = VectorIndex(DIM, params)
    index.add(ids[:700], data[:700])
    index.add(ids[700:], data[700:] * 5.0)  # scale does not matter: vectors are normalised
    assert len(index) == 1000 and index.kind == ("flat" if params is EXACT else params.ann_kind)
    found, sims = index.search(data[:20], k=10)
    assert found.shape == sims.shape == (20, 10) and found.dtype == np.int64
    assert np.array_equal(found[:, 0], ids[:20])  # each stored vector finds itself first ...
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)  # ... with cosine similarity 1
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    assert np.allclose(index.vectors(ids[[5, 400]]), data[[5, 400]], atol=1e-6)

    gone = ids[:10]
    assert index.remove(np.concatenate([gone, [999_999]])) == 10
    assert len(index) == 990 and not np.isin(gone, index.ids()).any()
    assert index.kind == ("flat" if params is EXACT else params.ann_kind)
    found, _ = index.search(data[:10], k=10)
    assert not np.isin(found, gone).any()  # removed ids never come back
    assert np.array_equal(index.search(data[10:20], k=1)[0][:, 0], ids[10:20])
    with pytest.raises(KeyError):
        index.vectors(gone[:1])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[20:21], data[20:21])
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        index.add(np.array([1]), np.ones((1, 16)))


def test_flat_search_equals_exact() -> None:
    data, queries = unit_vectors(500, seed=1), unit_vectors(30, seed=2)
    ids = np.arange(500, dtype=np.int64) + 100
    index = VectorIndex(DIM, EXACT)
    index.add(ids, data)
    found, _ = index.search(queries, k=10)
    assert np.array_equal(found, exact_top_k(data, ids, queries, 10))
    small = VectorIndex(DIM, EXACT)
    small.add(ids[:3], data[:3])
    assert small.search(queries[:2], k=10)[0].shape == (2, 3)  # k' = min(k, len)
    assert VectorIndex(DIM).search(queries[:2], k=5)[0].shape == (2, 0)


@pytest.mark.parametrize("kind", ["hnsw", "pq_refine"])
def test_switch_above_threshold_keeps_recall(kind: str) -> None:
    n, dim, k = 6000, 64, 10
    data, queries = unit_vectors(n, dim, seed=3), unit_vectors(100, dim, seed=4)
    ids = np.arange(n, dtype=np.int64)
    params = IndexParams(ann_threshold=2000, ann_kind=kind, hnsw_m=32, hnsw_ef_construction=80,
                         hnsw_ef_search=128, pq_m=16, refine_k_factor=50)
    index = VectorIndex(dim, params)
    index.add(ids[:2000], data[:2000])
    assert index.kind == "flat"
    for lo in range(2000, n, 1000):
        index.add(ids[lo:lo + 1000], data[lo:lo + 1000])
    assert index.kind == kind and len(index) == n
    found, _ = index.search(queries, k)
    truth = exact_top_k(data, ids, queries, k)
    recall = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall


def test_hnsw_tombstones_survive_save_and_compact(tmp_path: Path) -> None:
    data = unit_vectors(400)
    ids = np.arange(400, dtype=np.int64)
    index = VectorIndex(DIM, IndexParams(ann_threshold=100, ann_kind="hnsw", hnsw_m=16))
    index.add(ids, data)
    index.remove(ids[:50])
    assert index.n_tombstones == 50 and len(index) == 350
    index.save(tmp_path / "h.faiss")
    loaded = VectorIndex.load(tmp_path / "h.faiss", index.params)
    assert loaded.kind == "hnsw" and len(loaded) == 350 and loaded.checksum() == index.checksum()
    assert not np.isin(loaded.search(data[:50], k=5)[0], ids[:50]).any()
    loaded.remove(ids[50:150])  # past a quarter of the entries: rebuilt without tombstones
    assert loaded.n_tombstones == 0 and len(loaded) == 250
    assert np.array_equal(loaded.search(data[200:210], k=1)[0][:, 0], ids[200:210])


def test_save_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "idx" / "model-1.faiss"
    old = VectorIndex(DIM, EXACT)
    old.add(np.arange(10), unit_vectors(10))
    old.save(path)
    # a save that dies mid-write (file size limit hit) must leave the previous file intact
    script = textwrap.dedent(f"""
        import resource, signal
        import numpy as np
        from app.vector_index import VectorIndex, IndexParams
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        big = VectorIndex({DIM}, IndexParams(ann_threshold=10**9))
        big.add(np.arange(5000), np.random.default_rng(0).standard_normal((5000, {DIM})))
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            big.save({str(path)!r})
        except OSError as exc:
            print("save failed:", exc.errno)
        else:
            print("save succeeded")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert "save failed" in done.stdout, done.stdout + done.stderr
    again = VectorIndex.load(path)
    assert len(again) == 10 and again.checksum() == old.checksum()
    assert [p.name for p in path.parent.iterdir()] == ["model-1.faiss"]  # no temp file left behind


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage"])
def test_damaged_file_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "i.faiss"
    index = VectorIndex(DIM, EXACT)
    index.add(np.arange(200), unit_vectors(200))
    index.save(path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_byte":
        data[-100] ^= 0xFF  # in the id map at the end: FAISS alone reads this without complaint
    else:
        data = bytearray(b"not an index" * 100)
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=str(path)):
        VectorIndex.load(path)


# -- SQLite is the truth ----------------------------------------------------------------------------------


@pytest.fixture()
def filled_store(tmp_path: Path) -> tuple[Store, int, int]:
    """A real store with one model, two videos and 5 frames x 70 detections each."""
    store = Store(f"sqlite:///{tmp_path / 'app.db'}")
    model = store.register_model("m", "h", DIM)
    rng = np.random.default_rng(5)
    video_ids = []
    for v in range(2):
        video = tmp_path / f"v{v}.avi"
        video.write_bytes(f"video {v}".encode())  # the store hashes the bytes; decoding is not needed
        info = VideoInfo(video, 10.0, 100, 64, 48, 10.0, "MJPG", "decord")
        record, _ = store.add_video(video, model.id, info)
        video_ids.append(record.id)
        frames = [FrameWrite(i * 5, i / 2, np.tile([0.0, 0.0, 10.0, 20.0], (70, 1)), np.full(70, 0.9),
                             unit_vectors(70, seed=int(rng.integers(1 << 30)))) for i in range(5)]
        store.write_batch(record.id, frames)
    yield store, model.id, video_ids[0]
    store.close()


def test_sync_rebuilds_from_store(filled_store: tuple[Store, int, int], tmp_path: Path) -> None:
    store, model_id, first_video = filled_store
    path = index_path(tmp_path / "indexes", model_id)
    index, report = sync_with_store(path, store, model_id, EXACT)
    assert report.rebuilt and report.reason == "index file missing" and report.count == 700 and path.exists()
    ids, vectors = (np.concatenate(parts) for parts in zip(*store.iter_embeddings(model_id), strict=True))
    assert np.array_equal(index.ids(), ids)
    found, sims = index.search(vectors[:5], k=3)
    assert np.array_equal(found[:, 0], ids[:5]) and np.allclose(sims[:, 0], 1.0, atol=1e-5)

    _, report = sync_with_store(path, store, model_id, EXACT)
    assert not report.rebuilt and report.reason == "in sync"

    # the app deleted a video in the store but crashed before updating the index
    store.remove_video(first_video)
    reopened, report = sync_with_store(path, store, model_id, EXACT)
    assert report.rebuilt and "holds 700 vectors, the store 350" in report.reason
    assert np.array_equal(reopened.ids(), store.embedding_ids(model_id))

    # same count, different ids: only the checksum tells
    stale = VectorIndex(DIM, EXACT)
    stale.add(store.embedding_ids(model_id) + 1_000, unit_vectors(350))
    stale.save(path)
    reopened, report = sync_with_store(path, store, model_id, EXACT)
    assert report.rebuilt and report.reason == "index ids differ from the store's"
    assert reopened.checksum() == VectorIndex.load(path).checksum()


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_deleted_or_corrupted_file_is_rebuilt_and_matches(
    filled_store: tuple[Store, int, int], tmp_path: Path, damage: str
) -> None:
    store, model_id, _ = filled_store
    path = index_path(tmp_path / "indexes", model_id)
    original, _ = sync_with_store(path, store, model_id, EXACT)
    queries = unit_vectors(8, seed=9)
    before = original.search(queries, k=10)
    if damage == "delete":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(data))
    rebuilt, report = sync_with_store(path, store, model_id, EXACT)
    assert report.rebuilt and ("missing" in report.reason if damage == "delete" else "CRC32" in report.reason)
    after = rebuilt.search(queries, k=10)
    assert np.array_equal(after[0], before[0]) and np.allclose(after[1], before[1], atol=1e-6)
    assert not sync_with_store(path, store, model_id, EXACT)[1].rebuilt  # and the new file is good


@pytest.mark.parametrize("params", [HNSW, PQ], ids=["hnsw", "pq_refine"])
def test_sync_builds_the_approximate_kind_for_a_large_store(
    filled_store: tuple[Store, int, int], tmp_path: Path, params: IndexParams
) -> None:
    store, model_id, _ = filled_store
    index, report = sync_with_store(tmp_path / "a.faiss", store, model_id, params)
    assert report.rebuilt and index.kind == params.ann_kind and len(index) == 700
    assert np.array_equal(index.ids(), store.embedding_ids(model_id))
    reopened, report = sync_with_store(tmp_path / "a.faiss", store, model_id, params)
    assert not report.rebuilt and reopened.kind == params.ann_kind
    ids, vectors = next(iter(store.iter_embeddings(model_id, chunk_size=10)))
    assert np.array_equal(reopened.search(vectors, k=1)[0][:, 0], ids)
