"""Video decoding for the indexer and the UI: metadata, frames sampled at a target rate, random access.

Why two decoders: decord gives frame-accurate random access and batched reads (its index is built at
open), so it is the default; OpenCV reads what decord refuses (some containers, missing codecs in
decord's bundled FFmpeg) and is the fallback. Both yield RGB uint8 (H, W, 3) and the same frames.

Every problem with an input (missing file, empty or non-video file, truncated stream, frame size or
duration past the configured limits, a frame that does not decode) raises `VideoError`, a `ValueError`
whose message names the file and the problem: the app shows it and moves on, it never crashes.

Truncation (ours): a container's header declares a frame count; a file cut short holds fewer
decodable frames. At open we decode the last declared frame and compare decord's count with OpenCV's
header count, so a cut file is refused up front instead of failing halfway through indexing.
Timestamps are `frame_index / fps` (constant frame rate assumed, as both decoders report it).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from app.config import AppConfig

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "opencv")
# a header may count a few frames more than the stream holds (rounding, a last partial frame)
_TRUNCATION_SLACK = 2


class VideoError(ValueError):
    """A video cannot be used: the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video is: size, rate, length, codec and the decoder that reads it."""

    path: Path
    fps: float
    n_frames: int
    width: int
    height: int
    duration_s: float
    codec: str
    backend: str


class SampledFrame(NamedTuple):
    """One sampled frame: unpacks as (frame_index, timestamp_s, rgb)."""

    frame_index: int
    timestamp_s: float
    rgb: np.ndarray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _sniff_container(path: Path) -> str:
    """The container a file's first bytes announce ('' if none we know): tells a cut video from junk."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[4:8] == b"ftyp":
        return "MP4/MOV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "Matroska/WebM"
    return ""


def sample_indices(n_frames: int, fps: float, target_fps: float, start_frame: int = 0) -> list[int]:
    """Frame indices sampled at `target_fps` from a video of `n_frames` at `fps` (every frame if the video
    is slower), keeping those >= start_frame so that a resumed run samples exactly the same frames."""
    if target_fps <= 0 or fps <= 0:
        raise ValueError(f"fps and target_fps must be positive, got fps={fps}, target_fps={target_fps}")
    step = max(fps / target_fps, 1.0)
    count = math.ceil(n_frames / step - 1e-9)
    indices = np.floor(np.arange(count) * step + 1e-6).astype(np.int64)
    return [int(i) for i in indices if start_frame <= i < n_frames]


class _Source(Protocol):
    n_frames: int
    fps: float
    width: int
    height: int

    def read(self, indices: Sequence[int]) -> np.ndarray: ...

    def close(self) -> None: ...


class _DecordSource:
    """decord.VideoReader: frame-accurate batched reads."""

    name = "decord"

    def __init__(self, path: Path) -> None:
        import decord  # noqa: PLC0415  (optional at import time; the fallback works without it)

        self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        self.n_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())
        height, width = self._reader[0].shape[:2] if self.n_frames else (0, 0)
        self._reader.seek(0)
        self.width, self.height = int(width), int(height)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self._reader.get_batch(list(indices)).asnumpy()

    def close(self) -> None:
        del self._reader


class _OpenCVSource:
    """cv2.VideoCapture: sequential grabs for forward reads, seeks otherwise."""

    name = "opencv"
    _MAX_GRAB_AHEAD = 64  # frames; beyond this a seek is cheaper than decoding forward

    def __init__(self, path: Path, capture: cv2.VideoCapture | None = None) -> None:
        self._cap = capture if capture is not None else cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise RuntimeError("OpenCV cannot open it (not a video, or an unsupported container)")
        self.n_frames = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fourcc = int(self._cap.get(cv2.CAP_PROP_FOURCC))
        self.codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") or "unknown"
        self._pos = 0  # index of the frame the next grab() returns

    def read(self, indices: Sequence[int]) -> np.ndarray:
        frames = []
        for index in indices:
            if not 0 <= index - self._pos <= self._MAX_GRAB_AHEAD:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                self._pos = index
            while self._pos < index:
                if not self._cap.grab():
                    raise RuntimeError(f"frame {self._pos} does not decode")
                self._pos += 1
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise RuntimeError(f"frame {index} does not decode")
            self._pos += 1
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return np.stack(frames) if frames else np.zeros((0, self.height, self.width, 3), np.uint8)

    def close(self) -> None:
        self._cap.release()


