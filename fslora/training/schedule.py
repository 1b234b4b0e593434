"""Learning-rate schedule: linear warm-up, then step decay at given epochs (the paper's recipe).

The schedule is stepped once per optimizer step. It is a closed-form `LambdaLR` rather than a chain of
`LinearLR` + `MultiStepLR`: the lr of step k depends on k alone, so a resumed run gets exactly the same
lrs, and the scheduler state is a few JSON-able numbers (MultiStepLR's state holds a Counter with int
keys, which JSON turns into strings). Milestones are given in epochs, as in MultiStepLR stepped per
epoch: with milestone 16 the lr is multiplied by gamma from the first step of the 17th epoch (index 16).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(
    step: int,
    *,
    warmup_steps: int,
    warmup_factor: float,
    milestone_steps: Sequence[int],
    gamma: float,
) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based).

    Warm-up goes linearly from ``warmup_factor`` at step 0 to 1 at ``warmup_steps``; every milestone
    reached (``step >= milestone``) multiplies by ``gamma``. Both apply when a milestone falls inside
    the warm-up.
    """
    factor = gamma ** bisect_right(sorted(milestone_steps), step)
    if step < warmup_steps:
        progress = step / warmup_steps
        factor *= warmup_factor + (1.0 - warmup_factor) * progress
    return factor


def build_scheduler(
    optimizer: Optimizer,
    *,
    steps_per_epoch: int,
    warmup_steps: int,
    warmup_factor: float,
    milestones: Sequence[int],
    gamma: float,
) -> LambdaLR:
    """Warm-up + step decay for ``optimizer``; ``milestones`` in epochs (converted to optimizer steps)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    factor = partial(
        lr_factor,
        warmup_steps=warmup_steps,
        warmup_factor=warmup_factor,
        milestone_steps=[m * steps_per_epoch for m in milestones],
        gamma=gamma,
    )
    return LambdaLR(optimizer, factor)
