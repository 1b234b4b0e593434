"""Our compiled CPU selective-scan kernel (``csrc/selective_scan_cpu.cpp``), forward and backward.

Why: the pure-torch ``"chunked"`` scan is memory-bound - about 15 passes over the b*d*L inputs - while
the kernel reads each input once and runs only the recurrence step by step (bench/bench_scan.py has the
figures). The backward recomputes the states row by row rather than keeping them, so training needs no
more memory than inference. ``"chunked"`` remains for float64 (gradcheck) and machines without a compiler.

It is built with ``torch.utils.cpp_extension`` the first time it is needed (about 40 s on 2 cores; the
result is cached per machine under ``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) and
needs a C++ compiler. Anything that goes wrong - no compiler, a failed build, ``FSLORA_CPU_SCAN_KERNEL=0``
- makes ``load_cpu_kernel`` return None once and for all, and ``backend="auto"`` falls back to
``"chunked"``: a machine without a toolchain loses speed, never function.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "selective_scan_cpu.cpp"
OPT_OUT_ENV = "FSLORA_CPU_SCAN_KERNEL"

_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}  # "kernel" -> module, or None after a failure / opt-out


def _isa_flags() -> tuple[str, list[str]]:
    """A build name suffix and the vector ISA flags for this CPU (the cached binary is named by both)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


def _opted_out() -> bool:
    return os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def _build() -> ModuleType | None:
    if _opted_out():
        logger.info("CPU scan kernel disabled by %s=0; using the chunked scan", OPT_OUT_ENV)
        return None
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        logger.info("no C++ compiler found: the CPU scan kernel is not built; using the chunked scan")
        return None
    venv_bin = Path(sys.executable).parent  # pip's ninja (requirements.txt) when the venv is not activated
    if shutil.which("ninja") is None and (venv_bin / "ninja").exists():
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    torch_log = logging.getLogger("torch.utils.cpp_extension")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # its import warns that a CPU-only machine has no CUDA runtime
    try:
        from torch.utils.cpp_extension import load  # noqa: PLC0415  (heavy, and only needed here)
    finally:
        torch_log.setLevel(level)

    suffix, isa = _isa_flags()
    # -ffast-math in full: it defines __FAST_MATH__, which makes glibc declare its vector expf/log1pf
    # (libmvec) that the `omp simd` loops call; without it they stay scalar and the kernel is ~6x slower
    flags = ["-O3", "-ffast-math", "-fopenmp", *isa]
    start = time.perf_counter()
    logger.info("loading the CPU scan kernel (the first time on a machine it is compiled: ~40 s)")
    try:
        module = load(name=f"fslora_selective_scan_cpu_{suffix}", sources=[str(SOURCE)],
                      extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # compiler errors surface as RuntimeError, OSError, CalledProcessError...
        logger.warning("building the CPU scan kernel failed (%s); using the chunked scan", exc)
        return None
    logger.info("CPU scan kernel ready in %.1f s", time.perf_counter() - start)
    return module


def load_cpu_kernel() -> ModuleType | None:
    """The compiled kernel module, building it on the first call; None when it cannot be had."""
    if "kernel" not in _loaded:
        with _lock:  # one build per process; cpp_extension's own lock covers other processes
            if "kernel" not in _loaded:
                _loaded["kernel"] = _build()
    return _loaded["kernel"]


def kernel_applies(u: Tensor) -> bool:
    """Whether the kernel can serve a call: CPU tensors of a dtype it computes in float32."""
    return u.device.type == "cpu" and u.dtype in (torch.float32, torch.float16, torch.bfloat16)


class _KernelScan(torch.autograd.Function):
    """The kernel's forward and backward as one autograd op (float32, contiguous inputs)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus):  # noqa: ANN001, ANN205
        ctx.softplus = softplus
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        return load_cpu_kernel().selective_scan_forward(u, delta, A, B, C, D, delta_bias, softplus)

    @staticmethod
    def backward(ctx, grad_y):  # noqa: ANN001, ANN205
        u, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, dbias = load_cpu_kernel().selective_scan_backward(
            u, delta, A, B, C, D, delta_bias, ctx.softplus, grad_y.contiguous()
        )
        return du, ddelta, dA, dB, dC, dD if D.numel() else None, dbias if delta_bias.numel() else None, None


def scan_cpu(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> Tensor:
    """Run the kernel: B and C come grouped (b, groups, n, L); computes in float32, returns u's dtype.

    Differentiable: the kernel's backward recomputes the states instead of keeping them.
    """
    if not kernel_applies(u):
        raise ValueError(
            f"selective_scan: backend='cpu' needs CPU tensors in float32/float16/bfloat16 (it computes in "
            f"float32), got {u.dtype} on {u.device}; use backend='chunked' for float64"
        )
    if load_cpu_kernel() is None:
        raise RuntimeError(
            "selective_scan: backend='cpu' needs the compiled CPU kernel, which is unavailable here "
            f"(a C++ compiler is required; see the log, or unset {OPT_OUT_ENV}=0)"
        )
    f32 = torch.float32
    empty = u.new_empty(0, dtype=f32)
    y = _KernelScan.apply(
        u.to(f32).contiguous(),
        delta.to(f32).contiguous(),
        A.to(f32).contiguous(),
        B.to(f32).contiguous(),
        C.to(f32).contiguous(),
        empty if D is None else D.to(f32).contiguous(),
        empty if delta_bias is None else delta_bias.to(f32).contiguous(),
        delta_softplus,
    )
    return y.to(u.dtype)
