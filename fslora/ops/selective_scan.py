"""Selective scan (Mamba's S6 recurrence) with interchangeable backends.

``selective_scan`` follows mamba-ssm's ``selective_scan_fn`` shapes and semantics so VMamba code written
against it runs unchanged on CPU and on GPU with the mamba-ssm kernel (``"cuda"``). On CPU there are two
fast backends: ``"cpu"`` (our compiled kernel with its backward, ``scan_cpu.py``) and ``"chunked"`` (pure
torch, vectorised, differentiable; for float64 and machines without a C++ compiler). ``"auto"`` picks
``"cuda"`` for CUDA tensors when mamba-ssm imports, ``"cpu"`` for other float32/16 CPU calls when the
kernel builds, else ``"chunked"``. ``"reference"`` is a plain sequential loop kept as the ground truth.

Input handling shared by every backend lives here: shape checks, the dtype policy, ``delta_bias`` and
softplus, and the grouped view of B and C. The dtype policy: compute in float32 (half and bfloat16 inputs
are upcast) and return u's dtype, as mamba-ssm does; float64 inputs are the one exception (ours) - they
are computed in float64 so gradients can be checked with ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fslora.ops.scan_chunked import scan_chunked
from fslora.ops.scan_cpu import kernel_applies, load_cpu_kernel, scan_cpu
from fslora.ops.scan_cuda import load_mamba_scan, scan_cuda
from fslora.ops.scan_reference import scan_reference

__all__ = ["BACKENDS", "PreparedScan", "prepare_scan", "selective_scan"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "chunked", "reference", "cuda", "cpu")
_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class PreparedScan:
    """Scan inputs in the compute dtype and grouped view (G groups of P = d / G channels).

    u, delta (b, G, P, L); A (G, P, n); B, C (b, G, n, L). ``delta_is_copy``: delta is a fresh buffer of
    ours (bias or softplus applied, no autograd), which a backend may overwrite.
    """

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    delta_is_copy: bool = False


def _check_shape(name: str, tensor: Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != expected:
        raise ValueError(f"selective_scan: {name} must have shape {expected}, got {tuple(tensor.shape)}")


def _check_inputs(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, delta_bias: Tensor | None
) -> None:
    """Raise a ValueError naming the first argument whose shape or dtype does not fit mamba-ssm's contract."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, seqlen), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    _check_shape("delta", delta, (batch, dim, length))
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must have shape ({dim}, d_state), got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (use a real A, e.g. -exp(A_log))")
    d_state = A.shape[1]
    for name, mat in (("B", B), ("C", C)):
        if mat.dim() == 3:
            _check_shape(name, mat, (batch, d_state, length))
        elif mat.dim() == 4:
            groups = mat.shape[1]
            if groups < 1 or dim % groups:
                raise ValueError(f"selective_scan: {name} has {groups} groups, which must divide dim={dim}")
            _check_shape(name, mat, (batch, groups, d_state, length))
        else:
            raise ValueError(
                f"selective_scan: {name} must be (batch, d_state, seqlen) or (batch, groups, d_state, "
                f"seqlen), got shape {tuple(mat.shape)}"
            )
    for name, vec in (("D", D), ("delta_bias", delta_bias)):
        if vec is not None:
            _check_shape(name, vec, (dim,))


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _grouped(mat: Tensor, groups: int, dtype: torch.dtype) -> Tensor:
    """(b, n, L) or (b, g, n, L) -> (b, groups, n, L); ``groups`` is a multiple of g."""
    mat = mat.to(dtype)
    if mat.dim() == 3:
        mat = mat.unsqueeze(1)
    if mat.shape[1] != groups:
        mat = mat.repeat_interleave(groups // mat.shape[1], dim=1)
    return mat


def _common_groups(B: Tensor, C: Tensor, dim: int) -> int:
    """The group count both B and C expand to (the lcm of theirs), which must divide dim."""
    group_counts = [m.shape[1] if m.dim() == 4 else 1 for m in (B, C)]
    groups = math.lcm(*group_counts)
    if dim % groups:
        raise ValueError(f"selective_scan: B/C groups {group_counts} need dim={dim} divisible by {groups}")
    return groups


def prepare_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> PreparedScan:
    """Apply bias and softplus to delta and bring every tensor to the compute dtype and grouped view."""
    dtype = _compute_dtype(u)
    batch, dim, length = u.shape
    groups = _common_groups(B, C, dim)
    given = delta
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        if delta is given or (torch.is_grad_enabled() and delta.requires_grad):
            delta = F.softplus(delta)
        else:  # our own buffer, no autograd: in place (a fresh 6 MB tensor costs ~1500 page faults)
            delta = torch.ops.aten.softplus.out(delta, 1, 20, out=delta)
    fresh = delta is not given and not (torch.is_grad_enabled() and delta.requires_grad)
    per_group = dim // groups
    return PreparedScan(
        u=u.to(dtype).reshape(batch, groups, per_group, length),
        delta=delta.reshape(batch, groups, per_group, length),
        A=A.to(dtype).reshape(groups, per_group, -1),
        B=_grouped(B, groups, dtype),
        C=_grouped(C, groups, dtype),
        delta_is_copy=fresh,
    )


def _resolve_backend(backend: str, u: Tensor) -> str:
    """Pick the backend for ``"auto"``; mamba-ssm is only ever imported for CUDA tensors."""
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if u.is_cuda and u.dtype in _CUDA_DTYPES and load_mamba_scan() is not None:
        return "cuda"
    if kernel_applies(u) and load_cpu_kernel() is not None:
        return "cpu"
    return "chunked"


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` semantics.

    Args:
        u, delta: (batch, dim, seqlen).
        A: (dim, d_state), real (Mamba uses ``-exp(A_log)``; ``"chunked"`` is exact for any sign, but
            positive entries grow the state exponentially).
        B, C: (batch, groups, d_state, seqlen) with dim % groups == 0, or (batch, d_state, seqlen) shared.
        D: optional (dim,) skip term ``y += D * u``.
        delta_bias: optional (dim,) added to delta before the softplus.
        delta_softplus: apply softplus to delta.
        backend: ``"auto"`` (see the module doc), ``"chunked"``, ``"reference"``, ``"cuda"`` or ``"cpu"``.

    Returns:
        y of shape (batch, dim, seqlen) in u's dtype, computed in float32 (float64 for float64 inputs).
    """
    _check_inputs(u, delta, A, B, C, D, delta_bias)
    name = _resolve_backend(backend, u)
    if name == "cuda":
        return scan_cuda(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "cpu":
        groups = _common_groups(B, C, u.shape[1])
        B, C = _grouped(B, groups, B.dtype), _grouped(C, groups, C.dtype)
        return scan_cpu(u, delta, A, B, C, D, delta_bias, delta_softplus)
    prep = prepare_scan(u, delta, A, B, C, delta_bias, delta_softplus)
    if name == "chunked":
        y = scan_chunked(prep.u, prep.delta, prep.A, prep.B, prep.C, consume_delta=prep.delta_is_copy)
    else:
        y = scan_reference(prep.u, prep.delta, prep.A, prep.B, prep.C)
    y = y.reshape(u.shape)
    if D is not None:
        skip = (prep.u.reshape(u.shape), D.to(y.dtype)[:, None])
        # in place when autograd is not involved: y is the backend's fresh output (saves a page-faulting copy)
        y = torch.addcmul(y, *skip) if torch.is_grad_enabled() and y.requires_grad else y.addcmul_(*skip)
    return y.to(u.dtype)
