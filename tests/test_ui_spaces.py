"""`app.spaces.gpu`: the identity off Spaces, `spaces.GPU(duration=...)` where the package imports."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from app.spaces import gpu, spaces_available


def _work(x: int) -> int:
    return 2 * x


def test_gpu_is_the_identity_without_the_spaces_package():
    assert not spaces_available()  # not installed in this environment (only on Hugging Face Spaces)
    assert gpu(_work) is _work
    assert gpu(duration=30)(_work) is _work


def test_gpu_wraps_with_spaces_gpu_when_the_package_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # a stand-in for the third-party `spaces` package with its decorator's signature
    (tmp_path / "spaces.py").write_text(
        "def GPU(duration=60):\n"
        "    def wrap(fn):\n"
        "        def run(*a, **k):\n"
        "            return ('on-gpu', duration, fn(*a, **k))\n"
        "        return run\n"
        "    return wrap\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        assert spaces_available()
        assert gpu(_work)(3) == ("on-gpu", 120, 6)
        assert gpu(duration=300)(_work)(1) == ("on-gpu", 300, 2)
    finally:
        sys.modules.pop("spaces", None)  # the stand-in must not leak into later tests
