"""Helpers for dataclass configs loaded from YAML/JSON mappings: one place for unknown-field errors and
for turning a config back into plain JSON-able data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass
from typing import Any


def reject_unknown_fields(where: str, d: Mapping[str, Any], cls: type) -> None:
    """Raise a ValueError naming every key of `d` that is not a field of the dataclass `cls`."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in {where}; valid fields: {sorted(known)}")


def to_plain(value: Any) -> Any:
    """Nested dicts/lists/tuples -> dicts/lists, so YAML and JSON writers see plain data."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def config_to_dict(config: Any, own_to_dict: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass config as plain data: fields named in `own_to_dict` use their own ``to_dict()``, other
    nested dataclasses become plain dicts, everything else is kept as it is."""
    d: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in own_to_dict:
            d[f.name] = value.to_dict()
        elif is_dataclass(value):
            d[f.name] = to_plain(asdict(value))
        else:
            d[f.name] = value
    return d
