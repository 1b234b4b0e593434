"""One-stage person-search models: `FSLoRAPersonSearch` (VMamba + FSLoRA + NAE head) and its parts.

from fslora.models import FSLoRAPersonSearch, PersonSearchConfig
model = FSLoRAPersonSearch(PersonSearchConfig.from_yaml("configs/models/nano.yaml"))
losses = model(images, targets)                  # training: dict of named losses
detections = model.detect(images)                # inference: list[Detections]
"""

from .config import ARCHITECTURE_VERSION, OIMConfig, PersonSearchConfig, RoIConfig, RPNConfig, TransformConfig
from .detections import Detections
from .heads import HeadDetections, NAEHead, NormAwareEmbedding, PersonSearchHead, TrunkOutput
from .oim import UNLABELED, OIMLoss
from .person_search import FSLoRAPersonSearch, build_head

__all__ = [
    "ARCHITECTURE_VERSION",
    "UNLABELED",
    "Detections",
    "FSLoRAPersonSearch",
    "HeadDetections",
    "NAEHead",
    "NormAwareEmbedding",
    "OIMConfig",
    "OIMLoss",
    "PersonSearchConfig",
    "PersonSearchHead",
    "RPNConfig",
    "RoIConfig",
    "TransformConfig",
    "TrunkOutput",
    "build_head",
]
