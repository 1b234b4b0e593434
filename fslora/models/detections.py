"""What the person-search model returns for one image.

A plain dataclass (not a dict) so the app, the evaluator and the CLI agree on field names, shapes and
coordinate frames: boxes are always in the pixels of the image the caller passed in, never in the
model's resized frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Routing of the adapters for this image: qualified backbone layer name -> task ("det" / "reid") -> record
# with ``expert_masks`` (1, n_experts, h, w) cropped to the image (padding removed, h x w = the layer's
# map of the resized image) and ``freq_weights`` (1, 2) = (w_low, w_high) or None. Trunk layers only
# (stages 0-2): the stage-3 layers run on RoI crops, not on the image. Records are
# ``fslora.adapters.RoutingRecord``s on the CPU.
Routing = dict[str, dict[str, object]]


@dataclass
class Detections:
    """People found in one image.

    Attributes:
        boxes: float32 (N, 4) ``x1, y1, x2, y2`` in input-image pixels.
        scores: float32 (N,) person confidence in [0, 1], sorted high to low.
        embeddings: float32 (N, D) unit-norm re-id embeddings (D = 256 by default); compare by dot product.
        routing: adapter routing for this image when ``capture_routing=True`` was asked, else None.
    """

    boxes: Tensor
    scores: Tensor
    embeddings: Tensor
    routing: Routing | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4):
            raise ValueError(f"Detections.boxes must have shape (N, 4), got {tuple(self.boxes.shape)}")
        if self.scores.shape != (n,):
            raise ValueError(f"Detections.scores must have shape ({n},), got {tuple(self.scores.shape)}")
        if self.embeddings.dim() != 2 or self.embeddings.shape[0] != n:
            raise ValueError(
                f"Detections.embeddings must have shape ({n}, D), got {tuple(self.embeddings.shape)}"
            )

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def cpu(self) -> Detections:
        """A copy with every tensor on the CPU (routing records are already detached CPU-able tensors)."""
        return Detections(self.boxes.cpu(), self.scores.cpu(), self.embeddings.cpu(), self.routing)

    @staticmethod
    def empty(embedding_dim: int, device: torch.device | str = "cpu") -> Detections:
        """No person found."""
        return Detections(
            torch.zeros(0, 4, device=device),
            torch.zeros(0, device=device),
            torch.zeros(0, embedding_dim, device=device),
        )
