"""Pictures the UI shows: frames with person boxes, crops, expert-mask overlays, frequency-weight plots.

Pure functions on numpy arrays (RGB uint8, boxes x1 y1 x2 y2 in frame pixels), so they are tested
without a browser and reused by the screenshot script. Boxes are drawn with torchvision's
`draw_bounding_boxes`; masks are resized with OpenCV; plots are matplotlib figures (Agg, no display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

# colours (RGB): boxes of every detection, the clicked query, a search result; one per expert
BOX_COLOR = (255, 208, 0)
QUERY_COLOR = (0, 230, 118)
MATCH_COLOR = (255, 64, 129)
EXPERT_COLORS = ((255, 99, 71), (30, 144, 255), (50, 205, 50), (186, 85, 211), (255, 215, 0), (0, 206, 209))
TASK_COLORS = {"det": "#1e90ff", "reid": "#ff6347"}


def display_scale(width: int, height: int, max_side: int) -> float:
    """Factor from frame pixels to displayed pixels (<= 1): big frames are shown downscaled."""
    return min(1.0, max_side / max(width, height))


def resize_for_display(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The frame downscaled (area interpolation) so its longer side is <= max_side, and the scale used."""
    h, w = rgb.shape[:2]
    scale = display_scale(w, h, max_side)
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def draw_boxes(
    rgb: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    highlight: int | None = None,
    highlight_color: tuple[int, int, int] = QUERY_COLOR,
    scale: float = 1.0,
) -> np.ndarray:
    """`rgb` with every box outlined; box `highlight` (an index into `boxes`) drawn last, thick, in
    `highlight_color`. Boxes are in frame pixels; `scale` maps them onto a resized `rgb`."""
    boxes_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale
    if len(boxes_arr) == 0:
        return rgb.copy()
    order = [i for i in range(len(boxes_arr)) if i != highlight]
    if highlight is not None:
        if not 0 <= highlight < len(boxes_arr):
            raise ValueError(f"highlight index {highlight} is outside the {len(boxes_arr)} boxes")
        order.append(highlight)
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    thin = max(1, round(max(rgb.shape[:2]) / 400))
    # draw the ordinary boxes in one call, then the highlighted one on top, thicker
    plain = [i for i in order if i != highlight]
    if plain:
        image = draw_bounding_boxes(
            image, torch.from_numpy(boxes_arr[plain]), colors=BOX_COLOR, width=thin,
            labels=[labels[i] for i in plain] if labels is not None else None,
        )
    if highlight is not None:
        image = draw_bounding_boxes(
            image, torch.from_numpy(boxes_arr[[highlight]]), colors=highlight_color, width=3 * thin,
            labels=[labels[highlight]] if labels is not None else None,
        )
    return image.permute(1, 2, 0).contiguous().numpy()


def fit_height(rgb: np.ndarray, height: int = 160) -> np.ndarray:
    """`rgb` resized to `height` pixels, aspect kept: gallery crops line up in rows."""
    if rgb.ndim != 3 or min(rgb.shape[:2]) == 0:
        raise ValueError(f"fit_height needs a non-empty (H, W, 3) image, got shape {rgb.shape}")
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    interpolation = cv2.INTER_AREA if rgb.shape[0] > height else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def format_time(seconds: float) -> str:
    """mm:ss.s (h:mm:ss.s past an hour) for result captions."""
    minutes, sec = divmod(max(0.0, seconds), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{sec:04.1f}" if hours else f"{minutes:02d}:{sec:04.1f}"


# -- expert masks ------------------------------------------------------------------------------------


def short_layer_name(layer: str) -> str:
    """'layers.2.blocks.1.mlp.fc1' -> 's2.b1.mlp.fc1' (plot ticks and dropdown labels stay short)."""
    parts = layer.split(".")
    out = []
    i = 0
    while i < len(parts):
        if parts[i] in ("layers", "blocks") and i + 1 < len(parts) and parts[i + 1].isdigit():
            out.append(("s" if parts[i] == "layers" else "b") + parts[i + 1])
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def blend_masks(rgb: np.ndarray, masks: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """`rgb` tinted by expert masks (E, h, w) in [0, 1]: each pixel takes the mask-weighted mix of the
    expert colours, blended at `alpha` (the masks of one layer sum to 1 over experts)."""
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim != 3 or masks.shape[0] > len(EXPERT_COLORS):
        raise ValueError(f"masks must be (experts <= {len(EXPERT_COLORS)}, h, w), got shape {masks.shape}")
    h, w = rgb.shape[:2]
    up = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in masks])  # (E, H, W)
    colors = np.asarray(EXPERT_COLORS[: len(masks)], dtype=np.float32)  # (E, 3)
    tint = np.einsum("ehw,ec->hwc", up, colors)
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * tint
    return np.clip(out, 0, 255).astype(np.uint8)


