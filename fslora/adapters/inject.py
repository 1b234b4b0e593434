"""Plug-and-play injection: wrap every target module of a model in an `FSLoRALayer`, in place.

Matching follows PEFT: a list of names matches a qualified module name exactly or as a dotted suffix
("mlp.fc1" matches "layers.0.blocks.1.mlp.fc1" but not "layers.0.blocks.1.mlp.xfc1"); a plain string
is a regex that must match the whole qualified name. Matching nothing is an error, never a no-op.
Only the wrapped base layers are frozen; the caller decides what else to freeze.
"""

from __future__ import annotations

import re

from torch import nn

from .config import FSLoRAConfig
from .layer import FSLoRALayer


def matches_target(name: str, target_modules: list[str] | str) -> bool:
    """Whether the qualified module `name` is selected by `target_modules`."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def find_targets(model: nn.Module, config: FSLoRAConfig) -> list[str]:
    """Qualified names of the modules `inject_fslora` would wrap (outside existing FSLoRA layers)."""
    inside_fslora = [n for n, m in model.named_modules() if isinstance(m, FSLoRALayer)]
    names = []
    for name, _ in model.named_modules():
        if not name or any(name == p or name.startswith(p + ".") for p in inside_fslora):
            continue
        if matches_target(name, config.target_modules):
            names.append(name)
    return names


def inject_fslora(model: nn.Module, config: FSLoRAConfig) -> nn.Module:
    """Replace every module matched by `config.target_modules` by an `FSLoRALayer`; return `model`."""
    targets = find_targets(model, config)
    if not targets:
        raise ValueError(
            f"target_modules {config.target_modules!r} matched no module of {type(model).__name__} "
            "(already injected modules are skipped)"
        )
    for name in targets:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = parent.get_submodule(child_name)
        try:
            layer = FSLoRALayer(base, config, rank=config.rank_for(name))
        except ValueError as e:
            raise ValueError(f"target module {name!r}: {e}") from e
        setattr(parent, child_name, layer)
    return model


def fslora_layers(model: nn.Module) -> dict[str, FSLoRALayer]:
    """All FSLoRA layers of `model` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, FSLoRALayer)}
