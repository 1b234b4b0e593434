"""SynthPS: a procedural person-search dataset, deterministic from a seed.

Synthetic people (articulated walking figures with body shapes, palette clothing colours, textures
of several spatial frequencies and accessories) in scenes from several cameras, each with its own
background, perspective, light and noise; plus occluders, non-person distractors and hard-negative
identities that differ from another only in one texture or accessory. Detection can rely on the
shared silhouette (low frequencies); telling people apart needs the textures (high frequencies).

Public API::

    generate_split(out_dir, seed, preset="standard") -> PersonSearchSplit   # render + write
    load_synthps(root) -> PersonSearchSplit                                  # read back
    plan_split(seed, preset) -> SplitPlan                                    # decide, no pixels
    render_video(path, seed, camera=0, ...) -> sidecar dict                  # MP4 + per-frame truth

CLI: ``python -m fslora.data.synthps --out DIR --seed N [--split standard|tiny] [--video]``.
"""

from .plan import SplitPlan, plan_split
from .presets import PRESETS, SynthPSPreset, get_preset
from .split import generate_split, load_synthps
from .video import render_video

__all__ = [
    "PRESETS",
    "SplitPlan",
    "SynthPSPreset",
    "generate_split",
    "get_preset",
    "load_synthps",
    "plan_split",
    "render_video",
]
