"""Detection and re-identification on hand-labelled real footage (held out from training).

A label file lists frames of one video, each with its people as ``{"box": [x1, y1, x2, y2], "id": k}``
(input pixels; ``id`` a person identity consistent across the file's frames, -1 = unknown). Figures:

- **detection** at IoU 0.5 and score >= ``score_thresh``: recall of the labelled people at least
  ``min_height`` px tall; false boxes per frame = detections matched to no labelled person (a detection
  on a labelled person smaller than ``min_height`` is neither a hit nor a false box). Greedy matching in
  score order, each labelled person matched once.
- **re-id top-1 over later frames**: every labelled person (>= ``min_height``, known id) of a frame is a
  query; the gallery is every detection of every *later* labelled frame; the query is answered correctly
  when its most similar gallery detection overlaps (IoU >= 0.5) a labelled person of the same id. Queries
  whose person is detected in no later frame have no right answer and are counted apart.

Embedders: the model's own (``embed_boxes`` for queries, the detections' embeddings for the gallery) and,
for comparison, the plain ImageNet MobileNetV2 crop embedding DeepSORT-style trackers use (crop resized to
224x224, ImageNet features, global average pool, L2-normalised), applied to the *same* boxes.

    python -m fslora.evaluation.footage --model weights/DEFAULT --video vtest.avi \
        --labels assets/labels/vtest_heldout.json --crop-baseline --json out.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

Embedder = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(RGB frame, boxes (N, 4)) -> unit embeddings (N, D)."""

IOU_MATCH = 0.5


@dataclass
class LabelledFrame:
    frame: int
    boxes: np.ndarray  # (N, 4) float32, input pixels
    ids: np.ndarray  # (N,) int64, -1 = unknown identity


@dataclass
class FrameDetections:
    boxes: np.ndarray  # (M, 4)
    scores: np.ndarray  # (M,)
    embeddings: np.ndarray  # (M, D), unit norm


def load_labels(path: str | Path) -> tuple[dict[str, Any], list[LabelledFrame]]:
    """The label file's header (video name, notes...) and its frames in frame order."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("frames"), dict):
        raise ValueError(f"{path}: expected {{'video': ..., 'frames': {{frame: [{{box, id}}, ...]}}}}")
    frames = []
    for key, people in sorted(data["frames"].items(), key=lambda kv: int(kv[0])):
        boxes = np.array([p["box"] for p in people], np.float32).reshape(-1, 4)
        if len(boxes) and not ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all():
            raise ValueError(f"{path}: frame {key} has a box with x2 <= x1 or y2 <= y1")
        ids = np.array([int(p.get("id", -1)) for p in people], np.int64)
        frames.append(LabelledFrame(int(key), boxes, ids))
    header = {k: v for k, v in data.items() if k != "frames"}
    return header, frames


def read_frames(video: str | Path, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """RGB frames of ``video`` by index (OpenCV, sequential read: exact frame numbers)."""
    wanted, out = set(indices), {}
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise FileNotFoundError(f"{video}: cannot be opened as a video")
    index = 0
    try:
        while wanted - set(out):
            ok, bgr = capture.read()
            if not ok:
                break
            if index in wanted:
                out[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    missing = sorted(wanted - set(out))
    if missing:
        raise ValueError(f"{video}: frames {missing[:5]} are past its end ({index} frames)")
    return out


def _heights(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, 3] - boxes[:, 1]


def _match(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Index of the labelled person each detection is matched to (-1 = none), greedy by score."""
    matched = np.full(len(det_boxes), -1, np.int64)
    if not len(det_boxes) or not len(gt_boxes):
        return matched
    iou = box_iou(torch.as_tensor(det_boxes), torch.as_tensor(gt_boxes)).numpy()
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-det_scores, kind="stable"):
        candidates = np.where(~taken & (iou[d] >= IOU_MATCH))[0]
        if len(candidates):
            g = candidates[np.argmax(iou[d, candidates])]
            matched[d], taken[g] = g, True
    return matched


def detection_figures(
    labels: Sequence[LabelledFrame],
    detections: Sequence[FrameDetections],
    *,
    score_thresh: float = 0.5,
    min_height: float = 50.0,
) -> dict[str, float]:
    """Recall of people >= min_height px and false boxes per frame at ``score_thresh``."""
    found = total = false = 0
    for lab, det in zip(labels, detections, strict=True):
        keep = det.scores >= score_thresh
        boxes, scores = det.boxes[keep], det.scores[keep]
        matched = _match(boxes, scores, lab.boxes)
        tall = _heights(lab.boxes) >= min_height
        total += int(tall.sum())
        found += int(sum(1 for g in matched if g >= 0 and tall[g]))
        false += int((matched < 0).sum())
    return {
        "recall": found / max(total, 1),
        "false_per_frame": false / max(len(labels), 1),
        "people": total,
        "found": found,
        "false_boxes": false,
        "frames": len(labels),
        "score_thresh": score_thresh,
        "min_height": min_height,
    }


