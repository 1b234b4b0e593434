"""`PersonSearchConfig`: everything that defines an `FSLoRAPersonSearch`, as nested validated dataclasses.

Defaults live here (the paper's NAE settings, VMamba-T, 900x1500 input); YAML files in
``configs/models/`` override them. The whole config is written to ``config.json`` next to the weights, so
a checkpoint rebuilds exactly the model that produced it. ``architecture_version`` is bumped whenever a
change makes old weights incompatible with the code (renamed/reshaped parameters, different meaning).
Unknown keys and bad values raise ``ValueError`` naming the field (``rpn.nms_thresh``...).

The backbone section is either a VMamba preset name (``backbone: nano``) or a mapping
``{preset: tiny, drop_path_rate: 0.2}`` / ``{family: mobilenetv2, split_from_stage: 2}`` / the full field
list with its ``family`` (what ``to_dict`` writes; without ``family`` it is VMamba).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fslora.adapters import FSLoRAConfig
from fslora.backbones.registry import (
    BackboneConfig,
    backbone_config_from_dict,
    backbone_config_to_dict,
    family_of,
)
from fslora.backbones.vmamba import VMambaConfig
from fslora.utils.config_dict import config_to_dict, reject_unknown_fields

ARCHITECTURE = "FSLoRAPersonSearch"
ARCHITECTURE_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("nae",)
PERSON_SCORES = ("norm", "det")
"""Where the NAE head's person logit comes from (see `PersonSearchConfig.person_score`)."""


@dataclass
class TransformConfig:
    """Resizing and normalisation owned by the model (the input side of ``detect``)."""

    min_size: int = 900
    """Shorter image side after resizing (pixels)."""
    max_size: int = 1500
    """Cap on the longer side after resizing (pixels)."""
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    size_divisible: int = 32
    """Batches are padded to a multiple of this (the backbone's total stride)."""

    def validate(self) -> None:
        _positive_int("transform.min_size", self.min_size)
        _positive_int("transform.max_size", self.max_size)
        _positive_int("transform.size_divisible", self.size_divisible)
        if self.max_size < self.min_size:
            raise ValueError(f"transform.max_size ({self.max_size}) must be >= min_size ({self.min_size})")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"transform.{name} needs 3 values (RGB), got {value!r}")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"transform.image_std must be > 0, got {self.image_std!r}")


@dataclass
class RPNConfig:
    """Region proposal network on the det stream's stride-16 map (torchvision's RPN)."""

    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    nms_thresh: float = 0.7
    pre_nms_top_n_train: int = 12000
    post_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 6000
    post_nms_top_n_test: int = 300

    def validate(self) -> None:
        if not self.anchor_sizes or any(s <= 0 for s in self.anchor_sizes):
            raise ValueError(f"rpn.anchor_sizes must be positive, got {self.anchor_sizes!r}")
        if not self.aspect_ratios or any(r <= 0 for r in self.aspect_ratios):
            raise ValueError(f"rpn.aspect_ratios must be positive, got {self.aspect_ratios!r}")
        _iou_pair("rpn", self.fg_iou_thresh, self.bg_iou_thresh)
        _fraction("rpn.positive_fraction", self.positive_fraction)
        _fraction("rpn.nms_thresh", self.nms_thresh)
        for name in (
            "batch_size_per_image",
            "pre_nms_top_n_train",
            "post_nms_top_n_train",
            "pre_nms_top_n_test",
            "post_nms_top_n_test",
        ):
            _positive_int(f"rpn.{name}", getattr(self, name))


