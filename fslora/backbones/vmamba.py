"""VMamba v2 backbone (channel-first ``ln2d``, ``v05_noz``) with dual task streams for FSLoRA.

Reading order: config and presets -> cross-scan / cross-merge -> SS2D -> VSS block -> stage -> model.

Module and parameter names equal the official MzeroMiko/VMamba ones (``patch_embed.0``,
``layers.i.blocks.j.op.x_proj_weight``, ``layers.i.downsample.1``, ``classifier.head``, ``outnorm{i}``),
so official checkpoints load by name (:mod:`fslora.backbones.official`). The official ``nn.Sequential``
containers hold permutes for their channel-last variant; ours skip them and keep the official indices as
names instead (``OrderedDict([("1", conv), ("3", norm)])``).

Numerics follow the official implementation (checked against its outputs in ``shared/reference``):
every downsample is a 3x3 stride-2 conv with zero padding 1 (stage size ceil(H/2), no multiple-of-32
requirement), LayerNorm2d over channels (eps 1e-5), exact GELU, scan directions row-major, column-major
and both reversed with direction-major parameters, merge by sum, out_norm before out_proj,
``delta = softplus(dt + dt_bias)``, ``A = -exp(A_logs)``, per-channel D skip, B and C shared by the
channels of one direction.

VMamba implements `fslora.backbones.base.Backbone` and knows nothing of adapters: FSLoRA injection and
the dual task streams are `fslora.adapters.inject_backbone` / `forward_streams` (DESIGN.md section 3).
``split_from_stage`` stays in this config (checkpoints carry it there).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from fslora.backbones.base import Backbone
from fslora.backbones.layers import LayerNorm2d, Linear2d
from fslora.backbones.official import load_official_vmamba
from fslora.ops import BACKENDS, selective_scan

__all__ = [
    "PRESETS",
    "SS2D",
    "VMamba",
    "VMambaConfig",
    "VSSBlock",
    "VSSStage",
    "cross_merge",
    "cross_scan",
    "load_official_vmamba",
]

NUM_STAGES = 4
NUM_DIRECTIONS = 4

# Architecture presets. tiny/small/base are the released ImageNet models (tiny = "vssm1_tiny_0230s");
# their drop-path rates are the official ImageNet training values - override them for fine-tuning.
# micro1/micro2 are the configs of the numeric fixtures in shared/reference; nano is ours, for CPU tests
# and the bundled demo checkpoint.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"dims": 96, "depths": (2, 2, 8, 2), "d_state": 1, "ssm_ratio": 1.0, "drop_path_rate": 0.2},
    "small": {"dims": 96, "depths": (2, 2, 15, 2), "d_state": 1, "ssm_ratio": 2.0, "drop_path_rate": 0.3},
    "base": {"dims": 128, "depths": (2, 2, 15, 2), "d_state": 1, "ssm_ratio": 2.0, "drop_path_rate": 0.6},
    "micro1": {"dims": 32, "depths": (1, 1, 2, 1), "d_state": 1, "ssm_ratio": 1.0},
    "micro2": {"dims": 24, "depths": (1, 2, 1, 1), "d_state": 4, "ssm_ratio": 2.0},
    "nano": {"dims": 32, "depths": (1, 1, 2, 1), "d_state": 1, "ssm_ratio": 1.0},
}


@dataclass
class VMambaConfig:
    """Architecture and runtime options of :class:`VMamba`."""

    family: ClassVar[str] = "vmamba"

    dims: int | Sequence[int] = 96
    """Base width C (stages get C, 2C, 4C, 8C) or the four stage widths; stored as a 4-tuple."""
    depths: Sequence[int] = (2, 2, 8, 2)
    """VSS blocks per stage."""
    d_state: int = 1
    """SSM state size N."""
    ssm_ratio: float = 1.0
    """SS2D inner width = int(ssm_ratio * C)."""
    mlp_ratio: float = 4.0
    """MLP hidden width = int(mlp_ratio * C)."""
    dt_rank: int | str = "auto"
    """Rank of the delta projection; "auto" = ceil(C / 16) per stage, as official."""
    drop_path_rate: float = 0.0
    """Stochastic depth, linearly increasing over all blocks up to this value."""
    num_classes: int = 0
    """Classifier outputs; 0 = no classifier (backbone only)."""
    in_chans: int = 3
    split_from_stage: int = 0
    """First stage run as stacked per-task streams (and the first that gets adapters)."""
    backend: str = "auto"
    """Selective-scan backend (see fslora.ops.selective_scan)."""

    def __post_init__(self) -> None:
        if isinstance(self.dims, int):
            self.dims = tuple(self.dims * 2**i for i in range(NUM_STAGES))
        self.dims = _int_tuple("dims", self.dims)
        self.depths = _int_tuple("depths", self.depths)
        if self.d_state < 1:
            raise ValueError(f"VMambaConfig.d_state must be >= 1, got {self.d_state}")
        for name in ("ssm_ratio", "mlp_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VMambaConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.dt_rank != "auto" and not (isinstance(self.dt_rank, int) and self.dt_rank >= 1):
            raise ValueError(f"VMambaConfig.dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"VMambaConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.num_classes < 0 or self.in_chans < 1:
            raise ValueError(
                f"VMambaConfig.num_classes must be >= 0 and in_chans >= 1, got {self.num_classes}, "
                f"{self.in_chans}"
            )
        if not 0 <= self.split_from_stage < NUM_STAGES:
            raise ValueError(
                f"VMambaConfig.split_from_stage must be in [0, {NUM_STAGES - 1}], got {self.split_from_stage}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"VMambaConfig.backend must be one of {BACKENDS}, got {self.backend!r}")

    def stage_dt_rank(self, stage: int) -> int:
        """The delta-projection rank of a stage (official "auto": ceil(C / 16))."""
        if self.dt_rank == "auto":
            return math.ceil(self.dims[stage] / 16)
        return int(self.dt_rank)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VMambaConfig:
        """A named architecture (tiny, small, base, micro1, micro2, nano) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"VMambaConfig.preset: unknown name {name!r}, choose from {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VMambaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"VMambaConfig: unknown field(s) {unknown}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> VMambaConfig:
        """Load a config file; a ``preset`` key starts from that preset and the other keys override it."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of VMambaConfig fields")
        preset = data.pop("preset", None)
        return cls.preset(preset, **data) if preset else cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["dims"], data["depths"] = list(self.dims), list(self.depths)
        return data


def _int_tuple(name: str, values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != NUM_STAGES or not all(isinstance(v, int) and v >= 1 for v in values):
        raise ValueError(f"VMambaConfig.{name} must be {NUM_STAGES} positive ints, got {values!r}")
    return values


# ---------------------------------------------------------------------------------------------------------
# Cross-scan / cross-merge: the four 1-D orderings of a 2-D map that SS2D scans.


def cross_scan(x: Tensor) -> Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both reversed.

    ``cross_merge`` is its adjoint: ``cross_merge(cross_scan(x), H, W) == 4 * x``.
    """
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def cross_merge(ys: Tensor, height: int, width: int) -> Tensor:
    """(B, 4, D, H*W) -> (B, D, H, W): undo each direction's ordering and sum the four (not the mean)."""
    batch, _, dim, _ = ys.shape
    y = ys[:, :2] + ys[:, 2:].flip(-1)
    rows = y[:, 0].reshape(batch, dim, height, width)
    cols = y[:, 1].reshape(batch, dim, width, height).transpose(2, 3)
    return rows + cols