def reid_top1_later_frames(
    labels: Sequence[LabelledFrame],
    detections: Sequence[FrameDetections],
    query_embeddings: Sequence[np.ndarray],
    *,
    score_thresh: float = 0.5,
    min_height: float = 50.0,
) -> dict[str, float]:
    """Top-1 of each labelled person of frame f among all detections of the labelled frames after f.

    ``query_embeddings[i]`` holds the unit embeddings of ``labels[i].boxes``; the gallery uses
    ``detections[i].embeddings`` (the same embedder must have made both).
    """
    gallery_ids, gallery_emb, gallery_frame = [], [], []
    for i, (lab, det) in enumerate(zip(labels, detections, strict=True)):
        keep = det.scores >= score_thresh
        matched = _match(det.boxes[keep], det.scores[keep], lab.boxes)
        gallery_ids.append(np.where(matched >= 0, lab.ids[np.maximum(matched, 0)], -2))
        gallery_emb.append(det.embeddings[keep])
        gallery_frame.append(np.full(int(keep.sum()), i))
    ids, emb, order = (np.concatenate(x) for x in (gallery_ids, gallery_emb, gallery_frame))
    correct = asked = unanswerable = 0
    for i, lab in enumerate(labels):
        later = order > i
        for k in np.where((lab.ids >= 0) & (_heights(lab.boxes) >= min_height))[0]:
            if not (later & (ids == lab.ids[k])).any():
                unanswerable += 1
                continue
            sims = emb[later] @ query_embeddings[i][k]
            asked += 1
            correct += int(ids[later][int(np.argmax(sims))] == lab.ids[k])
    top1 = correct / max(asked, 1)
    return {"top1": top1, "queries": asked, "correct": correct, "unanswerable": unanswerable}


class CropEmbedder:
    """Plain ImageNet MobileNetV2 crop embedding (DeepSORT-realtime's recipe), L2-normalised."""

    SIZE = 224

    def __init__(self) -> None:
        from fslora.backbones.mobilenetv2 import imagenet_features

        self.features = imagenet_features()
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if not len(boxes):
            return np.zeros((0, 1280), np.float32)
        h, w = image.shape[:2]
        crops = []
        for x1, y1, x2, y2 in np.asarray(boxes):
            xa, ya = int(max(0, np.floor(x1))), int(max(0, np.floor(y1)))
            xb, yb = int(min(w, np.ceil(x2))), int(min(h, np.ceil(y2)))
            crop = image[ya : max(yb, ya + 1), xa : max(xb, xa + 1)]
            crops.append(cv2.resize(crop, (self.SIZE, self.SIZE), interpolation=cv2.INTER_LINEAR))
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        pooled = self.features(x).mean(dim=(2, 3))
        return F.normalize(pooled, dim=1).numpy()


def evaluate_footage(
    model: Any,
    video: str | Path,
    labels_path: str | Path,
    *,
    crop_baseline: bool = False,
    score_thresh: float = 0.5,
    min_height: float = 50.0,
) -> dict[str, Any]:
    """Detection and re-id figures of ``model`` (and optionally of the crop baseline on the same boxes)."""
    from tqdm import tqdm

    header, labels = load_labels(labels_path)
    frames = read_frames(video, [lab.frame for lab in labels])
    detections, queries = [], []
    for lab in tqdm(labels, desc="footage", unit="frame"):
        image = frames[lab.frame]
        det = model.detect([image], score_thresh=min(score_thresh, 0.05))[0]
        detections.append(FrameDetections(det.boxes.numpy(), det.scores.numpy(), det.embeddings.numpy()))
        queries.append(model.embed_boxes([image], [lab.boxes])[0].numpy())
    kw = {"score_thresh": score_thresh, "min_height": min_height}
    report: dict[str, Any] = {
        "labels": str(labels_path),
        "video": str(video),
        "label_header": header,
        "detection": detection_figures(labels, detections, **kw),
        "reid": reid_top1_later_frames(labels, detections, queries, **kw),
    }
    if crop_baseline:
        crop = CropEmbedder()
        crop_dets = [
            FrameDetections(d.boxes, d.scores, crop(frames[lab.frame], d.boxes))
            for lab, d in zip(labels, detections, strict=True)
        ]
        crop_queries = [crop(frames[lab.frame], lab.boxes) for lab in labels]
        report["reid_crop_baseline"] = reid_top1_later_frames(labels, crop_dets, crop_queries, **kw)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fslora.evaluation.footage", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub repo id")
    parser.add_argument("--video", required=True, type=Path)
    parser.add_argument("--labels", required=True, type=Path)
    parser.add_argument("--score-thresh", type=float, default=0.5)
    parser.add_argument("--min-height", type=float, default=50.0)
    parser.add_argument("--crop-baseline", action="store_true", help="also score the ImageNet crop embedding")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from fslora.models import FSLoRAPersonSearch

    model = FSLoRAPersonSearch.from_pretrained(args.model, device="cpu")
    report = evaluate_footage(
        model, args.video, args.labels, crop_baseline=args.crop_baseline,
        score_thresh=args.score_thresh, min_height=args.min_height,
    )
    report["model"] = str(args.model)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
