"""SynthPS identities: what makes one synthetic person look like themselves.

Clothing colours come from a small palette, so many people share them: colour alone does not
identify anyone. What does is the *texture* (stripes of several periods and orientations, checks,
dots, plain) and the accessories (hat, shoulder bag, backpack). Hard negatives make that explicit:
they copy another identity's body and colours and change exactly one texture or one accessory.
Texture periods are in body-height units, so a person's pattern scales with their size in the frame.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

RGB = tuple[int, int, int]

CLOTHING_PALETTE: dict[str, RGB] = {
    "black": (30, 30, 34),
    "white": (225, 225, 220),
    "grey": (128, 128, 128),
    "navy": (32, 44, 96),
    "blue": (52, 100, 190),
    "red": (178, 36, 40),
    "green": (40, 120, 62),
    "khaki": (176, 160, 112),
    "brown": (110, 72, 44),
    "yellow": (222, 190, 50),
    "pink": (220, 130, 160),
    "purple": (110, 60, 140),
    "orange": (226, 120, 40),
}
SKIN_TONES: list[RGB] = [(236, 200, 170), (214, 170, 130), (180, 130, 95), (140, 95, 65), (96, 64, 44)]
HAIR_COLOURS: list[RGB] = [(20, 16, 14), (70, 45, 25), (120, 85, 50), (200, 170, 110), (150, 150, 150)]

TEXTURE_KINDS = ("plain", "stripes", "checks", "dots")
STRIPE_PERIODS = (0.025, 0.04, 0.06, 0.09)  # fractions of body height: 4 spatial frequencies
STRIPE_ANGLES = (0.0, 45.0, 90.0, 135.0)  # degrees; 0 = horizontal stripes
ACCESSORIES = ("hat", "bag", "backpack")


@dataclass(frozen=True)
class Texture:
    """A clothing pattern: ``color2`` drawn over the garment colour with a spatial period."""

    kind: str = "plain"  # "plain" | "stripes" | "checks" | "dots"
    period: float = 0.05  # body-height units
    angle: float = 0.0  # degrees (stripes and checks)
    color2: RGB = (255, 255, 255)

    def __post_init__(self) -> None:
        if self.kind not in TEXTURE_KINDS:
            raise ValueError(f"Texture.kind must be one of {TEXTURE_KINDS}, got {self.kind!r}")
        if self.period <= 0:
            raise ValueError(f"Texture.period must be > 0, got {self.period}")


@dataclass(frozen=True)
class Identity:
    """Body shape, clothing and accessories of one synthetic person (sizes in body-height units)."""

    pid: int
    height: float  # relative stature, multiplies the camera's perspective height
    shoulder: float  # shoulder width / height
    leg: float  # hip height / height
    arm: float  # arm length / height
    head: float  # head radius / height
    skin: RGB
    hair: RGB
    top: RGB
    bottom: RGB
    shoes: RGB
    top_texture: Texture
    bottom_texture: Texture
    long_sleeves: bool
    shorts: bool
    hat: RGB | None = None
    bag: RGB | None = None
    backpack: RGB | None = None
    top_name: str = ""
    bottom_name: str = ""
    hard_negative_of: int | None = None  # pid this identity was derived from
    differs_in: str | None = None  # the one field that differs from that identity

    def to_dict(self) -> dict[str, Any]:
        """JSON-native dict (colours as lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Identity:
        d = dict(d)
        for key in ("top_texture", "bottom_texture"):
            t = dict(d[key])
            t["color2"] = tuple(t["color2"])
            d[key] = Texture(**t)
        for key in ("skin", "hair", "top", "bottom", "shoes", "hat", "bag", "backpack"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def _jitter(rng: np.random.Generator, rgb: RGB, amount: int) -> RGB:
    j = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(rgb) + j, 0, 255))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, items: list | tuple) -> Any:
    return items[int(rng.integers(len(items)))]


def random_texture(rng: np.random.Generator, base: RGB, plain_prob: float = 0.3) -> Texture:
    """A random pattern whose second colour contrasts with the garment colour."""
    names = list(CLOTHING_PALETTE)
    color2 = CLOTHING_PALETTE[_pick(rng, names)]
    while sum(abs(a - b) for a, b in zip(color2, base, strict=True)) < 150:
        color2 = CLOTHING_PALETTE[_pick(rng, names)]
    if rng.random() < plain_prob:
        return Texture("plain", 0.05, 0.0, color2)
    kind = _pick(rng, TEXTURE_KINDS[1:])
    return Texture(kind, float(_pick(rng, STRIPE_PERIODS)), float(_pick(rng, STRIPE_ANGLES)), color2)


