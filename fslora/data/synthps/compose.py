"""Frame composition: background, then people and props back to front, then sensor noise.

Items are painted in the order given (callers sort them far to near), so nearer people and
occluders hide further ones naturally. Each painted person comes back with its exact tight box
(painted pixels inside the frame) and its visibility (share of its body not hidden by later items
or the frame border).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .draw import mask_box, paint_layers, visibility
from .figure import Pose, person_layers
from .identities import Identity
from .props import Prop, prop_layers
from .scenes import NOISE_MARGIN, Camera


@dataclass(frozen=True)
class PersonItem:
    """A person in a frame; ``identity.pid`` is -1 for an unlabelled passer-by."""

    identity: Identity
    pose: Pose


Item = PersonItem | Prop


@dataclass(frozen=True)
class RenderedPerson:
    """Where a person item ended up: tight box (None if nothing is in the frame) and visibility."""

    index: int  # position in the frame's item list
    pid: int
    box: tuple[float, float, float, float] | None
    visibility: float


def item_depth(item: Item) -> float:
    return item.pose.foot_y if isinstance(item, PersonItem) else item.y


def render_frame(
    camera: Camera, items: list[Item], noise_offset: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, list[RenderedPerson]]:
    """Renders ``items`` (already in drawing order) over the camera's background; RGB uint8."""
    h, w = camera.size
    frame = camera.background.copy()
    owner = np.full((h, w), -1, np.int32)
    masks = {}
    for i, item in enumerate(items):
        if isinstance(item, PersonItem):
            light = camera.light_at(item.pose.foot_x)
            masks[i] = paint_layers(frame, person_layers(item.identity, item.pose), light, owner, i)
        else:
            paint_layers(frame, prop_layers(item), camera.light_at(item.x), owner, i)
    dx, dy = (int(v) % NOISE_MARGIN for v in noise_offset)
    pos, neg = camera.noise
    cv2.add(frame, pos[dy : dy + h, dx : dx + w], dst=frame)
    cv2.subtract(frame, neg[dy : dy + h, dx : dx + w], dst=frame)
    people = [
        RenderedPerson(i, items[i].identity.pid, mask_box(m, h, w), visibility(m, owner, i))
        for i, m in masks.items()
    ]
    return frame, people


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB image (deterministic for identical pixels)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return buf.tobytes()
