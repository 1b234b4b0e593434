"""Browser-playable previews of indexed videos: the Search tab's player shows these, not the originals.

Why a second file per video: indexed videos are often MPEG-4 Part 2 (mp4v) or AVI, which Chromium does
not play, and our OpenCV build cannot write H.264. It does write VP8 in WebM, which every current
browser plays. A preview is the source downscaled so its longer side is <= 640 px (even sides, as the
encoder needs), at the source's frame rate capped at 30 fps (ours: enough to scrub and to land on any
sampled frame; a 60 fps source then costs half the encoding). Preview time t shows the source frame at
time t, so timestamps from the database address the preview directly.

When (ours): lazily, the first time the Search tab shows a video. Indexing stays as fast as it was, the
headless CLI never pays for a player it has no use for, and videos indexed before this existed get a
preview too. The UI shows the frame first and fills the player after, with a progress bar: encoding ran
at about 45-55 source frames/s (1.7-1.9x real time for 25-30 fps) on two cores shared with training.

Where: `<data_dir>/previews/<content sha256>-<max side>.webm`. Keyed by content, so the records of one
file under several models share one preview; the size is in the name, so changing it never serves a
stale file. A preview is written under a temporary name and renamed into place: a crash or a source that
fails halfway leaves no partial file behind. The folder is one of the app's served folders
(`app.ui.media_dirs`); nothing else under the data folder is. Gradio serves a player's file from a copy
in its own cache (`<data_dir>/gradio-cache/<file hash>/<name>` when started by app.py): removing a
preview removes those copies too, found by the preview's content-hash name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from app.config import AppConfig
from app.store import VideoRecord
from app.video import open_video, sample_indices

log = logging.getLogger(__name__)

PREVIEW_DIRNAME = "previews"  # under AppConfig.data_dir
SUFFIX = ".webm"
FOURCC = "VP80"  # VP8 in WebM: written by OpenCV's FFmpeg, played by Chromium/Firefox/Safari
ProgressFn = Callable[[int, int], None]  # (frames written, frames total)


class PreviewError(ValueError):
    """A preview cannot be written (the source decodes but the encoder fails); names the file."""


@dataclass(frozen=True)
class PreviewSettings:
    """Size and rate of previews."""

    max_side: int = 640  # longer side, pixels (smaller sources keep their size)
    max_fps: float = 30.0  # faster sources are subsampled to this rate
    chunk_frames: int = 8  # frames decoded per read (bounds memory for large sources)
    stale_part_s: float = 3600.0  # temporary files older than this are left by a crash: deleted

    def __post_init__(self) -> None:
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or self.max_side < 16:
            raise ValueError(f"PreviewSettings.max_side must be an integer >= 16, got {self.max_side!r}")
        for name in ("max_fps", "chunk_frames", "stale_part_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PreviewSettings.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class PreviewPlan:
    """What a preview of a given source will be: size, rate and the source frames it shows."""

    width: int
    height: int
    fps: float
    source_frames: list[int]


def plan_preview(width: int, height: int, fps: float, n_frames: int,
                 settings: PreviewSettings) -> PreviewPlan:
    """The preview of a `width` x `height` source of `n_frames` at `fps`: downscaled to `max_side`
    (rounded down to even sides), the rate capped at `max_fps` by sampling like the indexer does."""
    scale = min(1.0, settings.max_side / max(width, height))
    w, h = (max(2, int(round(side * scale)) // 2 * 2) for side in (width, height))
    out_fps = min(fps, settings.max_fps)
    return PreviewPlan(w, h, out_fps, sample_indices(n_frames, fps, out_fps))


def write_preview(source: str | Path, target: str | Path, config: AppConfig | None = None,
                  settings: PreviewSettings | None = None, progress: ProgressFn | None = None) -> Path:
    """Encodes `source` (read through `app.video`, so a bad file raises `VideoError`) as a WebM preview at
    `target`, atomically: written to a temporary file in the same folder, renamed when complete."""
    settings = settings or PreviewSettings()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".part" + SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with open_video(source, config) as reader:
            info = reader.info
            plan = plan_preview(info.width, info.height, info.fps, info.n_frames, settings)
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*FOURCC), plan.fps,
                                     (plan.width, plan.height))
            if not writer.isOpened():
                raise PreviewError(f"preview of {source}: OpenCV cannot open a {FOURCC} WebM writer")
            try:
                _encode(reader.frames, writer, plan, settings.chunk_frames, progress)
            finally:
                writer.release()
        if tmp.stat().st_size == 0:
            raise PreviewError(f"preview of {source}: the encoder wrote nothing")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _encode(read: Callable[[list[int]], np.ndarray], writer: cv2.VideoWriter, plan: PreviewPlan,
            chunk: int, progress: ProgressFn | None) -> None:
    total = len(plan.source_frames)
    size = (plan.width, plan.height)
    for lo in range(0, total, chunk):
        for rgb in read(plan.source_frames[lo:lo + chunk]):
            if rgb.shape[1::-1] != size:
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if progress is not None:
            progress(min(lo + chunk, total), total)


class Previews:
    """The preview folder of one data folder: finds a video's preview, makes it once, removes it.

    Thread-safe: concurrent requests for the same video encode it once (the others wait for it)."""

    def __init__(self, config: AppConfig, settings: PreviewSettings | None = None) -> None:
        self.config = config
        self.settings = settings or PreviewSettings()
        self.folder = folder_for(config)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._sweep_partials()

    def path_for(self, content_hash: str) -> Path:
        """Where the preview of a video with this content hash lives (whether or not it exists yet)."""
        if not content_hash or not all(c in "0123456789abcdef" for c in content_hash):
            raise ValueError(f"content_hash must be a hex digest, got {content_hash!r}")
        return self.folder / f"{content_hash}-{self.settings.max_side}{SUFFIX}"

    def find(self, video: VideoRecord) -> Path | None:
        """The video's preview if it has been made."""
        path = self.path_for(video.content_hash)
        return path if path.is_file() else None

    def ensure(self, video: VideoRecord, progress: ProgressFn | None = None) -> Path:
        """The video's preview, encoding it from `video.path` first if needed. Raises `VideoError` (the
        source is missing or unreadable) or `PreviewError`; nothing is left behind on failure."""
        path = self.path_for(video.content_hash)
        if path.is_file():
            return path
        with self._lock(path.name):
            if not path.is_file():  # another thread may have written it while we waited
                start = time.perf_counter()
                write_preview(video.path, path, self.config, self.settings, progress)
                log.info("preview of %s written in %.1f s (%s)", video.name, time.perf_counter() - start,
                         path)
        return path

    def remove(self, content_hash: str) -> int:
        """Deletes every preview (all sizes) of this content and Gradio's cached copies of them; returns
        how many previews went."""
        self.path_for(content_hash)  # validates the hash: it is part of a glob pattern
        removed = 0
        for path in self.folder.glob(f"{content_hash}-*{SUFFIX}"):
            path.unlink(missing_ok=True)
            removed += 1
        for copy in gradio_cache_dir().glob(f"*/{content_hash}-*{SUFFIX}"):
            copy.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # Gradio's per-file folder, when nothing else is in it
                copy.parent.rmdir()
        return removed

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _sweep_partials(self) -> None:
        """Removes temporary files a crashed encode left (old enough that no live encode owns them)."""
        if not self.folder.is_dir():
            return
        cutoff = time.time() - self.settings.stale_part_s
        for part in self.folder.glob(f".*.part{SUFFIX}"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
            except OSError:
                pass


def gradio_cache_dir() -> Path:
    """Where Gradio keeps the copies of files it serves (its own rule: GRADIO_TEMP_DIR, else
    <tmp>/gradio); app.py points it inside the data folder."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def folder_for(config: AppConfig) -> Path:
    """The preview folder of a data folder (the UI serves it; see `app.ui.media_dirs`)."""
    return Path(config.data_dir) / PREVIEW_DIRNAME


def remove_unused_preview(config: AppConfig, videos: list[VideoRecord], content_hash: str) -> int:
    """Deletes the previews of `content_hash` unless one of `videos` (what the store still holds, e.g.
    `store.list_videos()` after a removal) has that content; returns how many files went."""
    if any(v.content_hash == content_hash for v in videos):
        return 0
    return Previews(config).remove(content_hash)
