"""Load official MzeroMiko/VMamba v2 checkpoints into :class:`fslora.backbones.vmamba.VMamba`.

Our module names equal the official ones, so the mapping is the identity except for:
- the checkpoint wrapper: ``torch.load(path, weights_only=True)`` gives ``{"model": ..., "model_ema": ...}``;
  the state dict inside is used (no ``module.`` prefix in the released files);
- FSLoRA-wrapped linears: an official ``...op.in_proj.weight`` lands in ``...op.in_proj.base_layer.weight``
  and the adapter parameters are not expected in the checkpoint;
- ``classifier.*`` of a classification checkpoint is dropped when our model has ``num_classes=0``;
- a classification checkpoint has no ``outnorm{i}`` (the detection wrapper's output norms): they are
  reset to the identity (weight 1, bias 0), which is what the official detection wrapper starts from
  when it loads an ImageNet checkpoint, and are not reported as missing.
Shape mismatches raise a ``ValueError`` naming the key; everything else unknown is returned as unexpected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fslora.adapters import fslora_layers

__all__ = ["load_official_vmamba", "unwrap_checkpoint"]

logger = logging.getLogger(__name__)


def unwrap_checkpoint(checkpoint: Mapping[str, Any], *, use_ema: bool = False) -> dict[str, Tensor]:
    """The state dict of a checkpoint: ``checkpoint["model"]`` (or ``["model_ema"]``), or the dict itself."""
    if use_ema:
        if not isinstance(checkpoint.get("model_ema"), Mapping):
            raise ValueError("load_official_vmamba(use_ema=True): the checkpoint has no 'model_ema' entry")
        return dict(checkpoint["model_ema"])
    for key in ("model", "model_ema"):
        if isinstance(checkpoint.get(key), Mapping):
            return dict(checkpoint[key])
    if not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError("load_official_vmamba: expected a state dict or a checkpoint with a 'model' entry")
    return dict(checkpoint)


@torch.no_grad()
def load_official_vmamba(
    model: nn.Module, state_dict: Mapping[str, Any], *, use_ema: bool = False
) -> tuple[list[str], list[str]]:
    """Load official VMamba weights into ``model``; returns ``(missing_keys, unexpected_keys)``.

    ``missing_keys`` are our backbone parameters the checkpoint does not provide (adapters excluded);
    ``unexpected_keys`` the checkpoint entries that have no place in our model.
    """
    source = unwrap_checkpoint(state_dict, use_ema=use_ema)
    ours = model.state_dict()
    if set(source) == set(ours):  # already our layout (e.g. a saved VMamba state dict)
        for key, value in source.items():
            _check_shape(key, value, ours[key])
        model.load_state_dict(source)
        return [], []

    adapter_keys = _adapter_keys(model, ours)
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    dropped: list[str] = []
    for key, value in source.items():
        target = _our_key(key, ours)
        if target is None:
            if key.startswith("classifier.") and getattr(model, "classifier", None) is None:
                dropped.append(key)
            else:
                unexpected.append(key)
            continue
        _check_shape(key, value, ours[target])
        mapped[target] = value
    if dropped:
        logger.info("load_official_vmamba: dropped %d classifier keys (num_classes=0)", len(dropped))

    if not any(k.startswith("outnorm") for k in source):  # classification layout
        for key in ours:
            if key.startswith("outnorm") and key not in mapped:
                identity = torch.ones_like if key.endswith(".weight") else torch.zeros_like
                mapped[key] = identity(ours[key])

    model.load_state_dict(mapped, strict=False)
    missing = [k for k in ours if k not in mapped and k not in adapter_keys]
    return missing, unexpected


def _our_key(key: str, ours: Mapping[str, Tensor]) -> str | None:
    """Our name for an official key: the same name, or inside an FSLoRA layer's ``base_layer``."""
    if key in ours:
        return key
    module, _, leaf = key.rpartition(".")
    wrapped = f"{module}.base_layer.{leaf}"
    return wrapped if wrapped in ours else None


def _adapter_keys(model: nn.Module, ours: Mapping[str, Tensor]) -> set[str]:
    """State-dict keys of FSLoRA adapters (everything inside an FSLoRA layer but its base layer)."""
    prefixes = [name + "." for name in fslora_layers(model)]
    return {k for k in ours for p in prefixes if k.startswith(p) and not k.startswith(p + "base_layer.")}


def _check_shape(key: str, value: Any, expected: Tensor) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(f"load_official_vmamba: {key!r} is a {type(value).__name__}, not a tensor")
    if value.shape != expected.shape:
        hint = (
            " (set num_classes to match, or 0 to drop the classifier)"
            if key.startswith("classifier.")
            else ""
        )
        raise ValueError(
            f"load_official_vmamba: {key!r} has shape {list(value.shape)} in the checkpoint but "
            f"{list(expected.shape)} in the model{hint}"
        )
