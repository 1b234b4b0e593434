"""What the UI does, as plain Python over the `Engine`: index, pick a frame, search, explain, switch model.

Why a layer between `app/ui.py` and the engine: the Gradio file stays layout and wiring only, and every
action here is tested in-process on a real engine (real SQLite, real videos, a real random model)
without a browser. Problems a user can fix (a bad upload, a click on nobody, a Hub repo that does not
load) are raised as `UserError` with a message meant for the screen; the UI shows it and changes
nothing else.

`Studio` is the one server-wide object (the engine, the background demo jobs, a small cache of routing
captures). Everything that belongs to one browser session (the selected video and frame, the current
results) stays in the UI's `gr.State` and is passed in explicitly.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.config import AppConfig
from app.engine import BUNDLED_CHECKPOINT, Engine
from app.indexer import Progress
from app.preview import PreviewError, Previews
from app.search import Hit, SearchResult
from app.store import VideoRecord, file_sha256
from app.ui_render import (
    MATCH_COLOR,
    QUERY_COLOR,
    draw_boxes,
    expert_panels,
    fit_height,
    format_time,
    freq_weights_figure,
    resize_for_display,
    short_layer_name,
)
from app.ui_setup import ModelChoice
from app.video import VideoError, open_video, probe

log = logging.getLogger(__name__)

LIBRARY_COLUMNS = ["id", "video", "status", "duration", "size", "fps", "frames indexed", "people found",
                   "error"]
HITS_COLUMNS = ["rank", "detection", "video", "frame", "time", "similarity", "score"]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
ProgressFn = Callable[[int, int, str], None]  # (frames done, frames total, description)


class UserError(ValueError):
    """A problem the user can act on; the message is shown as is."""


@dataclass
class Job:
    """One video being indexed (shown in the library table while it runs)."""

    name: str
    done: int = 0
    total: int = 0
    state: str = "queued"  # queued | indexing | done | skipped | failed | cancelled
    message: str = ""


@dataclass
class FrameView:
    """A sampled frame as shown: boxes drawn, at display scale."""

    image: np.ndarray
    scale: float  # displayed pixels per frame pixel
    frame_index: int
    timestamp_s: float
    n_people: int
    caption: str


@dataclass
class SearchView:
    """A search result as shown: one gallery item per appearance, the raw hits as table rows."""

    result: SearchResult
    gallery: list[tuple[np.ndarray, str]]
    best_hits: list[Hit]  # the hit behind each gallery item, same order
    rows: list[list[Any]]
    summary: str


@dataclass
class ExpertView:
    panels: np.ndarray
    figure: Any  # matplotlib Figure, or None when the adapters have no frequency module
    layers: list[str]
    layer: str


@dataclass
class Session:
    """Per-browser-session selection (lives in gr.State)."""

    video_id: int | None = None
    frame_index: int | None = None
    scale: float = 1.0
    query_id: int | None = None
    best_hits: list[Hit] = field(default_factory=list)
    player_video_id: int | None = None  # the video whose preview the player holds (may differ after a result)
    shown_hit: Hit | None = None  # the result whose frame is shown (the player moves to it)


class Studio:
    """The app's server-side state: one engine (swapped when the model changes) and background jobs."""

    def __init__(self, config: AppConfig, choice: ModelChoice, *, desktop: bool = True,
                 display_max_side: int = 960, routing_cache: int = 4) -> None:
        self.config = config
        self.choice = choice
        self.desktop = desktop
        self.display_max_side = display_max_side
        self.videos_dir = Path(config.data_dir) / "videos"
        self.previews = Previews(config)
        self._engine = Engine(config, model_source=choice.source, revision=choice.revision)
        self._engine_lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._routing: OrderedDict[tuple[int, int, int], dict[str, dict[str, Any]]] = OrderedDict()
        self._routing_size = routing_cache

    # -- engine / model -----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        with self._engine_lock:
            return self._engine

    def warm_up(self) -> None:
        """Loads and registers the model now (a bad `--model` fails at startup, not at the first click), and
        gets the compiled CPU scan kernel ready in the background (built once per machine, ~40 s; until
        then the first forward waits for it, see `fslora.ops.scan_cpu`)."""
        _ = self.engine.model_id
        from fslora.ops.scan_cpu import load_cpu_kernel  # noqa: PLC0415

        threading.Thread(target=load_cpu_kernel, name="scan-kernel", daemon=True).start()

    @property
    def model_label(self) -> str:
        """The model's own name, then where it came from (and the untrained warning)."""
        return f"{self.engine.model.config.name} ({self.choice.label})"

    def close(self) -> None:
        self.engine.close()

    def load_model(self, kind: str, location: str = "", revision: str = "") -> str:
        """Switches to the bundled checkpoint, a local folder or a Hub repo (+ revision). Any failure is a
        `UserError` and the current model stays; indexes are per model, so the library changes with it."""
        from fslora.models import FSLoRAPersonSearch  # noqa: PLC0415  (torch is already loaded by now)

        location, revision = (location or "").strip(), (revision or "").strip()
        if kind == "bundled":
            if not BUNDLED_CHECKPOINT.is_dir():
                raise UserError(f"no bundled checkpoint at {BUNDLED_CHECKPOINT}; the current model stays "
                                f"({self.model_label})")
            source, revision = str(BUNDLED_CHECKPOINT), ""
        elif kind in ("folder", "hub"):
            if not location:
                raise UserError(f"give a {'folder path' if kind == 'folder' else 'Hub repo id (org/name)'}")
            if kind == "folder" and not Path(location).expanduser().is_dir():
                raise UserError(f"{location}: no such folder; the current model stays ({self.model_label})")
            if kind == "folder" and revision:
                raise UserError("a revision applies to Hub repos only")
            source = str(Path(location).expanduser()) if kind == "folder" else location
        else:
            raise UserError(f"unknown model source kind {kind!r} (bundled | folder | hub)")
        if self.busy():
            raise UserError("videos are being indexed; switch the model when they are done")
        shown = f"{source}{'@' + revision if revision else ''}"
        try:
            model = FSLoRAPersonSearch.from_pretrained(source, revision=revision or None)
        except Exception as exc:  # noqa: BLE001  (network, files, config: all keep the current model)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"could not load {shown}: {first}. The current model stays "
                            f"({self.model_label}).") from exc
        engine = Engine(self.config, model=model, model_source=source, revision=revision or None)
        try:
            engine.model_id  # noqa: B018  (registers the model now)
        except Exception:
            engine.close()
            raise
        with self._engine_lock:
            old, self._engine = self._engine, engine
            self.choice = ModelChoice(source, revision or None)
        old.close()
        return f"Loaded {self.model_label}."

    def model_card(self) -> str:
        """The checkpoint's README.md model card (generated from the model when there is none)."""
        from fslora.models.checkpoint import model_card, resolve_checkpoint  # noqa: PLC0415

        card = ""
        try:
            folder = resolve_checkpoint(self.choice.source, revision=self.choice.revision,
                                        local_files_only=True)
            if (folder / "README.md").is_file():
                card = (folder / "README.md").read_text()
        except (OSError, ValueError):
            pass
        if not card:
            card = model_card(self.engine.model)
        if card.startswith("---"):  # Hub front matter is for the Hub, not for the page
            end = card.find("\n---", 3)
            card = card[end + 4:] if end > 0 else card
        if self.choice.untrained:
            card = ("> **Untrained model.** No trained checkpoint is bundled yet, so the app runs a randomly "
                    "initialised nano model: boxes and matches are meaningless, the pipeline is real.\n\n"
                    + card)
        return card.strip()

    # -- indexing -----------------------------------------------------------------------------------

    def busy(self) -> bool:
        with self._jobs_lock:
            return any(j.state in ("queued", "indexing") for j in self._jobs.values())

    def index_file(self, path: str | Path, *, name: str | None = None, copy: bool = True,
                   progress: ProgressFn | None = None) -> str:
        """Indexes one video and returns a one-line summary. `copy` stores the file under the data folder
        first (uploads: the app must not depend on Gradio's temporary files). A file that is not a usable
        video raises `UserError` and leaves the library as it was."""
        path = Path(path)
        name = name or path.name
        try:
            probe(path, self.config)
        except VideoError as exc:
            raise UserError(str(exc).replace(str(path), name)) from None
        engine = self.engine
        content_hash = file_sha256(path)
        known = [v for v in engine.store.list_videos(model_id=engine.model_id)
                 if v.content_hash == content_hash]
        if known and known[0].status == "done":
            return f"{name}: already indexed (as {known[0].name})"
        target = Path(known[0].path) if known and Path(known[0].path).is_file() else path
        if copy and not known:
            target = self._stored_copy(path, name, content_hash)
        job = Job(name)
        key = f"{name}#{content_hash[:12]}"
        with self._jobs_lock:
            self._jobs[key] = job

        def on_progress(p: Progress) -> None:
            job.done, job.total, job.state = p.frames_done, p.frames_total, "indexing"
            if progress is not None:
                progress(p.frames_done, p.frames_total, f"{name}: frame {p.frames_done}/{p.frames_total}")

        job.state = "indexing"
        try:
            result = engine.index_video(target, name=name, progress=on_progress)
        except VideoError as exc:
            job.state, job.message = "failed", str(exc)
            raise UserError(str(exc).replace(str(target), name)) from None
        except Exception as exc:
            job.state, job.message = "failed", str(exc)
            log.exception("indexing %s failed", target)
            raise UserError(f"{name}: indexing failed ({type(exc).__name__}: {exc})") from exc
        finally:
            with self._jobs_lock:
                self._jobs.pop(key, None)
        if result.outcome == "skipped":
            return f"{name}: already indexed"
        return f"{name}: {result.outcome}, {result.frames} frames, {result.detections} people detected"

    def _stored_copy(self, path: Path, name: str, content_hash: str) -> Path:
        """A copy of an upload in data_dir/videos, named after it (hash-suffixed when the name is taken)."""
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        target = self.videos_dir / Path(name).name
        if target.exists() and file_sha256(target) != content_hash:
            target = target.with_name(f"{target.stem}-{content_hash[:8]}{target.suffix}")
        if not target.exists():
            tmp = target.with_name(f".{target.name}.part")
            shutil.copyfile(path, tmp)
            tmp.replace(target)
        return target

    def index_many(self, items: Sequence[tuple[Path, str]], *, copy: bool,
                   progress: ProgressFn | None = None) -> tuple[list[str], list[str]]:
        """Indexes (path, name) pairs one after the other; returns (summaries, errors)."""
        done, errors = [], []
        for i, (path, name) in enumerate(items):
            def one(d: int, t: int, desc: str, i: int = i) -> None:
                if progress is not None:
                    progress(d, t, f"video {i + 1}/{len(items)}: {desc}")

            try:
                done.append(self.index_file(path, name=name, copy=copy, progress=one))
            except UserError as exc:
                errors.append(str(exc))
        return done, errors

    def folder_videos(self, folder: str) -> list[Path]:
        """Video files under a local folder (desktop mode only), sorted."""
        if not self.desktop:
            raise UserError("indexing a server folder is disabled here (desktop mode only)")
        root = Path((folder or "").strip()).expanduser()
        if not str(folder or "").strip() or not root.is_dir():
            raise UserError(f"{folder!r}: no such folder")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise UserError(f"{root}: no video files ({', '.join(VIDEO_SUFFIXES)})")
        return files

    def start_background(self, videos: Sequence[Path]) -> threading.Thread:
        """Indexes `videos` (already inside the data folder) in a daemon thread: the demo at first launch."""
        for video in videos:
            with self._jobs_lock:
                self._jobs.setdefault(f"demo:{video.name}", Job(video.name))

        def run() -> None:
            for video in videos:
                with self._jobs_lock:
                    self._jobs.pop(f"demo:{video.name}", None)
                try:
                    log.info("demo: %s", self.index_file(video, copy=False))
                except UserError as exc:
                    log.warning("demo video not indexed: %s", exc)

        thread = threading.Thread(target=run, name="demo-indexing", daemon=True)
        thread.start()
        return thread

    def jobs(self) -> list[Job]:
        with self._jobs_lock:
            return list(self._jobs.values())

    def remove_video(self, video_id: int) -> str:
        engine = self.engine
        try:
            video = engine.store.get_video(int(video_id))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"no video with id {video_id!r}") from None
        if video.status == "indexing" and self.busy():
            raise UserError(f"{video.name} is being indexed; remove it when that is done")
        n = engine.remove_video(video.id)
        copy = Path(video.path)
        still_used = any(v.path == video.path for v in engine.store.list_videos())
        if copy.parent == self.videos_dir.resolve() and not still_used:
            copy.unlink(missing_ok=True)  # our own copy of an upload, used by no other model
        return f"Removed {video.name} ({n} detections)."

    # -- library ------------------------------------------------------------------------------------

    def videos(self) -> list[VideoRecord]:
        engine = self.engine
        return engine.store.list_videos(model_id=engine.model_id)

    def library_rows(self) -> list[list[Any]]:
        engine = self.engine
        running = {j.name: j for j in self.jobs()}
        rows = []
        for v in self.videos():
            frames = engine.store.list_frames(v.id)
            status = v.status
            job = running.get(v.name)
            if v.status == "indexing" and job is not None and job.total:
                status = f"indexing {job.done}/{job.total}"
            rows.append([v.id, v.name, status, format_time(v.duration_s), f"{v.width}x{v.height}",
                         round(v.fps, 2), len(frames), sum(n for _, _, n in frames), v.error or ""])
        known = {v.name for v in self.videos()}
        for job in running.values():
            if job.name not in known:
                rows.append(["", job.name, job.state, "", "", "", "", "", job.message])
        return rows

    def other_models_note(self) -> str:
        engine = self.engine
        others = [v for v in engine.store.list_videos() if v.model_id != engine.model_id]
        if not others:
            return ""
        return (f"{len(others)} video(s) are indexed with other models; load that model (Model tab) to "
                "search them. Indexes are per model because embedding spaces differ.")

    def video_choices(self) -> list[tuple[str, int]]:
        """Videos that have indexed frames, for the search tab's dropdown."""
        engine = self.engine
        return [(f"{v.name} (#{v.id}, {v.status})", v.id) for v in self.videos()
                if engine.store.list_frames(v.id)]

    def frames(self, video_id: int) -> list[tuple[int, float, int]]:
        return self.engine.store.list_frames(int(video_id))

    def frame_position_at(self, video_id: int, time_s: float) -> int:
        """Position (slider value) of the last sampled frame shown at or before `time_s` of the video: the
        frame a paused player is on, or just passed. Before the first sampled frame: 0."""
        timestamps = [ts for _, ts, _ in self.frames(video_id)]
        if not timestamps:
            raise UserError(f"video #{video_id} has no indexed frames")
        # 1 ms of slack: a player seeked to a frame's timestamp may report it a hair early
        return max(0, bisect.bisect_right(timestamps, float(time_s) + 1e-3) - 1)

    def preview(self, video_id: int, progress: Callable[[int, int], None] | None = None) -> Path:
        """The browser-playable preview of a video (WebM, see `app/preview.py`), made on first use."""
        try:
            video = self.engine.store.get_video(int(video_id))
        except KeyError:
            raise UserError(f"no video with id {video_id}") from None
        try:
            return self.previews.ensure(video, progress)
        except (VideoError, PreviewError) as exc:
            problem = str(exc).replace(video.path, video.name)
            raise UserError(f"{video.name}: no playable preview ({problem})") from None

    # -- frames and search --------------------------------------------------------------------------

    def _read_frame(self, video: VideoRecord, frame_index: int) -> np.ndarray:
        try:
            with open_video(video.path, self.config) as reader:
                return reader.frame(frame_index)
        except VideoError as exc:
            raise UserError(f"{video.name}: cannot read frame {frame_index} ({exc})") from None

    def frame_view(self, video_id: int, frame_index: int, highlight_id: int | None = None,
                   highlight_color: tuple[int, int, int] = QUERY_COLOR) -> FrameView:
        """Frame `frame_index` with every detected person's box; `highlight_id` (a detection) stands out."""
        engine = self.engine
        try:
            video = engine.store.get_video(int(video_id))
        except KeyError:
            raise UserError(f"no video with id {video_id}") from None
        frames = {f[0]: f for f in engine.store.list_frames(video.id)}
        if frame_index not in frames:
            raise UserError(f"frame {frame_index} of {video.name} is not indexed")
        dets = engine.store.frame_detections(video.id, frame_index)
        small, scale = resize_for_display(self._read_frame(video, frame_index), self.display_max_side)
        ids = [d.id for d in dets]
        highlight = ids.index(highlight_id) if highlight_id in ids else None
        image = draw_boxes(small, [d.box for d in dets], highlight=highlight, highlight_color=highlight_color,
                           scale=scale)
        ts = frames[frame_index][1]
        caption = (f"{video.name} - frame {frame_index} at {format_time(ts)} - {len(dets)} people detected. "
                   "Click a person to search.")
        return FrameView(image, scale, frame_index, ts, len(dets), caption)

    def search_click(self, video_id: int, frame_index: int, x_shown: float, y_shown: float, scale: float,
                     top_k: int = 10) -> SearchView:
        """Search for the person clicked at displayed pixel (x_shown, y_shown) of a frame shown at `scale`."""
        x, y = x_shown / scale, y_shown / scale
        try:
            result = self.engine.search_click(int(video_id), int(frame_index), x, y, int(top_k))
        except (ValueError, KeyError) as exc:
            raise UserError(str(exc).strip("'\"")) from None
        return self._search_view(result)

    def search_detection(self, detection_id: int, top_k: int = 10) -> SearchView:
        try:
            result = self.engine.search_detection(int(detection_id), int(top_k))
        except (ValueError, KeyError) as exc:
            raise UserError(str(exc).strip("'\"")) from None
        return self._search_view(result)

    def search_photo(self, image: np.ndarray | None, top_k: int = 10) -> SearchView:
        """Search with an uploaded photo of one person (the whole photo is the person)."""
        if image is None:
            raise UserError("upload a photo of the person first")
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
        try:
            result = self.engine.search_image(image, int(top_k))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return self._search_view(result)

    def _search_view(self, result: SearchResult) -> SearchView:
        best = [a.best for a in result.appearances]
        crops = self.engine.crops(best) if best else []
        gallery = []
        for appearance, crop in zip(result.appearances, crops, strict=True):
            span = format_time(appearance.start_s)
            if appearance.end_frame != appearance.start_frame:
                span += f"-{format_time(appearance.end_s)}"
            n = len(appearance.hits)
            frames = f"{n} frame{'s' * (n > 1)}"
            caption = f"{appearance.video_name} {span} sim {appearance.similarity:.3f} ({frames})"
            gallery.append((fit_height(crop), caption))
        rows = [[rank, h.detection_id, h.video_name, h.frame_index, format_time(h.timestamp_s),
                 round(h.similarity, 4), round(h.score, 3)] for rank, h in enumerate(result.hits, 1)]
        q = result.query.detection
        source = (f"detection #{q.id} in {q.video_name} at {format_time(q.timestamp_s)}, box "
                  f"({', '.join(f'{v:.0f}' for v in q.box)})" if q is not None else "the uploaded photo")
        summary = (f"Query: {source}. {len(result.hits)} hits in {len(result.appearances)} appearances. "
                   "Click a result to see its frame.")
        return SearchView(result, gallery, best, rows, summary)

    def hit_view(self, hit: Hit) -> FrameView:
        """The frame of a result with the matched person highlighted."""
        view = self.frame_view(hit.video_id, hit.frame_index, highlight_id=hit.detection_id,
                               highlight_color=MATCH_COLOR)
        view.caption = (f"{hit.video_name} - frame {hit.frame_index} at {format_time(hit.timestamp_s)} - "
                        f"detection #{hit.detection_id}, similarity {hit.similarity:.3f}")
        return view

    # -- experts ------------------------------------------------------------------------------------

    def routing(self, video_id: int, frame_index: int) -> dict[str, dict[str, Any]]:
        """The adapters' routing on one frame: `model.detect(..., capture_routing=True)` (cached)."""
        engine = self.engine
        key = (engine.model_id, int(video_id), int(frame_index))
        if key in self._routing:
            self._routing.move_to_end(key)
            return self._routing[key]
        if not engine.model.config.use_adapters:
            raise UserError("this model has no adapters (NAE baseline): there are no experts to show")
        rgb = self._read_frame(engine.store.get_video(int(video_id)), int(frame_index))
        with engine.model_lock:
            found = engine.model.detect([rgb], score_thresh=1.0, capture_routing=True)[0]
        self._routing[key] = found.routing or {}
        while len(self._routing) > self._routing_size:
            self._routing.popitem(last=False)
        return self._routing[key]

    def expert_view(self, video_id: int, frame_index: int, layer: str | None = None,
                    alpha: float = 0.55) -> ExpertView:
        """Expert masks of `layer` (default: the last adapted layer) for det and reid over the frame, and
        the frequency weights of every layer."""
        routing = self.routing(video_id, frame_index)
        if not routing:
            raise UserError("the model returned no routing for this frame")
        layers = list(routing)
        layer = layer if layer in routing else layers[-1]
        video = self.engine.store.get_video(int(video_id))
        shown, _ = resize_for_display(self._read_frame(video, int(frame_index)), self.display_max_side)
        masks = {task: rec.expert_masks[0].numpy() for task, rec in routing[layer].items()}
        panels = expert_panels(shown, masks, layer, alpha)
        weights = {name: {task: tuple(float(v) for v in rec.freq_weights[0])
                          for task, rec in by_task.items() if rec.freq_weights is not None}
                   for name, by_task in routing.items()}
        weights = {k: v for k, v in weights.items() if v}
        figure = freq_weights_figure(weights) if weights else None
        return ExpertView(panels, figure, layers, layer)


def layer_choices(layers: Sequence[str]) -> list[tuple[str, str]]:
    """(short label, qualified name) pairs for the layer dropdown."""
    return [(short_layer_name(layer), layer) for layer in layers]
