"""Things in the scene that are not people.

Distractors (poles, boxes, person-sized blobs, plants) stand among the people and are never
annotated: a detector that keys on "tall textured blob" instead of the articulated silhouette pays
for it. Occluders (low walls, railings, pillars, bins, cars) are placed in front of a person to
hide part of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .draw import Layer, capsule, circle, ellipse, poly, rect
from .identities import CLOTHING_PALETTE, RGB, Texture, random_texture

DISTRACTOR_KINDS = ("pole", "box", "blob", "plant")
OCCLUDER_KINDS = ("wall", "railing", "pillar", "bin", "car")


@dataclass(frozen=True)
class Prop:
    """A non-person object standing on the ground at (x, y) (centre of its base), w x h pixels."""

    kind: str
    x: float
    y: float
    w: float
    h: float
    colour: RGB
    colour2: RGB
    texture: Texture | None = None
    variant: int = 0

    def __post_init__(self) -> None:
        if self.kind not in DISTRACTOR_KINDS + OCCLUDER_KINDS:
            raise ValueError(
                f"Prop.kind must be one of {DISTRACTOR_KINDS + OCCLUDER_KINDS}, got {self.kind!r}"
            )
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"Prop {self.kind}: w and h must be > 0, got {self.w}x{self.h}")

    @property
    def occluder(self) -> bool:
        return self.kind in OCCLUDER_KINDS


PROP_COLOURS: list[RGB] = [
    (90, 90, 96),
    (150, 140, 120),
    (60, 80, 70),
    (120, 60, 50),
    (170, 170, 175),
    (70, 60, 50),
]


def random_prop(rng: np.random.Generator, kind: str, x: float, y: float, person_h: float) -> Prop:
    """A prop of ``kind`` at (x, y), sized relative to a person of height ``person_h`` at that depth."""
    colour = PROP_COLOURS[int(rng.integers(len(PROP_COLOURS)))]
    colour2 = PROP_COLOURS[int(rng.integers(len(PROP_COLOURS)))]
    u = lambda lo, hi: float(rng.uniform(lo, hi)) * person_h
    texture = None
    if kind == "pole":
        w, h = u(0.04, 0.08), u(1.2, 2.2)
    elif kind == "box":
        w, h = u(0.3, 0.8), u(0.25, 0.6)
    elif kind == "blob":  # person-sized, clothing-coloured and textured, but no limbs
        names = list(CLOTHING_PALETTE)
        colour = CLOTHING_PALETTE[names[int(rng.integers(len(names)))]]
        texture = random_texture(rng, colour, plain_prob=0.4)
        w, h = u(0.25, 0.4), u(0.8, 1.05)
    elif kind == "plant":
        colour, colour2 = (50 + int(rng.integers(40)), 110 + int(rng.integers(50)), 50), (120, 80, 60)
        w, h = u(0.3, 0.6), u(0.5, 1.0)
    elif kind == "wall":
        texture = Texture("stripes", float(rng.uniform(0.08, 0.15)), 0.0, colour2)
        w, h = u(1.0, 2.5), u(0.3, 0.55)
    elif kind == "railing":
        w, h = u(1.2, 2.5), u(0.45, 0.6)
    elif kind == "pillar":
        w, h = u(0.25, 0.5), y + 10.0
    elif kind == "bin":
        w, h = u(0.3, 0.45), u(0.35, 0.55)
    elif kind == "car":
        w, h = u(1.8, 2.6), u(0.5, 0.65)
    else:
        raise ValueError(f"unknown prop kind {kind!r}")
    return Prop(kind, x, y, w, h, colour, colour2, texture, int(rng.integers(3)))


def prop_layers(p: Prop) -> list[Layer]:
    """The painted layers of a prop, back to front."""
    x, y, w, h, c1, c2 = p.x, p.y, p.w, p.h, p.colour, p.colour2
    if p.kind == "pole":
        layers = [Layer((capsule((x, y - w / 2), (x, y - h), w / 2),), c1)]
        if p.variant == 1:
            layers.append(Layer((rect(x - 3 * w, y - h - 2 * w, x + 3 * w, y - h + 2 * w),), c2))
        else:
            layers.append(Layer((circle((x, y - h), 1.4 * w),), (235, 230, 200)))
        return layers
    if p.kind == "box":
        d = 0.25 * h
        return [
            Layer((rect(x - w / 2, y - h, x + w / 2, y),), c1),
            Layer(
                (
                    poly(
                        (x - w / 2, y - h),
                        (x + w / 2, y - h),
                        (x + w / 2 + d, y - h - d),
                        (x - w / 2 + d, y - h - d),
                    ),
                ),
                c1,
                shade=1.25,
            ),
            Layer(
                (
                    poly(
                        (x + w / 2, y), (x + w / 2, y - h), (x + w / 2 + d, y - h - d), (x + w / 2 + d, y - d)
                    ),
                ),
                c1,
                shade=0.7,
            ),
        ]
    if p.kind == "blob":
        tex = dict(texture=p.texture, anchor=(x, y - h), scale=h)
        if p.variant == 0:
            return [Layer((ellipse((x, y - h / 2), (w / 2, h / 2)),), c1, **tex)]
        if p.variant == 1:  # coat on a stand
            return [
                Layer((capsule((x, y), (x, y - h), 0.04 * w),), (60, 60, 60)),
                Layer(
                    (
                        poly(
                            (x - 0.2 * w, y - 0.95 * h),
                            (x + 0.2 * w, y - 0.95 * h),
                            (x + w / 2, y - 0.3 * h),
                            (x - w / 2, y - 0.3 * h),
                        ),
                    ),
                    c1,
                    **tex,
                ),
            ]
        return [
            Layer(
                (
                    ellipse((x, y - 0.3 * h), (w / 2, 0.3 * h)),
                    ellipse((x, y - 0.75 * h), (0.38 * w, 0.25 * h)),
                ),
                c1,
                **tex,
            )
        ]
    if p.kind == "plant":
        leaves = tuple(
            circle((x + dx * w, y - h * (0.45 + dy)), r * w)
            for dx, dy, r in ((0.0, 0.35, 0.35), (-0.25, 0.15, 0.3), (0.25, 0.18, 0.3), (0.0, 0.05, 0.32))
        )
        return [
            Layer(
                (
                    poly(
                        (x - 0.3 * w, y - 0.3 * h),
                        (x + 0.3 * w, y - 0.3 * h),
                        (x + 0.22 * w, y),
                        (x - 0.22 * w, y),
                    ),
                ),
                c2,
            ),
            Layer(leaves, c1),
        ]
    if p.kind == "wall":
        return [
            Layer((rect(x - w / 2, y - h, x + w / 2, y),), c1, texture=p.texture, anchor=(x, y), scale=h * 3),
            Layer((rect(x - w / 2 - 2, y - h - 0.08 * h, x + w / 2 + 2, y - h + 0.04 * h),), c2),
        ]
    if p.kind == "railing":
        posts = tuple(
            rect(x - w / 2 + f * w - 0.02 * h, y - h, x - w / 2 + f * w + 0.02 * h, y)
            for f in (0, 0.33, 0.66, 1)
        )
        bars = tuple(capsule((x - w / 2, y - f * h), (x + w / 2, y - f * h), 0.035 * h) for f in (0.45, 0.97))
        return [Layer(posts + bars, c1)]
    if p.kind == "pillar":
        return [
            Layer((rect(x - w / 2, y - h, x + w / 2, y),), c1),
            Layer((rect(x - w / 2, y - h, x - w / 4, y),), c1, shade=1.2),
        ]
    if p.kind == "bin":
        return [
            Layer((rect(x - w / 2, y - 0.9 * h, x + w / 2, y),), c1),
            Layer((ellipse((x, y - 0.9 * h), (0.55 * w, 0.12 * h)),), c2),
        ]
    # car, seen from the side
    r = 0.17 * h
    return [
        Layer(
            (
                poly(
                    (x - 0.3 * w, y - 0.55 * h),
                    (x + 0.25 * w, y - 0.55 * h),
                    (x + 0.15 * w, y - h),
                    (x - 0.22 * w, y - h),
                ),
            ),
            (150, 170, 185),
        ),
        Layer((rect(x - w / 2, y - 0.6 * h, x + w / 2, y - 0.12 * h),), c1),
        Layer((circle((x - 0.3 * w, y - r), r), circle((x + 0.3 * w, y - r), r)), (25, 25, 25)),
    ]
