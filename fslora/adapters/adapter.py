"""One task's adapter branch: A (down), FLM (frequency), SLM (spatial experts), in a chosen order.

    "between" (paper):  SLM(FLM(A x), x)
    "before":           SLM(A FLM(x), x)      FLM on d_in channels
    "after":            FLM(SLM(A x, x))      FLM on d_out channels

Switches: `slm=False` leaves one plain B (no router); `flm=False` drops FLM; both off is plain LoRA.
An `FSLoRAAdapter` holds one task's parameters. `grouped_branch` runs several tasks' adapters at once on
a task-grouped map (T, b, C, H, W) with their weights stacked, so a dual-stream layer does one batched
matmul per step instead of a loop over tasks; a single adapter is the T = 1 case of the same code.
Branch outputs are unscaled (the layer applies alpha / r), unless the caller passes the base layer's
output to accumulate into (see `grouped_branch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import FSLoRAConfig
from .frequency import FrequencyModule, band_reweight
from .pointwise import grouped_linear
from .spatial import SpatialModule, route_experts


@dataclass
class BranchOutput:
    """Adapter output and the routing that produced it (live tensors; detach before keeping)."""

    delta: Tensor
    expert_masks: Tensor | None  # (..., n, H, W), None with a single expert
    freq_weights: Tensor | None  # (..., 2) = (w_low, w_high), None without FLM


class FSLoRAAdapter(nn.Module):
    """The parameters of one task's bypass of a frozen linear map d_in -> d_out."""

    def __init__(self, d_in: int, d_out: int, rank: int, config: FSLoRAConfig):
        super().__init__()
        self.d_in, self.d_out, self.rank = d_in, d_out, rank
        self.flm_position = config.flm_position
        self.dropout = config.dropout  # on the adapter input, before A
        self.lora_A = nn.Linear(d_in, rank, bias=False)  # default init = kaiming_uniform(a=sqrt(5))
        self.flm: FrequencyModule | None = None
        if config.flm:
            flm_channels = {"between": rank, "before": d_in, "after": d_out}[config.flm_position]
            self.flm = FrequencyModule(flm_channels, config.cutoffs, config.cutoff_mode)
        self.lora_B = SpatialModule(d_in, rank, d_out, config.num_experts)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"

    def forward(self, x: Tensor) -> Tensor:
        return self.branch(x).delta

    def branch(self, x: Tensor) -> BranchOutput:
        """Run this adapter alone on a channel-first map x (B, d_in, H, W) -> (B, d_out, H, W)."""
        out = grouped_branch([self], x[None])
        return BranchOutput(
            out.delta[0],
            out.expert_masks[0] if out.expert_masks is not None else None,
            out.freq_weights[0] if out.freq_weights is not None else None,
        )


def grouped_branch(
    adapters: Sequence[FSLoRAAdapter], x: Tensor, accumulate: Tensor | None = None, scale: float = 1.0
) -> BranchOutput:
    """Chunk t of x (T, b, d_in, H, W) through adapters[t] -> delta (T, b, d_out, H, W).

    Routing comes back grouped too: expert masks (T, b, n, H, W), frequency weights (T, b, 2).
    The adapters must share one structure (they come from one config). With ``accumulate`` (the base
    layer's output, grouped like x) the returned "delta" is ``accumulate + scale * delta``, computed in
    place in ``accumulate`` (by the experts' matmul; FLM "after" needs the bare delta, so there by an add).
    """
    first = adapters[0]
    if len(adapters) != x.shape[0]:
        raise ValueError(f"{len(adapters)} adapters for {x.shape[0]} task chunks")

    def stacked(get: Callable[[FSLoRAAdapter], Tensor]) -> Tensor:
        return get(first)[None] if len(adapters) == 1 else torch.stack([get(a) for a in adapters])

    def flm(h: Tensor) -> tuple[Tensor, Tensor]:
        weight, bias = stacked(lambda a: a.flm.router.weight), stacked(lambda a: a.flm.router.bias)
        return band_reweight(h, weight, bias, first.flm.cutoffs, first.flm.cutoff_mode)

    position = first.flm_position if first.flm is not None else None
    h = F.dropout(x, first.dropout, first.training) if first.dropout > 0 else x
    freq_weights = None
    if position == "before":
        h, freq_weights = flm(h)
    has_router = first.lora_B.router is not None
    if has_router and h is x:  # A and the router both read x: one matmul, split by channel
        rank = first.rank
        both = grouped_linear(x, stacked(lambda a: torch.cat([a.lora_A.weight, a.lora_B.router.weight])))
        z, logits = both[:, :, :rank], both[:, :, rank:]
    else:
        z = grouped_linear(h, stacked(lambda a: a.lora_A.weight))
        logits = grouped_linear(x, stacked(lambda a: a.lora_B.router.weight)) if has_router else None
    if position == "between":
        z, freq_weights = flm(z)
    experts = stacked(lambda a: a.lora_B.experts.weight)
    if position == "after":
        out, masks = route_experts(z, logits, experts)
        out, freq_weights = flm(out)
        if accumulate is not None:
            out = accumulate.add_(out, alpha=scale)
    else:
        out, masks = route_experts(z, logits, experts, accumulate, scale)
    return BranchOutput(out, masks, freq_weights)
