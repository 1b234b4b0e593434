"""Clothing patterns rasterised as anti-aliased alpha maps.

A pattern is anchored to the body (``anchor``) and measured in body heights (``scale`` pixels per
unit), so a person's stripes keep their look when the person is nearer or further away. The edges
are soft over about one pixel, which keeps fine patterns free of aliasing moire: below a period of
about 2 px a pattern fades to a blend of its two colours, as a real camera would record it.
"""

from __future__ import annotations

import math

import numpy as np

from .identities import Texture

MIN_PERIOD_PX = 2.0


def pattern_alpha(
    texture: Texture,
    shape: tuple[int, int],
    origin: tuple[float, float],
    anchor: tuple[float, float],
    scale: float,
) -> np.ndarray | None:
    """Coverage of ``texture.color2`` over a ``shape`` (h, w) region whose top-left pixel is ``origin``.

    Returns float32 (h, w) in [0, 1], or ``None`` for a plain texture.
    """
    if texture.kind == "plain":
        return None
    h, w = shape
    period = max(texture.period * scale, MIN_PERIOD_PX)
    ys = (np.arange(h, dtype=np.float32) + np.float32(origin[1] - anchor[1]))[:, None]
    xs = (np.arange(w, dtype=np.float32) + np.float32(origin[0] - anchor[0]))[None, :]
    theta = math.radians(texture.angle)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    k = np.float32(2.0 * math.pi / period)
    gain = np.float32(period / (2.0 * math.pi))  # edge ramp of about one pixel
    if texture.kind == "stripes":
        wave = np.cos((ys * c + xs * s) * k)
    elif texture.kind == "checks":
        u = xs * c + ys * s
        v = ys * c - xs * s
        wave = np.cos(u * k) * np.cos(v * k)
        gain = gain * np.float32(1.5)
    else:  # dots on a square lattice, radius 0.28 period
        du = (xs / np.float32(period)) % 1.0 - 0.5
        dv = (ys / np.float32(period)) % 1.0 - 0.5
        dist = np.sqrt(du * du + dv * dv) * np.float32(period)
        return np.clip(np.float32(0.28 * period + 0.5) - dist, 0.0, 1.0).astype(np.float32)
    return np.clip(np.float32(0.5) + wave * gain, 0.0, 1.0).astype(np.float32)
