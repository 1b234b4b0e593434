"""Training checkpoints (exact resume) and weight initialisation from earlier runs or ImageNet.

A training checkpoint is a folder ``RUN/checkpoints/step-{step:08d}/``:
- ``config.json``: the model's `PersonSearchConfig` (the same file `save_pretrained` writes);
- ``model.safetensors``: the full ``model.state_dict()`` (with the OIM lookup table and queue);
- ``optimizer.safetensors``: every tensor of the optimizer state, plus the RNG states (torch CPU / CUDA,
  numpy) as uint8/int64 tensors, so RPN / RoI sampling continues where it stopped;
- ``trainer_state.json``: epoch / step / batch position, scheduler state, the optimizer's param groups
  and non-tensor state.
No pickle anywhere: nothing is read back with ``torch.load`` except an official VMamba ``.pth`` given as
``init_backbone_from``, and that with ``weights_only=True``. A folder is written under a ``.tmp`` name
and renamed when complete, so a crash mid-save never leaves a half checkpoint that looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from fslora.backbones.official import load_official_vmamba
from fslora.backbones.vmamba import VMamba
from fslora.models.checkpoint import base_weight_keys, training_state_keys

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
PREFIX = "step-"


@dataclass(frozen=True)
class Progress:
    """Where training stands: ``epoch`` = epochs finished, ``batch`` = batches done in the next one."""

    epoch: int = 0
    step: int = 0
    batch: int = 0


# -- save ------------------------------------------------------------------------------------------


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    progress: Progress,
    *,
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``progress.step`` into ``folder`` and keep only the newest ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{progress.step:08d}"
    tmp = folder / f"{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_file(_cpu(model.state_dict()), str(tmp / MODEL_FILE))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = _rng_state()
    save_file({**opt_tensors, **rng_tensors}, str(tmp / OPTIMIZER_FILE))
    state = {
        "progress": asdict(progress),
        "scheduler": scheduler.state_dict(),
        "optimizer": opt_meta,
        "rng": rng_meta,
    }
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state dict -> (tensors ``state.{param}.{name}``, JSON-able rest)."""
    tensors: dict[str, Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for param, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.state.{param}.{name}"] = value.detach().cpu().contiguous()
            else:
                other.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": other}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(p): dict(v) for p, v in meta["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer.state."):
            param, name = key[len("optimizer.state.") :].split(".", 1)
            state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(cached)]}


def _set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


# -- load ------------------------------------------------------------------------------------------


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir()
        and p.name.startswith(PREFIX)
        and p.name[len(PREFIX) :].isdigit()
        and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler
) -> Progress:
    """Restore model, optimizer, scheduler and RNG states in place; returns where training stood."""
    path = Path(path)
    for name in (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: incomplete checkpoint, {name} is missing")
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(path / MODEL_FILE), device=str(device)), strict=True)
    state = json.loads((path / STATE_FILE).read_text())
    tensors = load_file(str(path / OPTIMIZER_FILE))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))  # moves to param devices
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(tensors, state["rng"])
    return Progress(**state["progress"])


# -- initialisation from another model ---------------------------------------------------------------


def init_weights_from(model: nn.Module, source: str | Path, *, heads: bool = False) -> str:
    """Load backbone (and with ``heads`` the head) weights of ``model`` from ``source``; returns a summary.

    ``source``: a person-search checkpoint folder (``save_pretrained`` output or a training checkpoint),
    a run folder (its ``final``), a ``.safetensors`` file, or an official VMamba ImageNet ``.pth``.
    Backbone keys map as `load_official_vmamba` maps them (plain linears of a pretraining run land in
    the ``base_layer`` of FSLoRA layers; adapters start fresh). Anything missing or unexpected is a
    ``ValueError`` - a silently partial load would only show as a bad run much later.
    """
    state = _read_state(Path(source))
    has_prefix = any(k.startswith("backbone.") for k in state)
    backbone_state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    if not has_prefix:
        backbone_state = state  # a bare VMamba state dict (official ImageNet or our backbone alone)
    backbone = model.get_submodule("backbone")
    if isinstance(backbone, VMamba):
        missing, unexpected = load_official_vmamba(backbone, backbone_state)
    else:  # other families load by our own names; a pinned base (not stored in checkpoints) may be absent
        base = {k[len("backbone.") :] for k in base_weight_keys(model)}
        own = backbone.state_dict()
        missing = sorted(k for k in own if k not in backbone_state and k not in base)
        unexpected = sorted(k for k in backbone_state if k not in own)
        if not missing and not unexpected:
            backbone.load_state_dict(backbone_state, strict=False)  # exact match checked, minus the base
    if missing or unexpected:
        raise ValueError(
            f"init_backbone_from {source}: backbone keys do not match: missing {missing[:5]} "
            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    summary = f"backbone ({len(backbone_state)} tensors)"
    if heads:
        if not has_prefix:
            raise ValueError(f"init_heads: {source} holds a backbone only, no person-search head")
        head = model.get_submodule("head")
        skip = {k[len("head.") :] for k in training_state_keys(model) if k.startswith("head.")}
        expected = {k for k in head.state_dict() if k not in skip}
        given = {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
        given = {k: v for k, v in given.items() if k not in skip}
        if set(given) != expected:
            raise ValueError(
                f"init_heads: head keys of {source} do not match: "
                f"missing {sorted(expected - set(given))[:5]}, unexpected {sorted(set(given) - expected)[:5]}"
            )
        head.load_state_dict(given, strict=False)  # exact match checked above, minus the OIM tables
        summary += f" and head ({len(given)} tensors)"
    return f"{summary} from {source}"


def _read_state(path: Path) -> dict[str, Tensor]:
    if path.is_dir():
        if not (path / MODEL_FILE).is_file() and (path / "final" / MODEL_FILE).is_file():
            path = path / "final"  # a run folder
        file = path / MODEL_FILE
        if not file.is_file():
            raise FileNotFoundError(f"init_backbone_from: {path} has no {MODEL_FILE}")
        return load_file(str(file))
    if not path.is_file():
        raise FileNotFoundError(f"init_backbone_from: {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix in (".pth", ".pt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict):
            raise ValueError(f"init_backbone_from: {path} does not hold a state dict")
        return checkpoint  # load_official_vmamba unwraps {"model": ...}
    raise ValueError(f"init_backbone_from: {path} is neither a folder, .safetensors nor .pth")
