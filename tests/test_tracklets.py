"""Pseudo-identities from linked boxes: a hand-made sequence with a gap, a crossing and a false box."""

from __future__ import annotations

import numpy as np
import pytest

from fslora.data.records import UNLABELLED
from fslora.data.tracklets import TrackletConfig, link_tracklets


def _person(x: float, y: float = 100.0) -> list[float]:
    return [x, y, x + 40.0, y + 120.0]


def test_two_walkers_keep_their_ids_through_a_missed_frame_and_a_false_box() -> None:
    frames = []
    for t in range(10):
        boxes = [_person(10 + 8 * t), _person(400 - 8 * t, 110)]  # A walks right, B walks left
        if t == 4:
            boxes = boxes[:1]  # B missed for one frame
        if t == 6:
            boxes.append([600.0, 10.0, 630.0, 60.0])  # a one-frame false box
        frames.append(np.array(boxes))
    ids = link_tracklets(frames, TrackletConfig(iou_min=0.3, max_gap=2, min_length=3))
    a, b = ids[0]
    assert a != b and a >= 0 and b >= 0
    assert all(frame_ids[0] == a for frame_ids in ids)
    assert all(frame_ids[1] == b for t, frame_ids in enumerate(ids) if t != 4)
    assert ids[4].tolist() == [a]
    assert ids[6][2] == UNLABELLED
    assert sorted({int(k) for f in ids for k in f if k >= 0}) == [0, 1]


def test_a_track_lost_longer_than_max_gap_restarts_under_a_new_id() -> None:
    frames = [np.array([_person(10 + 2 * t)]) for t in range(5)]
    frames += [np.zeros((0, 4))] * 4
    frames += [np.array([_person(30 + 2 * t)]) for t in range(5)]
    ids = link_tracklets(frames, TrackletConfig(max_gap=2, min_length=3))
    assert {int(f[0]) for f in ids[:5]} == {0}
    assert {int(f[0]) for f in ids[9:]} == {1}


def test_links_maximise_the_total_overlap_not_the_best_single_pair() -> None:
    # greedy would link p0-n0 (IoU 0.6) and leave p1 unmatched; the joint optimum is p0-n1 + p1-n0 (1/3 + 1/3)
    f0 = np.array([[0.0, 0.0, 40.0, 100.0], [30.0, 0.0, 70.0, 100.0]])
    f1 = np.array([[10.0, 0.0, 50.0, 100.0], [-20.0, 0.0, 20.0, 100.0]])
    ids = link_tracklets([f0, f1], TrackletConfig(iou_min=0.3, min_length=1))
    assert ids[0].tolist() == [0, 1] and ids[1].tolist() == [1, 0]


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="iou_min"):
        TrackletConfig(iou_min=0.0)
    with pytest.raises(ValueError, match="min_length"):
        TrackletConfig(min_length=0)
