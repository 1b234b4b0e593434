"""Backbone families by name: the one place that maps a config's ``family`` to its classes.

A config's backbone section names its family (``family: mobilenetv2``); without one it is VMamba, as
every checkpoint written before families existed. A new family adds one line here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fslora.backbones.base import Backbone
from fslora.backbones.mobilenetv2 import MobileNetV2, MobileNetV2Config
from fslora.backbones.vmamba import VMamba, VMambaConfig

BackboneConfig = VMambaConfig | MobileNetV2Config

FAMILIES: dict[str, tuple[type, type[Backbone]]] = {
    "vmamba": (VMambaConfig, VMamba),
    "mobilenetv2": (MobileNetV2Config, MobileNetV2),
}
DEFAULT_FAMILY = "vmamba"


def family_of(config: Any) -> str:
    for name, (config_cls, _) in FAMILIES.items():
        if isinstance(config, config_cls):
            return name
    accepted = [c.__name__ for c, _ in FAMILIES.values()]
    raise ValueError(f"backbone must be one of {accepted}, got {type(config).__name__}")


def build_backbone(config: BackboneConfig) -> Backbone:
    """The backbone module of ``config``'s family."""
    return FAMILIES[family_of(config)][1](config)


def backbone_config_from_dict(value: Any) -> BackboneConfig:
    """``"nano"`` / ``{"preset": "tiny", ...}`` (VMamba) or ``{"family": "mobilenetv2", ...fields}``."""
    if isinstance(value, str):
        value = {"preset": value}
    if not isinstance(value, dict):
        raise ValueError(f"backbone must be a preset name or a mapping, got {value!r}")
    value = dict(value)
    family = value.pop("family", DEFAULT_FAMILY)
    if family not in FAMILIES:
        raise ValueError(f"backbone.family: unknown {family!r}, choose one of {sorted(FAMILIES)}")
    config_cls = FAMILIES[family][0]
    preset = value.pop("preset", None)
    if preset is not None and family != "vmamba":
        raise ValueError(f"backbone.preset applies to the vmamba family only, not {family!r}")
    try:
        base = VMambaConfig.preset(preset) if preset is not None else config_cls()
    except (KeyError, ValueError) as e:
        raise ValueError(f"backbone.preset: unknown preset {preset!r} ({e})") from e
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in backbone; valid fields: {sorted(known)}")
    try:
        return dataclasses.replace(base, **value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"backbone: {e}") from e


def backbone_config_to_dict(config: BackboneConfig) -> dict[str, Any]:
    return {"family": family_of(config), **config.to_dict()}
