"""Inference speed, memory and size of the person-search model (``FSLoRAPersonSearch.detect``).

For the shipped model configs (``configs/models/nano.yaml`` at SynthPS's 384x640, ``tiny.yaml`` =
VMamba-T at 900x1500) it times ``detect`` on random RGB frames of that size (batch 1, after one
warm-up call; weights are random, so the number of detections - and with it the embedding pass - is
whatever the untrained head produces; the proposal and box-head stages dominate anyway), and reports
CPU time per frame (less sensitive than wall time to other processes on a shared machine),
peak resident memory and parameter counts (``fslora.count_parameters``) of each config with and
without adapters, for the whole model and for the backbone alone.

Prints one JSON document. Usage:
    python bench/bench_detect.py                        # CPU: nano 5 iterations, tiny 2
    python bench/bench_detect.py --device cuda --iters-tiny 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout
from fslora.adapters import count_parameters  # noqa: E402
from fslora.models import FSLoRAPersonSearch, PersonSearchConfig  # noqa: E402
from fslora.utils.cpu_memory import keep_freed_memory  # noqa: E402

CONFIGS = {"nano": (384, 640), "tiny": (900, 1500)}  # timed: config name -> frame (height, width)
COUNT_ONLY = ("tiny_budget",)  # same speed as tiny (fewer adapters); parameters only


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parameter_counts(config: PersonSearchConfig) -> dict[str, Any]:
    """Counts of the config as given and of its no-adapter baseline, whole model and backbone."""
    out = {}
    for label, use_adapters in (("with_adapters", True), ("without_adapters", False)):
        model = FSLoRAPersonSearch(dataclasses.replace(config, use_adapters=use_adapters))
        out[label] = {"model": count_parameters(model), "backbone": count_parameters(model.backbone)}
        del model
    return out


def time_detect(config: PersonSearchConfig, size: tuple[int, int], iters: int, device: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model = FSLoRAPersonSearch(config).to(device).eval()
    frame = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    model.detect([frame])  # warm-up (allocator, caches)
    if device == "cuda":
        torch.cuda.synchronize()
    times, cpu_times, found = [], [], []
    for _ in range(iters):
        start, cpu_start = time.perf_counter(), time.process_time()
        dets = model.detect([frame])
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        found.append(len(dets[0]))
    return {
        "input": list(size),
        "iters": iters,
        "seconds_per_frame_median": float(np.median(times)),
        "frames_per_s": float(1.0 / np.median(times)),
        "cpu_seconds_per_frame_median": float(np.median(cpu_times)),
        "detections_per_frame": found,
        "peak_rss_mib_after": round(peak_rss_mib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iters-nano", type=int, default=5)
    parser.add_argument("--iters-tiny", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-tiny-timing", action="store_true", help="only count tiny's parameters")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    heap_reuse = keep_freed_memory()  # as the app and the CLIs run (FSLORA_KEEP_FREED_MEMORY=0: off)
    result: dict[str, Any] = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "keep_freed_memory": heap_reuse,
        "machine": platform.machine(),
        "configs": {},
    }
    for name, size in CONFIGS.items():
        config = PersonSearchConfig.from_yaml(ROOT / "configs" / "models" / f"{name}.yaml")
        entry: dict[str, Any] = {"parameters": parameter_counts(config)}
        iters = args.iters_nano if name == "nano" else args.iters_tiny
        if not (name == "tiny" and args.skip_tiny_timing):
            entry["detect"] = time_detect(config, size, iters, args.device)
        result["configs"][name] = entry
    for name in COUNT_ONLY:
        config = PersonSearchConfig.from_yaml(ROOT / "configs" / "models" / f"{name}.yaml")
        result["configs"][name] = {"parameters": parameter_counts(config)}
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