def _title_bar(width: int, text: str, height: int = 28) -> np.ndarray:
    bar = np.full((height, width, 3), 30, np.uint8)
    cv2.putText(bar, text, (8, height - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (240, 240, 240), 1, cv2.LINE_AA)
    return bar


def _legend_bar(width: int, n_experts: int, height: int = 28) -> np.ndarray:
    bar = np.full((height, width, 3), 245, np.uint8)
    x = 8
    for e in range(n_experts):
        cv2.rectangle(bar, (x, 7), (x + 14, height - 7), EXPERT_COLORS[e], -1)
        label = f"expert {e + 1}"
        cv2.putText(bar, label, (x + 20, height - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1,
                    cv2.LINE_AA)
        x += 30 + 10 * len(label)
    return bar


def expert_panels(rgb: np.ndarray, masks_by_task: Mapping[str, np.ndarray], layer: str,
                  alpha: float = 0.55) -> np.ndarray:
    """One blended panel per task (det | reid) side by side, each titled, over a colour legend: what
    each task's spatial router sends to which expert at `layer`."""
    if not masks_by_task:
        raise ValueError(f"no expert masks for layer {layer!r}")
    panels = []
    for task, masks in masks_by_task.items():
        panel = blend_masks(rgb, masks, alpha)
        panels.append(np.vstack([_title_bar(panel.shape[1], f"{task} experts  ({short_layer_name(layer)})"),
                                 panel]))
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    row = panels[0]
    for panel in panels[1:]:
        row = np.hstack([row, gap, panel])
    n_experts = max(np.asarray(m).shape[0] for m in masks_by_task.values())
    return np.vstack([row, _legend_bar(row.shape[1], n_experts)])


def freq_weights_figure(weights: Mapping[str, Mapping[str, Sequence[float]]]):  # -> matplotlib Figure
    """Grouped bars of the frequency router's weights per adapted layer: w_low (top) and w_high (bottom),
    det vs reid. `weights`: layer -> task -> (w_low, w_high). 0.5 (the untrained value) is marked."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (no pyplot: no global state, thread-safe)

    layers = list(weights)
    tasks = sorted({t for by_task in weights.values() for t in by_task})
    fig = Figure(figsize=(9, 4.6), dpi=100, layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(layers))
    width = 0.8 / max(1, len(tasks))
    for row, (ax, label) in enumerate(zip(axes, ("w_low", "w_high"), strict=True)):
        for j, task in enumerate(tasks):
            values = [weights[layer][task][row] if task in weights[layer] else np.nan for layer in layers]
            ax.bar(x + (j - (len(tasks) - 1) / 2) * width, values, width, label=task,
                   color=TASK_COLORS.get(task))
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(label)
    axes[0].legend(loc="upper right", ncols=len(tasks), fontsize=8)
    axes[0].set_title("FLM frequency weights per adapted layer (det vs reid)")
    axes[-1].set_xticks(x, [short_layer_name(layer) for layer in layers], rotation=60, ha="right", fontsize=7)
    return fig


def figure_to_rgb(fig) -> np.ndarray:  # fig: matplotlib Figure
    """RGB uint8 pixels of a matplotlib figure (for screenshots and tests)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
