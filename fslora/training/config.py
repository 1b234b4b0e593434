"""`TrainConfig`: one training run (data, model, optimiser, schedule, evaluation) as validated dataclasses.

A training YAML is a small override of these defaults (the paper's NAE recipe on VMamba-T). Two ways to
share settings between files, as SeqNet does with its defaults file:
- ``base: other.yaml`` at the top level deep-merges this file over another training config (path relative
  to this file), so an ablation row is three lines;
- ``model:`` is a model-config path (``configs/models/nano.yaml``) or a mapping of `PersonSearchConfig`
  fields, optionally with ``base: path`` to start from a model file and override a few fields.
Command-line ``--set a.b=value`` overrides (value parsed as YAML) apply to the merged mapping before it is
validated. The run folder receives ``to_dict()``: everything inlined (the model too), so the run folder
alone reproduces and resumes the run. Unknown keys and bad values raise ``ValueError`` naming the field
(``optim.lr``, ``data.dataset``...).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fslora.models.config import PersonSearchConfig
from fslora.utils.config_dict import config_to_dict, reject_unknown_fields

DATASETS = ("synthps", "cuhk-sysu", "prw", "posetrack21", "real-footage")
REPO_ROOT = Path(__file__).resolve().parents[2]
"""Model-config paths that are not found from the working directory are looked up here."""


@dataclass
class DataConfig:
    """Which dataset, where, and how training images are loaded."""

    dataset: str = "synthps"
    """One of synthps, cuhk-sysu, prw, posetrack21, real-footage (`fslora.data.real_footage`)."""
    root: str = "data/synthps-standard"
    """The dataset folder (its loader's layout)."""
    gallery_size: int = 100
    """CUHK-SYSU test gallery size (50, 100, 500, 1000, 2000, 4000) used by the epoch evaluation."""
    hflip: float = 0.5
    """Probability of a horizontal flip of each training image (boxes flipped with it)."""
    num_workers: int = 2
    """DataLoader worker processes decoding images (0 = in the training process)."""
    synthps_seed: int | None = None
    """SynthPS only: generate the split into ``root`` with this seed when ``root`` holds none yet."""
    synthps_preset: str = "standard"
    """SynthPS preset used with ``synthps_seed`` (standard | tiny)."""
    train_images: int | None = None
    """Train on this many of the training images, evenly spread over the list (None = all): an epoch
    budget below one pass, for the CPU recipes."""

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {self.dataset!r}")
        if not isinstance(self.root, str) or not self.root:
            raise ValueError(f"data.root must be a non-empty path, got {self.root!r}")
        _positive_int("data.gallery_size", self.gallery_size)
        _number_in("data.hflip", self.hflip, 0.0, 1.0)
        _int_at_least("data.num_workers", self.num_workers, 0)
        if self.train_images is not None:
            _positive_int("data.train_images", self.train_images)
        if self.synthps_seed is not None:
            _int_at_least("data.synthps_seed", self.synthps_seed, 0)
            if self.dataset != "synthps":
                raise ValueError(f"data.synthps_seed only applies to dataset synthps, not {self.dataset!r}")


OPTIMIZERS = {"sgd": "SGD", "adamw": "AdamW"}
"""optim.name -> the optimizer's display name."""


@dataclass
class OptimConfig:
    """SGD or AdamW, linear warm-up, step decay (the paper: SGD lr 0.003, x0.1 at epoch 16, clip 10)."""

    name: str = "sgd"
    """``sgd`` (the paper's) or ``adamw`` (ours, for training the nano backbone from scratch: SGD at lr 0.01
    barely moved its detection losses, AdamW fitted them; AdamW skips weight decay on norms and
    biases)."""
    lr: float = 0.003
    momentum: float = 0.9
    """SGD momentum (unused by AdamW, whose betas are torch's defaults)."""
    weight_decay: float = 5e-4
    warmup_steps: int = 1000
    """Optimizer steps of linear warm-up from ``lr * warmup_factor`` to ``lr`` (0 = none)."""
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = (16,)
    """Epochs (0-based) from which the lr is multiplied by another ``gamma``."""
    gamma: float = 0.1
    grad_clip: float | None = 10.0
    """Max global gradient norm (None = no clipping; the norm is still logged)."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """Per-loss weights by name (``loss_oim: 1.0``...); losses not listed weigh 1."""

    def validate(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {list(OPTIMIZERS)}, got {self.name!r}")
        _number_in("optim.lr", self.lr, 0.0, None, open_low=True)
        _number_in("optim.momentum", self.momentum, 0.0, 1.0)
        _number_in("optim.weight_decay", self.weight_decay, 0.0, None)
        _int_at_least("optim.warmup_steps", self.warmup_steps, 0)
        _number_in("optim.warmup_factor", self.warmup_factor, 0.0, 1.0, open_low=True)
        for m in self.milestones:
            _int_at_least("optim.milestones", m, 1)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"optim.milestones must be increasing epochs, got {list(self.milestones)}")
        _number_in("optim.gamma", self.gamma, 0.0, 1.0, open_low=True)
        if self.grad_clip is not None:
            _number_in("optim.grad_clip", self.grad_clip, 0.0, None, open_low=True)
        if not isinstance(self.loss_weights, dict):
            raise ValueError(
                f"optim.loss_weights must be a mapping name -> weight, got {self.loss_weights!r}"
            )
        for name, weight in self.loss_weights.items():
            _number_in(f"optim.loss_weights.{name}", weight, 0.0, None)


@dataclass
class EvalConfig:
    """Evaluation on the test split during training (the standard protocol of the dataset)."""

    every: int = 1
    """Evaluate after every ``every``-th epoch (0 = never during training)."""
    at_end: bool = True
    """Evaluate after the last epoch on every query (its figures go into the model card)."""
    max_queries: int | None = None
    """Per-epoch evaluations use this many queries (evenly spread over the list) for speed; None = all."""
    batch_size: int = 4
    """Gallery images per ``detect`` call."""
    score_thresh: float = 0.5
    multi_view: bool = False
    """PRW's multi-view variant (PoseTrack21: cross-video); not for CUHK-SYSU."""

    def validate(self) -> None:
        _int_at_least("eval.every", self.every, 0)
        if self.max_queries is not None:
            _positive_int("eval.max_queries", self.max_queries)
        _positive_int("eval.batch_size", self.batch_size)
        _number_in("eval.score_thresh", self.score_thresh, 0.0, 1.0)


@dataclass
class PlotConfig:
    """PNG plots written into ``RUN/plots`` after every epoch."""

    enabled: bool = True
    num_images: int = 2
    """Test images whose routing feeds the frequency-weight plot (the first one also the mask plot)."""

    def validate(self) -> None:
        _positive_int("plots.num_images", self.num_images)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "plots": PlotConfig,
}


