"""Input handling of the person-search model: any image in, a normalised padded batch out, boxes both ways.

The model owns this step so callers never resize or normalise themselves: they pass uint8 RGB numpy
frames (H, W, 3) as a video decoder gives them, or float tensors (3, H, W) in [0, 1] as a dataset gives
them, of any size. Resizing (shorter side to ``min_size``, longer side capped at ``max_size``),
ImageNet normalisation and padding to a multiple of ``size_divisible`` are torchvision's
``GeneralizedRCNNTransform``; this module adds input checking and the box mapping between the caller's
pixels and the model's resized frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

ImageInput = np.ndarray | Tensor
"""uint8 RGB numpy array (H, W, 3) or float tensor (3, H, W) in [0, 1]."""


def to_float_image(image: ImageInput, device: torch.device | str, index: int = 0) -> Tensor:
    """One input image as a float32 (3, H, W) tensor in [0, 1] on ``device``."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"images[{index}]: numpy images must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}"
            )
        # Move the compact uint8 data first, convert on the device.
        return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float().div_(255.0)
    if isinstance(image, Tensor):
        if not image.is_floating_point() or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"images[{index}]: tensor images must be float (3, H, W) in [0, 1], "
                f"got {image.dtype} {tuple(image.shape)}"
            )
        return image.to(device=device, dtype=torch.float32)
    raise ValueError(f"images[{index}]: expected a numpy array or a torch tensor, got {type(image).__name__}")


def as_boxes(boxes: object, device: torch.device | str, name: str) -> Tensor:
    """Boxes (N, 4) xyxy as float32 on ``device``; rejects wrong shapes and inverted boxes."""
    t = boxes if isinstance(boxes, Tensor) else torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    t = t.to(device=device, dtype=torch.float32)
    if t.numel() == 0:
        t = t.reshape(0, 4)
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"{name}: boxes must have shape (N, 4) xyxy, got {tuple(t.shape)}")
    if bool((t[:, 2:] <= t[:, :2]).any()):
        raise ValueError(f"{name}: every box needs x2 > x1 and y2 > y1 (xyxy pixels)")
    return t


@dataclass
class Batch:
    """Transformed input: the padded batch, the resized size of each image and its original size."""

    images: ImageList
    original_sizes: list[tuple[int, int]]
    targets: list[dict[str, Tensor]] | None = None

    def to_input_pixels(self, boxes: Tensor, index: int) -> Tensor:
        """Boxes of image ``index`` from the model's resized frame back to the caller's pixels."""
        return resize_boxes(boxes, self.images.image_sizes[index], self.original_sizes[index])

    def to_model_frame(self, boxes: Tensor, index: int) -> Tensor:
        """Boxes of image ``index`` from the caller's pixels to the model's resized frame."""
        return resize_boxes(boxes, self.original_sizes[index], self.images.image_sizes[index])


class ImageTransform(nn.Module):
    """Resize + normalise + pad a list of images (and their target boxes) into one batch."""

    def __init__(
        self,
        min_size: int,
        max_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        self.rcnn = GeneralizedRCNNTransform(
            min_size, max_size, list(image_mean), list(image_std), size_divisible=size_divisible
        )

    def forward(
        self,
        images: Sequence[ImageInput],
        targets: Sequence[Mapping[str, object]] | None = None,
        device: torch.device | str = "cpu",
    ) -> Batch:
        """Batch ``images``; ``targets`` (training) are dicts with ``boxes`` (N, 4) and ``pids`` (N,)."""
        if isinstance(images, np.ndarray | Tensor) or len(images) == 0:
            raise ValueError("images must be a non-empty list of images (one per frame), not a single array")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"targets: expected {len(images)} dicts (one per image), got {len(targets)}")
        tensors = [to_float_image(img, device, i) for i, img in enumerate(images)]
        original_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        checked = None if targets is None else [_check_target(t, device, i) for i, t in enumerate(targets)]
        image_list, resized_targets = self.rcnn(tensors, checked)
        return Batch(image_list, original_sizes, resized_targets)


def _check_target(target: Mapping[str, object], device: torch.device | str, index: int) -> dict[str, Tensor]:
    if "boxes" not in target or "pids" not in target:
        raise ValueError(f"targets[{index}]: needs 'boxes' (N, 4) and 'pids' (N,), got keys {sorted(target)}")
    boxes = as_boxes(target["boxes"], device, f"targets[{index}]")
    pids = torch.as_tensor(target["pids"]).to(device=device, dtype=torch.long).reshape(-1)
    if pids.shape[0] != boxes.shape[0]:
        raise ValueError(f"targets[{index}]: {boxes.shape[0]} boxes but {pids.shape[0]} pids")
    return {"boxes": boxes, "pids": pids}
