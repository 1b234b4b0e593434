"""Per-task channel mixing on task-grouped maps, the one matmul shape every adapter op uses.

Adapters work on task-grouped, channel-first maps x of shape (T, b, C, H, W): chunk t of a stacked
dual-stream batch goes through task t's weights. `grouped_linear` applies a stacked weight (T, O, C) as
one batched matmul: no per-task loop, no slicing of the batch (whose backward would write full-size
zero gradients per slice), no concatenation of the outputs. The input may carry channels-last strides
(a permuted channel-last map): the matmul reads it as a transposed operand without a copy.
"""

from __future__ import annotations

import torch
from torch import Tensor


def grouped_linear(x: Tensor, weight: Tensor) -> Tensor:
    """(T, b, C, H, W) x (T, O, C) -> (T, b, O, H, W): chunk t mixed by weight[t] at every position."""
    if x.dim() != 5 or weight.dim() != 3 or x.shape[0] != weight.shape[0] or x.shape[2] != weight.shape[2]:
        raise ValueError(
            f"grouped_linear needs x (T, b, C, H, W) and weight (T, O, C), got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    h, w = x.shape[-2:]
    return torch.matmul(weight.unsqueeze(1), x.flatten(-2)).unflatten(-1, (h, w))


def grouped_linear_accumulate(out: Tensor, x: Tensor, weight: Tensor, scale: float = 1.0) -> Tensor:
    """``out += scale * grouped_linear(x, weight)`` in place, as one ``baddbmm`` per task; returns out.

    out (T, b, O, H, W) must be viewable as (T*b, O, H*W): a dense map, channel-first or channels-last
    strided (the matmul then writes a transposed result in place).
    """
    t, b, o = out.shape[:3]
    flat_out = out.view(t * b, o, -1)
    flat_x = x.flatten(-2).flatten(0, 1)
    flat_w = weight.unsqueeze(1).expand(t, b, *weight.shape[1:]).flatten(0, 1)
    flat_out.baddbmm_(flat_w, flat_x, alpha=scale)
    return out
