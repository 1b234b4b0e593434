"""Precise BatchNorm statistics (`fslora.training.precise_bn`) on a real tiny person-search model."""

from __future__ import annotations

import numpy as np
import torch
from test_model import tiny_config

from fslora.models import FSLoRAPersonSearch
from fslora.training.precise_bn import batchnorm_layers, recompute_batchnorm_stats


def tiny_model() -> FSLoRAPersonSearch:
    torch.manual_seed(0)
    return FSLoRAPersonSearch(tiny_config(person_score="det"))


def batches(count: int) -> list[tuple[list, list]]:
    rng = np.random.default_rng(0)
    return [([rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2)],
             [{"boxes": [[5.0 + i, 5.0, 25.0 + i, 55.0]], "pids": [i % 5]} for i in range(2)])
            for _ in range(count)]


def test_stats_become_the_average_of_the_batches_and_nothing_else_changes(torch_single_thread):
    model = tiny_model().eval()
    layers = batchnorm_layers(model)
    assert len(layers) == 4  # person classifier, two embedding projections, the norm rescaler
    for bn in layers:
        bn.running_mean.fill_(100.0)
        bn.running_var.fill_(1e-6)  # stale stats: what the lag of the running average looks like
    stats = ("running_mean", "running_var", "num_batches_tracked")
    params = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(stats)}
    inputs: dict[torch.nn.Module, list[torch.Tensor]] = {bn: [] for bn in layers}
    hooks = [bn.register_forward_hook(lambda m, i, o: inputs[m].append(i[0].detach())) for bn in layers]
    used = recompute_batchnorm_stats(model, batches(3))
    for h in hooks:
        h.remove()
    assert used == 3 and not model.training and not any(m.training for m in model.modules())
    for bn in layers:
        assert len(inputs[bn]) == 3
        means = torch.stack([x.mean(0) for x in inputs[bn]]).mean(0)
        variances = torch.stack([x.var(0, unbiased=True) for x in inputs[bn]]).mean(0)
        assert torch.allclose(bn.running_mean, means, atol=1e-5)
        assert torch.allclose(bn.running_var, variances, rtol=1e-4, atol=1e-7)
        assert bn.momentum == 0.1  # restored
    after = model.state_dict()
    for k, v in params.items():  # weights, OIM lookup table and queue untouched
        assert torch.equal(after[k], v), k


def test_no_batches_keep_the_old_stats(torch_single_thread):
    model = tiny_model().train()
    bn = model.head.person_classifier[0]
    bn.running_mean.fill_(3.0)
    assert recompute_batchnorm_stats(model, []) == 0
    assert bool((bn.running_mean == 3.0).all()) and model.training
