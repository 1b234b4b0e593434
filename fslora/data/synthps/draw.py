"""Anti-aliased painting of layered shapes (people and props) into a frame.

Every drawable thing is a list of ``Layer``s (shapes filled with a flat colour or a clothing
pattern), painted back to front with OpenCV's anti-aliased primitives at 1/16 pixel precision. An
item is painted on a private crop that may reach past the frame border, so its full (amodal) mask
is known even when it is partly outside; this gives exact tight boxes and visibility fractions.
An ``owner`` map (item index per pixel, -1 = background) records which item is on top where, which
is how occlusion by later items is measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .identities import RGB, Texture
from .textures import pattern_alpha

SHIFT = 4  # fractional bits of OpenCV coordinates
_ONE = 1 << SHIFT
Point = tuple[float, float]


class Shape(NamedTuple):
    """A filled primitive: capsule (2 points + radius), convex polygon, circle, or elliptic sector.

    (A NamedTuple rather than a frozen dataclass: figures are built by the thousand while planning.)
    """

    kind: str  # "capsule" | "poly" | "circle" | "ellipse"
    points: tuple[Point, ...]
    radius: float = 0.0
    axes: tuple[float, float] = (0.0, 0.0)  # ellipse semi-axes
    arc: tuple[float, float] = (0.0, 360.0)  # ellipse start/end angles, degrees (y points down)

    def bounds(self) -> tuple[float, float, float, float]:
        pad = max(self.axes) if self.kind == "ellipse" else self.radius
        if len(self.points) == 1:
            ((x, y),) = self.points
            return x - pad, y - pad, x + pad, y + pad
        xs, ys = zip(*self.points, strict=True)
        return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad


def capsule(p0: Point, p1: Point, r: float) -> Shape:
    return Shape("capsule", (p0, p1), radius=r)


def poly(*pts: Point) -> Shape:
    return Shape("poly", tuple(pts))


def circle(c: Point, r: float) -> Shape:
    return Shape("circle", (c,), radius=r)


def ellipse(c: Point, axes: tuple[float, float], start: float = 0.0, end: float = 360.0) -> Shape:
    return Shape("ellipse", (c,), axes=axes, arc=(start, end))


def rect(x1: float, y1: float, x2: float, y2: float) -> Shape:
    return poly((x1, y1), (x2, y1), (x2, y2), (x1, y2))


class Layer(NamedTuple):
    """Shapes filled with ``colour``, or with ``texture`` over ``colour`` (anchored, ``scale`` px/unit)."""

    shapes: tuple[Shape, ...]
    colour: RGB
    texture: Texture | None = None
    anchor: Point = (0.0, 0.0)
    scale: float = 1.0
    shade: float = 1.0  # darkening of limbs on the far side of the body

    def bounds(self) -> tuple[float, float, float, float]:
        return _union_bounds([s.bounds() for s in self.shapes])


def _union_bounds(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    x1s, y1s, x2s, y2s = zip(*boxes, strict=True)
    return min(x1s), min(y1s), max(x2s), max(y2s)


def layers_bounds(layers: list[Layer]) -> tuple[float, float, float, float]:
    """Analytic extent of some layers (the drawn mask lies within it, up to a pixel of anti-aliasing)."""
    return _union_bounds([layer.bounds() for layer in layers])


def _fx(v: float) -> int:
    return int(round(v * _ONE))


def _draw_shape(img: np.ndarray, shape: Shape, offset: Point, colour: tuple[int, ...]) -> None:
    ox, oy = offset
    pts = [(_fx(x - ox), _fx(y - oy)) for x, y in shape.points]
    aa = cv2.LINE_AA
    if shape.kind == "poly":
        cv2.fillConvexPoly(img, np.array(pts, np.int32), colour, aa, SHIFT)
    elif shape.kind == "circle":
        cv2.circle(img, pts[0], max(_fx(shape.radius), 1), colour, -1, aa, SHIFT)
    elif shape.kind == "ellipse":
        axes = (max(_fx(shape.axes[0]), 1), max(_fx(shape.axes[1]), 1))
        cv2.ellipse(img, pts[0], axes, 0.0, shape.arc[0], shape.arc[1], colour, -1, aa, SHIFT)
    elif shape.kind == "capsule":
        (x0, y0), (x1, y1) = shape.points
        r = shape.radius
        length = math.hypot(x1 - x0, y1 - y0)
        if length > 1e-6:
            nx, ny = -(y1 - y0) / length * r, (x1 - x0) / length * r
            quad = [(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)]
            cv2.fillConvexPoly(
                img, np.array([(_fx(x - ox), _fx(y - oy)) for x, y in quad], np.int32), colour, aa, SHIFT
            )
        for p in pts:
            cv2.circle(img, p, max(_fx(r), 1), colour, -1, aa, SHIFT)
    else:
        raise ValueError(f"Shape.kind must be capsule/poly/circle/ellipse, got {shape.kind!r}")


def lit(colour: RGB, light: np.ndarray, shade: float = 1.0) -> tuple[int, int, int]:
    """A colour under a camera's light (per-channel gain) and a shading factor."""
    r, g, b = (min(max(int(c * float(k) * shade), 0), 255) for c, k in zip(colour, light, strict=True))
    return r, g, b


