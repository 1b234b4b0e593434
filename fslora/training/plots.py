"""Training plots (PNG): loss curves, learned frequency weights per layer, expert masks over an image.

Built on matplotlib's object API (`Figure` + Agg canvas), never pyplot: no global figure state, no GUI
backend, safe in DataLoader-forked processes and headless servers.

The routing inputs are what ``model.detect(images, capture_routing=True)`` returns per image:
layer name -> task -> `RoutingRecord` with ``expert_masks`` (1, n, h, w) and ``freq_weights`` (1, 2)
= (w_low, w_high) or None (FLM off).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Routing = Mapping[str, Mapping[str, Any]]
TASK_COLOURS = {"det": "tab:blue", "reid": "tab:orange"}


def short_layer_name(name: str) -> str:
    """``layers.2.blocks.1.op.in_proj`` -> ``s2.b1.in_proj`` (stage, block, linear)."""
    parts = name.split(".")
    if len(parts) >= 5 and parts[0] == "layers" and parts[2] == "blocks":
        return f"s{parts[1]}.b{parts[3]}.{parts[-1]}"
    return name


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


# -- losses ----------------------------------------------------------------------------------------


def plot_losses(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Each named loss and the total against the optimizer step, plus the lr (from metrics.jsonl)."""
    steps = [r for r in records if r.get("kind") == "step"]
    fig = Figure(figsize=(9, 6), layout="constrained")
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    x = [r["step"] for r in steps]
    names = sorted({k for r in steps for k in r if k.startswith("loss")})
    for name in names:
        y = [r.get(name) for r in steps]
        y = [np.nan if v is None else v for v in y]
        ax_loss.plot(x, y, label=name, linewidth=2.0 if name == "loss" else 1.0)
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    if names:
        ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(x, [r.get("lr") for r in steps], color="k")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    evals = [r for r in records if r.get("kind") == "eval" and "mAP" in r]
    if evals:
        ax_map = ax_loss.twinx()
        ax_map.plot([r["step"] for r in evals], [r["mAP"] for r in evals], "o--", color="tab:green")
        ax_map.set_ylabel("test mAP", color="tab:green")
    fig.suptitle("training losses")
    return _save(fig, path)


# -- frequency weights -----------------------------------------------------------------------------


def mean_frequency_weights(routings: Sequence[Routing]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean (w_low, w_high) per layer and task over images; layers without FLM are left out."""
    sums: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for routing in routings:
        for layer, by_task in routing.items():
            for task, record in by_task.items():
                if record.freq_weights is not None:
                    sums[layer][task].append(record.freq_weights.float().reshape(-1, 2).cpu().numpy())
    return {
        layer: {
            task: tuple(float(v) for v in np.concatenate(ws).mean(axis=0)) for task, ws in by_task.items()
        }
        for layer, by_task in sums.items()
    }


def plot_frequency_weights(
    weights: Mapping[str, Mapping[str, tuple[float, float]]], path: str | Path
) -> Path:
    """Bars of w_low and w_high per layer, det next to reid (the paper's frequency-weight figure)."""
    layers = list(weights)
    tasks = sorted({t for by_task in weights.values() for t in by_task})
    fig = Figure(figsize=(max(6.0, 0.35 * len(layers) + 2), 6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(layers))
    width = 0.8 / max(len(tasks), 1)
    for band, ax in enumerate(axes):
        for i, task in enumerate(tasks):
            values = [weights[layer].get(task, (np.nan, np.nan))[band] for layer in layers]
            ax.bar(
                x + (i - (len(tasks) - 1) / 2) * width,
                values,
                width,
                label=task,
                color=TASK_COLOURS.get(task),
            )
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylim(0, 1)
        ax.set_ylabel("w_low" if band == 0 else "w_high")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[-1].set_xticks(x, [short_layer_name(n) for n in layers], rotation=90, fontsize=7)
    fig.suptitle("frequency router weights per layer (mean over test images)")
    return _save(fig, path)


# -- expert masks ----------------------------------------------------------------------------------


def plot_expert_masks(image: np.ndarray, routing: Routing, path: str | Path, *, max_layers: int = 3) -> Path:
    """Expert masks of a few layers (first, middle, last) per task, overlaid on ``image`` (uint8 RGB)."""
    layers = list(routing)
    if not layers:
        raise ValueError("plot_expert_masks: the routing is empty (was capture_routing on?)")
    picks = sorted(
        {layers[round(i * (len(layers) - 1) / max(max_layers - 1, 1))] for i in range(max_layers)},
        key=layers.index,
    )
    tasks = list(routing[picks[0]])
    n_experts = routing[picks[0]][tasks[0]].expert_masks.shape[1]
    cols = 1 + len(tasks) * n_experts
    h, w = image.shape[:2]
    fig = Figure(figsize=(2.4 * cols, 2.4 * len(picks) * h / w + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(picks), cols, squeeze=False))
    for row, layer in enumerate(picks):
        axes[row, 0].imshow(image)
        axes[row, 0].set_ylabel(short_layer_name(layer), fontsize=8)
        col = 1
        for task in tasks:
            masks = routing[layer][task].expert_masks.float()
            up = F.interpolate(masks[:1], size=(h, w), mode="bilinear", align_corners=False)[0]
            for e in range(up.shape[0]):
                ax = axes[row, col]
                ax.imshow(image)
                ax.imshow(up[e].clamp(0, 1).numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
                if row == 0:
                    ax.set_title(f"{task} expert {e + 1}", fontsize=8)
                col += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("spatial expert masks")
    return _save(fig, path)
