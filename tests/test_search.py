"""app/search.py: click picking, appearance grouping and precision@k on hand-made cases; filters, click
and image queries, crops and concurrent searches on two indexed SynthPS videos (same people, two
cameras) with a seeded random nano model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from model_factory import tiny_model

from app.config import AppConfig
from app.engine import Engine
from app.search import (
    Hit,
    SearchFilters,
    group_appearances,
    hit_pids,
    pick_detection,
    precision_at_k,
    sidecar_pid,
)
from app.video import open_video
from fslora.data.synthps import render_video

SIZE = (192, 320)




def hit(det_id: int, frame: int, sim: float, video: int = 1, ts: float | None = None) -> Hit:
    return Hit(det_id, video, f"v{video}", f"/v{video}.mp4", frame, frame / 10 if ts is None else ts,
               (0.0, 0.0, 10.0, 20.0), 0.9, sim)


# -- hand-made cases ------------------------------------------------------------------------------------


def test_pick_detection_prefers_the_nearest_centre() -> None:
    boxes = [(0, 0, 100, 100), (40, 40, 60, 80), (200, 0, 260, 100)]
    assert pick_detection(boxes, 50, 60) == 1  # inside both 0 and 1; 1's centre (50, 60) is nearer
    assert pick_detection(boxes, 10, 10) == 0
    assert pick_detection(boxes, 230, 50) == 2
    assert pick_detection(boxes, 150, 50) is None  # between the boxes: nobody
    assert pick_detection([], 1, 1) is None
    # same centre distance: the smaller box wins
    assert pick_detection([(0, 0, 100, 100), (25, 25, 75, 75)], 50, 50) == 1


def test_group_appearances_merges_consecutive_sampled_frames() -> None:
    sampled = [0, 5, 10, 15, 20, 25, 30, 35]  # frame indices of the sampled frames
    position = {f: i for i, f in enumerate(sampled)}
    hits = [hit(1, 0, 0.5), hit(2, 5, 0.9), hit(3, 10, 0.6),
            hit(4, 25, 0.7), hit(5, 30, 0.8), hit(6, 35, 0.4)]
    runs = group_appearances(hits, position)
    assert [(a.start_frame, a.end_frame) for a in runs] == [(0, 10), (25, 35)]
    assert [a.best.detection_id for a in runs] == [2, 5]
    assert (runs[0].start_s, runs[0].end_s) == (0.0, 1.0)
    assert [h.detection_id for h in runs[1].hits] == [4, 5, 6]
    # a gap of one missed sampled frame is bridged only when allowed
    gappy = [hit(1, 0, 0.5), hit(2, 10, 0.6)]
    assert len(group_appearances(gappy, position)) == 2
    assert len(group_appearances(gappy, position, max_gap_frames=2)) == 1


def test_precision_at_k_on_hand_made_hits() -> None:
    assert precision_at_k([1, 1, None, 2, 1], query_pid=1, k=5) == pytest.approx(0.6)
    assert precision_at_k([1, 1, None, 2, 1], query_pid=1, k=10) == pytest.approx(0.3)  # short list
    assert precision_at_k([1, 1, 1], query_pid=1, k=2) == 1.0
    assert precision_at_k([], query_pid=1, k=10) == 0.0
    with pytest.raises(ValueError, match="k must be positive"):
        precision_at_k([1], 1, k=0)


def test_sidecar_identities_of_hits() -> None:
    sidecar = {"video": "x.mp4", "frames": [
        {"frame": 0, "persons": [{"box": [0, 0, 10, 20], "pid": 4}, {"box": [50, 0, 60, 20], "pid": 7}]},
        {"frame": 1, "persons": []},
    ]}
    assert sidecar_pid(sidecar, 0, (1, 1, 10, 21)) == 4
    assert sidecar_pid(sidecar, 0, (49, 0, 61, 20)) == 7
    assert sidecar_pid(sidecar, 0, (20, 0, 40, 20)) is None  # a false detection
    assert sidecar_pid(sidecar, 1, (0, 0, 10, 20)) is None
    with pytest.raises(ValueError, match="no frame 5"):
        sidecar_pid(sidecar, 5, (0, 0, 1, 1))
    hits = [Hit(1, 3, "x", "/x", 0, 0.0, (0, 0, 10, 20), 0.9, 0.9),
            Hit(2, 3, "x", "/x", 0, 0.0, (50, 0, 60, 20), 0.9, 0.8),
            Hit(3, 9, "y", "/y", 0, 0.0, (0, 0, 10, 20), 0.9, 0.7)]
    pids = hit_pids(hits, {3: sidecar})
    assert pids == [4, 7, None]  # video 9 has no sidecar
    assert precision_at_k(pids, 4, k=3) == pytest.approx(1 / 3)


def test_filters_validate() -> None:
    with pytest.raises(ValueError, match="min_score"):
        SearchFilters(min_score=1.5)
    with pytest.raises(ValueError, match="start_s"):
        SearchFilters(start_s=5.0, end_s=1.0)


# -- on indexed videos ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for camera in (0, 1, 2):
        path = root / f"cam{camera}.mp4"
        out[camera] = (path, render_video(path, seed=11, camera=camera, size=SIZE, fps=4.0, duration_s=8.0,
                                          n_people=4))
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, videos: dict) -> Engine:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    config = AppConfig(data_dir=tmp_path_factory.mktemp("data"), sample_fps=1.0, batch_frames=5,
                       score_thresh=0.0)
    eng = Engine(config, model=tiny_model())
    for camera in (0, 1):
        eng.index_video(videos[camera][0])
    yield eng
    eng.close()
    torch.set_num_threads(previous)


def video_id(engine: Engine, name: str) -> int:
    return engine.resolve_video(name).id


def test_filters_apply_and_still_fill_top_k(engine: Engine) -> None:
    cam0, cam1 = video_id(engine, "cam0.mp4"), video_id(engine, "cam1.mp4")
    query = engine.store.frame_detections(cam0, 8)[0]
    own_out = engine.search_detection(query.id, top_k=10, filters=SearchFilters(exclude_query_video=True))
    assert len(own_out.hits) == 10 and {h.video_id for h in own_out.hits} == {cam1}
    only0 = engine.search_detection(query.id, top_k=10, filters=SearchFilters(video_ids=frozenset({cam0})))
    assert len(only0.hits) == 10 and {h.video_id for h in only0.hits} == {cam0}
    window = engine.search_detection(query.id, top_k=10, filters=SearchFilters(start_s=3.0, end_s=5.0))
    assert window.hits and all(3.0 <= h.timestamp_s <= 5.0 for h in window.hits)
    scores = sorted(d.score for d in engine.store.frame_detections(cam0, 8))
    strict = engine.search_detection(query.id, top_k=50, filters=SearchFilters(min_score=scores[-2]))
    assert strict.hits and all(h.score >= scores[-2] for h in strict.hits)
    # the filter reaches past the first candidates: same as filtering the whole ranking
    everything = engine.search_detection(query.id, top_k=len(engine.store.embedding_ids(engine.model_id)))
    expected = [h.detection_id for h in everything.hits if h.score >= scores[-2]][:50]
    assert [h.detection_id for h in strict.hits] == expected
    nothing = engine.search_detection(query.id, top_k=5, filters=SearchFilters(start_s=100.0))
    assert nothing.hits == [] and nothing.appearances == []


def test_appearances_cover_the_hits(engine: Engine) -> None:
    cam0 = video_id(engine, "cam0.mp4")
    query = engine.store.frame_detections(cam0, 12)[0]
    result = engine.search_detection(query.id, top_k=30)
    grouped = sorted(h.detection_id for a in result.appearances for h in a.hits)
    assert grouped == sorted(h.detection_id for h in result.hits)
    assert result.appearances[0].best.detection_id == query.id
    sims = [a.similarity for a in result.appearances]
    assert sims == sorted(sims, reverse=True)
    for a in result.appearances:
        assert a.start_s <= a.best.timestamp_s <= a.end_s and all(h.video_id == a.video_id for h in a.hits)


def test_click_inside_a_sidecar_person_selects_the_overlapping_detection(engine: Engine,
                                                                         videos: dict) -> None:
    cam0 = video_id(engine, "cam0.mp4")
    sidecar = videos[0][1]
    clicked = 0
    for frame_index, _, _ in engine.store.list_frames(cam0):
        dets = engine.store.frame_detections(cam0, frame_index)
        for person in sidecar["frames"][frame_index]["persons"]:
            x1, y1, x2, y2 = person["box"]
            x, y = (x1 + x2) / 2, (y1 + y2) / 2
            holding = [d for d in dets if d.box[0] <= x <= d.box[2] and d.box[1] <= y <= d.box[3]]
            if not holding:
                with pytest.raises(ValueError, match="hits nobody"):
                    engine.search_click(cam0, frame_index, x, y)
                continue
            result = engine.search_click(cam0, frame_index, x, y, top_k=3)
            chosen = result.query.detection
            assert chosen is not None and chosen.id in {d.id for d in holding}
            bx1, by1, bx2, by2 = chosen.box
            assert min(bx2, x2) > max(bx1, x1) and min(by2, y2) > max(by1, y1)  # overlaps the person
            nearest = min(np.hypot((d.box[0] + d.box[2]) / 2 - x, (d.box[1] + d.box[3]) / 2 - y)
                          for d in holding)
            assert np.hypot((bx1 + bx2) / 2 - x, (by1 + by2) / 2 - y) == pytest.approx(nearest)
            assert result.hits[0].detection_id == chosen.id
            assert result.hits[0].similarity == pytest.approx(1.0, abs=1e-4)
            clicked += 1
    assert clicked >= 3


def test_click_errors_are_clear(engine: Engine) -> None:
    cam0 = video_id(engine, "cam0.mp4")
    with pytest.raises(ValueError, match=r"frame 5 of video .* not indexed; the nearest indexed frame is 4"):
        engine.search_click(cam0, 5, 10, 10)
    with pytest.raises(ValueError, match="hits nobody"):
        engine.search_click(cam0, 4, -50, -50)
    with pytest.raises(ValueError, match="no video with id 999"):
        engine.search_click(999, 0, 1, 1)
    with pytest.raises(ValueError, match="no detection with id 123456"):
        engine.search_detection(123456)


def test_crop_of_a_hit_and_search_by_image(engine: Engine, videos: dict) -> None:
    cam1 = video_id(engine, "cam1.mp4")
    det = engine.store.frame_detections(cam1, 16)[0]
    query = engine.search_detection(det.id, top_k=1).hits[0]
    crop = engine.crops([query], pad=0.0)[0]
    with open_video(videos[1][0]) as reader:
        frame = reader.frame(16)
    x1, y1, x2, y2 = query.box
    expected = frame[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))]
    assert crop.shape == expected.shape and np.array_equal(crop, expected)

    result = engine.search_image(crop, top_k=7)
    assert result.query.source == "image" and result.query.detection is None
    assert len(result.hits) == 7
    sims = [h.similarity for h in result.hits]
    assert sims == sorted(sims, reverse=True) and -1.0 <= sims[-1] <= sims[0] <= 1.0
    # the query vector is the model's embedding of the whole crop
    box = np.array([[0, 0, crop.shape[1], crop.shape[0]]], np.float32)
    vector = engine.model.embed_boxes([crop], [box])[0][0].numpy()
    assert np.allclose(result.query.embedding, vector, atol=1e-6)
    with pytest.raises(ValueError, match="at least 8 pixels"):
        engine.search_image(np.zeros((4, 30, 3), np.uint8))


def test_searches_in_threads_while_a_video_is_indexed(engine: Engine, videos: dict) -> None:
    cam0 = video_id(engine, "cam0.mp4")
    query = engine.store.frame_detections(cam0, 8)[0]
    image = engine.crops([engine.search_detection(query.id, top_k=1).hits[0]])[0]
    done = threading.Event()
    errors: list[BaseException] = []
    counts: list[int] = []

    def indexing() -> None:
        try:
            engine.index_video(videos[2][0])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    def searching(kind: str) -> None:
        n = 0
        try:
            while not done.is_set() or n < 2:
                if kind == "id":
                    result = engine.search_detection(query.id, top_k=10)
                    assert result.hits[0].detection_id == query.id
                elif kind == "click":
                    box = query.box
                    result = engine.search_click(cam0, 8, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                    assert result.hits[0].similarity == pytest.approx(1.0, abs=1e-4)
                else:
                    result = engine.search_image(image, top_k=5)
                    assert len(result.hits) == 5
                n += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        counts.append(n)

    threads = [threading.Thread(target=indexing)] + [threading.Thread(target=searching, args=(k,))
                                                      for k in ("id", "click", "image")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(counts) == 3 and min(counts) >= 2
    cam2 = engine.resolve_video("cam2.mp4")
    assert cam2.status == "done" and len(engine.store.list_frames(cam2.id)) == 8
    ids = engine.store.embedding_ids(engine.model_id)
    assert np.array_equal(engine.vector_index(engine.model_id).ids(), ids)
