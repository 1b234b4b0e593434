"""The UI's actions on a real engine: a random nano checkpoint, a real SQLite file, real SynthPS videos.

Everything the browser test drives goes through these methods; here each is checked in-process, fast,
including the failure paths (bad uploads, clicks on nobody, models that do not load).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_ui_support import small_random_checkpoint

from app import ui_actions, ui_setup
from app.config import AppConfig
from app.search import pick_detection
from app.ui_actions import LIBRARY_COLUMNS, Session, Studio, UserError
from app.ui_render import MATCH_COLOR, QUERY_COLOR
from app.ui_setup import (
    RANDOM_MODEL_NAME,
    ModelChoice,
    choose_startup_model,
    is_checkpoint_dir,
    prepare_demo_videos,
    random_model_dir,
)
from fslora.data.synthps import render_video
from fslora.models import FSLoRAPersonSearch
from fslora.models.checkpoint import inference_state_dict

COLUMN = {name: i for i, name in enumerate(LIBRARY_COLUMNS)}


def _config(data_dir: Path) -> AppConfig:
    return AppConfig(data_dir=data_dir, sample_fps=1.0, batch_frames=2, score_thresh=0.5)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    walk = root / "walk.mp4"
    render_video(walk, seed=3, duration_s=3.0, fps=5.0, n_people=4)  # 15 frames -> 3 sampled at 1 fps
    text = root / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    cut = root / "cut.mp4"
    cut.write_bytes(walk.read_bytes()[: walk.stat().st_size // 2])
    plain = root / "plain.avi"
    writer = cv2.VideoWriter(str(plain), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (160, 96))
    for _ in range(2):
        writer.write(np.full((96, 160, 3), 90, np.uint8))
    writer.release()
    return {"walk": walk, "text": text, "empty": empty, "cut": cut, "plain": plain}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]) -> Studio:
    data = tmp_path_factory.mktemp("data")
    choice = ModelChoice(str(small_random_checkpoint(data / "models" / "small")), untrained=True)
    studio = Studio(_config(data), choice, desktop=True)
    message = studio.index_file(media["walk"], name="walk.mp4")
    assert "3 frames" in message
    yield studio
    studio.close()


def _rows(studio: Studio) -> list[list]:
    return studio.library_rows()


def test_first_launch_prefers_a_bundled_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bundled = small_random_checkpoint(tmp_path / "weights" / "bundled")  # stands in for weights/...
    monkeypatch.setattr(ui_setup, "BUNDLED_MODEL", bundled)
    choice = choose_startup_model(None, tmp_path)
    assert choice.source == str(bundled) and not choice.untrained
    assert not (tmp_path / "models").exists(), "no fallback model is made when a bundled one exists"


def test_first_launch_falls_back_to_a_labelled_random_model_saved_once(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ui_setup, "BUNDLED_MODEL", tmp_path / "no-bundled-checkpoint")
    choice = choose_startup_model(None, tmp_path)
    assert choice.untrained and "untrained" in choice.label
    folder = Path(choice.source)
    assert folder == tmp_path / "models" / RANDOM_MODEL_NAME and is_checkpoint_dir(folder)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert random_model_dir(tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not re-created: same model id
    with pytest.raises(ValueError, match="no such checkpoint folder"):
        choose_startup_model(str(tmp_path / "missing"), tmp_path)
    assert choose_startup_model("org/some-model", tmp_path).source == "org/some-model"


def test_demo_videos_are_rendered_into_the_data_folder(tmp_path: Path):
    videos = prepare_demo_videos(tmp_path, duration_s=1.0, fps=4.0)
    synth = videos[0]
    assert synth.parent == tmp_path / "demo" and synth.stat().st_size > 0
    sidecar = json.loads(synth.with_suffix(".json").read_text())
    assert sidecar["video"] == synth.name and len(sidecar["frames"]) == 4
    assert not list((tmp_path / "demo").glob(".rendering-*"))
    vtest = [v for v in videos if v.name == "vtest.avi"]
    assert vtest and vtest[0].parent == tmp_path / "demo"  # a copy: only the data folder is served
    assert prepare_demo_videos(tmp_path, duration_s=1.0, fps=4.0) == videos  # second launch: kept


def test_library_lists_the_indexed_video(studio: Studio, media: dict[str, Path]):
    rows = _rows(studio)
    assert len(rows) == 1
    row = rows[0]
    assert row[COLUMN["video"]] == "walk.mp4" and row[COLUMN["status"]] == "done"
    assert row[COLUMN["frames indexed"]] == 3 and row[COLUMN["people found"]] > 0
    stored = Path(studio.engine.store.get_video(row[COLUMN["id"]]).path)
    assert stored.parent == studio.videos_dir.resolve()  # uploads are copied into the data folder
    assert "already indexed" in studio.index_file(media["walk"], name="again.mp4")
    assert len(_rows(studio)) == 1
    assert studio.video_choices() == [("walk.mp4 (#1, done)", row[COLUMN["id"]])]


@pytest.mark.parametrize(("kind", "problem"), [("text", "not a readable video"), ("empty", "empty"),
                                               ("cut", "truncated or corrupt")])
def test_bad_uploads_are_refused_and_change_nothing(studio: Studio, media: dict[str, Path], kind: str,
                                                    problem: str):
    before = _rows(studio)
    copies = sorted(studio.videos_dir.iterdir())
    done, errors = studio.index_many([(media[kind], f"upload-{kind}.mp4")], copy=True)
    assert done == [] and len(errors) == 1
    assert problem in errors[0] and f"upload-{kind}.mp4" in errors[0]
    assert str(media[kind]) not in errors[0]  # the user's file name, not a temporary path
    assert _rows(studio) == before
    assert sorted(studio.videos_dir.iterdir()) == copies


def _first_detection(studio: Studio):
    video_id = studio.videos()[0].id
    frame_index = studio.frames(video_id)[1][0]
    dets = studio.engine.store.frame_detections(video_id, frame_index)
    assert dets
    return video_id, frame_index, dets


def test_click_on_a_person_searches_for_that_detection(studio: Studio):
    video_id, frame_index, dets = _first_detection(studio)
    studio.display_max_side = 320  # the 640x384 frame is shown at half size
    view = studio.frame_view(video_id, frame_index)
    assert view.scale == pytest.approx(0.5) and view.image.shape == (192, 320, 3)
    assert view.n_people == len(dets) and "Click a person" in view.caption
    target = dets[len(dets) // 2]
    cx, cy = (target.box[0] + target.box[2]) / 2, (target.box[1] + target.box[3]) / 2
    expected = dets[pick_detection([d.box for d in dets], cx, cy)]
    result = studio.search_click(video_id, frame_index, cx * view.scale, cy * view.scale, view.scale, top_k=5)
    query = result.result.query.detection
    assert query.id == expected.id  # displayed pixels were mapped back to frame pixels
    first = result.result.hits[0]
    assert first.detection_id == query.id and first.similarity == pytest.approx(1.0, abs=1e-4)
    assert result.rows[0][:2] == [1, query.id] and len(result.rows) == 5
    assert len(result.gallery) == len(result.result.appearances) == len(result.best_hits)
    crop, caption = result.gallery[0]
    assert crop.shape[0] == 160 and "walk.mp4" in caption and "sim" in caption
    framed = studio.frame_view(video_id, frame_index, highlight_id=query.id)
    assert (framed.image == np.array(QUERY_COLOR, np.uint8)).all(-1).any()
    studio.display_max_side = 960


def test_click_on_nobody_and_unknown_frames_are_user_errors(studio: Studio):
    video_id, frame_index, _ = _first_detection(studio)
    with pytest.raises(UserError, match="hits nobody"):
        studio.search_click(video_id, frame_index, -5, -5, 1.0)
    with pytest.raises(UserError, match="not indexed"):
        studio.frame_view(video_id, 1)
    with pytest.raises(UserError, match="no video"):
        studio.frame_view(999, 0)


def test_a_result_frame_highlights_the_match(studio: Studio):
    video_id, frame_index, dets = _first_detection(studio)
    view = studio.search_detection(dets[0].id, top_k=3)
    hit = view.result.hits[1]
    shown = studio.hit_view(hit)
    assert shown.frame_index == hit.frame_index and f"#{hit.detection_id}" in shown.caption
    x1, y1 = int(hit.box[0] * shown.scale), int(hit.box[1] * shown.scale)
    edge = shown.image[y1: y1 + 3, x1 + 2: x1 + 20]
    assert (edge == np.array(MATCH_COLOR, np.uint8)).all(-1).any()


def test_search_by_photo_finds_the_photographed_detection(studio: Studio):
    video_id, frame_index, dets = _first_detection(studio)
    hit = studio.search_detection(dets[0].id, top_k=1).result.hits[0]
    photo = studio.engine.crops([hit], pad=0.0)[0]
    view = studio.search_photo(photo, top_k=5)
    assert view.result.query.source == "image" and len(view.result.hits) == 5
    assert "uploaded photo" in view.summary
    with pytest.raises(UserError, match="upload a photo"):
        studio.search_photo(None)
    with pytest.raises(UserError, match="at least"):
        studio.search_photo(np.zeros((4, 4, 3), np.uint8))


def test_expert_view_shows_det_and_reid_masks_and_frequency_weights(studio: Studio):
    video_id, frame_index, _ = _first_detection(studio)
    view = studio.expert_view(video_id, frame_index)
    routing = studio.routing(video_id, frame_index)
    assert view.layers == list(routing) and view.layer == view.layers[-1]
    assert set(routing[view.layer]) == {"det", "reid"}
    assert view.panels.shape[1] == 2 * 640 + 6  # det | reid side by side at display size
    top, bottom = view.figure.axes
    assert len(top.patches) == 2 * len(view.layers) == len(bottom.patches)
    other = studio.expert_view(video_id, frame_index, view.layers[0])
    assert other.layer == view.layers[0] and not np.array_equal(other.panels, view.panels)


def test_switching_models_keeps_indexes_per_model_and_refuses_bad_checkpoints(
        studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    original = studio.choice
    n_before = len(_rows(studio))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="could not load .*current model stays"):
        studio.load_model("folder", str(bad))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="could not load nobody-here/no-such-model@v9"):
        studio.load_model("hub", "nobody-here/no-such-model", "v9")
    with pytest.raises(UserError, match="no such folder"):
        studio.load_model("folder", str(tmp_path / "missing"))
    with monkeypatch.context() as m:
        m.setattr(ui_actions, "BUNDLED_CHECKPOINT", tmp_path / "no-bundled-checkpoint")
        with pytest.raises(UserError, match="no bundled checkpoint"):
            studio.load_model("bundled")
    assert studio.choice == original and len(_rows(studio)) == n_before

    other = small_random_checkpoint(tmp_path / "other", seed=1, name="other-random-nano")
    assert "Loaded other" in studio.load_model("folder", str(other))
    assert _rows(studio) == [] and "1 video(s) are indexed with other models" in studio.other_models_note()
    assert "# other-random-nano" in studio.model_card()
    studio.load_model("folder", original.source)
    assert len(_rows(studio)) == n_before and studio.other_models_note() == ""
    same = inference_state_dict(studio.engine.model)
    assert all(torch.equal(v, same[k]) for k, v in inference_state_dict(
        FSLoRAPersonSearch.from_pretrained(original.source)).items())


def test_remove_video_deletes_its_rows_and_our_copy(studio: Studio, media: dict[str, Path]):
    studio.index_file(media["plain"], name="plain.avi")
    rows = _rows(studio)
    plain = next(r for r in rows if r[COLUMN["video"]] == "plain.avi")
    copy = Path(studio.engine.store.get_video(plain[COLUMN["id"]]).path)
    assert copy.is_file() and copy.parent == studio.videos_dir.resolve()
    preview = studio.preview(plain[COLUMN["id"]])
    assert preview.is_file()
    assert "Removed plain.avi" in studio.remove_video(plain[COLUMN["id"]])
    assert [r[COLUMN["video"]] for r in _rows(studio)] == ["walk.mp4"]
    assert not copy.exists() and not preview.exists()
    with pytest.raises(UserError, match="no video"):
        studio.remove_video(plain[COLUMN["id"]])


def test_player_time_maps_to_a_sampled_frame_and_the_preview_plays_the_video(studio: Studio):
    video_id = next(r[COLUMN["id"]] for r in _rows(studio) if r[COLUMN["video"]] == "walk.mp4")
    assert [ts for _, ts, _ in studio.frames(video_id)] == [0.0, 1.0, 2.0]
    times = (-1.0, 0.0, 0.99, 1.0, 1.8, 2.0, 99.0)  # the sampled frame at or before, not the nearest
    assert [studio.frame_position_at(video_id, t) for t in times] == [0, 0, 0, 1, 1, 2, 2]
    with pytest.raises(UserError, match="no indexed frames"):
        studio.frame_position_at(9999, 1.0)

    preview = studio.preview(video_id)
    assert preview.parent == studio.previews.folder and preview.suffix == ".webm"
    cap = cv2.VideoCapture(str(preview))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 15  # 3 s at 5 fps: every frame of the 640x384 source
    assert studio.preview(video_id) == preview
    with pytest.raises(UserError, match="no video with id"):
        studio.preview(9999)


def test_folder_indexing_is_desktop_only(studio: Studio, tmp_path: Path):
    with pytest.raises(UserError, match="no video files"):
        studio.folder_videos(str(tmp_path))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.MP4").write_bytes(b"x")
    assert studio.folder_videos(str(tmp_path)) == [tmp_path / "sub" / "a.MP4"]
    studio.desktop = False
    try:
        with pytest.raises(UserError, match="desktop mode only"):
            studio.folder_videos(str(tmp_path))
    finally:
        studio.desktop = True


def test_session_defaults_are_empty():
    session = Session()
    assert session.video_id is None and session.best_hits == []
