"""FSLoRA adapters: freq-spatial low-rank adapters with one adapter per task on stacked streams.

    from fslora.adapters import FSLoRAConfig, inject_fslora, capture_routing
    inject_fslora(backbone, FSLoRAConfig())          # wraps in_proj/out_proj/mlp.fc1/mlp.fc2
    y = backbone(stack_streams(x, 2))                # det chunk, then reid chunk
"""

from .adapter import BranchOutput, FSLoRAAdapter
from .backbone import adapter_targets, forward_streams, inject_backbone, run_stage
from .config import FSLoRAConfig
from .frequency import FrequencyModule, frequency_masks, frequency_radius
from .inject import find_targets, fslora_layers, inject_fslora, matches_target
from .layer import FSLoRALayer
from .routing import RoutingRecord, RoutingRecorder, capture_routing
from .spatial import SpatialModule
from .state import (
    adapter_state_dict,
    count_parameters,
    load_adapter_config,
    load_adapter_state_dict,
    load_adapters,
    save_adapters,
)
from .streams import active_tasks, merge_streams, set_active_tasks, split_streams, stack_streams

__all__ = [
    "BranchOutput",
    "FSLoRAAdapter",
    "FSLoRAConfig",
    "FSLoRALayer",
    "FrequencyModule",
    "RoutingRecord",
    "RoutingRecorder",
    "SpatialModule",
    "active_tasks",
    "adapter_targets",
    "adapter_state_dict",
    "capture_routing",
    "count_parameters",
    "find_targets",
    "forward_streams",
    "frequency_masks",
    "frequency_radius",
    "fslora_layers",
    "inject_backbone",
    "inject_fslora",
    "load_adapter_config",
    "load_adapter_state_dict",
    "load_adapters",
    "matches_target",
    "merge_streams",
    "run_stage",
    "save_adapters",
    "set_active_tasks",
    "split_streams",
    "stack_streams",
]
