"""Evaluate a person-search checkpoint on a dataset's test protocol (also used by the trainer per epoch).

    python -m fslora.evaluate --checkpoint CKPT --dataset {synthps,cuhk-sysu,prw,posetrack21} --root DIR \
        [--gallery-size N] [--multi-view] [--max-queries N] [--batch-size N] [--json OUT]

Steps: ``model.detect`` over every gallery image (batches, progress bar) -> ``model.embed_boxes`` of the
query boxes (one call per query image) -> the protocol of `fslora.evaluation` (`evaluate_split`: the
split's own galleries for CUHK-SYSU, the whole test set minus the query frame otherwise, ``--multi-view``
also minus the query's camera / video). Prints a table and writes every figure to ``--json``.

``CKPT`` is a `save_pretrained` folder or Hub repo id, a training checkpoint folder
(``RUN/checkpoints/step-*``), or a run folder (its ``final``, else its newest checkpoint).
Exit status 2 for a bad invocation: missing checkpoint or dataset root, an option that does not fit
the dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fslora.data.records import PersonSearchSplit
from fslora.evaluation import evaluate_split
from fslora.models import Detections, FSLoRAPersonSearch
from fslora.training.data import load_dataset, read_rgb
from fslora.utils.cpu_memory import keep_freed_memory

logger = logging.getLogger("fslora.evaluate")

METRIC_ORDER = (
    "mAP",
    "top1",
    "top5",
    "top10",
    "det_ap",
    "det_recall",
    "num_queries",
    "num_queries_without_gt",
)


# -- engine ----------------------------------------------------------------------------------------


def subset_queries(split: PersonSearchSplit, max_queries: int | None) -> PersonSearchSplit:
    """``max_queries`` queries spread evenly over the list (deterministic); None or enough = all.

    With per-query galleries (CUHK-SYSU) the gallery shrinks to the images those queries search, so a
    quick evaluation does not detect on thousands of unused images.
    """
    if max_queries is None or max_queries >= len(split.queries):
        return split
    if max_queries < 1:
        raise ValueError(f"max_queries must be >= 1, got {max_queries}")
    picks = np.linspace(0, len(split.queries) - 1, max_queries).round().astype(int)
    picks = sorted(set(picks.tolist()))
    queries = [split.queries[i] for i in picks]
    if split.query_gallery is None:
        return replace(split, queries=queries)
    lists = [split.query_gallery[i] for i in picks]
    used = sorted({g for lst in lists for g in lst})
    new_index = {old: new for new, old in enumerate(used)}
    return replace(
        split,
        queries=queries,
        gallery=[split.gallery[i] for i in used],
        query_gallery=[[new_index[g] for g in lst] for lst in lists],
    )


def detect_gallery(
    model: FSLoRAPersonSearch,
    split: PersonSearchSplit,
    *,
    batch_size: int = 4,
    score_thresh: float = 0.5,
    progress: bool = False,
) -> list[Detections]:
    """``model.detect`` on every gallery image, in order."""
    records = split.gallery
    results: list[Detections] = []
    bar = tqdm(
        total=len(records), desc="detect gallery", unit="img", disable=None if progress else True, leave=False
    )
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        images = [read_rgb(r.image_path, (r.width, r.height)) for r in chunk]
        results.extend(model.detect(images, score_thresh=score_thresh))
        bar.update(len(chunk))
    bar.close()
    return results


def embed_queries(
    model: FSLoRAPersonSearch, split: PersonSearchSplit, *, progress: bool = False
) -> torch.Tensor:
    """One embedding (Q, D) per query box; each query image is read and run once for all its boxes."""
    by_image: dict[str, list[int]] = {}
    for i, q in enumerate(split.queries):
        by_image.setdefault(q.image_path, []).append(i)
    out = torch.zeros(len(split.queries), model.embedding_dim)
    for path, indices in tqdm(
        by_image.items(), desc="embed queries", unit="img", disable=None if progress else True, leave=False
    ):
        boxes = np.array([split.queries[i].box for i in indices], dtype=np.float32)
        out[indices] = model.embed_boxes([read_rgb(path)], [boxes])[0]
    return out


def evaluate_model(
    model: FSLoRAPersonSearch,
    split: PersonSearchSplit,
    *,
    max_queries: int | None = None,
    multi_view: bool = False,
    batch_size: int = 4,
    score_thresh: float = 0.5,
    progress: bool = False,
    per_query: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """The split's protocol figures for ``model`` (mAP, top-k, detection AP / recall, counts);
    ``per_query`` receives each scored query's AP and hits (see `evaluate_search`)."""
    if not split.queries:
        raise ValueError(f"{split.name}: the split has no queries to evaluate")
    split = subset_queries(split, max_queries)
    detections = detect_gallery(
        model, split, batch_size=batch_size, score_thresh=score_thresh, progress=progress
    )
    queries = embed_queries(model, split, progress=progress)
    return evaluate_split(
        split, detections, queries, exclude_camera=multi_view, det_thresh=score_thresh, per_query=per_query
    )


