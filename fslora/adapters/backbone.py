"""FSLoRA on any `fslora.backbones.Backbone`: injection and the dual task streams (DESIGN.md section 3).

The backbone only says which of its modules are linear maps and which stage each belongs to; everything
about adapters and streams lives here, so every family gets them the same way:
- `inject_backbone` wraps the adaptable linears of stages >= ``split_from_stage`` that match the config's
  ``target_modules`` and freezes everything else of the backbone (W0);
- `forward_streams` runs the stem and the stages before the split once, then stacks the batch once per
  task (chunk i = ``tasks[i]``), so every frozen op runs once on the stacked batch while each FSLoRA layer
  adds its chunk's adapter;
- `run_stage` continues one stage on an already stacked batch (the person-search box head).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .config import FSLoRAConfig
from .inject import fslora_layers, inject_fslora, matches_target
from .streams import active_tasks, split_streams, stack_streams

if TYPE_CHECKING:
    from fslora.backbones.base import Backbone


def adapter_targets(backbone: Backbone, target_modules: str | Sequence[str]) -> list[str]:
    """Qualified names of the adaptable linears of stages >= split_from_stage matching the targets."""
    first = backbone.split_from_stage
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    return [
        name
        for name, stage in backbone.adaptable_layers().items()
        if stage >= first and matches_target(name, targets)
    ]


def inject_backbone(backbone: Backbone, config: FSLoRAConfig) -> Backbone:
    """Add FSLoRA adapters to the matching linears of stages >= split_from_stage; freeze the rest.

    The adapters library receives the resolved exact names, so stages that run before the split never get
    adapters (they would see an unstacked batch). Afterwards only adapter parameters are trainable.
    """
    targets = adapter_targets(backbone, config.target_modules)
    if not targets:
        raise ValueError(
            f"FSLoRAConfig.target_modules={config.target_modules!r} matches no adaptable linear layer of "
            f"{type(backbone).__name__} in stages >= split_from_stage={backbone.split_from_stage}"
        )
    backbone.requires_grad_(False)
    inject_fslora(backbone, dataclasses.replace(config, target_modules=targets))
    return backbone


def forward_streams(
    backbone: Backbone, x: Tensor, tasks: Sequence[str] = ("det", "reid"), stages: Sequence[int] | None = None
) -> dict[str, list[Tensor]]:
    """One stream per task: ``{task: [stage_output of each requested stage]}``.

    ``stages`` must be increasing (default: all); later stages are not run.
    """
    tasks = tuple(tasks)
    stages = tuple(range(backbone.num_stages)) if stages is None else tuple(stages)
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"forward_streams: tasks must be distinct and non-empty, got {tasks!r}")
    last = backbone.num_stages - 1
    if not stages or list(stages) != sorted(set(stages)) or not 0 <= stages[0] <= stages[-1] <= last:
        raise ValueError(f"forward_streams: stages must be increasing indices in [0, {last}], got {stages!r}")
    split = backbone.split_from_stage
    stage_of = {n: backbone.stage_of(n) for n in fslora_layers(backbone)}
    early = [n for n, stage in stage_of.items() if stage is None or stage < split]
    if early:  # they would see an unstacked batch and silently treat its halves as two tasks
        raise ValueError(
            f"forward_streams: FSLoRA layers before split_from_stage={split} ({early[0]}, ...); "
            "inject with fslora.adapters.inject_backbone"
        )
    outputs: dict[str, list[Tensor]] = {task: [] for task in tasks}
    y = backbone.stem(x)
    stacked = False
    with _tasks_context(backbone, tasks):
        for i in range(stages[-1] + 1):
            if i == split:
                y, stacked = stack_streams(y, len(tasks)), True
            y = backbone.stage(i, y)
            if i in stages:
                out = backbone.stage_output(i, y)
                chunks = split_streams(out, len(tasks)) if stacked else [out] * len(tasks)
                for task, chunk in zip(tasks, chunks, strict=True):
                    outputs[task].append(chunk)
    return outputs


def run_stage(
    backbone: Backbone, index: int, x: Tensor, *, tasks: Sequence[str] | None = None, output: bool = True
) -> Tensor:
    """Stage ``index`` alone on ``x`` (a stacked batch, one chunk per task of ``tasks``).

    With ``output=False`` the raw stage output is returned (what the next stage takes in).
    """
    backbone.check_stage(index)
    with _tasks_context(backbone, tasks):
        y = backbone.stage(index, x)
    return backbone.stage_output(index, y) if output else y


def _tasks_context(backbone: Backbone, tasks: Sequence[str] | None) -> Any:
    """Set the FSLoRA layers' active tasks for a call; nothing to set without adapters."""
    if tasks is None or not fslora_layers(backbone):
        return nullcontext()
    return active_tasks(backbone, tuple(tasks))
