"""Articulated walking figures: an identity in a pose becomes a list of painted layers.

The figure has a head, neck, torso, hips, two arms (upper arm, forearm, hand) and two legs (thigh,
shin, shoe) whose angles follow a walk phase. Seen from the side (facing left or right) the limbs
swing in the image plane and the far limbs are drawn first, darker; seen from the front the limbs
foreshorten instead. Garments carry the identity's textures (anchored at the neck and hips, scaled by
body height) so identity lives in the high frequencies while the silhouette, which detection needs,
is shared by everyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .draw import Layer, Shape, capsule, circle, ellipse, layers_bounds, poly, rect
from .identities import Identity

FAR_SHADE = 0.72


@dataclass(frozen=True)
class Pose:
    """Where and how a figure stands: feet position, size and gait."""

    foot_x: float  # px, centre between the feet
    foot_y: float  # px, bottom of the soles (ground contact)
    height: float  # px, head top to soles
    phase: float = 0.0  # walk cycle, radians
    facing: int = 1  # -1 walking left, +1 walking right, 0 towards the camera

    def __post_init__(self) -> None:
        if self.facing not in (-1, 0, 1):
            raise ValueError(f"Pose.facing must be -1, 0 or 1, got {self.facing}")
        if self.height <= 0:
            raise ValueError(f"Pose.height must be > 0, got {self.height}")


def _leg_angles(psi: float) -> tuple[float, float]:
    """Thigh angle from vertical (forward positive) and shin angle for a leg at gait phase psi."""
    thigh = 0.42 * math.sin(psi)
    knee = 0.08 + 0.6 * max(0.0, math.cos(psi)) ** 1.5  # knee flexes while the leg swings forward
    return thigh, thigh - knee


def person_layers(identity: Identity, pose: Pose) -> list[Layer]:
    """The painted layers of ``identity`` in ``pose``, back to front."""
    ident, H, s = identity, pose.height, pose.facing
    side = s != 0
    head_r = ident.head * H
    sw = ident.shoulder * H / 2  # half shoulder width seen from the front
    half_torso = sw * (0.62 if side else 1.0)
    half_hip = half_torso * (0.92 if side else 0.84)
    sole = 0.035 * H
    hip_h = ident.leg * H
    thigh_len = shin_len = (hip_h - sole) / 2
    r_thigh, r_shin = 0.42 * sw, 0.33 * sw
    r_upper, r_fore = 0.30 * sw, 0.25 * sw
    upper_len, fore_len = ident.arm * H * 0.48, ident.arm * H * 0.44

    # Legs relative to the hip centre (x right, y down), then place the lowest ankle on the ground.
    legs = []
    for i in (0, 1):
        psi = pose.phase + math.pi * i
        t_ang, s_ang = _leg_angles(psi)
        hx = 0.0 if side else (-0.5 if i == 0 else 0.5) * half_hip
        if side:
            knee = (hx + s * thigh_len * math.sin(t_ang), thigh_len * math.cos(t_ang))
            ankle = (knee[0] + s * shin_len * math.sin(s_ang), knee[1] + shin_len * math.cos(s_ang))
        else:
            knee = (hx, thigh_len * math.cos(t_ang))
            ankle = (hx, knee[1] + shin_len * math.cos(s_ang))
        legs.append(((hx, 0.0), knee, ankle))
    hip_y = pose.foot_y - sole - max(leg[2][1] for leg in legs)
    cx = pose.foot_x
    lean = s * 0.02 * H

    def at(p: tuple[float, float]) -> tuple[float, float]:
        return cx + p[0], hip_y + p[1]

    top_y = hip_y - (H - hip_h)
    head_c = (cx + lean + s * 0.01 * H, top_y + head_r)
    shoulder_y = top_y + 2 * head_r + 0.04 * H
    neck_c = (cx + lean, shoulder_y)

    # Arms: swing opposite to the leg on the same side; elbows bend forward.
    arms = []
    for i in (0, 1):
        psi = pose.phase + math.pi * i
        if side:
            a_up = -0.35 * math.sin(psi)
            a_fore = a_up + 0.25 + 0.2 * max(0.0, -math.sin(psi))
            sh = (cx + lean * 0.8, shoulder_y + r_upper * 0.6)
            el = (sh[0] + s * upper_len * math.sin(a_up), sh[1] + upper_len * math.cos(a_up))
            wr = (el[0] + s * fore_len * math.sin(a_fore), el[1] + fore_len * math.cos(a_fore))
        else:
            out = -1.0 if i == 0 else 1.0
            sh = (cx + out * (sw - r_upper * 0.7), shoulder_y + r_upper * 0.6)
            fs = math.cos(0.35 * math.sin(psi))  # foreshortened swing
            el = (sh[0] + out * 0.06 * upper_len, sh[1] + upper_len * fs)
            wr = (el[0] + out * 0.03 * fore_len, el[1] + fore_len * fs)
        arms.append((sh, el, wr))

    top, bottom = ident.top, ident.bottom
    top_tex = dict(texture=ident.top_texture, anchor=neck_c, scale=H)
    bot_tex = dict(texture=ident.bottom_texture, anchor=(cx, hip_y), scale=H)
    r_hand, r_shoe = 0.028 * H, 0.024 * H
    layers: list[Layer] = []

    def leg_shapes(leg: tuple, shade: float, textured: bool) -> None:
        hip, knee, ankle = (at(p) for p in leg)
        cloth: list[Shape] = [capsule(hip, knee, r_thigh)]
        if ident.shorts:
            layers.append(Layer((capsule(knee, ankle, r_shin),), ident.skin, shade=shade))
        else:
            cloth.append(capsule(knee, ankle, r_shin))
        layers.append(Layer(tuple(cloth), bottom, shade=shade, **(bot_tex if textured else {})))
        if side:
            toe, heel = (
                (ankle[0] + s * 0.07 * H, ankle[1] + sole * 0.4),
                (ankle[0] - s * 0.01 * H, ankle[1] + sole * 0.4),
            )
        else:
            toe, heel = (
                (ankle[0] + 0.018 * H, ankle[1] + sole * 0.4),
                (ankle[0] - 0.018 * H, ankle[1] + sole * 0.4),
            )
        layers.append(Layer((capsule(heel, toe, r_shoe),), ident.shoes, shade=shade))

    def arm_shapes(arm: tuple, shade: float) -> tuple[list[Shape], list[Shape]]:
        sh, el, wr = arm
        sleeve = [capsule(sh, el, r_upper)]
        skin = [circle(wr, r_hand)]
        (sleeve if ident.long_sleeves else skin).insert(0, capsule(el, wr, r_fore))
        return sleeve, skin

    hip_poly = poly(
        (cx - half_hip, hip_y - 0.07 * H),
        (cx + half_hip, hip_y - 0.07 * H),
        (cx + half_hip * 1.02, hip_y + 0.04 * H),
        (cx - half_hip * 1.02, hip_y + 0.04 * H),
    )
    torso = poly(
        (cx + lean - half_torso, shoulder_y),
        (cx + lean + half_torso, shoulder_y),
        (cx + half_hip * 0.98, hip_y - 0.05 * H),
        (cx - half_hip * 0.98, hip_y - 0.05 * H),
    )
    shoulders = capsule(
        (cx + lean - half_torso + r_upper, shoulder_y + r_upper),
        (cx + lean + half_torso - r_upper, shoulder_y + r_upper),
        r_upper,
    )

    if side and ident.backpack is not None:
        bx = cx + lean - s * half_torso
        layers.append(
            Layer(
                (
                    rect(
                        min(bx, bx - s * 0.1 * H),
                        shoulder_y + 0.02 * H,
                        max(bx, bx - s * 0.1 * H),
                        shoulder_y + 0.27 * H,
                    ),
                ),
                ident.backpack,
            )
        )
    if side:  # far arm and far leg first, in shade
        far_sleeve, far_skin = arm_shapes(arms[1], FAR_SHADE)
        layers.append(Layer(tuple(far_sleeve), top, shade=FAR_SHADE))
        layers.append(Layer(tuple(far_skin), ident.skin, shade=FAR_SHADE))
        leg_shapes(legs[1], FAR_SHADE, textured=False)
        leg_shapes(legs[0], 1.0, textured=True)
    else:
        leg_shapes(legs[0], 1.0, textured=True)
        leg_shapes(legs[1], 1.0, textured=True)
    layers.append(Layer((hip_poly,), bottom, **bot_tex))
    layers.append(Layer((capsule(neck_c, head_c, head_r * 0.45),), ident.skin))

    near = [arms[0]] if side else list(arms)
    sleeves: list[Shape] = [torso, shoulders]
    skins: list[Shape] = []
    for arm in near:
        sl, sk = arm_shapes(arm, 1.0)
        sleeves += sl
        skins += sk
    layers.append(Layer(tuple(sleeves), top, **top_tex))
    layers.append(Layer(tuple(skins), ident.skin))

    layers.append(Layer((circle(head_c, head_r),), ident.skin))
    hx, hy = head_c
    hair = [ellipse((hx, hy - 0.1 * head_r), (head_r * 1.04, head_r * 0.98), 180.0, 360.0)]
    if side:  # back of the head
        hair.append(
            ellipse(
                (hx - s * 0.1 * head_r, hy),
                (head_r * 0.98, head_r * 0.9),
                90.0 if s > 0 else 0.0,
                180.0 if s > 0 else 90.0,
            )
        )
    layers.append(Layer(tuple(hair), ident.hair))
    if ident.hat is not None:
        brim_a = (hx - head_r * (1.15 if not side else 0.9 * s), hy - 0.35 * head_r)
        brim_b = (hx + head_r * (1.15 if not side else 1.6 * s), hy - 0.35 * head_r)
        layers.append(
            Layer(
                (
                    ellipse((hx, hy - 0.3 * head_r), (head_r * 1.08, head_r * 1.0), 180.0, 360.0),
                    capsule(brim_a, brim_b, 0.18 * head_r),
                ),
                ident.hat,
            )
        )
    if not side and ident.backpack is not None:  # straps seen from the front
        straps = tuple(
            capsule(
                (cx + o * half_torso * 0.55, shoulder_y),
                (cx + o * half_torso * 0.6, hip_y - 0.1 * H),
                0.018 * H,
            )
            for o in (-1, 1)
        )
        layers.append(Layer(straps, ident.backpack, shade=0.8))
    if ident.bag is not None:
        side_x = cx + (s * -0.25 * half_hip if side else 1.05 * half_hip + 0.03 * H)
        strap_from = (cx + lean - (s if side else -1) * half_torso * 0.6, shoulder_y + 0.01 * H)
        bag_top = hip_y - 0.06 * H
        layers.append(
            Layer(
                (
                    capsule(strap_from, (side_x, bag_top), 0.011 * H),
                    rect(side_x - 0.06 * H, bag_top, side_x + 0.06 * H, bag_top + 0.1 * H),
                ),
                ident.bag,
            )
        )
    return layers


def person_extent(identity: Identity, pose: Pose) -> tuple[float, float, float, float]:
    """The figure's box from geometry alone (matches the rendered box to about a pixel)."""
    return layers_bounds(person_layers(identity, pose))
