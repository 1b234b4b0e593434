"""Training plots: the frequency-weight averages they show, and that each figure is written as a PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fslora.adapters import RoutingRecord
from fslora.training.plots import (
    mean_frequency_weights,
    plot_expert_masks,
    plot_frequency_weights,
    plot_losses,
    short_layer_name,
)

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = ["layers.0.blocks.0.op.in_proj", "layers.0.blocks.0.mlp.fc2", "layers.2.blocks.1.op.out_proj"]


def _routing(w_low: dict[str, float], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer in LAYERS:
        out[layer] = {}
        for task, low in w_low.items():
            masks = torch.softmax(torch.randn(1, 2, 6, 10, generator=g), dim=1)
            out[layer][task] = RoutingRecord(masks, torch.tensor([[low, 1.0 - low]]))
    return out


def test_mean_frequency_weights_average_over_images_per_layer_and_task():
    weights = mean_frequency_weights(
        [_routing({"det": 0.8, "reid": 0.2}), _routing({"det": 0.6, "reid": 0.4})]
    )
    assert list(weights) == LAYERS
    for by_task in weights.values():
        assert by_task["det"] == pytest.approx((0.7, 0.3))
        assert by_task["reid"] == pytest.approx((0.3, 0.7))


def test_layers_without_frequency_module_are_left_out():
    routing = _routing({"det": 0.5})
    routing[LAYERS[1]]["det"] = RoutingRecord(routing[LAYERS[1]]["det"].expert_masks, None)
    assert set(mean_frequency_weights([routing])) == {LAYERS[0], LAYERS[2]}


def test_short_layer_names():
    assert short_layer_name("layers.2.blocks.1.op.in_proj") == "s2.b1.in_proj"
    assert short_layer_name("layers.0.blocks.0.mlp.fc1") == "s0.b0.fc1"
    assert short_layer_name("head.box_head") == "head.box_head"


def test_every_plot_is_written_as_png(tmp_path):
    records = [
        {"kind": "step", "step": s, "lr": 0.001 * s, "loss": 3.0 / s, "loss_oim": 2.0 / s} for s in (1, 2, 3)
    ]
    records.append({"kind": "eval", "epoch": 1, "step": 3, "mAP": 0.25})
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    routing = _routing({"det": 0.8, "reid": 0.2})
    paths = [
        plot_losses(records, tmp_path / "losses.png"),
        plot_frequency_weights(mean_frequency_weights([routing]), tmp_path / "freq.png"),
        plot_expert_masks(image, routing, tmp_path / "sub" / "masks.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG, path
    with pytest.raises(ValueError, match="routing is empty"):
        plot_expert_masks(image, {}, tmp_path / "none.png")
