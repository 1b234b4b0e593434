"""Backbones: VMamba v2 (channel-first) with dual task streams and official-checkpoint loading."""

from fslora.backbones.layers import LayerNorm2d, Linear2d
from fslora.backbones.official import load_official_vmamba, unwrap_checkpoint
from fslora.backbones.vmamba import PRESETS, SS2D, VMamba, VMambaConfig, VSSBlock, cross_merge, cross_scan

__all__ = [
    "PRESETS",
    "SS2D",
    "LayerNorm2d",
    "Linear2d",
    "VMamba",
    "VMambaConfig",
    "VSSBlock",
    "cross_merge",
    "cross_scan",
    "load_official_vmamba",
    "unwrap_checkpoint",
]
