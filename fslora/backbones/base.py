"""`Backbone`: the interface every backbone family implements (VMamba, MobileNetV2, ...).

A backbone is a stem followed by stages of decreasing resolution. It knows nothing of adapters or task
streams: FSLoRA injection and the dual det/reid streams (`fslora.adapters.backbone`) work through this
interface only, the way PEFT keeps a base model unaware of its tuner. A new family is one new file that
subclasses `Backbone` and registers its config in `fslora.backbones.registry`.

What a family provides:
- ``stem(x)``: the part before stage 0, always shared by every task stream;
- ``stage(i, x)``: stage ``i`` (its downsampling included) on the raw output of stage ``i - 1`` or the stem;
- ``stage_output(i, x)``: what stage ``i`` hands a head (an output norm for VMamba, the identity otherwise);
- ``stage_of(name)``: which stage a qualified submodule name belongs to (None: stem or outside the stages);
- ``is_adaptable(module)``: whether a module is a linear map FSLoRA may wrap (``nn.Linear``, 1x1 conv);
- ``out_channels`` / ``strides`` per stage and ``split_from_stage``, the first stage that runs per task.
``forward_intermediates`` is the one features call (timm's name): the stage outputs of a single stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import Tensor, nn


class Backbone(nn.Module, ABC):
    """A stem and stages; stage ``i`` has ``out_channels[i]`` channels at ``strides[i]`` of the input."""

    @property
    @abstractmethod
    def out_channels(self) -> list[int]:
        """Channels of each stage's output."""

    @property
    @abstractmethod
    def strides(self) -> list[int]:
        """Stride of each stage's output with respect to the input image."""

    @property
    @abstractmethod
    def split_from_stage(self) -> int:
        """First stage whose layers may be adapted (earlier stages run once for all task streams)."""

    @property
    def num_stages(self) -> int:
        return len(self.out_channels)

    @abstractmethod
    def stem(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W), normalised -> the input of stage 0."""

    @abstractmethod
    def stage(self, index: int, x: Tensor) -> Tensor:
        """Raw output of stage ``index`` from the raw output of the stage before it (or of the stem)."""

    def stage_output(self, index: int, x: Tensor) -> Tensor:
        """The map a head reads from stage ``index``'s raw output (families with output norms override)."""
        return x

    @abstractmethod
    def stage_of(self, name: str) -> int | None:
        """The stage that the submodule with qualified ``name`` belongs to; None outside every stage."""

    @abstractmethod
    def is_adaptable(self, module: nn.Module) -> bool:
        """Whether ``module`` is a linear map that an adapter may wrap."""

    def adaptable_layers(self) -> dict[str, int]:
        """Qualified name -> stage of every adaptable linear map inside a stage."""
        out = {}
        for name, module in self.named_modules():
            stage = self.stage_of(name) if name else None
            if stage is not None and self.is_adaptable(module):
                out[name] = stage
        return out

    def check_stage(self, index: int) -> None:
        if not 0 <= index < self.num_stages:
            name = type(self).__name__
            raise ValueError(f"{name}: stage index must be in [0, {self.num_stages - 1}], got {index}")

    def forward_intermediates(self, x: Tensor, stages: Sequence[int] | None = None) -> list[Tensor]:
        """Single-stream outputs (after ``stage_output``) of the requested increasing stages."""
        stages = tuple(range(self.num_stages)) if stages is None else tuple(stages)
        if not stages or list(stages) != sorted(set(stages)):
            raise ValueError(f"forward_intermediates: stages must be increasing, got {stages!r}")
        self.check_stage(stages[-1])
        outputs, y = [], self.stem(x)
        for i in range(stages[-1] + 1):
            y = self.stage(i, y)
            if i in stages:
                outputs.append(self.stage_output(i, y))
        return outputs
