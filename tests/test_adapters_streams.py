"""Dual task streams: one stacked batch, one adapter per chunk, shared frozen weights."""

from __future__ import annotations

import pytest
import torch

import fslora

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def config(**kw) -> fslora.FSLoRAConfig:
    return fslora.FSLoRAConfig(**{"r": 4, "cutoffs": (2.0, 4.0), **kw})


def test_stack_split_merge_round_trip():
    x = torch.arange(24.0).reshape(3, 2, 4)
    stacked = fslora.stack_streams(x, 2)
    assert stacked.shape == (6, 2, 4)
    a, b = fslora.split_streams(stacked, 2)
    assert torch.equal(a, x) and torch.equal(b, x)
    assert torch.equal(fslora.merge_streams([a, b]), stacked)
    with pytest.raises(ValueError, match="cannot be split"):
        fslora.split_streams(stacked, 4)
    with pytest.raises(ValueError, match="equal batch sizes"):
        fslora.merge_streams([x, x[:1]])
    with pytest.raises(ValueError, match="n must be"):
        fslora.stack_streams(x, 0)


@pytest.mark.parametrize("layout", ["channel_last", "linear2d", "conv1x1"])
def test_stacked_halves_differ_and_equal_single_task_runs(make_toy, perturb_adapters, layout):
    model = make_toy(layout)
    x = model.example_input(batch=2)
    with torch.no_grad():
        frozen = model(x)
        fslora.inject_fslora(model, config())
        perturb_adapters(model)
        det, reid = fslora.split_streams(model(fslora.stack_streams(x, 2)), 2)
        with fslora.active_tasks(model, ["det"]):
            det_alone = model(x)
        with fslora.active_tasks(model, ["reid"]):
            reid_alone = model(x)
        with fslora.active_tasks(model, ["reid", "det"]):
            swapped = fslora.split_streams(model(fslora.stack_streams(x, 2)), 2)
        with fslora.active_tasks(model, []):
            bare = model(x)
    assert not torch.allclose(det, reid, atol=1e-3)
    assert not torch.allclose(det, frozen, atol=1e-3)
    torch.testing.assert_close(det, det_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reid, reid_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(swapped[0], reid, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(swapped[1], det, atol=1e-5, rtol=1e-5)
    assert torch.equal(bare, frozen)  # no active task = the frozen model exactly


def test_stacked_chunks_are_independent_samples(make_toy, perturb_adapters):
    """Per-sample routing: a chunk's output depends only on its own samples, not the other stream's."""
    model = make_toy("linear2d")
    fslora.inject_fslora(model, config())
    perturb_adapters(model)
    x, other = model.example_input(seed=0), model.example_input(seed=5)
    with torch.no_grad():
        a = model(fslora.merge_streams([x, x]))
        b = model(fslora.merge_streams([x, other]))
    torch.testing.assert_close(a[:2], b[:2], atol=1e-5, rtol=1e-5)


def test_active_tasks_context_restores_and_validates(make_toy):
    model = make_toy()
    fslora.inject_fslora(model, config(tasks=("det", "reid", "aux")))
    layers = fslora.fslora_layers(model).values()
    assert all(layer.active_tasks == ("det", "reid", "aux") for layer in layers)
    with fslora.active_tasks(model, ("aux",)):
        assert all(layer.active_tasks == ("aux",) for layer in layers)
    assert all(layer.active_tasks == ("det", "reid", "aux") for layer in layers)
    with pytest.raises(ValueError, match="no adapter"):
        fslora.set_active_tasks(model, ["det", "seg"])
    with pytest.raises(ValueError, match="no adapter"), fslora.active_tasks(model, ["seg"]):
        pass
    assert all(layer.active_tasks == ("det", "reid", "aux") for layer in layers)
    with pytest.raises(ValueError, match="no FSLoRA layers"):
        fslora.set_active_tasks(torch.nn.Linear(2, 2), ["det"])
    out = model(fslora.stack_streams(model.example_input(batch=1), 3))
    assert out.shape[0] == 3


def test_streams_backpropagate_into_their_own_adapter_only(make_toy, perturb_adapters):
    model = make_toy()
    fslora.inject_fslora(model, config())
    perturb_adapters(model)
    det, reid = fslora.split_streams(model(fslora.stack_streams(model.example_input(), 2)), 2)
    det.sum().backward()  # a det-only loss
    for name, p in model.named_parameters():
        if ".adapters.reid." in name:
            assert p.grad is None or p.grad.abs().sum() == 0, name
        elif ".adapters.det." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
