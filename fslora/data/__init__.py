"""Person-search data: shared record types, dataset loaders and the SynthPS generator.

Light on purpose: importing ``fslora.data`` loads only the records; each loader module (and the
SynthPS generator, which needs OpenCV) is imported on first use of one of its names.
"""

from __future__ import annotations

import importlib
from typing import Any

from .records import UNLABELLED, ImageRecord, PersonBox, PersonSearchSplit, QueryRecord

_LAZY = {
    "load_cuhk_sysu": "cuhk_sysu",
    "load_prw": "prw",
    "load_posetrack21": "posetrack21",
    "generate_split": "synthps",
    "load_synthps": "synthps",
    "plan_split": "synthps",
    "render_video": "synthps",
}

__all__ = ["UNLABELLED", "ImageRecord", "PersonBox", "PersonSearchSplit", "QueryRecord", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