@dataclass
class RoIConfig:
    """RoI sampling, the box head input and test-time post-processing."""

    output_size: int = 14
    """RoIAlign output (the stage-4 downsample halves it to 7x7)."""
    sampling_ratio: int = 2
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    """Proposals with max IoU in [bg_iou_low, bg_iou_thresh) are background."""
    bg_iou_low: float = 0.1
    """Proposals below this IoU with every person are not sampled (0 samples them all)."""
    batch_size_per_image: int = 128
    positive_fraction: float = 0.5
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    nms_thresh: float = 0.4
    detections_per_img: int = 100
    box_head_chunk: int = 64
    """RoIs per stream per box-head call on the CPU (0 = all at once). Every RoI is computed on its own
    (no batch statistics in the box head), so this changes speed only: cache-sized chunks run the CPU
    scan about 2x faster than 300 RoIs at once. CUDA always takes all RoIs in one call."""

    def validate(self) -> None:
        _positive_int("roi.output_size", self.output_size)
        if self.output_size % 2:
            raise ValueError(
                f"roi.output_size must be even (the box head downsamples by 2), got {self.output_size}"
            )
        _positive_int("roi.sampling_ratio", self.sampling_ratio)
        _iou_pair("roi", self.fg_iou_thresh, self.bg_iou_thresh)
        if not 0.0 <= self.bg_iou_low <= self.bg_iou_thresh:
            raise ValueError(f"roi.bg_iou_low must be in [0, bg_iou_thresh], got {self.bg_iou_low}")
        _positive_int("roi.batch_size_per_image", self.batch_size_per_image)
        _fraction("roi.positive_fraction", self.positive_fraction)
        if len(self.bbox_reg_weights) != 4 or any(w <= 0 for w in self.bbox_reg_weights):
            raise ValueError(f"roi.bbox_reg_weights needs 4 positive values, got {self.bbox_reg_weights!r}")
        _fraction("roi.nms_thresh", self.nms_thresh)
        _positive_int("roi.detections_per_img", self.detections_per_img)
        if (
            isinstance(self.box_head_chunk, bool)
            or not isinstance(self.box_head_chunk, int)
            or self.box_head_chunk < 0
        ):
            raise ValueError(f"roi.box_head_chunk must be an int >= 0, got {self.box_head_chunk!r}")


