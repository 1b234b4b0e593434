"""mamba-ssm's CUDA selective-scan kernel behind our ``selective_scan`` signature.

mamba-ssm is an optional GPU extra (requirements-gpu.txt). It is imported lazily, only when a CUDA tensor
asks for it, so importing fslora or scanning on CPU never touches the package (a broken GPU build must not
break CPU users).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def _import_mamba_scan() -> tuple[Callable | None, BaseException | None]:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # a broken build raises OSError/RuntimeError as well as ImportError
        logger.info("mamba-ssm selective scan unavailable (%s); using the chunked scan", exc)
        return None, exc
    return selective_scan_fn, None


def load_mamba_scan() -> Callable | None:
    """mamba-ssm's ``selective_scan_fn``, or None when it does not import (the result is cached)."""
    return _import_mamba_scan()[0]


def scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> Tensor:
    """Run mamba-ssm's kernel; it computes in float32 internally and wants delta/B/C in u's dtype."""
    if not u.is_cuda:
        raise ValueError(f"selective_scan: backend='cuda' needs CUDA tensors, but u is on {u.device}")
    kernel, error = _import_mamba_scan()
    if kernel is None:
        raise RuntimeError(
            "selective_scan: backend='cuda' needs mamba-ssm "
            f"(pip install -r requirements-gpu.txt); importing it failed: {error}"
        ) from error
    io_dtype = u.dtype if u.dtype in _KERNEL_DTYPES else torch.float32
    y = kernel(
        u.to(io_dtype).contiguous(),
        delta.to(io_dtype).contiguous(),
        A.float().contiguous(),
        B.to(io_dtype).contiguous(),
        C.to(io_dtype).contiguous(),
        D=None if D is None else D.float().contiguous(),
        delta_bias=None if delta_bias is None else delta_bias.float().contiguous(),
        delta_softplus=delta_softplus,
    )
    return y.to(u.dtype)