@dataclass
class TrainConfig:
    """One training run. ``model`` is the full `PersonSearchConfig`; ``oim.num_ids`` is set from the data."""

    name: str = "run"
    model: PersonSearchConfig = field(default_factory=PersonSearchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plots: PlotConfig = field(default_factory=PlotConfig)
    epochs: int = 22
    batch_size: int = 5
    amp: bool = True
    """bf16 autocast on CUDA (no effect on the CPU)."""
    seed: int = 0
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:1"..."""
    log_every: int = 20
    """Write a step record to metrics.jsonl every this many optimizer steps (and on the first)."""
    checkpoint_every_steps: int = 0
    """Also checkpoint every this many steps inside an epoch (0 = at epoch ends only)."""
    keep_checkpoints: int = 2
    """Training checkpoints kept in RUN/checkpoints (older ones are deleted)."""
    init_backbone_from: str | None = None
    """Backbone weights to start from: a checkpoint folder / run folder (its ``final``), a
    ``.safetensors`` state dict, or an official VMamba ImageNet ``.pth``. Used only on a fresh start."""
    init_heads: bool = False
    """With ``init_backbone_from`` a person-search checkpoint: also load its head (not the OIM tables)."""
    precise_bn_batches: int = 20
    """Before every checkpoint and the final save, recompute BatchNorm running stats on this many
    training batches with the current weights (0 = keep the running averages); see
    `fslora.training.precise_bn`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.model, PersonSearchConfig):
            raise ValueError(f"model must be a PersonSearchConfig, got {type(self.model).__name__}")
        for name in _SECTIONS:
            getattr(self, name).validate()
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _int_at_least("seed", self.seed, 0)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu") or self.device.startswith("cuda")
        ):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        _positive_int("log_every", self.log_every)
        _int_at_least("checkpoint_every_steps", self.checkpoint_every_steps, 0)
        _positive_int("keep_checkpoints", self.keep_checkpoints)
        _int_at_least("precise_bn_batches", self.precise_bn_batches, 0)
        if self.init_heads and not self.init_backbone_from:
            raise ValueError("init_heads needs init_backbone_from (the checkpoint to take the heads from)")
        if self.eval.multi_view and self.data.dataset == "cuhk-sysu":
            raise ValueError("eval.multi_view does not apply to cuhk-sysu (it lists each query's gallery)")

    # -- (de)serialisation -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, base_dir: Path | None = None) -> TrainConfig:
        """Build from a mapping (missing keys keep their defaults); ``base_dir`` resolves model paths."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a training config must be a mapping, got {type(d).__name__}")
        d = dict(d)
        reject_unknown_fields("the training config", d, cls)
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in _SECTIONS:
                kwargs[key] = _section(key, _SECTIONS[key], value)
            elif key == "model":
                kwargs[key] = resolve_model_config(value, base_dir)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        """Load ``path`` (following ``base:``) and apply ``key=value`` overrides; errors name the file."""
        path = Path(path)
        raw = load_yaml_with_base(path)
        try:
            apply_overrides(raw, overrides)
            return cls.from_dict(raw, base_dir=path.parent)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-able mapping that ``from_dict`` turns back into an equal config."""
        return config_to_dict(self, own_to_dict=("model",))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# -- YAML, bases and overrides ---------------------------------------------------------------------


def load_yaml_with_base(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A training YAML as a mapping, deep-merged over its ``base:`` file (recursively)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    if path.resolve() in _seen:
        raise ValueError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of training-config fields")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = path.parent / str(base)
    return deep_merge(load_yaml_with_base(base_path, (*_seen, path.resolve())), data)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``; nested mappings merge, everything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings in place (value parsed as YAML: numbers, bools, lists, null)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value (e.g. optim.lr=0.01)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: value is not valid YAML ({e})") from e
        parts = key.strip().split(".")
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if part == "model" and depth == 0 and isinstance(child, str):
                child = node[part] = {"base": child}  # a model path gets overridable fields
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def resolve_model_config(value: Any, base_dir: Path | None = None) -> PersonSearchConfig:
    """``model:`` as a path or a mapping (optionally with ``base: path``) -> `PersonSearchConfig`."""
    if isinstance(value, PersonSearchConfig):
        return value
    if isinstance(value, str):
        value = {"base": value}
    if not isinstance(value, Mapping):
        raise ValueError(f"model must be a model-config path or a mapping of its fields, got {value!r}")
    value = dict(value)
    base = value.pop("base", None)
    if base is not None:
        file = find_file(str(base), base_dir, "model.base")
        data = yaml.safe_load(file.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"model.base: {file} is not a mapping of PersonSearchConfig fields")
        value = deep_merge(data, value)
    try:
        return PersonSearchConfig.from_dict(value)
    except ValueError as e:
        raise ValueError(f"model: {e}") from e


def find_file(path: str, base_dir: Path | None, field_name: str) -> Path:
    """A path as given, else relative to ``base_dir`` (the config's folder), else to the repository."""
    candidates = [Path(path).expanduser()]
    if not candidates[0].is_absolute():
        candidates += [base_dir / path] if base_dir is not None else []
        candidates.append(REPO_ROOT / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError(f"{field_name}: file {path!r} not found (looked in {[str(c) for c in candidates]})")


# -- validation helpers ----------------------------------------------------------------------------


def _section(name: str, cls: type, value: Any) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of {cls.__name__} fields, got {value!r}")
    reject_unknown_fields(name, value, cls)
    tuple_fields = {f.name for f in fields(cls) if str(f.type).startswith("tuple")}
    kwargs = {k: tuple(v) if k in tuple_fields and isinstance(v, list) else v for k, v in value.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{name}: {e}") from e


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: Any) -> None:
    _int_at_least(name, value, 1)


def _int_at_least(name: str, value: Any, low: int) -> None:
    if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _number_in(name: str, value: Any, low: float, high: float | None, *, open_low: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        ok = value > low if open_low else value >= low
        ok = ok and (high is None or value <= high)
    if not ok:
        upper = f"{high}]" if high is not None else "inf)"
        bound = f"{'(' if open_low else '['}{low}, {upper}"
        raise ValueError(f"{name} must be a number in {bound}, got {value!r}")