@dataclass
class ItemMask:
    """Where an item was painted: its full alpha mask (uint8) with the crop's top-left in frame pixels."""

    x0: int
    y0: int
    mask: np.ndarray

    def frame_window(self, height: int, width: int) -> tuple[slice, slice, slice, slice] | None:
        """(frame rows, frame cols, mask rows, mask cols) of the part inside the frame, or None."""
        h, w = self.mask.shape
        fx0, fy0 = max(self.x0, 0), max(self.y0, 0)
        fx1, fy1 = min(self.x0 + w, width), min(self.y0 + h, height)
        if fx1 <= fx0 or fy1 <= fy0:
            return None
        return (
            slice(fy0, fy1),
            slice(fx0, fx1),
            slice(fy0 - self.y0, fy1 - self.y0),
            slice(fx0 - self.x0, fx1 - self.x0),
        )


def paint_layers(
    frame: np.ndarray,
    layers: list[Layer],
    light: np.ndarray,
    owner: np.ndarray | None = None,
    item_id: int = 0,
) -> ItemMask:
    """Paints ``layers`` (back to front) into the RGB ``frame`` in place; returns the item's mask.

    Pixels the item covers at >= 50 % are written to ``owner`` as ``item_id``.
    """
    bx1, by1, bx2, by2 = layers_bounds(layers)
    x0, y0 = int(math.floor(bx1)) - 1, int(math.floor(by1)) - 1
    x1, y1 = int(math.ceil(bx2)) + 2, int(math.ceil(by2)) + 2
    height, width = frame.shape[:2]
    canvas = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    union = np.zeros((y1 - y0, x1 - x0), np.uint8)
    item = ItemMask(x0, y0, union)
    win = item.frame_window(height, width)
    if win is not None:
        canvas[win[2], win[3]] = frame[win[0], win[1]]
    offset = (float(x0), float(y0))
    for layer in layers:
        colour = lit(layer.colour, light, layer.shade)
        if layer.texture is None or layer.texture.kind == "plain":
            for shape in layer.shapes:
                _draw_shape(canvas, shape, offset, colour)
                _draw_shape(union, shape, offset, (255,))
            continue
        mask = np.zeros_like(union)
        for shape in layer.shapes:
            _draw_shape(mask, shape, offset, (255,))
        lx1, ly1, lx2, ly2 = layer.bounds()
        ry0, rx0 = max(int(math.floor(ly1)) - 1 - y0, 0), max(int(math.floor(lx1)) - 1 - x0, 0)
        ry1, rx1 = (
            min(int(math.ceil(ly2)) + 2 - y0, union.shape[0]),
            min(int(math.ceil(lx2)) + 2 - x0, union.shape[1]),
        )
        alpha = mask[ry0:ry1, rx0:rx1].astype(np.float32)[..., None] * np.float32(1 / 255)
        origin = (float(x0 + rx0), float(y0 + ry0))
        pat = pattern_alpha(layer.texture, (ry1 - ry0, rx1 - rx0), origin, layer.anchor, layer.scale)
        assert pat is not None  # plain textures took the flat branch
        c1 = np.asarray(colour, np.float32)
        c2 = np.asarray(lit(layer.texture.color2, light, layer.shade), np.float32)
        tex = c1 + (c2 - c1) * pat[..., None]
        region = canvas[ry0:ry1, rx0:rx1].astype(np.float32)
        canvas[ry0:ry1, rx0:rx1] = (region + (tex - region) * alpha + 0.5).astype(np.uint8)
        np.maximum(union, mask, out=union)
    if win is not None:
        frame[win[0], win[1]] = canvas[win[2], win[3]]
        if owner is not None:
            owner[win[0], win[1]][union[win[2], win[3]] >= 128] = item_id
    return item


def mask_box(item: ItemMask, height: int, width: int) -> tuple[float, float, float, float] | None:
    """Tight box (x1, y1, x2, y2) of the item's painted pixels inside the frame, or None if none are."""
    win = item.frame_window(height, width)
    if win is None:
        return None
    part = item.mask[win[2], win[3]]
    cols = np.flatnonzero(part.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(part.any(axis=1))
    fx0, fy0 = win[1].start, win[0].start
    return float(fx0 + cols[0]), float(fy0 + rows[0]), float(fx0 + cols[-1] + 1), float(fy0 + rows[-1] + 1)


def visibility(item: ItemMask, owner: np.ndarray, item_id: int) -> float:
    """Fraction of the item's full mask (>= 50 % coverage) that is on top, inside the frame."""
    total = int(np.count_nonzero(item.mask >= 128))
    if total == 0:
        return 0.0
    win = item.frame_window(*owner.shape)
    if win is None:
        return 0.0
    return int(np.count_nonzero(owner[win[0], win[1]] == item_id)) / total
