"""Routing introspection: `with capture_routing(model) as rec:` records every adapter's routing.

Each `FSLoRALayer` holds a `routing_recorder` attribute that is None outside the context, so a forward
pass outside it detaches, copies and keeps nothing. Inside it, every layer call stores, per qualified
layer name and per task, the expert masks (B, n, H, W) and the frequency weights (B, 2); when a layer
runs several times inside one context (e.g. a stage reused as box head) the last call wins.
Contexts nest: the previous recorder of each layer is restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class RoutingRecord:
    """One task's routing at one layer: detached tensors, on the model's device unless to_cpu."""

    expert_masks: Tensor
    """(B, n, H, W) softmax weights of the n spatial experts (all ones, n = 1, without SLM)."""
    freq_weights: Tensor | None
    """(B, 2) = (w_low, w_high) of the frequency router, None when FLM is off."""


@dataclass
class RoutingRecorder:
    """Collects `RoutingRecord`s: `records[layer_name][task]`."""

    to_cpu: bool = False
    records: dict[str, dict[str, RoutingRecord]] = field(default_factory=dict)

    def record(self, layer: str, task: str, masks: Tensor | None, freq: Tensor | None, like: Tensor) -> None:
        """Store one layer call; `like` (the adapter output) sizes the all-ones mask of a single expert."""
        if masks is None:
            b, _, h, w = like.shape
            masks = torch.ones(b, 1, h, w, device=like.device, dtype=like.dtype)
        masks = masks.detach()
        freq = freq.detach() if freq is not None else None
        if self.to_cpu:
            masks = masks.cpu()
            freq = freq.cpu() if freq is not None else None
        self.records.setdefault(layer, {})[task] = RoutingRecord(masks, freq)

    def clear(self) -> None:
        self.records.clear()


@contextmanager
def capture_routing(model: nn.Module, *, to_cpu: bool = False) -> Iterator[RoutingRecorder]:
    """Record the routing of every FSLoRA layer of `model` run inside the block."""
    from .layer import FSLoRALayer  # local: layer.py imports this module

    recorder = RoutingRecorder(to_cpu=to_cpu)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, FSLoRALayer)]
    previous = [(m, m.routing_recorder, m.routing_name) for _, m in layers]
    for name, m in layers:
        m.routing_recorder, m.routing_name = recorder, name
    try:
        yield recorder
    finally:
        for m, rec, name in previous:
            m.routing_recorder, m.routing_name = rec, name
