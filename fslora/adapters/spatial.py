"""SLM, the spatial module: rank restoration by n experts mixed per position by a router.

    omega = softmax(W_g x) over experts at every position  ->  masks M_1..M_n, each (H, W)
    out = sum_i M_i * (B_i z') = [B_1 .. B_n] @ concat_i(M_i * z')

The router reads the layer input x (d_in channels), the experts read the low-rank map z' (r channels).
The n experts are stored as one (d_out, n*r) weight and applied as one matmul over the masked,
concatenated map, rather than n matmuls and a weighted sum. The experts start at zero so the adapter
branch is exactly zero at init. With one expert there is no router: the module is plain LoRA's B.

`route_experts` takes the router's logits rather than its weight: the caller computes them in the same
matmul as A's down-projection when both read x (one pass over the widest map instead of two). Given an
`accumulate` map, the experts' output is added into it in place, scaled, by the matmul itself
(``baddbmm``): the layer's ``W0 x + s * B(...)`` without a full-size temporary and a separate add.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .pointwise import grouped_linear, grouped_linear_accumulate


def route_experts(
    z: Tensor,
    router_logits: Tensor | None,
    experts_weight: Tensor,
    accumulate: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor | None]:
    """SLM on task-grouped maps: z (T, b, r, H, W), router logits (T, b, n, H, W) or None (one expert),
    experts (T, d_out, n*r). Returns (T, b, d_out, H, W) and the masks (T, b, n, H, W) or None.

    With ``accumulate`` (T, b, d_out, H, W) the result is ``accumulate + scale * experts(...)``, written
    into ``accumulate`` in place and returned.
    """
    if router_logits is None:
        mixed, masks = z, None
    else:
        masks = torch.softmax(router_logits, dim=2)
        t, b, r, h, w = z.shape
        mixed = (masks.unsqueeze(3) * z.unsqueeze(2)).reshape(t, b, -1, h, w)  # expert-major, then rank
    if accumulate is None:
        return grouped_linear(mixed, experts_weight), masks
    return grouped_linear_accumulate(accumulate, mixed, experts_weight, scale), masks


class SpatialModule(nn.Module):
    """Holds one task's router (W_g: d_in -> n) and zero-initialised experts; math in `route_experts`."""

    def __init__(self, d_in: int, rank: int, d_out: int, n_experts: int):
        super().__init__()
        self.rank = rank
        self.n_experts = n_experts
        self.router = nn.Linear(d_in, n_experts, bias=False) if n_experts > 1 else None
        self.experts = nn.Linear(n_experts * rank, d_out, bias=False)
        nn.init.zeros_(self.experts.weight)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        return self.forward_with_masks(z, x)[0]

    def forward_with_masks(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Expert output (B, d_out, H, W) from z (B, r, H, W) routed by x (B, d_in, H, W), and masks."""
        logits = grouped_linear(x[None], self.router.weight[None]) if self.router is not None else None
        out, masks = route_experts(z[None], logits, self.experts.weight[None])
        return out[0], (masks[0] if masks is not None else None)
