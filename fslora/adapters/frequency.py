"""FLM, the frequency module: split features into low / high bands and re-weight them per sample.

    Z = rfft2(z, norm="ortho");  g = softmax(W_f . mean_hw(z) + b_f) = (w_low, w_high)
    z' = irfft2(2 * w_low * M_low * Z + 2 * w_high * M_high * Z)

`M_low` is 1 inside radius c_lo, 0 outside c_hi and linear in between; `M_high = 1 - M_low`. The radius
uses signed frequencies (fftfreq * H along rows, rfftfreq * W along columns) so the mask is symmetric
and the filtered spectrum stays Hermitian. `W_f` and `b_f` start at zero, so w = (0.5, 0.5) and the
factor 2 makes the module the identity at init (ours, DESIGN.md §2). The two bands are applied as one
real filter `2 * (w_high + (w_low - w_high) * M_low)`, one multiply over the spectrum instead of two.

The FFT always runs in float32 (cuFFT half precision only takes power-of-two sizes and loses the
band split's precision), even under autocast; the result is cast back to the input dtype.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn


def frequency_radius(h: int, w: int, device: torch.device | None = None) -> Tensor:
    """Radial frequency, in index units, of each bin of an (h, w) rfft2 spectrum: shape (h, w//2+1)."""
    fy = torch.fft.fftfreq(h, device=device, dtype=torch.float64) * h
    fx = torch.fft.rfftfreq(w, device=device, dtype=torch.float64) * w
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def absolute_cutoffs(h: int, w: int, cutoffs: tuple[float, float], mode: str) -> tuple[float, float]:
    """Cutoffs in index units: as given ("absolute") or times the Nyquist radius ("relative")."""
    if mode == "absolute":
        return cutoffs
    if mode == "relative":
        nyquist = math.hypot(h / 2, w / 2)
        return cutoffs[0] * nyquist, cutoffs[1] * nyquist
    raise ValueError(f"cutoff_mode must be 'absolute' or 'relative', got {mode!r}")


@functools.lru_cache(maxsize=128)
def frequency_masks(
    h: int,
    w: int,
    cutoffs: tuple[float, float],
    mode: str = "absolute",
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """(M_low, M_high), each (h, w//2+1), cached per (h, w, cutoffs, mode, device, dtype).

    The masks depend only on the grid, so every layer with the same feature-map size shares one copy;
    callers must treat them as read-only.
    """
    c_lo, c_hi = absolute_cutoffs(h, w, cutoffs, mode)
    rho = frequency_radius(h, w, device)
    if c_hi == c_lo:  # a hard cut
        low = (rho <= c_lo).to(dtype)
    else:
        low = ((c_hi - rho) / (c_hi - c_lo)).clamp(0.0, 1.0).to(dtype)
    return low, (1.0 - low)


def band_reweight(
    z: Tensor, router_weight: Tensor, router_bias: Tensor, cutoffs: tuple[float, float], mode: str
) -> tuple[Tensor, Tensor]:
    """FLM on task-grouped maps: z (T, b, C, H, W), router (T, 2, C) and (T, 2).

    Returns the re-weighted maps (same shape and dtype as z) and the band weights (T, b, 2).
    """
    h, w = z.shape[-2:]
    with torch.autocast(z.device.type, enabled=False):
        zf = z.float()
        logits = torch.matmul(zf.mean(dim=(-2, -1)), router_weight.float().transpose(1, 2))
        weights = torch.softmax(logits + router_bias.float().unsqueeze(1), dim=-1)  # (T, b, 2)
        if zf.numel() == 0:  # FFT backends reject empty batches
            return z.clone(), weights
        low, _ = frequency_masks(h, w, cutoffs, mode, z.device, torch.float32)
        w_low, w_high = weights[..., 0, None, None, None], weights[..., 1, None, None, None]
        gain = 2.0 * (w_high + (w_low - w_high) * low)  # (T, b, 1, H, W//2+1), real
        spectrum = torch.fft.rfft2(zf, norm="ortho")
        out = torch.fft.irfft2(spectrum * gain, s=(h, w), norm="ortho")
    return out.to(z.dtype), weights


class FrequencyModule(nn.Module):
    """Holds one task's frequency router (W_f: C -> 2, b_f); the math is `band_reweight`."""

    def __init__(self, channels: int, cutoffs: tuple[float, float], cutoff_mode: str = "absolute"):
        super().__init__()
        self.cutoffs = (float(cutoffs[0]), float(cutoffs[1]))
        self.cutoff_mode = cutoff_mode
        self.router = nn.Linear(channels, 2)
        # zero router -> w = (0.5, 0.5) -> identity at init
        nn.init.zeros_(self.router.weight)
        nn.init.zeros_(self.router.bias)

    def extra_repr(self) -> str:
        return f"cutoffs={self.cutoffs}, cutoff_mode={self.cutoff_mode!r}"

    def forward(self, z: Tensor) -> Tensor:
        return self.forward_with_weights(z)[0]

    def forward_with_weights(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Re-weighted map (B, C, H, W) and band weights (B, 2) = (w_low, w_high) of one task."""
        if z.dim() != 4:
            raise ValueError(f"FrequencyModule needs a (B, C, H, W) map, got shape {tuple(z.shape)}")
        out, weights = band_reweight(
            z[None], self.router.weight[None], self.router.bias[None], self.cutoffs, self.cutoff_mode
        )
        return out[0], weights[0]
