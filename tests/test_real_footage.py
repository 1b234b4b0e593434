"""The real-footage split: teacher-labelled real frames with tracklet ids, COCO-style true boxes, loading."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fslora.data.real_footage import build_split, load_real_footage, read_coco_people
from fslora.data.records import UNLABELLED
from fslora.teacher import PersonTeacher
from fslora.training.data import load_dataset

VIDEO = os.environ.get("FSLORA_TEST_VIDEO", str(Path.home() / ".cache" / "fslora" / "vtest.avi"))


def _tiny_coco(root: Path) -> None:
    for sub in ("images/train2017", "labels/train2017", "images/val2017", "labels/val2017"):
        (root / sub).mkdir(parents=True)
    image = np.full((100, 200, 3), 127, np.uint8)
    cv2.imwrite(str(root / "images/train2017/a.jpg"), image)
    cv2.imwrite(str(root / "images/train2017/b.jpg"), image)  # no label file: no objects
    cv2.imwrite(str(root / "images/val2017/c.jpg"), image)
    # a person (class 0) and a car (class 2); the person box runs past the right edge and is clipped
    (root / "labels/train2017/a.txt").write_text("0 0.9 0.5 0.4 0.6\n2 0.2 0.2 0.1 0.1\n")
    (root / "labels/val2017/c.txt").write_text("0 0.5 0.5 0.2 0.5\n")


def test_coco_people_are_read_in_pixels_and_clipped(tmp_path: Path) -> None:
    _tiny_coco(tmp_path)
    records = read_coco_people(tmp_path, "train2017")
    assert [Path(r.image_path).name for r in records] == ["a.jpg", "b.jpg"]
    (person,) = records[0].persons
    assert person.pid == UNLABELLED
    assert person.box == pytest.approx((140.0, 20.0, 200.0, 80.0))
    assert records[1].persons == ()


def test_build_pseudo_labels_real_frames_and_loads_as_a_dataset(tmp_path: Path) -> None:
    _tiny_coco(tmp_path / "coco")
    teacher = PersonTeacher.from_package()
    out = tmp_path / "realps"
    split = build_split(
        out, video=VIDEO, coco_root=tmp_path / "coco", teacher=teacher, frames=(300, 310), stride=2
    )
    video_records = [r for r in split.images if r.frame is not None]
    assert [r.frame for r in video_records] == [300, 302, 304, 306, 308]
    assert all(len(r.persons) >= 5 for r in video_records)  # six people walk on the road in these frames
    # people walking slowly keep their tracklet id from frame to frame (tracks need 5 frames to count)
    first, last = set(video_records[0].pids), set(video_records[-1].pids)
    assert len(first & last) >= 4
    assert all(sum(p == UNLABELLED for p in (q.pid for q in r.persons)) <= 3 for r in video_records)
    assert len(split.gallery) == 1 and split.meta["coco_train_images"] == 2
    loaded = load_dataset("real-footage", out)
    assert [r.to_dict() for r in loaded.images][:5] == [
        {**r.to_dict(), "image_path": str(out / r.image_path)} for r in video_records
    ]
    assert Path(loaded.images[0].image_path).is_file()


def test_a_missing_split_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m fslora.data.real_footage build"):
        load_real_footage(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_real_footage(tmp_path)


def test_fixed_objects_the_teacher_takes_for_people_are_dropped() -> None:
    from fslora.data.real_footage import PseudoLabelConfig, drop_static_boxes

    sign = [30.0, 100.0, 45.0, 140.0]
    frames = [np.array([sign, [10.0 + 5 * t, 200.0, 40.0 + 5 * t, 290.0]], np.float32) for t in range(6)]
    frames[3] = frames[3][1:]  # the teacher missed the sign once
    kept = drop_static_boxes(frames, [0, 40, 80, 120, 160, 200], PseudoLabelConfig(static_gap=50))
    assert all(len(k) == 1 and k[0][1] == 200.0 for k in kept)  # only the walker is left in every frame
    # with frames too close in time to tell, nothing is dropped
    near = drop_static_boxes(frames, [0, 2, 4, 6, 8, 10], PseudoLabelConfig(static_gap=50))
    assert [len(k) for k in near] == [len(f) for f in frames]
