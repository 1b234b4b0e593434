"""Sequential selective scan: one step per position, the ground truth the faster backends are tested against.

It works on the prepared float tensors of :func:`fslora.ops.selective_scan.prepare_scan` (softplus and bias
already applied, B and C already in grouped form) so every backend shares one set of input semantics.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """Run ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = <C_t, h_t>`` step by step.

    Shapes (grouped view, G groups of P channels): u, delta (b, G, P, L); A (G, P, n);
    B, C (b, G, n, L). Returns y (b, G, P, L) without the D skip term.
    """
    batch, groups, per_group, length = u.shape
    h = u.new_zeros(batch, groups, per_group, A.shape[-1])
    if length == 0:
        return u.new_zeros(u.shape)
    ys = []
    for t in range(length):
        dt = delta[..., t, None]  # (b, G, P, 1)
        h = torch.exp(dt * A) * h + (dt * u[..., t, None]) * B[:, :, None, :, t]
        ys.append((h * C[:, :, None, :, t]).sum(-1))
    return torch.stack(ys, dim=-1)
