"""Training of the person-search model: config, data bridge, schedule, checkpoints, loop, plots.

The command line is `fslora.train` (``python -m fslora.train --config configs/train/NAME.yaml``); this
package holds its parts, one job per module:

- `config`: `TrainConfig` (YAML with ``base:`` inheritance and ``--set`` overrides);
- `data`: dataset loading, `IdentityMap` (pids -> contiguous OIM ids), records -> images + targets,
  the resumable epoch order;
- `schedule`: linear warm-up + step decay;
- `checkpoint`: exact-resume training checkpoints, initialisation from a run or ImageNet weights;
- `metrics_log`: ``metrics.jsonl``;
- `plots`: loss curves, frequency weights, expert masks;
- `loop`: the `Trainer`.
Submodules are imported on use so ``import fslora.training.config`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TrainConfig": "config",
    "IdentityMap": "data",
    "EpochOrder": "data",
    "TrainImages": "data",
    "load_dataset": "data",
    "record_target": "data",
    "build_scheduler": "schedule",
    "lr_factor": "schedule",
    "Progress": "checkpoint",
    "init_weights_from": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "MetricsLog": "metrics_log",
    "read_metrics": "metrics_log",
    "Trainer": "loop",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
