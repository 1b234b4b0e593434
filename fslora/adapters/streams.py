"""Dual task streams (DESIGN.md §3): one batch holds a chunk per task, stacked along dim 0.

Frozen ops run once on the stacked batch; each `FSLoRALayer` applies the adapter of task i to chunk i.
These helpers build / take apart such batches and choose which tasks the layers expect.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .layer import FSLoRALayer


def stack_streams(x: Tensor, n: int) -> Tensor:
    """The batch repeated n times along dim 0: [x; x; ...] (one copy per task stream)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return x.repeat(n, *([1] * (x.dim() - 1)))


def split_streams(x: Tensor, n: int) -> list[Tensor]:
    """The n equal per-task chunks of a stacked batch (views)."""
    if n < 1 or x.shape[0] % n:
        raise ValueError(f"batch of {x.shape[0]} cannot be split into n={n} equal streams")
    return list(x.tensor_split(n, dim=0))


def merge_streams(chunks: Sequence[Tensor]) -> Tensor:
    """Stack per-task chunks of equal size into one batch (inverse of `split_streams`)."""
    if not chunks:
        raise ValueError("merge_streams needs at least one chunk")
    sizes = {c.shape[0] for c in chunks}
    if len(sizes) != 1:
        raise ValueError(f"stream chunks must have equal batch sizes, got {[c.shape[0] for c in chunks]}")
    return torch.cat(list(chunks), dim=0)


def set_active_tasks(model: nn.Module, tasks: Sequence[str]) -> None:
    """Make every FSLoRA layer of `model` expect a batch of one chunk per task in `tasks`."""
    tasks = tuple(tasks)
    layers = [m for m in model.modules() if isinstance(m, FSLoRALayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no FSLoRA layers (call inject_fslora first)")
    for layer in layers:
        layer.active_tasks = tasks


@contextmanager
def active_tasks(model: nn.Module, tasks: Sequence[str]) -> Iterator[nn.Module]:
    """Temporarily `set_active_tasks(model, tasks)`; every layer's previous tasks come back on exit."""
    layers = [m for m in model.modules() if isinstance(m, FSLoRALayer)]
    previous = [m.active_tasks for m in layers]
    try:
        set_active_tasks(model, tasks)
        yield model
    finally:
        for layer, prev in zip(layers, previous, strict=True):
            layer.active_tasks = prev