def random_identity(rng: np.random.Generator, pid: int) -> Identity:
    """Draws a fresh identity (also used for unlabelled one-off passers-by)."""
    names = list(CLOTHING_PALETTE)
    top_name, bottom_name = _pick(rng, names), _pick(rng, names)
    top = _jitter(rng, CLOTHING_PALETTE[top_name], 10)
    bottom = _jitter(rng, CLOTHING_PALETTE[bottom_name], 10)
    accessory = {a: None for a in ACCESSORIES}
    for name, prob in (("hat", 0.25), ("bag", 0.3), ("backpack", 0.25)):
        if rng.random() < prob:
            accessory[name] = CLOTHING_PALETTE[_pick(rng, names)]
    return Identity(
        pid=pid,
        height=float(rng.uniform(0.9, 1.1)),
        shoulder=float(rng.uniform(0.21, 0.29)),
        leg=float(rng.uniform(0.46, 0.52)),
        arm=float(rng.uniform(0.36, 0.42)),
        head=float(rng.uniform(0.062, 0.072)),
        skin=_pick(rng, SKIN_TONES),
        hair=_pick(rng, HAIR_COLOURS),
        top=top,
        bottom=bottom,
        shoes=_jitter(rng, _pick(rng, [(25, 25, 25), (90, 60, 40), (230, 230, 230)]), 8),
        top_texture=random_texture(rng, top, plain_prob=0.25),
        bottom_texture=random_texture(rng, bottom, plain_prob=0.7),
        long_sleeves=bool(rng.random() < 0.6),
        shorts=bool(rng.random() < 0.2),
        top_name=top_name,
        bottom_name=bottom_name,
        **accessory,
    )


def texture_key(t: Texture) -> tuple:
    """What a texture looks like, ignoring parameters that do not change it (e.g. a plain angle)."""
    if t.kind == "plain":
        return ("plain",)
    if t.kind == "dots":
        return ("dots", t.period, t.color2)
    return (t.kind, t.period, t.angle % (180.0 if t.kind == "stripes" else 90.0), t.color2)


def _different_texture(rng: np.random.Generator, t: Texture, base: RGB) -> Texture:
    """A texture that surely looks different from ``t`` but keeps its pattern colour."""
    while True:
        new = replace(
            random_texture(rng, base, plain_prob=0.0 if t.kind == "plain" else 0.2), color2=t.color2
        )
        if texture_key(new) != texture_key(t):
            return new


def hard_negative(rng: np.random.Generator, base: Identity, pid: int) -> Identity:
    """Copies ``base`` (body and colours) and changes exactly one texture or one accessory."""
    change = _pick(rng, ("top_texture", "top_texture", "bottom_texture", "accessory"))
    if change == "top_texture":
        new = replace(base, top_texture=_different_texture(rng, base.top_texture, base.top))
    elif change == "bottom_texture":
        new = replace(base, bottom_texture=_different_texture(rng, base.bottom_texture, base.bottom))
    else:
        change = _pick(rng, ACCESSORIES)
        colour = getattr(base, change)
        new = replace(
            base, **{change: None if colour is not None else _pick(rng, list(CLOTHING_PALETTE.values()))}
        )
    return replace(new, pid=pid, hard_negative_of=base.pid, differs_in=change)


def make_identities(
    rng: np.random.Generator, pids: list[int], hard_negative_fraction: float
) -> list[Identity]:
    """Identities for ``pids``; a fraction of them are hard negatives of earlier ones in the list.

    At least one hard-negative pair is made whenever there are two or more identities and the
    fraction is positive, so even the tiny split has one.
    """
    n = len(pids)
    n_hard = int(round(hard_negative_fraction * n))
    if hard_negative_fraction > 0 and n >= 2:
        n_hard = max(1, n_hard)
    n_hard = min(n_hard, n // 2)
    hard_slots = set(rng.choice(np.arange(1, n), size=n_hard, replace=False).tolist()) if n_hard else set()
    out: list[Identity] = []
    for i, pid in enumerate(pids):
        originals = [p for p in out if p.hard_negative_of is None]
        if i in hard_slots and originals:
            out.append(hard_negative(rng, _pick(rng, originals), pid))
        else:
            out.append(random_identity(rng, pid))
    return out
