"""Chunked selective scan: vectorised, differentiable with autograd, the default backend off-CUDA.

The recurrence per channel and state is linear, ``h_t = exp(-r_t) h_{t-1} + x_t`` with decay rate
``r_t = -delta_t * A`` (>= 0 for Mamba's A < 0) and input ``x_t = delta_t * B_t * u_t``. Inside a chunk of T
positions, with ``R_t = r_1 + ... + r_t`` the chunk's cumulative rate (log space), every state is::

    h_t = exp(-R_t) * (h_in + sum_{s<=t} exp(R_s) x_s)

so a chunk costs two cumulative sums, one exponential and a few elementwise passes over contiguous rows -
no (T x T) weights and no loop over T (ours; this replaced a diagonal-by-diagonal scan that was ~2x
slower). The layout is channel-major with time last, exactly how u and delta arrive, so there are no
transposes. Rates are carried in base 2 (``r * log2(e)``, folded into A for free) because ``exp2`` is ~3x
faster than ``exp`` on CPU (1.0 vs 2.9 ms per 1.5 M floats, AVX2); the rest of this doc speaks in
natural units.

The states entering the chunks obey the same recurrence one level up (rate = a chunk's total ``R_T``,
input = a chunk's zero-start final state), so :func:`_scan` solves them recursively on 1/T of the data.
Chunks are 4-6 steps in float32 (16 in float64), picked to divide L when possible: a tail that does not
fill a chunk is scanned on its own from the last state, because padding would copy every input.
Memory is O(b*d*n*L) (a few copies of the inputs), independent of T. Without autograd the scan works in
place on its two fresh (rate, input) buffers: on Linux every newly allocated 6 MB tensor can cost ~1500
page faults, which had taken more time than the arithmetic. For the same reason ``scan_chunked`` takes
``consume_delta``: a delta the caller computed itself (bias, softplus) is reused as the input buffer.

Range (ours): ``exp(R)`` must stay a normal float (float32 overflows at exp(88.7)). Two devices bound it:

* Each step's rate is clamped to ``K = BUDGET / T`` (float32: BUDGET 84, K = 14..21; float64: 480, K = 30)
  before the cumulative sum, so ``R <= 84``. A step with a larger rate scales everything before it by
  exp(-rate) < exp(-K); clamped, the factor is exp(-K) instead, so every weight through that step changes by
  less than exp(-14) ~ 8e-7 (float32; 1e-13 in float64) of the state it multiplies - below float32
  resolution of typical outputs and far below the tests' tolerance. Huge decays (delta * A ~ -2e5) stay
  finite and match the sequential reference; gradients through a clamped step are 0 where the true ones
  are below exp(-K) in relative size.
* The inputs are scanned scaled by exp(-OFFSET) (OFFSET 20 in float32; the scan is linear, so the output is
  scaled back), folded into the small B and C tensors for free. Then ``exp(R) * x`` and its sums stay finite
  for |x| up to ~1e10 and only become denormal (slow on x86) for |x| below ~1e-29. Positive A (growth) is
  exact as long as ``exp(-R)`` is a normal float, i.e. while one chunk grows the state by less than ~e^87
  (float32), long past where float32 states overflow anyway.

Precision: exp(R_s) / exp(R_t) carries the rounding of R (relative ~6e-8 * R), so weights are accurate to
~1e-7 relative in typical chunks (R of a few units) and ~5e-6 in chunks with clamped decays. float64
inputs are scanned in float64 (gradcheck).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# (largest chunk T, rate budget T * K, input offset) per compute dtype: BUDGET - OFFSET + log(T * |x|) must
# stay below the dtype's max exponent (88 float32, 709 float64) and log|x| - OFFSET above its min (-87, -708).
_RANGE = {torch.float32: (6, 84.0, 20.0), torch.float64: (16, 480.0, 100.0)}

LOG2E = 1.0 / math.log(2.0)
_UNROLL_MAX = 8  # chunks up to this long are prefix-summed by strided adds rather than cumsum_

# Legacy (diagonal scan) chunk-size helper, kept for callers: the log-space scan needs no weight triangle.
DEFAULT_CHUNK = 4
MIN_CHUNK = 2
DEFAULT_MAX_ELEMENTS = 1 << 26


def choose_chunk_size(
    n_elements: int, chunk_size: int = DEFAULT_CHUNK, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> int:
    """Largest chunk <= chunk_size with n_elements * (T - 1) / 2 <= max_elements (at least MIN_CHUNK)."""
    size = chunk_size
    while size > MIN_CHUNK and n_elements * (size - 1) // 2 > max_elements:
        size //= 2
    return max(size, MIN_CHUNK)


def _range(dtype: torch.dtype) -> tuple[int, float, float]:
    return _RANGE.get(dtype, _RANGE[torch.float32])


def _pick_chunk(length: int, limit: int) -> int:
    """The largest chunk in [limit // 2 + 1, limit] dividing length (no tail to scan), else limit."""
    limit = max(MIN_CHUNK, limit)
    for size in range(limit, max(MIN_CHUNK, limit // 2 + 1) - 1, -1):
        if length % size == 0:
            return size
    return limit


def _prefix_sum_(t: Tensor) -> Tensor:
    """In-place cumulative sum over the (short, chunk-sized) last dim: T - 1 strided adds.

    ``cumsum_`` over a last dim of 4-6 runs one thread and ~10x slower than an elementwise pass (1.4 ms
    vs 0.6 ms for 2 M floats on 2 threads), and it ran twice per chunk level.
    """
    if t.shape[-1] > _UNROLL_MAX:
        return t.cumsum_(-1)
    for step in range(1, t.shape[-1]):
        t[..., step].add_(t[..., step - 1])
    return t


def _tracked(t: Tensor) -> bool:
    """Whether in-place ops on t must be avoided because autograd may need its value."""
    return torch.is_grad_enabled() and t.requires_grad


def _scan(rate: Tensor, x: Tensor, h0: Tensor | None, limit: int) -> Tensor:
    """All states of ``h_t = 2 ** (-rate_t) h_{t-1} + x_t`` along the LAST dim, h_{-1} = h0 (or 0).

    rate, x (*rows, L), same shape, both CONSUMED: without autograd they are overwritten (in-place ops
    keep freshly allocated memory - and its page faults - to a minimum); h0 (*rows) or None; chunks of
    at most ``limit``. Returns h (*rows, L).
    """
    length = x.shape[-1]
    size = min(_pick_chunk(length, limit), length)
    n_chunks = length // size
    main = n_chunks * size
    if main < length:  # the tail (< size steps) continues from the last state; padding copies everything
        head = _scan(rate[..., :main], x[..., :main], h0, limit)
        tail = _scan(rate[..., main:], x[..., main:], head[..., -1], limit)
        return torch.cat([head, tail], dim=-1)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (rate, x, h0))
    clamp = _range(x.dtype)[1] * LOG2E / size  # per-step rate clamp K: R <= BUDGET (see module doc)
    r = (torch.clamp_max(rate, clamp) if grad else rate.clamp_max_(clamp)).unflatten(-1, (n_chunks, size))
    x = x.unflatten(-1, (n_chunks, size))
    cum = r.cumsum(-1) if grad else _prefix_sum_(r)
    total = cum[..., -1].clone()  # each chunk's total rate R_T
    if grad:
        scale = cum.exp2()  # 2^R_t in [1, 2^(T * clamp)]
        acc = (scale * x).cumsum(-1)  # sum_{s<=t} exp(R_s) x_s
        # Dividing by scale is cheaper, but autograd's div backward forms h / scale**2, which underflows
        # float32 for R >~ 45 and loses those gradient terms: multiply by exp(-R) instead.
        inv = torch.exp2(-cum)
    else:
        scale = cum.exp2_()
        acc = _prefix_sum_(x.mul_(scale))
    if n_chunks > 1 or h0 is not None:
        if n_chunks > 1:  # states after each chunk: the same recurrence over chunk totals and ends
            ends = acc[..., -1] * inv[..., -1] if grad else acc[..., -1] / scale[..., -1]
            after = _scan(total, ends, h0, limit)
            first = torch.zeros_like(after[..., :1]) if h0 is None else h0.unsqueeze(-1)
            carry = torch.cat([first, after[..., :-1]], dim=-1)
        else:
            carry = h0.unsqueeze(-1)
        carry = carry.unsqueeze(-1)
        acc = acc + carry if grad else acc.add_(carry)
    h = acc * inv if grad else acc.div_(scale)
    return h.flatten(-2)


def linear_scan(
    log_decay: Tensor, x: Tensor, h0: Tensor | None = None, chunk_size: int | None = None
) -> Tensor:
    """All states of ``h_t = exp(log_decay_t) * h_{t-1} + x_t`` along dim 0, with h_{-1} = h0 (or 0).

    Time-major: log_decay, x (L, *rows); h0 (*rows) or None. Returns h (L, *rows). ``chunk_size`` caps
    the chunk length (the dtype's range caps it too, see ``_RANGE``).
    """
    if x.shape[0] == 0:
        return x.clone()
    size, _, offset = _range(x.dtype)
    size = max(MIN_CHUNK, min(size, chunk_size or size))
    down = math.exp(-offset)  # the scan is linear: scan(x * c, h0 * c) = scan(x, h0) * c
    h = _scan(
        (log_decay * -LOG2E).movedim(0, -1),
        (x * down).movedim(0, -1).contiguous(),
        None if h0 is None else h0 * down,
        size,
    )
    return h.movedim(-1, 0) / down


def scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int | None = None,
    consume_delta: bool = False,
) -> Tensor:
    """Selective scan on the grouped view (see ``prepare_scan``); returns y (b, G, P, L), contiguous.

    u, delta (b, G, P, L); A (G, P, n); B, C (b, G, n, L). Works on (b, G, P, n, L) tensors, time last.
    The range offset is folded into the small B and C: x is scanned scaled by exp(-offset).
    ``consume_delta``: delta is a buffer of the caller's that may be overwritten (used without autograd).
    """
    if u.shape[-1] == 0:
        return u.new_zeros(u.shape)
    size, _, offset = _range(u.dtype)
    size = max(MIN_CHUNK, min(size, chunk_size or size))
    B, C = B * math.exp(-offset), C * math.exp(offset)
    rate_per_delta = A.neg() * LOG2E  # base-2 decay rate per unit of delta
    if A.shape[-1] == 1:  # d_state 1 (VMamba): drop the state dim, B and C broadcast over channels
        rate = delta * rate_per_delta  # (b, G, P, L) * (G, P, 1)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B)):
            h = _scan(rate, delta * u * B, None, size)
        else:  # x = delta * u * B in delta's own buffer when it is ours, else in one fresh one
            x = delta.mul_(u) if consume_delta else delta * u
            h = _scan(rate, x.mul_(B), None, size)
        return (h * C if _tracked(h) else h.mul_(C)).contiguous()
    rate = delta.unsqueeze(3) * rate_per_delta.unsqueeze(-1)  # (b, G, P, n, L)
    x = (delta * u).unsqueeze(3) * B.unsqueeze(2)
    h = _scan(rate, x, None, size)
    return (h * C.unsqueeze(2)).sum(3)
