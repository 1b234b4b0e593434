"""Optional Hugging Face ZeroGPU support: `gpu(fn)` is `spaces.GPU(fn)` when the `spaces` package imports.

Why a wrapper: on a ZeroGPU Space a GPU is attached only while a function decorated with `spaces.GPU`
runs; everywhere else (a CPU Space, a desktop, the tests) the package is absent and the function must
run unchanged. The UI decorates only the heavy calls (indexing, detection for the expert overlays,
photo search), never the cheap FAISS lookups.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def spaces_available() -> bool:
    """True when the `spaces` package (present on Hugging Face Spaces) can be imported."""
    return importlib.util.find_spec("spaces") is not None


def gpu(fn: F | None = None, *, duration: int = 120) -> Any:
    """Decorator: `spaces.GPU(duration=...)` on a Space, the identity elsewhere.

    Usable bare (`@gpu`) or with arguments (`@gpu(duration=300)`); `duration` is the longest a call may
    hold the GPU, in seconds (ZeroGPU's own limit).
    """

    def wrap(f: F) -> F:
        if not spaces_available():
            return f
        import spaces  # noqa: PLC0415  (only present on Hugging Face Spaces)

        return spaces.GPU(duration=duration)(f)

    return wrap(fn) if fn is not None else wrap
