"""Throughput of the VMamba backbone with and without FSLoRA dual task streams (CPU by default).

Three runs of the same backbone (preset ``nano`` unless told otherwise) on random images, with the
adapters of a model config (``configs/models/nano.yaml`` by default: the bundled demo model's r = 8,
relative FLM cutoffs; ``--rank`` / ``--no-flm`` override it):
  single       - one stream, no adapters (``forward_features``), the plain backbone;
  dual         - two task streams stacked on the batch, no adapters (the frozen cost of streams);
  dual_fslora  - two task streams with FSLoRA adapters on the VSS-block linears (the real model).
The target is ``dual_fslora`` at most 15 % slower than ``dual``. With ``--profile`` the ops that take
the most time in the ``dual_fslora`` run are listed too.

Prints one JSON document. Usage:
    python bench/bench_backbone.py                                # nano, 384x640, batch 1
    python bench/bench_backbone.py --preset tiny --model-config configs/models/tiny.yaml \
        --size 512 832 --threads 8 --profile
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout
from timing import time_interleaved  # noqa: E402  (bench/ is the script's folder)

from fslora.adapters import count_parameters, forward_streams, inject_backbone  # noqa: E402
from fslora.backbones import VMamba, VMambaConfig  # noqa: E402
from fslora.models import PersonSearchConfig  # noqa: E402
from fslora.utils.cpu_memory import keep_freed_memory  # noqa: E402


def time_calls(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int, batch: int) -> dict[str, Any]:
    """Wall and process-CPU seconds per call of each function, interleaved round by round.

    Interleaving spreads a shared machine's load changes over all runs alike. CPU seconds are reported
    beside wall seconds because there they are the steadier of the two (with ``--threads 1`` they measure
    the work itself, not the wait for a core).
    """
    wall, cpu = time_interleaved(fns, warmup, repeats)
    return {
        name: {
            "median_s": round(statistics.median(wall[name]), 4),
            "min_s": round(min(wall[name]), 4),
            "median_cpu_s": round(statistics.median(cpu[name]), 4),
            "images_per_s": round(batch / statistics.median(wall[name]), 3),
        }
        for name in fns
    }


def top_ops(fn: Callable[[], Any], rows: int) -> list[dict[str, Any]]:
    """The ops with the largest self CPU time in one call of ``fn``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 2),
         "share": round(e.self_cpu_time_total / total, 3)}
        for e in events[:rows]
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--size", type=int, nargs=2, default=(384, 640), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", help="selective-scan backend")
    parser.add_argument("--split-from-stage", type=int, default=0)
    parser.add_argument("--model-config", type=Path, default=ROOT / "configs" / "models" / "nano.yaml",
                        help="model YAML whose adapter settings are benchmarked")
    parser.add_argument("--rank", type=int, default=None, help="FSLoRA rank r (default: the config's)")
    parser.add_argument("--flm", action=argparse.BooleanOptionalAction, default=None,
                        help="frequency module (default: the config's)")
    parser.add_argument("--profile", action="store_true", help="list the top ops of the dual_fslora run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    heap_reuse = keep_freed_memory()  # as the app and the CLIs run (FSLORA_KEEP_FREED_MEMORY=0: off)

    torch.manual_seed(0)
    config = VMambaConfig.preset(args.preset, backend=args.backend, split_from_stage=args.split_from_stage)
    model = VMamba(config).to(args.device).eval()
    fslora = PersonSearchConfig.from_yaml(args.model_config).adapters
    if args.rank is not None:
        fslora = dataclasses.replace(fslora, r=args.rank, alpha=float(args.rank), rank_pattern={})
    if args.flm is not None:
        fslora = dataclasses.replace(fslora, flm=args.flm)
    adapted = inject_backbone(copy.deepcopy(model), fslora).to(args.device)
    x = torch.randn(args.batch, 3, *args.size, device=args.device)

    def run(fn: Callable[[Tensor], Any]) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode():
                fn(x)
            if x.is_cuda:
                torch.cuda.synchronize()

        return call

    calls = {
        "single": run(model.forward_features),
        "dual": run(functools.partial(forward_streams, model)),
        "dual_fslora": run(functools.partial(forward_streams, adapted)),
    }
    runs = time_calls(calls, args.warmup, args.repeats, args.batch)

    dual_s, fslora_s = runs["dual"]["median_s"], runs["dual_fslora"]["median_s"]
    report: dict[str, Any] = {
        "benchmark": "vmamba_backbone",
        "preset": args.preset,
        "input": [args.batch, 3, *args.size],
        "device": args.device,
        "scan_backend": args.backend,
        "threads": torch.get_num_threads(),
        "keep_freed_memory": heap_reuse,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "split_from_stage": args.split_from_stage,
        "model_config": str(args.model_config),
        "fslora": {
            "r": fslora.r,
            "target_modules": fslora.target_modules,
            "cutoff_mode": fslora.cutoff_mode,
            "n_experts": fslora.n_experts,
            "flm": fslora.flm,
            "cutoffs": list(fslora.cutoffs),
        },
        "params": {"backbone": count_parameters(model)["total"], **count_parameters(adapted)},
        "runs": runs,
        "adapter_overhead_vs_dual": round(fslora_s / dual_s - 1.0, 3),
        "adapter_overhead_vs_dual_cpu": round(
            runs["dual_fslora"]["median_cpu_s"] / runs["dual"]["median_cpu_s"] - 1, 3
        ),
        "dual_overhead_vs_single": round(dual_s / runs["single"]["median_s"] - 1.0, 3),
        "target_adapter_overhead": 0.15,
        "meets_target": fslora_s / dual_s - 1.0 <= 0.15,
    }
    if args.profile:
        report["top_ops_dual_fslora"] = top_ops(calls["dual_fslora"], rows=12)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
