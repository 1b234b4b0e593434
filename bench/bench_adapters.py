"""FSLoRA adapter cost: forward+backward time per layer and parameter overhead on VMamba-T.

Timing: one VMamba-T `in_proj`-shaped layer (Linear2d, C -> C, channel-first) at the four stage
resolutions of a 900x1500 input (stride 4/8/16/32: 225x375, 113x188, 57x94, 29x47 with C = 96, 192,
384, 768), on a stacked dual-stream batch of `--images` images per stream (batch 2 by default). Each
variant runs forward + backward (input requires grad, as inside a backbone), interleaved round by round:
  frozen  - the bare Linear2d (W0 only)
  lora    - W0 + plain LoRA per task (slm and flm off), r = 32
  slora   - W0 + SLM (n = 2 experts)
  flora   - W0 + FLM
  fslora  - W0 + FLM + SLM, the paper's adapter (default config)
`--scale` shrinks the input side (0.5 = 450x750) for a quicker run.

Parameters: adapters (two tasks) of the shipped configs (configs/adapters/*.yaml) on a stack of
VMamba-T's targeted linears (in_proj C->C, out_proj C->C, fc1 C->4C, fc2 4C->C; depths [2, 2, 8, 2],
dims [96, 192, 384, 768]), as a share of the whole 29,481,408-parameter VMamba-T backbone; plus the
extra parameters of the FLM positions "before" / "after" relative to "between".

Prints one JSON document. Usage:
    python bench/bench_adapters.py --threads 1          # full 900x1500 shapes, 3 repeats
    python bench/bench_adapters.py --scale 0.5 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout
from timing import time_interleaved  # noqa: E402  (bench/ is the script's folder)

from fslora.adapters import FSLoRAConfig, FSLoRALayer, count_parameters, inject_fslora  # noqa: E402
from fslora.backbones.layers import Linear2d  # noqa: E402

VMAMBA_T_DIMS = (96, 192, 384, 768)
VMAMBA_T_DEPTHS = (2, 2, 8, 2)
VMAMBA_T_TOTAL = 29_481_408
STRIDES = (4, 8, 16, 32)
VARIANTS = {
    "lora": {"slm": False, "flm": False},
    "slora": {"slm": True, "flm": False},
    "flora": {"slm": False, "flm": True},
    "fslora": {"slm": True, "flm": True},
}


# -- timing -------------------------------------------------------------------------------------------


def median_times(
    fns: dict[str, Callable[[], None]], warmup: int, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU seconds per call (see bench/timing.py)."""
    wall, cpu = time_interleaved(fns, warmup, repeats)
    median = lambda d: {n: statistics.median(v) for n, v in d.items()}  # noqa: E731
    return median(wall), median(cpu)


def fwd_bwd(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        layer(x).sum().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)

    return run


def bench_stage(c: int, h: int, w: int, images: int, warmup: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    base = Linear2d(c, c, bias=False).requires_grad_(False)
    x = torch.randn(2 * images, c, h, w, requires_grad=True)  # det stream, then reid stream
    layers: dict[str, nn.Module] = {"frozen": base}
    for name, switches in VARIANTS.items():
        layer = FSLoRALayer(base, FSLoRAConfig(**switches))
        for p in layer.adapters.parameters():  # trained-looking adapters, not the all-zero init
            nn.init.normal_(p, std=0.02)
        layers[name] = layer
    wall, cpu = median_times({n: fwd_bwd(m, x) for n, m in layers.items()}, warmup, repeats)
    return {
        "shape": [2 * images, c, h, w],
        "wall_ms": {n: round(1e3 * s, 2) for n, s in wall.items()},
        "cpu_ms": {n: round(1e3 * s, 2) for n, s in cpu.items()},
        "cpu_x_frozen": {n: round(s / cpu["frozen"], 2) for n, s in cpu.items() if n != "frozen"},
        "cpu_x_lora": {n: round(s / cpu["lora"], 2) for n, s in cpu.items() if n not in ("frozen", "lora")},
    }


# -- parameters ---------------------------------------------------------------------------------------


def vmamba_t_linears() -> nn.Module:
    """VMamba-T's four targeted linears per VSS block, with VMamba's qualified names, on meta."""
    with torch.device("meta"):
        root = nn.Module()
        root.layers = nn.ModuleList()
        for c, depth in zip(VMAMBA_T_DIMS, VMAMBA_T_DEPTHS, strict=True):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            for _ in range(depth):
                block = nn.Module()
                block.op = nn.Module()
                block.op.in_proj = Linear2d(c, c, bias=False)
                block.op.out_proj = Linear2d(c, c, bias=False)
                block.mlp = nn.Module()
                block.mlp.fc1 = Linear2d(c, 4 * c)
                block.mlp.fc2 = Linear2d(4 * c, c)
                stage.blocks.append(block)
            root.layers.append(stage)
    return root


def adapter_params(config: FSLoRAConfig) -> int:
    return count_parameters(inject_fslora(vmamba_t_linears(), config))["adapter"]


def param_report(config: FSLoRAConfig) -> dict[str, Any]:
    n = adapter_params(config)
    share = round(n / VMAMBA_T_TOTAL, 5)
    return {"adapter_params": n, "share_of_vmamba_t": share, "tasks": len(config.tasks)}


def flm_position_deltas() -> dict[str, int]:
    between = adapter_params(FSLoRAConfig())
    return {
        pos: adapter_params(dataclasses.replace(FSLoRAConfig(), flm_position=pos)) - between
        for pos in ("before", "after")
    }


# -- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="input side scale (1.0 = 900x1500)")
    parser.add_argument("--images", type=int, default=1, help="images per stream (batch = 2 x images)")
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    height, width = round(900 * args.scale), round(1500 * args.scale)
    timing = {}
    for i in args.stages:
        h, w = math.ceil(height / STRIDES[i]), math.ceil(width / STRIDES[i])
        timing[f"stage{i + 1}"] = bench_stage(VMAMBA_T_DIMS[i], h, w, args.images, args.warmup, args.repeats)

    config_files = sorted((ROOT / "configs" / "adapters").glob("*.yaml"))
    configs = {p.stem: FSLoRAConfig.from_yaml(p) for p in config_files}
    result = {
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "input": [height, width],
        "layer": "in_proj (Linear2d C->C), forward+backward, r=32, n=2, cutoffs 30/40",
        "timing": timing,
        "parameters": {name: param_report(cfg) for name, cfg in configs.items()},
        "flm_position_extra_params_vs_between": flm_position_deltas(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
