"""The optimizer a training config names: SGD (the paper's recipe) or AdamW (ours, from-scratch nano runs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fslora.training.config import OPTIMIZERS, OptimConfig


def build_optimizer(
    model: nn.Module, params: Sequence[nn.Parameter], config: OptimConfig
) -> torch.optim.Optimizer:
    """An optimizer over ``params`` (the model's trainable parameters, in a fixed order).

    SGD decays every parameter, as the paper's recipe does. AdamW's decoupled decay is meant for weight
    matrices: it would pull LayerNorm/BatchNorm scales and biases (every 1-D tensor) towards 0, so those
    go in a second group without decay. The groups keep ``params``' order, so checkpoints resume the same.
    """
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.name == "adamw":
        wanted = {id(p) for p in params}
        if len(wanted) != len(params) or not wanted <= {id(p) for p in model.parameters()}:
            raise ValueError("build_optimizer: params must be distinct parameters of the model")
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        groups = [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)
    raise ValueError(f"optim.name must be one of {list(OPTIMIZERS)}, got {config.name!r}")
