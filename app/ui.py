"""The Gradio 6 app: layout and wiring only. The work is in `app/ui_actions.py` (over the Engine),
the pictures in `app/ui_render.py`, the first-launch choices in `app/ui_setup.py`.

Tabs: Library (upload or index a local folder, progress per video, table, remove), Search (pick a
video and a sampled frame, by slider or from the player's current time, click a person; results grouped
into appearances, a click on one moves the player there; search by photo),
Experts (the adapters' expert masks det vs reid over the frame, frequency weights per layer), Model
(bundled checkpoint, local folder or Hub repo + revision; the model card).

Server-wide state is the `Studio` (the engine); per-session state (selected video and frame, current
results, the video in the player) is a `gr.State(Session())`. The player (a WebM preview from
`app/preview.py`) is driven through `gr.Video`'s `playback_position`: written to seek, read (the handler
takes the component itself as a parameter) for "Use current frame"; no custom JavaScript.

Named API endpoints for `gradio_client`: `/index` (upload files), `/search` (video, frame, x, y),
`/search_detection`, `/search_photo`, `/videos`, `/frames`, `/model`.
Heavy events (indexing, photo search, expert capture, model loading) share one concurrency group
("gpu", one at a time) and are wrapped with `spaces.GPU` on Hugging Face ZeroGPU Spaces.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.config import AppConfig
from app.preview import PREVIEW_DIRNAME
from app.spaces import gpu
from app.ui_actions import (
    HITS_COLUMNS,
    LIBRARY_COLUMNS,
    SearchView,
    Session,
    Studio,
    UserError,
    layer_choices,
)
from app.ui_setup import choose_startup_model, prepare_demo_videos

log = logging.getLogger(__name__)

GPU = {"concurrency_id": "gpu", "concurrency_limit": 1}  # heavy events: one at a time
PRIVATE = {"api_visibility": "private"}  # UI-only events (SelectData etc. make no sense from a client)
CSS = """
.untrained-banner { background: #fff3cd; border: 1px solid #e0b800; border-radius: 6px; padding: 6px 10px; }
"""


def _header(studio: Studio) -> str:
    banner = ""
    if studio.choice.untrained:
        banner = ("\n\n<div class='untrained-banner'><b>Untrained model.</b> No trained checkpoint is "
                  "bundled yet: the app runs a randomly initialised nano model, so detections and matches "
                  "are meaningless. Load a trained checkpoint in the Model tab.</div>")
    return f"# FSLoRA person search\nModel: **{studio.model_label}**{banner}"


def _warn(exc: Exception) -> str:
    """Shows `exc` as a toast and returns it as Markdown for the status line next to the action."""
    gr.Warning(str(exc))
    return f"**Error:** {exc}"


@dataclass
class _UI:
    """Every component the handlers read or write (built by `_layout`, wired by the `_wire_*`)."""

    session: gr.State
    header: gr.Markdown
    timer: gr.Timer
    # library
    upload: gr.File
    index_btn: gr.Button
    folder: gr.Textbox
    folder_btn: gr.Button
    index_status: gr.Markdown
    library: gr.Dataframe
    library_note: gr.Markdown
    remove_dd: gr.Dropdown
    remove_btn: gr.Button
    # search
    search_tab: gr.Tab
    video_dd: gr.Dropdown
    frame_slider: gr.Slider
    top_k: gr.Slider
    frame_caption: gr.Markdown
    player: gr.Video
    use_time_btn: gr.Button
    frame_image: gr.Image
    query_info: gr.Markdown
    gallery: gr.Gallery
    hits: gr.Dataframe
    result_caption: gr.Markdown
    result_image: gr.Image
    photo: gr.Image
    photo_btn: gr.Button
    # experts
    layer_dd: gr.Dropdown
    experts_btn: gr.Button
    experts_info: gr.Markdown
    experts_image: gr.Image
    freq_plot: gr.Plot
    # model
    kind: gr.Radio
    location: gr.Textbox
    revision: gr.Textbox
    load_btn: gr.Button
    model_status: gr.Markdown
    card: gr.Markdown


def _layout(studio: Studio) -> _UI:
    c: dict[str, Any] = {"session": gr.State(Session())}
    c["header"] = gr.Markdown("# FSLoRA person search\nLoading...", elem_id="header")  # filled on load
    with gr.Tabs():
        with gr.Tab("Library", id="library"):
            with gr.Row():
                with gr.Column(scale=2):
                    c["upload"] = gr.File(label="Videos to index", file_count="multiple",
                                          file_types=["video"], type="filepath", elem_id="upload")
                    c["index_btn"] = gr.Button("Index videos", variant="primary", elem_id="index-btn")
                with gr.Column(scale=1, visible=studio.desktop):
                    c["folder"] = gr.Textbox(label="Or index a local folder (desktop)", elem_id="folder",
                                             placeholder="/path/to/videos")
                    c["folder_btn"] = gr.Button("Index folder", elem_id="folder-btn")
            c["index_status"] = gr.Markdown(elem_id="index-status")
            c["library"] = gr.Dataframe(headers=LIBRARY_COLUMNS, interactive=False, label="Indexed videos",
                                        elem_id="library-table", wrap=True)
            c["library_note"] = gr.Markdown(elem_id="library-note")
            with gr.Row():
                c["remove_dd"] = gr.Dropdown(label="Video to remove", choices=[], elem_id="remove-dd")
                c["remove_btn"] = gr.Button("Remove video", variant="stop", elem_id="remove-btn")
        with gr.Tab("Search", id="search") as c["search_tab"]:
            with gr.Row():
                c["video_dd"] = gr.Dropdown(label="Video", choices=[], elem_id="video-dd")
                c["frame_slider"] = gr.Slider(0, 1, value=0, step=1, label="Sampled frame",
                                              elem_id="frame-slider")
                c["top_k"] = gr.Slider(1, 50, value=10, step=1, label="Results (top-k)", elem_id="top-k")
            c["frame_caption"] = gr.Markdown("Pick a video.", elem_id="frame-caption")
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=320):
                    c["player"] = gr.Video(label="Video (preview)", interactive=False, elem_id="player",
                                           buttons=["download"])
                    c["use_time_btn"] = gr.Button("Use current frame", elem_id="use-time-btn")
                with gr.Column(scale=1, min_width=320):
                    c["frame_image"] = gr.Image(label="Frame: click a person", type="numpy",
                                                interactive=False, elem_id="frame-image", show_label=False)
            c["query_info"] = gr.Markdown(elem_id="query-info")
            c["gallery"] = gr.Gallery(label="Appearances (best match of each)", columns=8, height=250,
                                      fit_columns=False, object_fit="contain", allow_preview=False,
                                      elem_id="results-gallery")
            c["hits"] = gr.Dataframe(headers=HITS_COLUMNS, interactive=False, label="Ranked hits",
                                     elem_id="hits-table")
            c["result_caption"] = gr.Markdown(elem_id="result-caption")
            c["result_image"] = gr.Image(label="Selected result", type="numpy", interactive=False,
                                         elem_id="result-image", show_label=False)
            with gr.Accordion("Search by photo", open=False):
                c["photo"] = gr.Image(label="Photo of one person", type="numpy", sources=["upload"],
                                      elem_id="photo")
                c["photo_btn"] = gr.Button("Search by photo", elem_id="photo-btn")
        with gr.Tab("Experts", id="experts"):
            gr.Markdown("The FSLoRA adapters on the frame selected in the Search tab: each task's spatial "
                        "router splits the image between experts; the frequency router weighs low vs high "
                        "frequencies, per layer and task.")
            with gr.Row():
                c["layer_dd"] = gr.Dropdown(label="Adapted layer", choices=[], elem_id="layer-dd")
                c["experts_btn"] = gr.Button("Show expert overlay", variant="primary", elem_id="experts-btn")
            c["experts_info"] = gr.Markdown(elem_id="experts-info")
            c["experts_image"] = gr.Image(label="Expert masks: det vs reid", type="numpy", interactive=False,
                                          elem_id="experts-image", show_label=False)
            c["freq_plot"] = gr.Plot(label="Frequency weights per layer", elem_id="freq-plot")
        with gr.Tab("Model", id="model"):
            with gr.Row():
                c["kind"] = gr.Radio([("Bundled checkpoint", "bundled"), ("Local folder", "folder"),
                                      ("Hugging Face Hub", "hub")], value="bundled", label="Source",
                                     elem_id="model-kind")
                c["location"] = gr.Textbox(label="Folder path or Hub repo id (org/name)",
                                           elem_id="model-location")
                c["revision"] = gr.Textbox(label="Hub revision (branch, tag or commit)",
                                           elem_id="model-revision")
            c["load_btn"] = gr.Button("Load model", variant="primary", elem_id="load-btn")
            c["model_status"] = gr.Markdown(elem_id="model-status")
            c["card"] = gr.Markdown(elem_id="model-card")
    c["timer"] = gr.Timer(3.0)
    return _UI(**c)


# -- wiring -----------------------------------------------------------------------------------------


def _library_state(studio: Studio) -> tuple[Any, Any, Any, Any]:
    """(library rows, other-models note, video choices for the two dropdowns)."""
    choices = gr.update(choices=studio.video_choices())
    return studio.library_rows(), studio.other_models_note(), choices, choices


def _wire_library(studio: Studio, ui: _UI) -> None:
    outputs = [ui.index_status, ui.library, ui.library_note, ui.video_dd, ui.remove_dd]

    def report(messages: list[str], errors: list[str]) -> tuple[Any, ...]:
        for e in errors:
            gr.Warning(e)
        text = "\n".join([f"- {m}" for m in messages] + [f"- **Error:** {e}" for e in errors])
        return (text, *_library_state(studio))

    def index(items: list[tuple[Path, str]], copy: bool, progress: gr.Progress) -> tuple[Any, ...]:
        done, errors = studio.index_many(
            items, copy=copy, progress=lambda d, t, desc: progress((d, t), desc=desc, unit="frames"))
        return report(done, errors)

    @gpu(duration=600)
    def on_index(files: list[str] | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        """Indexes uploaded video files; returns (status, library table, ...)."""
        if not files:
            return report([], ["choose one or more video files first"])
        return index([(Path(f), Path(f).name) for f in files], True, progress)

    @gpu(duration=600)
    def on_index_folder(path: str, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        try:
            files = studio.folder_videos(path)
        except UserError as exc:
            return report([], [str(exc)])
        return index([(f, f.name) for f in files], False, progress)

    def on_remove(video_id: int | None) -> tuple[Any, ...]:
        try:
            if video_id is None:
                raise UserError("pick a video to remove")
            return report([studio.remove_video(video_id)], [])
        except UserError as exc:
            return report([], [str(exc)])

    def refresh() -> tuple[Any, Any, Any]:
        rows, note, _, choices = _library_state(studio)
        return rows, note, choices

    ui.index_btn.click(on_index, [ui.upload], outputs, api_name="index", **GPU)
    ui.folder_btn.click(on_index_folder, [ui.folder], outputs, **PRIVATE, **GPU)
    ui.remove_btn.click(on_remove, [ui.remove_dd], outputs, **PRIVATE)
    ui.timer.tick(refresh, None, [ui.library, ui.library_note, ui.remove_dd], show_progress="hidden",
                  **PRIVATE)
    ui.search_tab.select(lambda: gr.update(choices=studio.video_choices()), None, ui.video_dd, **PRIVATE)


def _wire_search(studio: Studio, ui: _UI) -> None:
    results = [ui.frame_image, ui.query_info, ui.gallery, ui.hits, ui.result_image, ui.result_caption,
               ui.session]
    unchanged = [gr.skip()] * 5

    def show_frame(video_id: int | None, position: float, state: Session) -> tuple[Any, Any, Any, Session]:
        """(frame image, caption, player update, session) for sampled frame `position` of a video; the
        player follows when it holds that video."""
        frames = studio.frames(video_id) if video_id is not None else []
        if not frames:
            return None, "Pick a video with indexed frames.", gr.skip(), state
        frame_index, timestamp_s, _ = frames[min(max(int(position), 0), len(frames) - 1)]
        try:
            view = studio.frame_view(video_id, frame_index)
        except UserError as exc:
            return gr.skip(), _warn(exc), gr.skip(), state
        state.video_id, state.frame_index, state.scale = int(video_id), frame_index, view.scale
        state.query_id = None
        follows = state.player_video_id == state.video_id
        seek = gr.update(playback_position=timestamp_s) if follows else gr.skip()
        return view.image, view.caption, seek, state

    def player_at(video_id: int, time_s: float, state: Session, progress: gr.Progress) -> Any:
        """The player moved to `time_s` of a video, loading that video's preview first (made on first use,
        with a progress bar) unless the player holds it already; a failure is shown and changes nothing."""
        if state.player_video_id == video_id:
            return gr.update(playback_position=time_s)
        try:
            path = studio.preview(video_id, lambda done, total: progress(
                (done, total), desc="Making a playable preview", unit="frames"))
        except UserError as exc:
            _warn(exc)
            return gr.skip()
        state.player_video_id = video_id
        return gr.update(value=str(path), playback_position=time_s)

    def on_video(video_id: int | None, state: Session) -> tuple[Any, ...]:
        n = len(studio.frames(video_id)) if video_id is not None else 0
        slider = gr.update(minimum=0, maximum=max(n - 1, 1), value=0, interactive=n > 1)
        return (slider, *show_frame(video_id, 0, state))

    def on_player(video_id: int | None, state: Session,
                  progress: gr.Progress = gr.Progress()) -> tuple[Any, Session]:  # noqa: B008
        """Loads the picked video into the player, at the shown frame (after `on_video`)."""
        if video_id is None or video_id != state.video_id or state.frame_index is None:
            return gr.skip(), state
        frames = {index: ts for index, ts, _ in studio.frames(video_id)}
        return player_at(int(video_id), frames.get(state.frame_index, 0.0), state, progress), state

    def on_use_time(player: gr.Video, state: Session) -> tuple[Any, ...]:
        """Shows the sampled frame at or just before the player's current time (switching the picked video
        to the player's, when a result from another video was loaded into it)."""
        video_id = state.player_video_id
        if video_id is None:
            return gr.skip(), gr.skip(), gr.skip(), _warn(UserError("the player holds no video yet")), state
        try:
            position = studio.frame_position_at(video_id, float(player.playback_position or 0.0))
        except UserError as exc:
            return gr.skip(), gr.skip(), gr.skip(), _warn(exc), state
        dropdown, slider = gr.skip(), gr.update(value=position)
        if video_id != state.video_id:
            n = len(studio.frames(video_id))
            dropdown = gr.update(value=video_id)
            slider = gr.update(minimum=0, maximum=max(n - 1, 1), value=position, interactive=n > 1)
        image, caption, _, state = show_frame(video_id, position, state)  # the player stays where it is
        return dropdown, slider, image, caption, state

    def show_results(view: SearchView, state: Session, frame: Any = None) -> tuple[Any, ...]:
        state.best_hits = view.best_hits
        state.query_id = view.result.query.detection.id if view.result.query.detection else None
        return (gr.skip() if frame is None else frame, view.summary, view.gallery, view.rows, None, "", state)

    def on_click(state: Session, k: float, evt: gr.SelectData) -> tuple[Any, ...]:
        try:
            if state.video_id is None or state.frame_index is None or not evt.index:
                raise UserError("pick a video and a frame first")
            view = studio.search_click(state.video_id, state.frame_index, evt.index[0], evt.index[1],
                                       state.scale, int(k))
            frame = studio.frame_view(state.video_id, state.frame_index, view.result.query.detection.id)
        except UserError as exc:
            return (gr.skip(), _warn(exc), *unchanged)
        return show_results(view, state, frame.image)

    @gpu
    def on_photo(image: Any, k: float, state: Session) -> tuple[Any, ...]:
        """Searches with an uploaded photo of one person."""
        try:
            return show_results(studio.search_photo(image, int(k)), state)
        except UserError as exc:
            return (gr.skip(), _warn(exc), *unchanged)

    def on_result(state: Session, evt: gr.SelectData) -> tuple[Any, Any, Session]:
        """The result's frame with the match highlighted (then `on_result_player`)."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        state.shown_hit = None
        if not 0 <= index < len(state.best_hits):
            return gr.skip(), gr.skip(), state
        hit = state.best_hits[index]
        try:
            view = studio.hit_view(hit)
        except UserError as exc:
            return gr.skip(), _warn(exc), state
        state.shown_hit = hit
        return view.image, view.caption, state

    def on_result_player(state: Session,
                         progress: gr.Progress = gr.Progress()) -> tuple[Any, Session]:  # noqa: B008
        """The player moved to the shown result's time: a separate step, so the result's frame never waits
        for a preview being encoded."""
        hit = state.shown_hit
        if hit is None:
            return gr.skip(), state
        return player_at(hit.video_id, hit.timestamp_s, state, progress), state

    # .input, not .change: "Use current frame" sets the dropdown itself and must not reset the slider
    ui.video_dd.input(on_video, [ui.video_dd, ui.session],
                      [ui.frame_slider, ui.frame_image, ui.frame_caption, ui.player, ui.session], **PRIVATE
                      ).then(on_player, [ui.video_dd, ui.session], [ui.player, ui.session], **PRIVATE)
    ui.frame_slider.input(show_frame, [ui.video_dd, ui.frame_slider, ui.session],
                          [ui.frame_image, ui.frame_caption, ui.player, ui.session],
                          trigger_mode="always_last", **PRIVATE)
    ui.use_time_btn.click(on_use_time, [ui.player, ui.session],
                          [ui.video_dd, ui.frame_slider, ui.frame_image, ui.frame_caption, ui.session],
                          **PRIVATE)
    ui.frame_image.select(on_click, [ui.session, ui.top_k], results, **PRIVATE)
    ui.photo_btn.click(on_photo, [ui.photo, ui.top_k, ui.session], results, api_name="search_photo", **GPU)
    ui.gallery.select(on_result, [ui.session], [ui.result_image, ui.result_caption, ui.session], **PRIVATE
                      ).then(on_result_player, [ui.session], [ui.player, ui.session], **PRIVATE)


def _wire_experts(studio: Studio, ui: _UI) -> None:
    @gpu
    def on_experts(state: Session, layer: str | None) -> tuple[Any, ...]:
        try:
            if state.video_id is None or state.frame_index is None:
                raise UserError("pick a video and a frame first (Search tab)")
            view = studio.expert_view(state.video_id, state.frame_index, layer)
        except UserError as exc:
            return gr.skip(), gr.skip(), gr.skip(), _warn(exc)
        info = (f"Frame {state.frame_index}, layer `{view.layer}`: the colour is the expert each position is "
                "routed to (mixed where the router is unsure).")
        if view.figure is None:
            info += " These adapters have no frequency module (FLM off): no frequency weights to plot."
        layers = gr.update(choices=layer_choices(view.layers), value=view.layer)
        return view.panels, view.figure, layers, info

    outputs = [ui.experts_image, ui.freq_plot, ui.layer_dd, ui.experts_info]
    ui.experts_btn.click(on_experts, [ui.session, ui.layer_dd], outputs, **PRIVATE, **GPU)
    ui.layer_dd.input(on_experts, [ui.session, ui.layer_dd], outputs, **PRIVATE, **GPU)


def _wire_model(studio: Studio, ui: _UI) -> None:
    def on_load(kind: str, location: str, revision: str) -> tuple[Any, ...]:
        try:
            message = studio.load_model(kind, location, revision)
        except UserError as exc:
            return (_warn(exc), *[gr.skip()] * 6)
        return (message, studio.model_card(), _header(studio), *_library_state(studio))

    ui.load_btn.click(on_load, [ui.kind, ui.location, ui.revision],
                      [ui.model_status, ui.card, ui.header, ui.library, ui.library_note, ui.video_dd,
                       ui.remove_dd], **PRIVATE, **GPU)


def _wire_api(studio: Studio) -> None:
    """Typed endpoints for `gradio_client` (no UI)."""

    def videos() -> list[dict[str, Any]]:
        """Videos of the current model: id, name, status, frames indexed, people found."""
        return [dict(zip(LIBRARY_COLUMNS, row, strict=True)) for row in studio.library_rows()]

    def frames(video_id: int) -> list[dict[str, Any]]:
        """Indexed frames of a video with their detections (id, box in frame pixels, score)."""
        store = studio.engine.store
        return [{"frame_index": index, "timestamp_s": ts,
                 "detections": [{"id": d.id, "box": list(d.box), "score": d.score}
                                for d in store.frame_detections(int(video_id), index)]}
                for index, ts, _ in studio.frames(video_id)]

    def search(video_id: int, frame_index: int, x: float, y: float, top_k: int = 10) -> dict[str, Any]:
        """Searches for the person at (x, y) (frame pixels) of an indexed frame: query, hits, appearances."""
        try:
            return studio.search_click(video_id, frame_index, x, y, 1.0, top_k).result.to_dict()
        except UserError as exc:
            raise gr.Error(str(exc)) from None

    def search_detection(detection_id: int, top_k: int = 10) -> dict[str, Any]:
        """Searches with a stored detection as the query."""
        try:
            return studio.search_detection(detection_id, top_k).result.to_dict()
        except UserError as exc:
            raise gr.Error(str(exc)) from None

    def model() -> dict[str, Any]:
        """The model in use: name, source, whether it is the untrained fallback, embedding size."""
        loaded = studio.engine.model
        choice = studio.choice
        return {"name": loaded.config.name, "source": choice.source, "revision": choice.revision,
                "untrained": choice.untrained, "embedding_dim": loaded.embedding_dim}

    for fn in (videos, frames, search, search_detection, model):
        gr.api(fn, api_name=fn.__name__)


def build_ui(studio: Studio) -> gr.Blocks:
    """The Blocks app over one `Studio`."""
    # delete_cache: the frames and previews Gradio copied for the pages are dropped a day after it made
    # them (checked hourly), so a long-running app's cache does not grow without bound
    with gr.Blocks(title="FSLoRA person search", delete_cache=(3600, 86400)) as demo:
        ui = _layout(studio)
        _wire_library(studio, ui)
        _wire_search(studio, ui)
        _wire_experts(studio, ui)
        _wire_model(studio, ui)
        _wire_api(studio)
        # one load event: the current model (another session may have switched it) and its library
        demo.load(lambda: (*_library_state(studio), studio.model_card(), _header(studio)), None,
                  [ui.library, ui.library_note, ui.video_dd, ui.remove_dd, ui.card, ui.header], **PRIVATE)
    return demo


# -- launching --------------------------------------------------------------------------------------


def make_config(args: argparse.Namespace) -> AppConfig:
    """AppConfig from `--config` (YAML) with `--data-dir` applied on top."""
    overrides = {"data_dir": Path(args.data_dir)}
    if getattr(args, "config", None):
        return AppConfig.from_yaml(args.config, **overrides)
    return AppConfig(**overrides)


def create_studio(args: argparse.Namespace) -> Studio:
    """The Studio of a launch: config, startup model (loaded now), demo videos indexing in background."""
    config = make_config(args)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    choice = choose_startup_model(args.model, config.data_dir, args.revision)
    studio = Studio(config, choice, desktop=args.desktop, display_max_side=args.display_max_side)
    studio.warm_up()
    if args.demo != "none":
        studio.start_background(prepare_demo_videos(config.data_dir, include_vtest=args.demo == "all"))
    return studio


def media_dirs(data_dir: Path) -> list[Path]:
    """The only folders served besides Gradio's own cache: uploads, demo media and the players' previews
    (never the DB)."""
    return [data_dir / "videos", data_dir / "demo", data_dir / PREVIEW_DIRNAME]


def launch(args: argparse.Namespace) -> int:
    """Builds and serves the app (blocks until the server stops); returns an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        studio = create_studio(args)
    except ValueError as exc:  # bad --model / --config: one clear line, no traceback
        print(f"error: {exc}", flush=True)
        return 2
    media = media_dirs(studio.config.data_dir.resolve())
    for folder in media:
        folder.mkdir(parents=True, exist_ok=True)
    demo = build_ui(studio)
    demo.queue(default_concurrency_limit=4, max_size=64)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                    max_file_size=f"{args.max_upload_mb}mb", allowed_paths=[str(p) for p in media],
                    theme=gr.themes.Soft(), css=CSS, show_error=True, ssr_mode=False)
    finally:
        studio.close()
    return 0