class VideoReader:
    """An open, validated video. Use as a context manager; reads are serialised by a lock."""

    def __init__(
        self,
        path: str | Path,
        *,
        backend: str = "auto",
        max_resolution: int = 4096,
        max_duration_s: float = 4 * 3600.0,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.path = Path(path)
        self._lock = threading.Lock()
        self._check_file()
        header = self._open_header()  # OpenCV: codec, declared frame count, size (no frame decoded)
        codec = header.codec if header is not None else "unknown"
        try:
            if header is not None and max(header.width, header.height) > max_resolution:
                # refused before any frame is decoded (a huge frame could exhaust memory)
                self._fail(f"frame size {header.width}x{header.height} exceeds the limit of {max_resolution} "
                           "pixels per side")
            self._source = self._open_source(backend, header)
        finally:
            if header is not None and getattr(self, "_source", None) is not header:
                header.close()  # the header was only needed for metadata
        try:
            self._validate(header.n_frames if header is not None else 0, max_resolution, max_duration_s)
        except BaseException:
            self._source.close()
            raise
        src = self._source
        self.info = VideoInfo(
            path=self.path, fps=src.fps, n_frames=src.n_frames, width=src.width, height=src.height,
            duration_s=src.n_frames / src.fps, codec=codec, backend=self.backend,
        )

    # -- opening -------------------------------------------------------------------------------------

    def _fail(self, problem: str) -> None:
        raise VideoError(f"video {self.path}: {problem}")

    def _check_file(self) -> None:
        if not self.path.exists():
            self._fail("file does not exist")
        if not self.path.is_file():
            self._fail("not a regular file")
        if self.path.stat().st_size == 0:
            self._fail("file is empty (0 bytes)")

    def _open_header(self) -> _OpenCVSource | None:
        try:
            return _OpenCVSource(self.path)
        except RuntimeError:
            return None

    def _open_source(self, backend: str, header: _OpenCVSource | None) -> _Source:
        errors = []
        if backend in ("auto", "decord"):
            try:
                source: _Source = _DecordSource(self.path)
                self.backend = "decord"
                return source
            except Exception as exc:  # noqa: BLE001  (decord raises its own error types)
                errors.append(f"decord: {_first_line(exc)}")
                log.info("decord cannot open %s (%s); trying OpenCV", self.path, errors[-1])
        if backend in ("auto", "opencv"):
            if header is not None:
                self.backend = "opencv"
                return header
            errors.append("opencv: cannot open it")
        hint = ""
        if container := _sniff_container(self.path):
            hint = f"its header says {container} but it does not open: truncated or corrupt; "
        self._fail("not a readable video (" + hint + "; ".join(errors) + ")")
        raise AssertionError  # unreachable: _fail raises

    def _validate(self, declared_frames: int, max_resolution: int, max_duration_s: float) -> None:
        """Checks the opened stream: limits, truncation, and that its last frame decodes."""
        src = self._source
        if src.n_frames <= 0:
            self._fail("it holds no frames")
        self._check_limits(src.width, src.height, src.n_frames, src.fps, max_resolution, max_duration_s)
        if declared_frames > src.n_frames + _TRUNCATION_SLACK:
            self._fail(f"it is truncated: the header declares {declared_frames} frames, "
                       f"the stream holds {src.n_frames}")
        self._read_checked([src.n_frames - 1], what="the last frame")  # a cut file fails here

    def _check_limits(self, width: int, height: int, n_frames: int, fps: float, max_resolution: int,
                      max_duration_s: float) -> None:
        if width <= 0 or height <= 0:
            self._fail(f"invalid frame size {width}x{height}")
        if max(width, height) > max_resolution:
            self._fail(f"frame size {width}x{height} exceeds the limit of {max_resolution} pixels per side")
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            self._fail(f"invalid frame rate {fps!r}")
        if n_frames / fps > max_duration_s:
            self._fail(f"duration {n_frames / fps:.0f} s exceeds the limit of {max_duration_s:.0f} s")

    # -- reading -------------------------------------------------------------------------------------

    def _read_checked(self, indices: Sequence[int], what: str = "") -> np.ndarray:
        n = self._source.n_frames
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise VideoError(f"video {self.path}: frame index {bad[0]} out of range [0, {n})")
        with self._lock:
            try:
                frames = self._source.read(indices)
            except Exception as exc:  # noqa: BLE001  (decoder errors of any type become VideoError)
                label = what or f"frames {indices[0]}..{indices[-1]}"
                raise VideoError(f"video {self.path}: {label} failed to decode, the file is truncated or "
                                 f"corrupt ({_first_line(exc)})") from exc
        if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[3] != 3:
            raise VideoError(
                f"video {self.path}: the decoder returned shape {frames.shape} for {len(indices)} frames")
        return frames

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as RGB uint8 (H, W, 3)."""
        return self._read_checked([index])[0]

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` as RGB uint8 (N, H, W, 3), in the given order."""
        return self._read_checked(list(indices))

    def timestamp(self, index: int) -> float:
        """Seconds from the start of frame `index`."""
        return index / self.info.fps

    def sample_indices(self, target_fps: float = 2.0, start_frame: int = 0) -> list[int]:
        """Indices of the frames sampled at `target_fps`, from `start_frame` on."""
        return sample_indices(self.info.n_frames, self.info.fps, target_fps, start_frame)

    def iter_sampled(self, target_fps: float = 2.0, *, start_frame: int = 0,
                     chunk: int = 8) -> Iterator[SampledFrame]:
        """Yields (frame_index, timestamp_s, rgb) at `target_fps`; decodes `chunk` frames per call."""
        indices = self.sample_indices(target_fps, start_frame)
        for lo in range(0, len(indices), chunk):
            batch = indices[lo:lo + chunk]
            for index, rgb in zip(batch, self._read_checked(batch), strict=True):
                yield SampledFrame(index, index / self.info.fps, rgb)

    def crop(self, index: int, box: Sequence[float], pad: float = 0.0) -> np.ndarray:
        """The RGB crop of `box` (x1, y1, x2, y2 in pixels) in frame `index`, grown by `pad` x its size."""
        rgb = self.frame(index)
        x1, y1, x2, y2 = (float(v) for v in box)
        dx, dy = pad * (x2 - x1), pad * (y2 - y1)
        h, w = rgb.shape[:2]
        xa, ya = max(0, math.floor(x1 - dx)), max(0, math.floor(y1 - dy))
        xb, yb = min(w, math.ceil(x2 + dx)), min(h, math.ceil(y2 + dy))
        if xb <= xa or yb <= ya:
            raise ValueError(f"box {tuple(box)} lies outside the {w}x{h} frame of {self.path}")
        return np.ascontiguousarray(rgb[ya:yb, xa:xb])

    def preview(self, index: int, max_side: int = 640) -> np.ndarray:
        """Frame `index` downscaled (area interpolation) so that its longer side is <= max_side."""
        rgb = self.frame(index)
        scale = max_side / max(rgb.shape[:2])
        if scale >= 1.0:
            return rgb
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._source.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(path: str | Path, config: AppConfig | None = None, *,
               backend: str | None = None) -> VideoReader:
    """Opens and validates `path` with the limits and decoder choice of `config` (defaults if None)."""
    config = config or AppConfig()
    return VideoReader(path, backend=backend or config.decode_backend, max_resolution=config.max_resolution,
                       max_duration_s=config.max_duration_s)


def probe(path: str | Path, config: AppConfig | None = None) -> VideoInfo:
    """Metadata of a video (validated like `open_video`), closing it again."""
    with open_video(path, config) as reader:
        return reader.info