@dataclass
class OIMConfig:
    """OIM re-id loss; ``num_ids`` comes from the training set (CUHK-SYSU 5532, PRW 482)."""

    num_ids: int = 5532
    queue_size: int = 5000
    momentum: float = 0.5
    scalar: float = 30.0

    def validate(self) -> None:
        _positive_int("oim.num_ids", self.num_ids)
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size < 0:
            raise ValueError(f"oim.queue_size must be an int >= 0, got {self.queue_size!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"oim.momentum must be in [0, 1), got {self.momentum!r}")
        if not self.scalar > 0:
            raise ValueError(f"oim.scalar must be > 0, got {self.scalar!r}")


_SECTIONS = {"transform": TransformConfig, "rpn": RPNConfig, "roi": RoIConfig, "oim": OIMConfig}


@dataclass
class PersonSearchConfig:
    """The whole one-stage person-search model: backbone, adapters, head, input handling."""

    name: str = "fslora-nae-vmamba-tiny"
    backbone: BackboneConfig = field(default_factory=lambda: VMambaConfig.preset("tiny"))
    """A VMamba (default family) or MobileNetV2 config; its ``family`` is written to config.json."""
    use_adapters: bool = True
    """True: frozen backbone + FSLoRA dual streams. False: the NAE baseline, one fine-tuned stream."""
    adapters: FSLoRAConfig = field(default_factory=FSLoRAConfig)
    head: str = "nae"
    embedding_dim: int = 256
    """Re-id embedding size: half from the pooled stage-3 RoI, half from the pooled stage-4 output."""
    person_score: str = "norm"
    """Person logit of each RoI. ``"norm"``: NAE's norm-aware score, the embedding norm through
    BatchNorm1d(1) (the paper's head). ``"det"``: BatchNorm1d + a linear classifier on the det stream's
    pooled box-head output (ours, for backbones trained from scratch: there OIM's pull on the shared
    embedding drives the norm score to chance, docs/results.md "Status of the CPU recipe")."""
    transform: TransformConfig = field(default_factory=TransformConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: RoIConfig = field(default_factory=RoIConfig)
    oim: OIMConfig = field(default_factory=OIMConfig)
    autocast_bf16: bool = True
    """Run under bf16 autocast when the model sits on a CUDA device (ignored on CPU)."""
    architecture_version: int = ARCHITECTURE_VERSION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.architecture_version != ARCHITECTURE_VERSION:
            raise ValueError(
                f"architecture_version {self.architecture_version!r} is not supported by this code "
                f"(expected {ARCHITECTURE_VERSION}); use the fslora release that wrote the checkpoint"
            )
        family_of(self.backbone)  # ValueError naming the accepted configs
        if self.backbone.num_classes != 0:
            raise ValueError(
                f"backbone.num_classes must be 0 (no classifier), got {self.backbone.num_classes}"
            )
        if not isinstance(self.adapters, FSLoRAConfig):
            raise ValueError(f"adapters must be an FSLoRAConfig, got {type(self.adapters).__name__}")
        if self.use_adapters and tuple(self.adapters.tasks) != ("det", "reid"):
            raise ValueError(
                f"adapters.tasks must be ('det', 'reid') for person search, got {self.adapters.tasks}"
            )
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.person_score not in PERSON_SCORES:
            raise ValueError(f"person_score must be one of {PERSON_SCORES}, got {self.person_score!r}")
        _positive_int("embedding_dim", self.embedding_dim)
        if self.embedding_dim % 2:
            raise ValueError(f"embedding_dim must be even (two halves), got {self.embedding_dim}")
        for name in _SECTIONS:
            getattr(self, name).validate()

    # -- (de)serialisation -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PersonSearchConfig:
        """Build from a plain mapping (YAML / config.json); missing keys keep their defaults."""
        if not isinstance(d, dict):
            raise ValueError(f"PersonSearchConfig.from_dict expects a mapping, got {type(d).__name__}")
        d = dict(d)
        d.pop("architecture", None)  # informational in config.json
        reject_unknown_fields("PersonSearchConfig", d, cls)
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in _SECTIONS:
                kwargs[key] = _section_from_dict(key, _SECTIONS[key], value)
            elif key == "backbone":
                kwargs[key] = backbone_from_dict(value)
            elif key == "adapters":
                if not isinstance(value, dict):
                    raise ValueError(f"adapters must be a mapping of FSLoRAConfig fields, got {value!r}")
                try:
                    kwargs[key] = FSLoRAConfig.from_dict(value)
                except ValueError as e:
                    raise ValueError(f"adapters: {e}") from e
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PersonSearchConfig:
        path = Path(path)
        data = yaml.safe_load(path.read_text()) or {}
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples as lists) that ``from_dict`` turns back into an equal config."""
        d = config_to_dict(self, own_to_dict=("adapters",))
        d["backbone"] = backbone_config_to_dict(self.backbone)
        return {"architecture": ARCHITECTURE, **d}


def backbone_from_dict(value: Any) -> BackboneConfig:
    """``"nano"``, ``{"preset": "tiny", ...overrides}`` or ``{"family": "mobilenetv2", ...}`` -> a config."""
    return backbone_config_from_dict(value)


def _section_from_dict(name: str, cls: type, value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping of {cls.__name__} fields, got {value!r}")
    reject_unknown_fields(name, value, cls)
    tuple_fields = {f.name for f in fields(cls) if str(f.type).startswith("tuple")}
    return cls(**{k: tuple(v) if k in tuple_fields and isinstance(v, list) else v for k, v in value.items()})




def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _iou_pair(where: str, fg: float, bg: float) -> None:
    _fraction(f"{where}.fg_iou_thresh", fg)
    _fraction(f"{where}.bg_iou_thresh", bg)
    if bg > fg:
        raise ValueError(f"{where}.bg_iou_thresh ({bg}) must be <= fg_iou_thresh ({fg})")