# -- checkpoints -----------------------------------------------------------------------------------


def load_model(checkpoint: str | Path, device: str | torch.device | None = None) -> FSLoRAPersonSearch:
    """A model from a published checkpoint, a training checkpoint or a run folder (see module doc)."""
    from fslora.models.checkpoint import read_config
    from fslora.training.checkpoint import MODEL_FILE, STATE_FILE, latest_checkpoint

    path = Path(checkpoint).expanduser()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if path.is_dir() and not (path / "config.json").is_file():  # a run folder
        final = path / "final"
        newest = latest_checkpoint(path / "checkpoints")
        if final.is_dir():
            path = final
        elif newest is not None:
            path = newest
        else:
            raise FileNotFoundError(
                f"{path}: neither a checkpoint nor a run folder with final/ or checkpoints/"
            )
    if path.is_dir() and (path / STATE_FILE).is_file():  # a training checkpoint: full state, OIM included
        from safetensors.torch import load_file

        model = FSLoRAPersonSearch(read_config(path))
        model.load_state_dict(load_file(str(path / MODEL_FILE)), strict=True)
        return model.to(device).eval()
    return FSLoRAPersonSearch.from_pretrained(str(path), device=device)


# -- CLI -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fslora.evaluate",
        description="Evaluate a person-search checkpoint on a test protocol.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, Hub repo id, or run folder")
    p.add_argument("--dataset", required=True, choices=["synthps", "cuhk-sysu", "prw", "posetrack21"])
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--gallery-size", type=int, default=None, help="CUHK-SYSU gallery size (default 100)")
    p.add_argument(
        "--multi-view",
        action="store_true",
        help="PRW / SynthPS: exclude the query's camera; PoseTrack21: its video",
    )
    p.add_argument(
        "--max-queries", type=int, default=None, help="evaluate on this many queries (evenly spread)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="gallery images per detect call")
    p.add_argument("--score-thresh", type=float, default=0.5, help="detection score threshold (standard 0.5)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def format_table(metrics: dict[str, Any]) -> str:
    rows = [(k, metrics[k]) for k in METRIC_ORDER if k in metrics]
    rows += [(k, v) for k, v in metrics.items() if k not in METRIC_ORDER]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
    for k, v in rows:
        lines.append(f"{k:<{width}}  {100 * v:6.2f} %" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return "\n".join(lines)


def _check_args(args: argparse.Namespace) -> None:
    if args.gallery_size is not None and args.dataset != "cuhk-sysu":
        raise ValueError(f"--gallery-size applies to cuhk-sysu only, not {args.dataset}")
    if args.gallery_size is not None and args.gallery_size < 1:
        raise ValueError(f"--gallery-size must be >= 1, got {args.gallery_size}")
    if args.multi_view and args.dataset == "cuhk-sysu":
        raise ValueError("--multi-view does not apply to cuhk-sysu (each query has its own gallery list)")
    if args.max_queries is not None and args.max_queries < 1:
        raise ValueError(f"--max-queries must be >= 1, got {args.max_queries}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.score_thresh <= 1.0:
        raise ValueError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    if not Path(args.root).is_dir():
        raise FileNotFoundError(f"--root {args.root}: no such dataset folder")
    ckpt = Path(args.checkpoint).expanduser()
    looks_like_repo = args.checkpoint.count("/") == 1 and not args.checkpoint.startswith((".", "/", "~"))
    if not ckpt.exists() and not looks_like_repo:
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such checkpoint folder")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        _check_args(args)
        keep_freed_memory()
        if args.threads is not None:
            torch.set_num_threads(max(1, args.threads))
        split = load_dataset(args.dataset, args.root, gallery_size=args.gallery_size or 100)
        model = load_model(args.checkpoint, args.device)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    per_query: list[dict[str, Any]] = []
    metrics = evaluate_model(
        model,
        split,
        max_queries=args.max_queries,
        multi_view=args.multi_view,
        batch_size=args.batch_size,
        score_thresh=args.score_thresh,
        progress=not args.no_progress,
        per_query=per_query,
    )
    seconds = time.perf_counter() - start
    report = {
        "checkpoint": str(args.checkpoint),
        "model": model.config.name,
        "dataset": args.dataset,
        "split": split.name,
        "root": str(args.root),
        "gallery_size": args.gallery_size if args.dataset == "cuhk-sysu" else None,
        "multi_view": args.multi_view,
        "max_queries": args.max_queries,
        "score_thresh": args.score_thresh,
        "gallery_images": len(subset_queries(split, args.max_queries).gallery),
        "device": str(model.device),
        "seconds": round(seconds, 3),
        "metrics": metrics,
        "per_query": per_query,  # for paired comparisons: python -m fslora.compare A.json B.json
    }
    print(f"{split.name} ({args.dataset}{', multi-view' if args.multi_view else ''}) - {model.config.name}")
    print(format_table(metrics))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        logger.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
