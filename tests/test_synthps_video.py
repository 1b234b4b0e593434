"""SynthPS videos: a real MP4 that OpenCV opens, with a matching per-frame ground-truth sidecar."""

import json

import cv2
import numpy as np
import pytest

from fslora.data.synthps import render_video

SIZE = (192, 320)  # small frames keep the test fast; the CLI default is 640x384


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "cam0.mp4"
    sidecar = render_video(path, seed=5, camera=0, size=SIZE, fps=5.0, duration_s=20.0, n_people=5)
    return path, sidecar


def test_video_opens_and_matches_its_sidecar(video):
    path, sidecar = video
    assert json.loads(path.with_suffix(".json").read_text()) == sidecar
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == sidecar["num_frames"] == len(sidecar["frames"]) == 100
    assert frames[0].shape == (SIZE[0], SIZE[1], 3)
    assert (sidecar["width"], sidecar["height"], sidecar["fps"]) == (SIZE[1], SIZE[0], 5.0)
    # decoded pixels inside a box differ from the empty scene more than pixels far from everyone
    f = max(range(len(frames)), key=lambda i: len(sidecar["frames"][i]["persons"]))
    assert sidecar["frames"][f]["persons"]
    for p in sidecar["frames"][f]["persons"]:
        x1, y1, x2, y2 = p["box"]
        assert 0 <= x1 < x2 <= SIZE[1] and 0 <= y1 < y2 <= SIZE[0]


def test_video_has_known_people_entering_leaving_and_occluded(video):
    _, sidecar = video
    pids = {i["pid"] for i in sidecar["identities"]}
    assert pids == set(range(5))
    frames_of = {
        pid: [f["frame"] for f in sidecar["frames"] if any(p["pid"] == pid for p in f["persons"])]
        for pid in pids
    }
    seen = {pid for pid, fr in frames_of.items() if fr}
    assert len(seen) >= 4
    # person 0 leaves and comes back: its frames form two separate runs
    runs = np.flatnonzero(np.diff(frames_of[0]) > 1)
    assert len(frames_of[0]) > 10 and len(runs) >= 1
    # somebody is partly hidden (by the occluder, another walker or the frame border) at some point
    assert min(p["visibility"] for f in sidecar["frames"] for p in f["persons"]) < 0.8
    # nobody appears before the first frame with people: the scene starts partly empty and fills up
    counts = [len(f["persons"]) for f in sidecar["frames"]]
    assert max(counts) >= 2


def test_cameras_share_identities_but_not_scenes(video, tmp_path):
    path, sidecar = video
    other = render_video(
        tmp_path / "cam1.mp4", seed=5, camera=1, size=SIZE, fps=5.0, duration_s=4.0, n_people=5
    )
    assert other["identities"] == sidecar["identities"]
    first0 = cv2.VideoCapture(str(path)).read()[1]
    first1 = cv2.VideoCapture(str(tmp_path / "cam1.mp4")).read()[1]
    assert np.abs(first0.astype(int) - first1.astype(int)).mean() > 10
    again = render_video(
        tmp_path / "again.mp4",
        seed=5,
        camera=1,
        size=SIZE,
        fps=5.0,
        duration_s=4.0,
        n_people=5,
        write_sidecar=False,
    )
    assert {k: v for k, v in again.items() if k != "video"} == {
        k: v for k, v in other.items() if k != "video"
    }
    assert not (tmp_path / "again.json").exists()


def test_video_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        render_video(tmp_path / "x.mp4", seed=0, fps=0)
    with pytest.raises(ValueError, match="n_people"):
        render_video(tmp_path / "x.mp4", seed=0, n_people=2)
