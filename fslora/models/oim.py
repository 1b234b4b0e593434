"""Online Instance Matching (OIM) loss for person re-identification inside a detector.

OIM (Xiao et al., CVPR 2017) scores each foreground RoI embedding against a lookup table (LUT) with one
prototype per labelled identity and a circular queue of recent unlabelled people, which act as extra
negatives. The softmax over ``scalar * cosine`` is trained with cross-entropy on the labelled RoIs only.
After each training step the LUT row of every labelled RoI moves towards its embedding (momentum update,
renormalised) and the unlabelled embeddings are pushed into the queue.

State decision (ours): the LUT and the queue are *buffers*, not parameters - no optimiser touches them.
They are persistent, so ``model.state_dict()`` (what a training checkpoint saves) carries them and a resumed
run continues with the same prototypes. They are training state of one dataset only, so the published
checkpoint written by ``save_pretrained`` leaves them out (see ``fslora.models.checkpoint``); an inference
model never reads them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNLABELED = -1
"""Person id of a box whose identity is unknown (it only feeds the OIM queue)."""


class OIMLoss(nn.Module):
    """OIM loss with a momentum lookup table and a circular queue (both non-trainable buffers).

    Args:
        dim: embedding size (the embeddings must be L2-normalised).
        num_ids: number of labelled identities in the training set (LUT rows); pids are 0..num_ids-1.
        queue_size: rows of the circular queue of unlabelled embeddings.
        momentum: weight of the old LUT row in the update ``m * old + (1 - m) * new``.
        scalar: inverse temperature applied to the cosine similarities.
    """

    def __init__(
        self, dim: int, num_ids: int, queue_size: int = 5000, momentum: float = 0.5, scalar: float = 30.0
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"OIMLoss: dim must be > 0, got {dim}")
        if num_ids <= 0:
            raise ValueError(f"OIMLoss: num_ids must be > 0, got {num_ids}")
        if queue_size < 0:
            raise ValueError(f"OIMLoss: queue_size must be >= 0, got {queue_size}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"OIMLoss: momentum must be in [0, 1), got {momentum}")
        if scalar <= 0:
            raise ValueError(f"OIMLoss: scalar must be > 0, got {scalar}")
        self.num_ids = num_ids
        self.queue_size = queue_size
        self.momentum = momentum
        self.scalar = scalar
        self.register_buffer("lut", torch.zeros(num_ids, dim))
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, embeddings: Tensor, pids: Tensor) -> Tensor:
        """Loss of unit-norm ``embeddings`` (N, dim) with identities ``pids`` (N,), -1 = unlabelled.

        In training mode the LUT and the queue are updated after the logits are taken, so a step never
        compares an embedding with itself.
        """
        if embeddings.dim() != 2 or embeddings.shape[1] != self.lut.shape[1]:
            raise ValueError(
                f"OIMLoss: embeddings must have shape (N, {self.lut.shape[1]}), got {tuple(embeddings.shape)}"
            )
        if pids.shape != embeddings.shape[:1]:
            raise ValueError(
                f"OIMLoss: pids must have shape ({embeddings.shape[0]},), got {tuple(pids.shape)}"
            )
        pids = pids.to(device=embeddings.device, dtype=torch.long)
        if bool(((pids < UNLABELED) | (pids >= self.num_ids)).any()):
            raise ValueError(
                f"OIMLoss: pids must be -1 (unlabelled) or in [0, {self.num_ids}), "
                f"got {pids.unique().tolist()}"
            )
        x = embeddings.float()
        labelled = pids >= 0
        if not bool(labelled.any()):
            loss = x.sum() * 0.0  # keeps the graph connected so DDP / AMP see a gradient
        else:
            # torch.cat copies the bank, so the in-place updates below leave autograd's saved copy alone.
            bank = torch.cat([self.lut, self.queue]).to(x.dtype)
            logits = self.scalar * (x[labelled] @ bank.t())
            loss = F.cross_entropy(logits, pids[labelled])
        if self.training:
            self._update(x.detach(), pids)
        return loss

    @torch.no_grad()
    def _update(self, x: Tensor, pids: Tensor) -> None:
        """Momentum update of the LUT rows (one sample at a time, in batch order) and queue push."""
        for feat, pid in zip(x[pids >= 0], pids[pids >= 0].tolist(), strict=True):
            row = self.momentum * self.lut[pid] + (1.0 - self.momentum) * feat
            self.lut[pid] = row / row.norm().clamp_min(1e-12)
        unlabeled = x[pids == UNLABELED]
        if self.queue_size == 0 or unlabeled.numel() == 0:
            return
        unlabeled = unlabeled[-self.queue_size :]
        slots = (self.queue_ptr + torch.arange(len(unlabeled), device=x.device)) % self.queue_size
        self.queue[slots] = unlabeled.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(unlabeled)) % self.queue_size)

    def extra_repr(self) -> str:
        return (
            f"dim={self.lut.shape[1]}, num_ids={self.num_ids}, queue_size={self.queue_size}, "
            f"momentum={self.momentum}, scalar={self.scalar}"
        )
