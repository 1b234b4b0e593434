"""The optimizer built from ``optim``: SGD decays every weight; AdamW spares norms and biases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fslora.training.config import OptimConfig
from fslora.training.optimizer import build_optimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


def test_sgd_uses_one_group_with_the_configured_decay_and_momentum():
    model = _model()
    params = list(model.parameters())
    opt = build_optimizer(model, params, OptimConfig(name="sgd", lr=0.1, momentum=0.8, weight_decay=1e-3))
    assert isinstance(opt, torch.optim.SGD)
    (group,) = opt.param_groups
    assert group["params"] == params
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.8, 1e-3)


def test_adamw_decays_matrices_but_not_norms_or_biases():
    model = _model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(model, params, OptimConfig(name="adamw", lr=0.01, weight_decay=0.5))
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert [p.dim() for p in decay["params"]] == [2, 2]
    assert all(p.dim() == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.5, 0.0)
    # With zero gradients, only decoupled decay moves a weight: matrices shrink, the LayerNorm stays 1.
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(model[0].weight, before[0] * (1 - 0.01 * 0.5))
    assert torch.equal(model[1].weight, before[2]) and torch.equal(model[1].bias, before[3])


def test_adamw_fits_a_small_regression():
    # The optimizer actually optimizes: the loss of a fixed batch falls by 10x within 200 steps.
    model = _model()
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    y = 2 * x[:, :2] - x[:, 2:]
    opt = build_optimizer(
        model, list(model.parameters()), OptimConfig(name="adamw", lr=0.01, weight_decay=0.0)
    )
    first = None
    for _ in range(200):
        loss = nn.functional.mse_loss(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


def test_frozen_parameters_are_left_out_and_foreign_ones_refused():
    model = _model()
    model[0].requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(model, params, OptimConfig(name="adamw"))
    assert sum(len(g["params"]) for g in opt.param_groups) == 4
    with pytest.raises(ValueError, match="parameters of the model"):
        build_optimizer(model, [nn.Parameter(torch.zeros(2, 2))], OptimConfig(name="adamw"))
