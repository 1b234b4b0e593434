"""Channel-first building blocks shared by the VMamba backbone.

VMamba's ``ln2d`` variant keeps feature maps as (B, C, H, W) end to end, so its linear layers and norms
act on the channel axis of an NCHW tensor. The official checkpoints store these linears as 2-D ``(out, in)``
weights; :class:`Linear2d` keeps that storage (it *is* an ``nn.Linear``) so checkpoints load unchanged and
the FSLoRA injector recognises it through ``channel_first = True``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerNorm2d", "Linear2d"]


class Linear2d(nn.Linear):
    """A linear map over the channels of an NCHW map: a 1x1 convolution with an ``nn.Linear`` weight.

    ``channel_first`` tells :func:`fslora.adapters.inject_fslora` that the weight is stored (out, in) but
    applied to (B, d_in, H, W).
    """

    channel_first = True

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"Linear2d expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an NCHW map (VMamba's ``ln2d``, eps 1e-5)."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