# ---------------------------------------------------------------------------------------------------------
# Blocks


class SS2D(nn.Module):
    """2-D selective scan (VMamba v2, ``v05_noz``: no z gate), channel-first.

    in_proj -> depthwise conv3x3 -> SiLU -> cross-scan -> per-direction x_proj to (dt, B, C) and dt_projs
    -> selective scan (softplus(dt + dt_bias), A = -exp(A_logs), D skip) -> cross-merge -> out_norm ->
    out_proj. The per-direction parameters are stacked direction-major under the official names.
    """

    def __init__(self, d_model: int, d_state: int, ssm_ratio: float, dt_rank: int, backend: str = "auto"):
        super().__init__()
        d_inner = int(ssm_ratio * d_model)
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.backend = backend
        self.in_proj = Linear2d(d_model, d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, kernel_size=3, padding=1, groups=d_inner, bias=False)
        self.act = nn.SiLU()
        k = NUM_DIRECTIONS
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.out_norm = LayerNorm2d(d_inner)
        self.out_proj = Linear2d(d_inner, d_model, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        """Official "v0" init: S4D-real A, D = 1, dt bias = softplus^-1 of log-uniform [dt_min, dt_max]."""
        nn.init.uniform_(self.x_proj_weight, -(self.d_inner**-0.5), self.d_inner**-0.5)
        nn.init.uniform_(self.dt_projs_weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dev = self.dt_projs_bias.device
        dt = torch.exp(
            torch.rand(self.dt_projs_bias.shape, device=dev) * (math.log(dt_max) - math.log(dt_min))
            + math.log(dt_min)
        ).clamp(min=1e-4)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=dev)
        self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))
        self.Ds.fill_(1.0)
        for p in (self.A_logs, self.Ds):
            p._no_weight_decay = True  # optimizer builders skip weight decay on these, as official

    def scan_features(self, x: Tensor) -> Tensor:
        """Block input (B, C, H, W) -> cross-merged scan output (B, d_inner, H, W), before out_norm."""
        x = self.act(self.conv2d(self.in_proj(x)))
        batch, dim, height, width = x.shape
        length = height * width
        xs = cross_scan(x)  # (B, K, D, L)
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (K, R+2N, D) @ (B, K, D, L) -> (B, K, R+2N, L)
        dts, bs, cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (K, D, R) @ (B, K, R, L) -> (B, K, D, L)
        ys = selective_scan(
            xs.reshape(batch, -1, length),
            dts.reshape(batch, -1, length),
            -torch.exp(self.A_logs.float()),
            bs.contiguous(),
            cs.contiguous(),
            D=self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(),
            delta_softplus=True,
            backend=self.backend,
        )
        return cross_merge(ys.reshape(batch, NUM_DIRECTIONS, dim, length), height, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_proj(self.out_norm(self.scan_features(x)))


class Mlp(nn.Module):
    """Channel-first feed-forward: fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """Pre-norm residual block: ``x + drop_path(SS2D(norm(x)))`` then ``x + drop_path(MLP(norm2(x)))``."""

    def __init__(self, config: VMambaConfig, stage: int, drop_path: float):
        super().__init__()
        dim = config.dims[stage]
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, config.d_state, config.ssm_ratio, config.stage_dt_rank(stage), config.backend)
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _downsample_v3(dim: int, out_dim: int) -> nn.Sequential:
    """Official downsample "v3": conv3x3 stride 2 (padding 1) + LayerNorm2d; names are official indices."""
    conv = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1)
    return nn.Sequential(OrderedDict([("1", conv), ("3", LayerNorm2d(out_dim))]))


def _patch_embed_v2(in_chans: int, dim: int) -> nn.Sequential:
    """Official patch embed "v2" (stride 4): conv3x3 s2 -> norm -> GELU -> conv3x3 s2 -> norm."""
    return nn.Sequential(
        OrderedDict(
            [
                ("0", nn.Conv2d(in_chans, dim // 2, kernel_size=3, stride=2, padding=1)),
                ("2", LayerNorm2d(dim // 2)),
                ("4", nn.GELU()),
                ("5", nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1)),
                ("7", LayerNorm2d(dim)),
            ]
        )
    )


class VSSStage(nn.Module):
    """The VSS blocks of one stage and the downsample that follows it (identity after the last stage)."""

    def __init__(self, config: VMambaConfig, stage: int, drop_paths: Sequence[float]):
        super().__init__()
        self.blocks = nn.Sequential(*(VSSBlock(config, stage, p) for p in drop_paths))
        last = stage == NUM_STAGES - 1
        self.downsample = (
            nn.Identity() if last else _downsample_v3(config.dims[stage], config.dims[stage + 1])
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.blocks(x))


# ---------------------------------------------------------------------------------------------------------
# Model


class VMamba(Backbone):
    """Channel-first VMamba v2 with per-stage output norms, an optional classifier and dual task streams.

    ``forward(x)`` gives logits (needs ``num_classes > 0``); ``forward_features(x)`` the four stage maps
    (NCHW, strides 4/8/16/32, after ``outnorm{i}``).
    """

    def __init__(self, config: VMambaConfig | None = None):
        super().__init__()
        self.config = config = config or VMambaConfig()
        self.patch_embed = _patch_embed_v2(config.in_chans, config.dims[0])
        rates = _linspace(config.drop_path_rate, sum(config.depths))
        bounds = [sum(config.depths[:i]) for i in range(NUM_STAGES + 1)]
        self.layers = nn.ModuleList(
            VSSStage(config, i, rates[bounds[i] : bounds[i + 1]]) for i in range(NUM_STAGES)
        )
        for i, dim in enumerate(config.dims):  # the official detection wrapper's names
            self.add_module(f"outnorm{i}", LayerNorm2d(dim))
        self.classifier: nn.Sequential | None = None
        if config.num_classes > 0:
            self.classifier = nn.Sequential(
                OrderedDict(
                    norm=LayerNorm2d(config.dims[-1]),
                    avgpool=nn.AdaptiveAvgPool2d(1),
                    flatten=nn.Flatten(1),
                    head=nn.Linear(config.dims[-1], config.num_classes),
                )
            )
        self.apply(_init_weights)

    @property
    def out_channels(self) -> list[int]:
        """Channels of the four stage maps."""
        return list(self.config.dims)

    def outnorm(self, stage: int) -> LayerNorm2d:
        return self.get_submodule(f"outnorm{stage}")

    def set_scan_backend(self, backend: str) -> None:
        """Switch the selective-scan backend of every SS2D (e.g. "reference" to debug)."""
        self.config = dataclasses.replace(self.config, backend=backend)  # validates the name
        for module in self.modules():
            if isinstance(module, SS2D):
                module.backend = backend

    # -- single stream ---------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, in_chans, H, W) -> logits (B, num_classes)."""
        if self.classifier is None:
            raise ValueError("VMamba(num_classes=0) has no classifier; call forward_features(x)")
        *_, last = self._stages(self._check_input(x), NUM_STAGES - 1)
        return self.classifier(last)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Images (B, in_chans, H, W) -> four maps (B, C_i, ceil(H / 2^(i+2)), ...), after outnorm{i}."""
        raw = self._stages(self._check_input(x), NUM_STAGES - 1)
        return [self.outnorm(i)(y) for i, y in enumerate(raw)]

    def _stages(self, x: Tensor, last: int) -> Iterator[Tensor]:
        """Yield the raw (un-normed) output of stages 0..last."""
        x = self.patch_embed(x)
        for i in range(last + 1):
            if i > 0:
                x = self.layers[i - 1].downsample(x)
            x = self.layers[i].blocks(x)
            yield x

    def _check_input(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"VMamba expects images (B, {self.config.in_chans}, H, W), got shape {tuple(x.shape)}"
            )
        return x

    # -- Backbone interface (fslora.backbones.base): stages for the generic FSLoRA streams ---------------

    @property
    def strides(self) -> list[int]:
        return [4 * 2**i for i in range(NUM_STAGES)]

    @property
    def split_from_stage(self) -> int:
        return self.config.split_from_stage

    def stem(self, x: Tensor) -> Tensor:
        return self.patch_embed(self._check_input(x))

    def stage(self, index: int, x: Tensor) -> Tensor:
        """The downsample before stage ``index`` (index > 0), then its blocks (raw, before outnorm)."""
        self.check_stage(index)
        if index > 0:
            x = self.layers[index - 1].downsample(x)
        return self.layers[index].blocks(x)

    def stage_output(self, index: int, x: Tensor) -> Tensor:
        return self.outnorm(index)(x)

    def stage_of(self, name: str) -> int | None:
        """``layers.i.blocks...`` is stage i; ``layers.i.downsample`` runs at the start of stage i + 1."""
        parts = name.split(".")
        if len(parts) < 3 or parts[0] != "layers":
            return None
        stage = int(parts[1]) + (parts[2] == "downsample")
        return stage if stage < NUM_STAGES else None

    def is_adaptable(self, module: nn.Module) -> bool:
        return type(module) in (Linear2d, nn.Linear)


def _linspace(end: float, count: int) -> list[float]:
    """Python linspace(0, end, count): works when the model is built on the meta device."""
    if count <= 1:
        return [0.0] * count
    return [end * i / (count - 1) for i in range(count)]


def _init_weights(module: nn.Module) -> None:
    """Official init: linears truncated-normal std 0.02 with zero bias, norms to identity."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
