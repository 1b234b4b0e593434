"""Precise BatchNorm statistics: recompute the running mean / variance with the current weights.

Why: BatchNorm's running statistics are an exponential average over the last ~10 training steps, taken
with weights that have changed since. When the normalised features vary little across RoIs (the nano
model's pooled box-head outputs: a per-channel std of about 0.004), that lag alone puts evaluation-time
features tens of running-stds away from the running mean, and every score collapses to 0 or 1
(measured on the nano recipe at step 200: no detection at any threshold; after recomputing the stats on
20 batches the same weights separate people from background). Recomputing them on a few training
batches before every checkpoint and the final save removes the lag, as Detectron's PreciseBN does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from fslora.models.oim import OIMLoss


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batchnorm_stats(
    model: nn.Module, batches: Iterable[tuple[Sequence[Any], Sequence[Any]]]
) -> int:
    """Replace every BatchNorm layer's running stats by their plain average over ``batches``.

    ``batches`` yields ``(images, targets)`` for the model's training forward. Only the BatchNorm
    buffers change: the OIM tables are not updated, no gradient is taken and the modes of every module
    are restored. Returns the number of batches used (0: no BatchNorm layer or no batch; stats kept).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = {m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in layers}
    modes = [(m, m.training) for m in model.modules()]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    for m in model.modules():
        if isinstance(m, OIMLoss):
            m.eval()  # its lookup table and queue must not see these batches
    used = 0
    try:
        for images, targets in batches:
            model(images, targets)
            used += 1
    finally:
        for m, mode in modes:
            m.training = mode
        for m, (mean, var, count, momentum) in saved.items():
            m.momentum = momentum
            if used == 0:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
    return used
