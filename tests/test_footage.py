"""Real-footage figures (fslora.evaluation.footage): detection recall / false boxes and re-id top-1 over
later frames, worked by hand on small cases; the crop baseline on a real frame."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fslora.evaluation.footage import (
    CropEmbedder,
    FrameDetections,
    LabelledFrame,
    detection_figures,
    load_labels,
    read_frames,
    reid_top1_later_frames,
)

VIDEO = Path(os.environ.get("FSLORA_TEST_VIDEO", Path.home() / ".cache" / "fslora" / "vtest.avi"))

TALL_A = [10, 10, 40, 110]  # 100 px tall
TALL_B = [200, 10, 230, 90]  # 80 px tall
SMALL = [300, 10, 310, 40]  # 30 px tall: below min_height 50


def unit(*v: float) -> np.ndarray:
    x = np.array(v, np.float32)
    return x / np.linalg.norm(x)


def frame(index: int, boxes: list, ids: list) -> LabelledFrame:
    return LabelledFrame(index, np.array(boxes, np.float32), np.array(ids, np.int64))


def dets(boxes: list, scores: list, embeddings: list) -> FrameDetections:
    return FrameDetections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.array(embeddings, np.float32),
    )


def test_detection_recall_false_boxes_and_small_people_ignored() -> None:
    labels = [frame(0, [TALL_A, TALL_B, SMALL], [1, 2, 3]), frame(5, [TALL_A], [1])]
    detections = [
        # A found; B's box at score 0.4 is under the threshold; the small person's box is neither hit nor
        # false; one box on nothing is false
        dets([TALL_A, TALL_B, SMALL, [500, 500, 540, 600]], [0.9, 0.4, 0.8, 0.7], [unit(1, 0)] * 4),
        # a duplicate of A: the second match fails and counts as false
        dets([TALL_A, [11, 11, 41, 111]], [0.9, 0.8], [unit(1, 0)] * 2),
    ]
    fig = detection_figures(labels, detections, score_thresh=0.5, min_height=50)
    assert (fig["people"], fig["found"], fig["false_boxes"], fig["frames"]) == (3, 2, 2, 2)
    assert fig["recall"] == pytest.approx(2 / 3) and fig["false_per_frame"] == pytest.approx(1.0)
    assert detection_figures(labels, detections, score_thresh=0.3)["found"] == 3


def test_reid_top1_uses_later_frames_only_and_counts_unanswerable() -> None:
    labels = [
        frame(0, [TALL_A, TALL_B], [1, 2]),
        frame(1, [TALL_A, TALL_B], [1, 2]),
        frame(2, [TALL_A], [1]),
    ]
    detections = [
        dets([TALL_A, TALL_B], [0.9, 0.9], [unit(1, 0), unit(0, 1)]),
        # in frame 1 person 2's detection looks like person 1 (a wrong answer for a query of 1 from frame 0)
        dets([TALL_A, TALL_B], [0.9, 0.9], [unit(0.2, 1), unit(1, 0.1)]),
        dets([TALL_A], [0.9], [unit(1, 0)]),
    ]
    queries = [
        np.stack([unit(1, 0), unit(0, 1)]),
        np.stack([unit(1, 0), unit(0, 1)]),
        np.stack([unit(1, 0)]),
    ]
    fig = reid_top1_later_frames(labels, detections, queries, score_thresh=0.5)
    # frame-0 query of 1 (1, 0): frame 2's A (sim 1.0) beats frame 1's B (0.995) -> right
    # frame-0 query of 2 (0, 1): frame 1's A (id 1, sim 0.98) beats frame 1's B (0.10) -> wrong
    # frame-1 query of 1: only frame 2 is later -> right; frame-1 query of 2: no later 2 -> unanswerable
    # frame-2 query of 1: no later frame -> unanswerable
    assert (fig["queries"], fig["correct"], fig["unanswerable"]) == (3, 2, 2)
    assert fig["top1"] == pytest.approx(2 / 3)


def test_label_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"video": "v.avi", "frames": {"10": [{"box": TALL_A, "id": 4}], "2": []}}))
    header, frames = load_labels(path)
    assert header == {"video": "v.avi"} and [f.frame for f in frames] == [2, 10]
    assert frames[1].ids.tolist() == [4] and frames[0].boxes.shape == (0, 4)
    path.write_text(json.dumps({"frames": {"1": [{"box": [5, 5, 1, 9], "id": 1}]}}))
    with pytest.raises(ValueError, match="x2 <= x1"):
        load_labels(path)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected"):
        load_labels(path)


def test_crop_baseline_on_a_real_frame() -> None:
    image = read_frames(VIDEO, [300])[300]
    assert image.shape == (576, 768, 3)
    embed = CropEmbedder()
    boxes = np.array([[100, 100, 160, 260], [100, 100, 160, 260], [400, 300, 450, 420]], np.float32)
    emb = embed(image, boxes)
    assert emb.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(emb[0], emb[1], rtol=1e-5, atol=1e-6)
    assert emb[0] @ emb[2] < 0.999
    with pytest.raises(ValueError, match="past its end"):
        read_frames(VIDEO, [10_000])
