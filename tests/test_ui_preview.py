"""Browser-playable previews (app/preview.py) of real videos written here with OpenCV: size, rate and
frames of the WebM read back, reuse, one encode under concurrent requests, and failures that leave no
partial file. Sources are registered in a real SQLite store, as the app does."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio.processing_utils import save_file_to_cache

from app.config import AppConfig
from app.preview import (
    PREVIEW_DIRNAME,
    Previews,
    PreviewSettings,
    plan_preview,
    remove_unused_preview,
)
from app.store import Store, VideoRecord
from app.video import VideoError, probe


def _grey_levels(n: int) -> list[int]:
    return [int(v) for v in np.linspace(20, 235, n)]


def _write_source(path: Path, size: tuple[int, int], fps: float, n: int) -> Path:
    """An mp4v video (a codec browsers do not play) whose frame i is a flat grey of level
    `_grey_levels(n)[i]` with a white bar, so a frame read back tells which source frame it shows."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for level in _grey_levels(n):
        frame = np.full((h, w, 3), level, np.uint8)
        frame[: h // 8, : w // 4] = 255
        writer.write(frame)
    writer.release()
    return path


def _read_all(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    return frames, fps


def _centre_grey(bgr: np.ndarray) -> float:
    h, w = bgr.shape[:2]
    return float(bgr[h // 2 - 8: h // 2 + 8, w // 2 - 8: w // 2 + 8].mean())


@pytest.fixture
def env(tmp_path: Path):
    config = AppConfig(data_dir=tmp_path / "data")
    store = Store(config.db_url)
    model = store.register_model("m", "hash", 8)

    def register(path: Path) -> VideoRecord:
        return store.add_video(path, model.id, probe(path, config))[0]

    yield config, store, register
    store.close()


def test_plan_scales_to_even_sides_and_caps_the_rate():
    plan = plan_preview(1920, 1080, 60.0, 120, PreviewSettings())
    assert (plan.width, plan.height, plan.fps) == (640, 360, 30.0)
    assert plan.source_frames == list(range(0, 120, 2))  # every other frame: same duration
    odd = plan_preview(643, 361, 25.0, 10, PreviewSettings(max_side=640))
    assert odd.width % 2 == 0 and odd.height % 2 == 0 and odd.width <= 640
    small = plan_preview(320, 180, 12.0, 5, PreviewSettings())
    assert (small.width, small.height, small.fps, small.source_frames) == (320, 180, 12.0, [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="max_fps"):
        PreviewSettings(max_fps=0)


def test_preview_is_a_downscaled_vp8_webm_with_the_source_frames(env, tmp_path: Path):
    config, _, register = env
    source = _write_source(tmp_path / "walk.mp4", (800, 450), 10.0, 12)
    video = register(source)
    previews = Previews(config)
    assert previews.find(video) is None
    path = previews.ensure(video)
    assert path.parent == config.data_dir / PREVIEW_DIRNAME and path.suffix == ".webm"
    assert path.name.startswith(video.content_hash)

    cap = cv2.VideoCapture(str(path))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    cap.release()
    assert fourcc.to_bytes(4, "little") == b"VP80"
    frames, fps = _read_all(path)
    assert fps == pytest.approx(10.0)
    assert len(frames) == 12
    assert frames[0].shape == (360, 640, 3)  # 800x450 -> longer side 640
    source_greys = [_centre_grey(f) for f in _read_all(source)[0]]  # ~20 apart
    assert [_centre_grey(f) for f in frames] == pytest.approx(source_greys, abs=5)  # each frame, in order
    assert previews.find(video) == path


def test_fast_sources_are_subsampled_to_the_rate_cap(env, tmp_path: Path):
    config, _, register = env
    source = _write_source(tmp_path / "fast.mp4", (320, 240), 40.0, 16)
    video = register(source)
    path = Previews(config, PreviewSettings(max_fps=10.0)).ensure(video)
    frames, fps = _read_all(path)
    assert fps == pytest.approx(10.0) and len(frames) == 4  # same 0.4 s duration
    assert frames[0].shape == (240, 320, 3)  # small sources keep their size
    source_greys = [_centre_grey(f) for f in _read_all(source)[0]]  # ~14 apart
    expected = [source_greys[i] for i in (0, 4, 8, 12)]
    assert [_centre_grey(f) for f in frames] == pytest.approx(expected, abs=5)


def test_second_request_reuses_the_file_and_concurrent_requests_encode_once(env, tmp_path: Path):
    config, _, register = env
    video = register(_write_source(tmp_path / "walk.mp4", (320, 180), 10.0, 6))
    previews = Previews(config)
    encodes: list[int] = []

    def progress(done: int, total: int) -> None:
        if done == total:
            encodes.append(total)

    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(previews.ensure(video, progress)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert encodes == [6] and len(set(paths)) == 1
    stat = paths[0].stat()
    assert previews.ensure(video, progress) == paths[0]
    assert encodes == [6]  # not rewritten
    again = paths[0].stat()
    assert (again.st_mtime_ns, again.st_ino, again.st_size) == (stat.st_mtime_ns, stat.st_ino, stat.st_size)
    assert [p.name for p in paths[0].parent.iterdir()] == [paths[0].name]  # no temporary files left


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_bad_source_raises_a_clear_error_and_leaves_no_file(env, tmp_path: Path, damage: str):
    config, _, register = env
    source = _write_source(tmp_path / "walk.mp4", (320, 180), 10.0, 20)
    video = register(source)
    if damage == "missing":
        source.unlink()
        message = "does not exist"
    else:
        source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        message = "truncated|corrupt|not a readable video"
    previews = Previews(config)
    with pytest.raises(VideoError, match=message) as info:
        previews.ensure(video)
    assert "walk.mp4" in str(info.value)
    assert previews.find(video) is None
    folder = config.data_dir / PREVIEW_DIRNAME
    assert not folder.exists() or list(folder.iterdir()) == []


def test_an_encode_interrupted_halfway_leaves_no_partial_file(env, tmp_path: Path):
    config, _, register = env
    video = register(_write_source(tmp_path / "walk.mp4", (320, 180), 10.0, 20))
    previews = Previews(config, PreviewSettings(chunk_frames=4))

    def stop(done: int, total: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt  # as a cancelled request or a dying server would

    with pytest.raises(KeyboardInterrupt):
        previews.ensure(video, stop)
    assert previews.find(video) is None
    assert list((config.data_dir / PREVIEW_DIRNAME).iterdir()) == []
    assert len(_read_all(previews.ensure(video))[0]) == 20  # the next request starts afresh


def test_previews_go_only_when_no_stored_video_has_that_content(env, tmp_path: Path, monkeypatch):
    config, store, register = env
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    video = register(_write_source(tmp_path / "walk.mp4", (320, 180), 10.0, 4))
    path = Previews(config).ensure(video)
    served = Path(save_file_to_cache(path, str(tmp_path / "gradio-cache")))  # the copy a player gets
    other = Path(save_file_to_cache(_write_source(tmp_path / "other.mp4", (64, 48), 10.0, 2),
                                    str(tmp_path / "gradio-cache")))
    assert remove_unused_preview(config, store.list_videos(), video.content_hash) == 0  # still indexed
    assert path.is_file() and served.is_file()
    store.remove_video(video.id)
    assert remove_unused_preview(config, store.list_videos(), video.content_hash) == 1
    assert not path.exists()
    assert not served.exists() and not served.parent.exists()  # Gradio's copy and its folder
    assert other.is_file()  # copies of other files stay
    with pytest.raises(ValueError, match="content_hash"):
        Previews(config).remove("../*")
