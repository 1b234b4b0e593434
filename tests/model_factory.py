"""Small random person-search models shared by the app's tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from fslora.models import FSLoRAPersonSearch, PersonSearchConfig

NANO_YAML = Path(__file__).resolve().parent.parent / "configs" / "models" / "nano.yaml"


def tiny_model(seed: int = 0) -> FSLoRAPersonSearch:
    """Random nano model sized for CPU tests (validated config overrides, seeded weights)."""
    d = yaml.safe_load(NANO_YAML.read_text())
    d.update(name="test-nano-random", transform={"min_size": 128, "max_size": 224},
             rpn={"pre_nms_top_n_test": 200, "post_nms_top_n_test": 8}, roi={"detections_per_img": 6})
    torch.manual_seed(seed)
    return FSLoRAPersonSearch(PersonSearchConfig.from_dict(d)).eval()
