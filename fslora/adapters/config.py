"""`FSLoRAConfig`: every switch of the FSLoRA adapter in one validated dataclass.

The defaults are the paper's (r = 32, n = 2 experts, FLM between A and the experts, cutoffs 30/40,
adapters on in_proj / out_proj / mlp.fc1 / mlp.fc2, one adapter per task for det and reid).
YAML / JSON files override these defaults; unknown keys and bad values raise a `ValueError` that names
the field, so a typo in a config file never silently falls back to a default.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

FLM_POSITIONS = ("between", "before", "after")
CUTOFF_MODES = ("absolute", "relative")
DEFAULT_TARGETS = ("in_proj", "out_proj", "mlp.fc1", "mlp.fc2")


@dataclass
class FSLoRAConfig:
    """Configuration of the freq-spatial low-rank adapters (see DESIGN.md §2-3)."""

    r: int = 32
    """Rank of the down-projection A (d_in -> r); `rank_pattern` overrides it per module."""
    alpha: float = 32.0
    """Scale numerator: the adapter branch is multiplied by alpha / r (r = the module's rank)."""
    n_experts: int = 2
    """Number of spatial experts B_i when `slm` is on (ignored, i.e. 1, when it is off)."""
    slm: bool = True
    """Spatial module: n experts mixed by a per-position router. Off = a single B (plain LoRA up)."""
    flm: bool = True
    """Frequency module: low/high band split of the features re-weighted by a per-sample router."""
    flm_position: str = "between"
    """Where FLM sits: "between" (A -> FLM -> SLM, paper), "before" (FLM -> A -> SLM), "after"."""
    cutoffs: tuple[float, float] = (30.0, 40.0)
    """(c_lo, c_hi): low mask is 1 up to c_lo, 0 from c_hi, linear in between."""
    cutoff_mode: str = "absolute"
    """"absolute": cutoffs in frequency-index units; "relative": fractions of the Nyquist radius."""
    dropout: float = 0.0
    """Dropout probability on the adapter input (before A)."""
    target_modules: list[str] | str = field(default_factory=lambda: list(DEFAULT_TARGETS))
    """A list matches exact qualified names or dotted suffixes; a plain str is a full regex."""
    rank_pattern: dict[str, int] = field(default_factory=dict)
    """Per-module rank overrides: regex (searched in the qualified name) -> rank; first match wins."""
    tasks: tuple[str, ...] = ("det", "reid")
    """One independent adapter per task; a layer's batch is the stack of one chunk per task."""

    def __post_init__(self) -> None:
        self._normalise()
        self._validate()

    # -- (de)serialisation -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FSLoRAConfig:
        """Build from a plain mapping (YAML/JSON); unknown keys are an error, not ignored."""
        if not isinstance(d, dict):
            raise ValueError(f"FSLoRAConfig.from_dict expects a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FSLoRAConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> FSLoRAConfig:
        """Load a YAML file whose top level is a mapping of config fields."""
        path = Path(path)
        with path.open() as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of FSLoRAConfig fields at the top level")
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe dict (tuples become lists) that `from_dict` turns back into self."""
        d = asdict(self)
        d["cutoffs"] = list(self.cutoffs)
        d["tasks"] = list(self.tasks)
        d["target_modules"] = (
            self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        )
        d["rank_pattern"] = dict(self.rank_pattern)
        return d

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    # -- derived values ----------------------------------------------------------------------------

    @property
    def num_experts(self) -> int:
        """Experts actually built: `n_experts` with SLM on, one plain B with it off."""
        return self.n_experts if self.slm else 1

    def rank_for(self, module_name: str) -> int:
        """Rank of the adapter on `module_name`: first `rank_pattern` regex found in it, else `r`."""
        for pattern, rank in self.rank_pattern.items():
            if re.search(pattern, module_name):
                return rank
        return self.r

    # -- checks ------------------------------------------------------------------------------------

    def _normalise(self) -> None:
        if isinstance(self.cutoffs, list | tuple):
            self.cutoffs = tuple(self.cutoffs)
        if isinstance(self.tasks, str):
            self.tasks = (self.tasks,)
        elif isinstance(self.tasks, list | tuple):
            self.tasks = tuple(self.tasks)
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if isinstance(self.alpha, int) and not isinstance(self.alpha, bool):
            self.alpha = float(self.alpha)

    def _validate(self) -> None:
        _check_int("r", self.r, minimum=1)
        _check_int("n_experts", self.n_experts, minimum=1)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, float) or not self.alpha > 0:
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")
        for name in ("slm", "flm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.flm_position not in FLM_POSITIONS:
            raise ValueError(f"flm_position must be one of {FLM_POSITIONS}, got {self.flm_position!r}")
        if self.cutoff_mode not in CUTOFF_MODES:
            raise ValueError(f"cutoff_mode must be one of {CUTOFF_MODES}, got {self.cutoff_mode!r}")
        self._validate_cutoffs()
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self._validate_targets()
        self._validate_rank_pattern()
        self._validate_tasks()

    def _validate_cutoffs(self) -> None:
        c = self.cutoffs
        if not isinstance(c, tuple) or len(c) != 2:
            raise ValueError(f"cutoffs must be a pair (c_lo, c_hi), got {c!r}")
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in c):
            raise ValueError(f"cutoffs must be numbers, got {c!r}")
        self.cutoffs = (float(c[0]), float(c[1]))
        if not 0.0 <= self.cutoffs[0] <= self.cutoffs[1]:
            raise ValueError(f"cutoffs must satisfy 0 <= c_lo <= c_hi, got {c!r}")

    def _validate_targets(self) -> None:
        t = self.target_modules
        if isinstance(t, str):
            _check_regex("target_modules", t)
            return
        if not isinstance(t, list) or not t or not all(isinstance(s, str) and s for s in t):
            raise ValueError(f"target_modules must be a regex str or a non-empty list of names, got {t!r}")

    def _validate_rank_pattern(self) -> None:
        if not isinstance(self.rank_pattern, dict):
            raise ValueError(f"rank_pattern must be a dict regex -> rank, got {self.rank_pattern!r}")
        for pattern, rank in self.rank_pattern.items():
            if not isinstance(pattern, str):
                raise ValueError(f"rank_pattern keys must be regex strings, got {pattern!r}")
            _check_regex("rank_pattern", pattern)
            _check_int(f"rank_pattern[{pattern!r}]", rank, minimum=1)

    def _validate_tasks(self) -> None:
        t = self.tasks
        if not isinstance(t, tuple) or not t:
            raise ValueError(f"tasks must be a non-empty tuple of names, got {t!r}")
        for name in t:
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"tasks must be identifiers (used as module names), got {name!r}")
        if len(set(t)) != len(t):
            raise ValueError(f"tasks must be unique, got {t!r}")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_regex(name: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{name}: invalid regex {pattern!r} ({e})") from e
