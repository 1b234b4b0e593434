"""`FSLoRALayer`: a frozen linear map W0 plus one FSLoRA adapter per task, on stacked task streams.

    y = W0 x + (alpha / r) * adapter_t(x)     for the chunk of the batch that belongs to task t

The batch is the stack of `len(active_tasks)` equal chunks along dim 0 (DESIGN.md §3): W0 runs once on
the whole batch; the batch is viewed as (T, b, ...) and all active adapters run together
(`grouped_branch`), chunk t through the adapter of `active_tasks[t]`. With `active_tasks = ()` the
layer is exactly the frozen base layer.

Supported base layers and layouts (picked once from the base layer):
- `nn.Linear` on channel-last maps (B, H, W, d_in), or on tokens (..., d_in) when FLM is off
  (a task's tokens form one (tokens x 1) map, so SLM routes each token; routing records then have
  shape (1, n, tokens, 1));
- a 1x1 `nn.Conv2d` (stride 1, no padding, groups 1) on (B, d_in, H, W);
- an `nn.Linear` subclass with `channel_first = True` (VMamba's Linear2d) on (B, d_in, H, W).
Adapters compute channel-first; a channel-last map enters and leaves as a permuted view (no copy).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .adapter import FSLoRAAdapter, grouped_branch
from .config import FSLoRAConfig
from .routing import RoutingRecorder

CHANNEL_LAST, CHANNEL_FIRST = "channel_last", "channel_first"


def base_layer_layout(module: nn.Module) -> tuple[str, int, int]:
    """(layout, d_in, d_out) of a supported base layer; ValueError naming the type otherwise."""
    if isinstance(module, nn.Linear):
        layout = CHANNEL_FIRST if getattr(module, "channel_first", False) is True else CHANNEL_LAST
        return layout, module.in_features, module.out_features
    if isinstance(module, nn.Conv2d):
        pointwise = (
            tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) == (1, 1)
            and tuple(module.dilation) == (1, 1)
            and module.padding in ((0, 0), "valid")
            and module.groups == 1
        )
        if not pointwise:
            raise ValueError(
                f"FSLoRA supports only 1x1 Conv2d (stride 1, no padding, groups 1), got {module}"
            )
        return CHANNEL_FIRST, module.in_channels, module.out_channels
    raise ValueError(f"FSLoRA cannot wrap {type(module).__name__}: supported are nn.Linear and 1x1 nn.Conv2d")


class FSLoRALayer(nn.Module):
    """Frozen `base_layer` + `adapters[task]` for every task of the config."""

    def __init__(self, base_layer: nn.Module, config: FSLoRAConfig, *, rank: int | None = None):
        super().__init__()
        self.layout, self.d_in, self.d_out = base_layer_layout(base_layer)
        self.rank = config.r if rank is None else rank
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        self.scaling = config.alpha / self.rank
        self.has_flm = config.flm
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        weight = base_layer.weight
        self.adapters = nn.ModuleDict(
            {t: FSLoRAAdapter(self.d_in, self.d_out, self.rank, config) for t in config.tasks}
        ).to(device=weight.device, dtype=weight.dtype)
        self._active_tasks: tuple[str, ...] = tuple(config.tasks)
        # set by capture_routing(); None = record nothing
        self.routing_recorder: RoutingRecorder | None = None
        self.routing_name = ""

    @property
    def active_tasks(self) -> tuple[str, ...]:
        """Tasks of the batch chunks, in stacking order; () = base layer only."""
        return self._active_tasks

    @active_tasks.setter
    def active_tasks(self, tasks: tuple[str, ...] | list[str]) -> None:
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in self.adapters]
        if unknown:
            raise ValueError(f"active_tasks {unknown} have no adapter; this layer has {list(self.adapters)}")
        self._active_tasks = tasks

    def extra_repr(self) -> str:
        return f"layout={self.layout}, rank={self.rank}, scaling={self.scaling:g}, tasks={self._active_tasks}"

    def forward(self, x: Tensor) -> Tensor:
        y = self.base_layer(x)
        tasks = self._active_tasks
        if not tasks or x.shape[0] == 0:
            return y
        if x.shape[0] % len(tasks):
            raise ValueError(
                f"batch of {x.shape[0]} cannot be split into {len(tasks)} equal task chunks {tasks} "
                f"(stack the streams with fslora.stack_streams)"
            )
        adapters = [self.adapters[t] for t in tasks]
        grouped_x = self._group(x, len(tasks))
        fused = self._accumulates_in_place(y, adapters[0])
        if fused:  # y += scaling * branch, inside the experts' matmul (no delta map, no separate add)
            out = grouped_branch(adapters, grouped_x, self._group(y, len(tasks)), self.scaling)
        else:
            out = grouped_branch(adapters, grouped_x)
        if self.routing_recorder is not None:
            for i, task in enumerate(tasks):
                masks = out.expert_masks[i] if out.expert_masks is not None else None
                freq = out.freq_weights[i] if out.freq_weights is not None else None
                self.routing_recorder.record(self.routing_name, task, masks, freq, like=out.delta[i])
        if fused:
            return y
        delta = self._ungroup(out.delta, x)
        return torch.add(y, delta.to(y.dtype), alpha=self.scaling)

    def _accumulates_in_place(self, y: Tensor, adapter: FSLoRAAdapter) -> bool:
        """Whether the branch can be added into the base output y by the experts' matmul.

        Needs a dense map (B, C, H, W) or (B, H, W, C), channels-last strides allowed (convolutions keep
        them), whose dtype the adapter computes in; autocast mixes dtypes, so there the branch is added
        out of place.
        """
        return (
            y.dim() == 4
            and (y.is_contiguous() or y.is_contiguous(memory_format=torch.channels_last))
            and y.dtype == adapter.lora_A.weight.dtype
            and not torch.is_autocast_enabled(y.device.type)
        )

    # -- layout conversion: views in, views out --------------------------------------------------------

    def _group(self, x: Tensor, n: int) -> Tensor:
        """The input as task-grouped channel-first maps (n, batch/n, d_in, H, W)."""
        if self.layout == CHANNEL_FIRST:
            if x.dim() != 4:
                raise ValueError(f"channel-first FSLoRA layer expects (B, C, H, W), got {tuple(x.shape)}")
            return x.unflatten(0, (n, -1))
        if x.dim() == 4:
            return x.permute(0, 3, 1, 2).unflatten(0, (n, -1))
        if self.has_flm:
            raise ValueError(
                f"FLM needs a spatial grid: got tokens of shape {tuple(x.shape)}; "
                "pass (B, H, W, C) maps or set flm=False"
            )
        # tokens: one (tokens x 1) map per task, so each matmul covers all of a task's tokens
        return x.reshape(n, -1, self.d_in).transpose(1, 2)[:, None, :, :, None]

    def _ungroup(self, delta: Tensor, like: Tensor) -> Tensor:
        """Grouped adapter output back in the input's layout and batch order."""
        if self.layout == CHANNEL_FIRST:
            return delta.flatten(0, 1)
        if like.dim() == 4:
            return delta.flatten(0, 1).permute(0, 2, 3, 1)
        return delta[:, 0, :, :, 0].transpose(1, 2).reshape(*like.shape[:-1], self.d_out)
