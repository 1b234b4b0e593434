"""Adapter-only state: parameter counts, state dicts, and save/load as safetensors + JSON config.

An adapter checkpoint holds only the `...adapters.<task>...` tensors (keys exactly as in
`model.state_dict()`), so it is small and loads onto any copy of the same backbone. `save_adapters`
writes a folder with `adapter_model.safetensors` and `adapter_config.json`; `load_adapters` injects the
adapters first when the model has none yet. Loading is strict by default: a missing, unexpected or
mis-shaped key is a `ValueError`, never a silent partial load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import FSLoRAConfig
from .inject import fslora_layers, inject_fslora

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"


def count_parameters(model: nn.Module) -> dict[str, float]:
    """{"total", "trainable", "adapter", "adapter_fraction"}; fraction = adapter / non-adapter params."""
    adapter_ids = {
        id(p) for layer in fslora_layers(model).values() for p in layer.adapters.parameters()
    }
    params = list(model.parameters())  # shared parameters are listed once
    total = sum(p.numel() for p in params)
    adapter = sum(p.numel() for p in params if id(p) in adapter_ids)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    base = total - adapter
    return {
        "total": total,
        "trainable": trainable,
        "adapter": adapter,
        "adapter_fraction": adapter / base if base else float("inf"),
    }


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter tensors of `model`, keyed as in `model.state_dict()`."""
    sd: dict[str, Tensor] = {}
    for name, layer in fslora_layers(model).items():
        prefix = f"{name}.adapters."
        for key, value in layer.adapters.state_dict().items():
            sd[prefix + key] = value
    return sd


def load_adapter_state_dict(
    model: nn.Module, state_dict: dict[str, Tensor], strict: bool = True
) -> tuple[list[str], list[str]]:
    """Copy adapter tensors into `model`; returns (missing, unexpected) keys (empty when strict)."""
    own = adapter_state_dict(model)
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if strict and (missing or unexpected):
        raise ValueError(
            f"adapter state dict does not match the model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''} ({len(missing)}), unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    with torch.no_grad():
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if value.shape != target.shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)} != model's {tuple(target.shape)}")
            target.copy_(value)
    return missing, unexpected


def save_adapters(model: nn.Module, path: str | Path, config: FSLoRAConfig) -> Path:
    """Write `path/adapter_model.safetensors` and `path/adapter_config.json`; returns the folder."""
    folder = Path(path)
    sd = adapter_state_dict(model)
    if not sd:
        raise ValueError(f"{type(model).__name__} has no FSLoRA adapters to save")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2))
    return folder


def load_adapter_config(path: str | Path) -> FSLoRAConfig:
    """The `FSLoRAConfig` stored by `save_adapters` in folder `path`."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise ValueError(f"{file}: no adapter config (expected a folder written by save_adapters)")
    try:
        return FSLoRAConfig.from_dict(json.loads(file.read_text()))
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from e


def load_adapters(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load adapters saved by `save_adapters` into `model`, injecting them first if it has none."""
    config = load_adapter_config(path)
    file = Path(path) / WEIGHTS_NAME
    if not file.is_file():
        raise ValueError(f"{file}: adapter weights not found")
    if not fslora_layers(model):
        inject_fslora(model, config)
    device = next(iter(adapter_state_dict(model).values())).device
    load_adapter_state_dict(model, load_file(str(file), device=str(device)), strict=strict)
    return model
