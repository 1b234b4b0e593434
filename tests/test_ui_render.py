"""The UI's pictures: boxes land where they should, overlays carry the expert colours, plots render."""

from __future__ import annotations

import numpy as np
import pytest

from app.ui_render import (
    BOX_COLOR,
    EXPERT_COLORS,
    QUERY_COLOR,
    blend_masks,
    draw_boxes,
    expert_panels,
    figure_to_rgb,
    fit_height,
    format_time,
    freq_weights_figure,
    resize_for_display,
    short_layer_name,
)


def _grey(h: int = 120, w: int = 200) -> np.ndarray:
    return np.full((h, w, 3), 100, np.uint8)


def test_draw_boxes_outlines_each_box_and_highlights_one():
    out = draw_boxes(_grey(), [[10, 10, 50, 90], [100, 20, 160, 100]], highlight=1)
    assert out.shape == (120, 200, 3) and out.dtype == np.uint8
    assert tuple(out[10, 30]) == BOX_COLOR  # top edge of box 0
    assert tuple(out[20, 130]) == QUERY_COLOR  # top edge of the highlighted box 1
    assert tuple(out[50, 30]) == (100, 100, 100)  # inside box 0: untouched
    with pytest.raises(ValueError, match="highlight index 5"):
        draw_boxes(_grey(), [[10, 10, 50, 90]], highlight=5)


def test_draw_boxes_scales_frame_boxes_onto_a_resized_image():
    frame = _grey(400, 800)
    small, scale = resize_for_display(frame, 400)
    assert small.shape == (200, 400, 3) and scale == pytest.approx(0.5)
    out = draw_boxes(small, [[100, 100, 300, 300]], scale=scale)
    assert tuple(out[50, 100]) == BOX_COLOR  # (100, 100) frame px -> (50, 50) displayed px
    assert resize_for_display(frame, 1000)[1] == 1.0


def test_fit_height_keeps_the_aspect_ratio():
    patch = np.full((60, 30, 3), 255, np.uint8)
    out = fit_height(patch, height=120)
    assert out.shape == (120, 60, 3) and out.min() == 255
    with pytest.raises(ValueError, match="non-empty"):
        fit_height(np.zeros((0, 5, 3), np.uint8))


def test_blend_masks_tints_each_region_with_its_expert_colour():
    rgb = np.zeros((40, 40, 3), np.uint8)
    masks = np.zeros((2, 4, 4), np.float32)
    masks[0, :, :2] = 1.0  # expert 1 on the left half
    masks[1, :, 2:] = 1.0  # expert 2 on the right half
    out = blend_masks(rgb, masks, alpha=1.0)
    assert tuple(out[20, 2]) == EXPERT_COLORS[0]
    assert tuple(out[20, 37]) == EXPERT_COLORS[1]
    with pytest.raises(ValueError, match="masks must be"):
        blend_masks(rgb, np.zeros((4, 4)))


def test_expert_panels_put_tasks_side_by_side_with_a_legend():
    rgb = _grey(60, 80)
    masks = np.full((2, 8, 8), 0.5, np.float32)
    out = expert_panels(rgb, {"det": masks, "reid": masks}, "layers.2.blocks.1.mlp.fc1")
    assert out.shape[1] == 2 * 80 + 6  # two panels and the gap
    assert out.shape[0] > 60 + 28  # title bar above, legend below
    legend = out[-28:]
    assert (np.abs(legend.astype(int) - EXPERT_COLORS[0]).sum(-1) == 0).any()
    with pytest.raises(ValueError, match="no expert masks"):
        expert_panels(rgb, {}, "x")


def test_freq_weights_figure_draws_one_bar_per_layer_and_task():
    weights = {"layers.0.blocks.0.op.in_proj": {"det": (0.7, 0.3), "reid": (0.2, 0.8)},
               "layers.1.blocks.0.mlp.fc2": {"det": (0.5, 0.5), "reid": (0.4, 0.6)}}
    fig = freq_weights_figure(weights)
    top, bottom = fig.axes
    heights = sorted(round(p.get_height(), 3) for p in top.patches)
    assert heights == [0.2, 0.4, 0.5, 0.7]  # w_low of 2 layers x 2 tasks
    assert sorted(round(p.get_height(), 3) for p in bottom.patches) == [0.3, 0.5, 0.6, 0.8]
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["s0.b0.op.in_proj", "s1.b0.mlp.fc2"]
    pixels = figure_to_rgb(fig)
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.std() > 0


def test_names_and_times():
    assert short_layer_name("layers.2.blocks.1.mlp.fc1") == "s2.b1.mlp.fc1"
    assert short_layer_name("head.box") == "head.box"
    assert format_time(75.25) == "01:15.2"
    assert format_time(3725.0) == "1:02:05.0"
