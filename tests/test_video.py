"""app/video.py on a real pedestrian video (vtest.avi) and on small videos written here with OpenCV."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.config import AppConfig
from app.video import VideoError, VideoReader, open_video, probe, sample_indices


def write_video(path: Path, fourcc: str, n_frames: int = 30, size: tuple[int, int] = (64, 48),
                fps: float = 10.0) -> Path:
    """A small real video: frame i is flat grey level 8*i with its number drawn on it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for i in range(n_frames):
        frame = np.full((size[1], size[0], 3), (8 * i) % 256, np.uint8)
        cv2.putText(frame, str(i), (2, size[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        writer.write(frame)
    writer.release()
    return path


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# -- the real video ------------------------------------------------------------------------------------


def test_vtest_metadata(vtest_path: Path) -> None:
    info = probe(vtest_path)
    assert (info.n_frames, info.width, info.height) == (795, 768, 576)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(79.5)
    assert info.backend == "decord" and info.codec == "MP43"


def test_vtest_sampled_at_2fps(vtest_path: Path) -> None:
    with open_video(vtest_path) as video:
        step = video.info.fps / 2.0
        samples = list(video.iter_sampled(2.0))
    assert len(samples) == math.ceil(795 / step) == 159
    indices = [s.frame_index for s in samples]
    assert indices == list(range(0, 795, 5))
    for frame_index, timestamp_s, rgb in samples[:3] + samples[-3:]:
        assert timestamp_s == pytest.approx(frame_index / 10.0)
        assert rgb.shape == (576, 768, 3) and rgb.dtype == np.uint8
    assert samples[-1].timestamp_s == pytest.approx(79.0)
    # consecutive samples are different pictures (people walk), not one frame repeated
    assert np.abs(samples[0].rgb.astype(int) - samples[50].rgb.astype(int)).mean() > 1.0


def test_vtest_resume_and_random_access(vtest_path: Path) -> None:
    with open_video(vtest_path) as video:
        resumed = [s.frame_index for s in video.iter_sampled(2.0, start_frame=401)]
        assert resumed[0] == 405 and resumed[-1] == 790 and len(resumed) == 78
        first = next(iter(video.iter_sampled(2.0, start_frame=400)))
        assert np.array_equal(video.frame(400), first.rgb)
        batch = video.frames([794, 0, 400])
        assert batch.shape == (3, 576, 768, 3)
        assert np.array_equal(batch[2], first.rgb) and np.array_equal(batch[1], video.frame(0))
        crop = video.crop(400, (100.5, 50.0, 140.0, 150.0))
        assert crop.shape == (100, 40, 3) and np.array_equal(crop, first.rgb[50:150, 100:140])
        assert video.preview(400, max_side=384).shape == (288, 384, 3)
        with pytest.raises(VideoError, match="out of range"):
            video.frame(795)


def _sample_frames(path: Path, backend: str, count: int = 24) -> np.ndarray:
    with VideoReader(path, backend=backend) as video:
        assert video.info.backend == backend
        return np.stack([s.rgb for s, _ in zip(video.iter_sampled(2.0), range(count), strict=False)])


def test_opencv_matches_decord(vtest_path: Path) -> None:
    a = _sample_frames(vtest_path, "decord").astype(np.int16)
    b = _sample_frames(vtest_path, "opencv").astype(np.int16)
    diff = np.abs(a - b)
    # same decoded pictures; only the YUV->RGB rounding of the two FFmpeg builds may differ
    assert diff.mean() < 0.05 and diff.max() <= 8
    with VideoReader(vtest_path, backend="opencv") as video:  # seeks backwards and far ahead
        last, first = video.frame(794), video.frame(0)
    with VideoReader(vtest_path, backend="decord") as video:
        assert np.abs(video.frame(794).astype(int) - last).max() <= 8
        assert np.abs(video.frame(0).astype(int) - first).max() <= 8


def test_falls_back_to_opencv_when_decord_fails(vtest_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import decord

    def broken_reader(*args: object, **kwargs: object) -> None:
        raise RuntimeError("decord cannot open this file")

    reference = _sample_frames(vtest_path, "decord", count=4)
    monkeypatch.setattr(decord, "VideoReader", broken_reader)
    with VideoReader(vtest_path, backend="auto") as video:
        assert video.info.backend == "opencv" and video.info.n_frames == 795
        frames = np.stack([s.rgb for s, _ in zip(video.iter_sampled(2.0), range(4), strict=False)])
    assert np.abs(frames.astype(int) - reference).max() <= 8
    with pytest.raises(VideoError, match="decord cannot open this file"):
        VideoReader(vtest_path, backend="decord")


# -- sampling arithmetic ------------------------------------------------------------------------------


def test_sample_indices_non_integer_rate() -> None:
    indices = sample_indices(n_frames=3000, fps=29.97, target_fps=2.0)
    assert len(indices) == math.ceil(3000 / (29.97 / 2.0))
    times = np.array(indices) / 29.97
    assert np.allclose(times, np.arange(len(indices)) / 2.0, atol=1 / 29.97)
    assert sample_indices(10, fps=1.0, target_fps=2.0) == list(range(10))  # slower video: every frame
    assert sample_indices(30, 10.0, 2.0, start_frame=6) == [10, 15, 20, 25]


def test_small_videos_both_containers(tmp_path: Path) -> None:
    for name, fourcc in (("a.mp4", "mp4v"), ("b.avi", "MJPG")):
        path = write_video(tmp_path / name, fourcc)
        for backend in ("decord", "opencv"):
            with VideoReader(path, backend=backend) as video:
                assert (video.info.n_frames, video.info.width, video.info.height) == (30, 64, 48)
                samples = list(video.iter_sampled(2.0))
                assert [s.frame_index for s in samples] == [0, 5, 10, 15, 20, 25]
                # frame i was written with grey level 8*i: the frames come back in order
                assert abs(int(np.median(samples[3].rgb)) - 8 * 15) <= 6


# -- bad inputs ---------------------------------------------------------------------------------------


def _bad_input(kind: str, tmp_path: Path) -> tuple[Path, str, AppConfig]:
    """(path, expected words of the message, config) for each kind of bad input."""
    config = AppConfig()
    if kind == "missing":
        return tmp_path / "nope.mp4", "does not exist", config
    if kind == "zero_bytes":
        (tmp_path / "empty.mp4").write_bytes(b"")
        return tmp_path / "empty.mp4", "empty", config
    if kind == "text_as_mp4":
        (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
        return tmp_path / "notes.mp4", "not a readable video (decord", config
    if kind == "directory":
        (tmp_path / "folder.mp4").mkdir()
        return tmp_path / "folder.mp4", "not a regular file", config
    if kind == "truncated_mp4":
        src = write_video(tmp_path / "full.mp4", "mp4v")
        return truncate(src, tmp_path / "cut.mp4"), "truncated", config
    if kind == "truncated_avi":
        src = write_video(tmp_path / "full.avi", "MJPG")
        return truncate(src, tmp_path / "cut.avi"), "truncated", config
    if kind == "huge_frame":
        wide = write_video(tmp_path / "wide.avi", "MJPG", n_frames=3, size=(4200, 16))
        return wide, "4200x16 exceeds the limit of 4096", config
    if kind == "too_long":
        path = write_video(tmp_path / "long.avi", "MJPG")
        return path, "duration 3 s exceeds the limit of 2 s", AppConfig(max_duration_s=2.0)
    if kind == "over_resolution_config":
        return write_video(tmp_path / "small.avi", "MJPG"), "64x48 exceeds", AppConfig(max_resolution=32)
    raise AssertionError(kind)


BAD_INPUTS = ["missing", "zero_bytes", "text_as_mp4", "directory", "truncated_mp4", "truncated_avi",
              "huge_frame", "too_long", "over_resolution_config"]


@pytest.mark.parametrize("backend", ["auto", "opencv"])
@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_raises_video_error(kind: str, backend: str, tmp_path: Path) -> None:
    path, words, config = _bad_input(kind, tmp_path)
    with pytest.raises(VideoError) as info:
        open_video(path, config, backend=backend)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message, message
    if kind == "text_as_mp4":
        words = "not a readable video (" + ("decord" if backend == "auto" else "opencv")
        assert "truncated" not in message, message
    assert words in message, message


def test_unknown_backend_is_rejected(vtest_path: Path) -> None:
    with pytest.raises(ValueError, match="backend"):
        VideoReader(vtest_path, backend="gstreamer")
