"""Search latency and recall of the app's vector index + SQLite join, at growing collection sizes.

For each size N: N random unit vectors (dim 256) are written to a real SQLite store (10 detections per
frame, batched transactions as the indexer does), the exact (flat) and approximate indexes (pq_refine,
hnsw) are rebuilt from the store (the `sync_with_store` path), and Q queries are timed one at a time,
each = FAISS top-k + the one join query that fetches the k detections with their frame and video (what
a search result needs). Recall@k of the approximate kinds is measured against the exact top-k (sweeping
refine_k_factor for pq_refine and efSearch for hnsw), for two kinds of queries:
  random   - fresh random unit vectors (the hardest case: no structure at all in the data),
  in_set   - stored vectors plus small noise (what the app does: a clicked person's embedding).

Prints one JSON document. Usage:
    python bench/bench_search.py                            # sizes 10k,100k; pq_refine and hnsw
    python bench/bench_search.py --sizes 1M --kinds pq_refine  # HNSW takes long to build at 1M
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a plain checkout
from app.store import FrameWrite, Store  # noqa: E402
from app.vector_index import IndexParams, VectorIndex  # noqa: E402
from app.video import VideoInfo  # noqa: E402

DETECTIONS_PER_FRAME = 10


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill_store(store: Store, n: int, dim: int, rng: np.random.Generator, workdir: Path) -> tuple[int, float]:
    """Writes n detections (random unit embeddings); returns (model id, seconds)."""
    model = store.register_model("bench", f"dim{dim}", dim)
    fake = workdir / f"bench-{n}.bin"
    fake.write_bytes(f"bench video {n}".encode())
    n_frames = -(-n // DETECTIONS_PER_FRAME)
    info = VideoInfo(fake, 25.0, n_frames, 1920, 1080, n_frames / 25.0, "h264", "decord")
    video, _ = store.add_video(fake, model.id, info)
    box = np.array([100.0, 200.0, 180.0, 420.0])
    start = time.perf_counter()
    frames_per_batch = 1000
    written = 0
    for lo in range(0, n_frames, frames_per_batch):
        batch = []
        for f in range(lo, min(lo + frames_per_batch, n_frames)):
            m = min(DETECTIONS_PER_FRAME, n - written)
            batch.append(FrameWrite(f, f / 25.0, np.tile(box, (m, 1)), np.full(m, 0.9),
                                    unit_vectors(rng, m, dim)))
            written += m
        store.write_batch(video.id, batch)
    return model.id, time.perf_counter() - start


def percentiles(ms: list[float]) -> dict[str, float]:
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 99)}


def time_queries(index: VectorIndex, store: Store, queries: np.ndarray, k: int) -> tuple[np.ndarray, dict]:
    """One query at a time: FAISS search, then the detections' join query. Returns (ids, timings)."""
    search_ms, total_ms, found = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        ids, _ = index.search(q[None], k)
        t1 = time.perf_counter()
        hits = store.fetch_detections(ids[0].tolist())
        t2 = time.perf_counter()
        assert len(hits) == k, "every result id must exist in the store"
        search_ms.append((t1 - t0) * 1e3)
        total_ms.append((t2 - t0) * 1e3)
        found.append(ids[0])
    stats = {"search_" + key: v for key, v in percentiles(search_ms).items()}
    stats.update({"with_join_" + key: v for key, v in percentiles(total_ms).items()})
    return np.stack(found), stats


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = [len(np.intersect1d(a, b)) / k for a, b in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)), 4)


def bench_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    db = workdir / f"bench-{n}.db"
    db.unlink(missing_ok=True)
    store = Store(f"sqlite:///{db}")
    model_id, write_s = fill_store(store, n, args.dim, rng, workdir)
    out: dict[str, Any] = {"n": n, "sqlite_write_s": round(write_s, 2),
                           "sqlite_rows_per_s": round(n / write_s),
                           "db_mb": round(db.stat().st_size / 2**20, 1)}

    t0 = time.perf_counter()
    flat_params = IndexParams(ann_threshold=10**12, search_threads=args.search_threads)
    flat = VectorIndex.build(store.iter_embeddings(model_id), args.dim, flat_params)
    out["flat_rebuild_from_sqlite_s"] = round(time.perf_counter() - t0, 2)
    # each approximate kind with the values of its search knob to sweep
    sweeps = {"pq_refine": ("refine_k_factor", args.k_factors), "hnsw": ("hnsw_ef_search", args.ef)}
    approximate = {}
    for kind in args.kinds:
        params = IndexParams(ann_threshold=0, ann_kind=kind, pq_m=args.pq_m, hnsw_m=args.m,
                             hnsw_ef_construction=args.ef_construction, search_threads=args.search_threads)
        t0 = time.perf_counter()
        index = VectorIndex.build(store.iter_embeddings(model_id), args.dim, params, expected_count=n)
        out[f"{kind}_rebuild_from_sqlite_s"] = round(time.perf_counter() - t0, 2)
        assert index.kind == kind and len(index) == n
        approximate[kind] = index

    stored_ids = flat.ids()
    picked = rng.choice(len(stored_ids), args.queries, replace=False)
    in_set = flat.vectors(stored_ids[picked]) + 0.05 * unit_vectors(rng, args.queries, args.dim)
    query_sets = {"random": unit_vectors(rng, args.queries, args.dim), "in_set": in_set}
    for name, queries in query_sets.items():
        truth, flat_times = time_queries(flat, store, queries, args.k)
        result: dict[str, Any] = {"flat": flat_times}
        for kind, index in approximate.items():
            knob, values = sweeps[kind]
            result[kind] = []
            base_params = index.params
            for value in values:
                index.params = dataclasses.replace(base_params, **{knob: value})
                found, times = time_queries(index, store, queries, args.k)
                result[kind].append({knob: value, f"recall@{args.k}": recall_at_k(found, truth), **times})
            index.params = base_params
        out[name] = result
    store.close()
    if not args.keep:
        db.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k", help="comma list, e.g. 10k,100k,1M")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--kinds", default="pq_refine,hnsw", help="approximate kinds to measure")
    parser.add_argument("--pq-m", type=int, default=128, help="pq_refine: 4-bit sub-quantizers")
    parser.add_argument("--k-factors", default="20,50,100", help="pq_refine: k_factor values to sweep")
    parser.add_argument("--m", type=int, default=32, help="HNSW M")
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef", default="128,256,512", help="HNSW efSearch values to sweep")
    parser.add_argument("--threads", type=int, default=0, help="FAISS threads for builds (0 = all cores)")
    parser.add_argument("--search-threads", type=int, default=1, help="FAISS threads per search (0 = all)")
    parser.add_argument("--workdir", default="", help="where the SQLite files go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite files")
    args = parser.parse_args(argv)
    args.ef = [int(e) for e in args.ef.split(",")]
    args.k_factors = [int(e) for e in args.k_factors.split(",")]
    args.kinds = [kind for kind in args.kinds.split(",") if kind]
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        workdir = Path(args.workdir) if args.workdir and args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = [bench_size(n, args, workdir) for n in sizes]
    report = {
        "benchmark": "vector search + SQLite join",
        "machine": {"cpu": platform.processor() or platform.machine(), "faiss": faiss.__version__,
                    "cores": os.cpu_count(), "faiss_build_threads": faiss.omp_get_max_threads(),
                    "load_avg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "settings": {"dim": args.dim, "k": args.k, "queries": args.queries, "pq_m": args.pq_m,
                     "hnsw_m": args.m, "hnsw_ef_construction": args.ef_construction,
                     "search_threads": args.search_threads},
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
