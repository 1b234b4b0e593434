"""app/indexer.py through `Engine`: real videos (vtest.avi, a SynthPS walk), a real SQLite file, FAISS,
and a seeded random nano model (the pipeline must not care what the weights are).

The model is made small for CPU speed (128x224 input, 8 proposals, 6 detections per frame) and
every score passes (score_thresh 0): an untrained model scores every region about the same.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from model_factory import tiny_model

from app.config import AppConfig
from app.engine import Engine
from app.indexer import IndexOptions, Progress
from app.vector_index import VectorIndex
from app.video import VideoError, open_video
from fslora.data.synthps import render_video


@pytest.fixture(scope="module")
def single_thread() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine: threads only add waiting
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("synth") / "walk.mp4"
    sidecar = render_video(path, seed=3, size=(192, 320), fps=4.0, duration_s=10.0, n_people=4)
    return path, sidecar


def make_config(data_dir: Path, **changes: object) -> AppConfig:
    base = {"data_dir": data_dir, "sample_fps": 1.0, "batch_frames": 4, "score_thresh": 0.0,
            "mask_thumbnail_size": 16}
    return AppConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, vtest_path: Path, synth_video: tuple[Path, dict],
            single_thread: None) -> dict:
    """vtest.avi at 0.25 fps and the SynthPS walk at 1 fps (with routing thumbnails), one engine."""
    data = tmp_path_factory.mktemp("data")
    engine = Engine(make_config(data, sample_fps=0.25), model=tiny_model())
    updates: list[Progress] = []
    vtest = engine.index_video(vtest_path, progress=updates.append)
    engine.config = make_config(data)  # the SynthPS walk is sampled at 1 fps
    synth = engine.index_video(synth_video[0], options=IndexOptions(capture_routing=True,
                                                                    routing_layers=r"layers\.[03]\."))
    yield {"engine": engine, "vtest": vtest, "synth": synth, "updates": updates, "data": data}
    engine.close()


def test_vtest_rows_per_sampled_frame_and_vectors_per_detection(indexed: dict, vtest_path: Path) -> None:
    engine: Engine = indexed["engine"]
    result = indexed["vtest"]
    assert result.outcome == "done" and result.video.status == "done"
    with open_video(vtest_path) as reader:
        sampled = reader.sample_indices(0.25)
    assert len(sampled) == 20
    frames = engine.store.list_frames(result.video.id)
    assert [f[0] for f in frames] == sampled
    assert [f[1] for f in frames] == pytest.approx([i / 10.0 for i in sampled])  # vtest runs at 10 fps
    assert result.frames == 20 and result.detections == sum(f[2] for f in frames) > 0
    model_id = engine.model_id
    index = engine.vector_index(model_id)
    store_ids = engine.store.embedding_ids(model_id)
    assert len(index) == len(store_ids) == engine.store.stats()["detections"]
    assert np.array_equal(index.ids(), store_ids)
    # the file saved at the end of the video holds the same vectors
    assert np.array_equal(VectorIndex.load(engine.index_file(model_id)).ids(), store_ids)


def test_search_returns_the_query_itself_first(indexed: dict) -> None:
    engine: Engine = indexed["engine"]
    for video in (indexed["vtest"].video, indexed["synth"].video):
        frame_index = engine.store.list_frames(video.id)[3][0]
        query = engine.store.frame_detections(video.id, frame_index)[0]
        result = engine.search_detection(query.id, top_k=5)
        assert result.hits[0].detection_id == query.id
        assert result.hits[0].similarity == pytest.approx(1.0, abs=1e-4)
        sims = [h.similarity for h in result.hits]
        assert sims == sorted(sims, reverse=True)
        assert len(result.hits) == 5


def test_progress_reports_every_batch_up_to_the_total(indexed: dict) -> None:
    updates: list[Progress] = indexed["updates"]
    assert [u.frames_done for u in updates] == [4, 8, 12, 16, 20]  # batch_frames 4, 20 sampled frames
    assert all(u.frames_total == 20 for u in updates)
    assert updates[-1].eta_s == pytest.approx(0.0) and all(u.eta_s >= 0 for u in updates)
    assert [u.elapsed_s for u in updates] == sorted(u.elapsed_s for u in updates)


def test_routing_thumbnails_are_small_and_only_for_chosen_layers(indexed: dict) -> None:
    engine: Engine = indexed["engine"]
    synth = indexed["synth"].video
    frames = engine.store.list_frames(synth.id)
    assert len(frames) == 10  # 10 s at 1 fps
    routing = engine.store.get_routing(synth.id, frames[0][0])
    layers = {layer for _, layer in routing}
    assert layers and all(layer.startswith(("layers.0.", "layers.3.")) for layer in layers)
    assert {task for task, _ in routing} == {"det", "reid"}
    for masks in routing.values():
        assert masks.shape[0] == 2 and max(masks.shape[1:]) <= 16  # 2 experts, thumbnail side <= 16
        assert masks.min() >= 0.0 and masks.max() <= 1.0
        # the experts' masks are a softmax over experts: they sum to ~1 at every position
        assert np.allclose(masks.sum(0), 1.0, atol=0.02)
    # vtest was indexed without routing capture
    vtest = indexed["vtest"].video
    assert engine.store.get_routing(vtest.id, 0) == {}


def test_same_content_is_skipped_even_under_another_name(indexed: dict, synth_video: tuple[Path, dict],
                                                         tmp_path: Path) -> None:
    engine: Engine = indexed["engine"]
    before = engine.store.stats()
    copy = shutil.copyfile(synth_video[0], tmp_path / "renamed.mp4")
    result = engine.index_video(copy)
    assert result.outcome == "skipped" and result.frames == 0
    assert result.video.id == indexed["synth"].video.id
    assert engine.store.stats() == before


def test_cancel_then_resume_without_duplicates(tmp_path: Path, synth_video: tuple[Path, dict],
                                               single_thread: None) -> None:
    engine = Engine(make_config(tmp_path, batch_frames=2), model=tiny_model())
    cancel = threading.Event()
    saved_then_stored: list[tuple[int, int]] = []  # (vectors in the index file, detections in the store)

    def stop_after_two_batches(p: Progress) -> None:
        file = engine.index_file(engine.model_id)
        saved = len(VectorIndex.load(file)) if file.exists() else 0
        saved_then_stored.append((saved, len(engine.store.embedding_ids(engine.model_id))))
        if p.frames_done >= 4:
            cancel.set()

    first = engine.index_video(synth_video[0], cancel=cancel, progress=stop_after_two_batches,
                               options=IndexOptions(save_every_s=0.0))
    assert first.outcome == "cancelled" and first.video.status == "indexing"
    # save_every_s=0: the file is saved after every batch, so at batch 2 it holds batch 1's vectors
    assert saved_then_stored[0][0] == 0 and saved_then_stored[1][0] == saved_then_stored[0][1] > 0
    assert first.frames == 4 and first.video.last_committed_frame == 12  # frames 0, 4, 8, 12 at 4 fps
    partial = engine.store.list_frames(first.video.id)
    assert [f[0] for f in partial] == [0, 4, 8, 12]

    updates: list[Progress] = []
    second = engine.index_video(synth_video[0], progress=updates.append)
    assert second.outcome == "done" and second.frames == 6
    assert updates[0].frames_done == 6 and updates[-1].frames_done == updates[-1].frames_total == 10
    frames = engine.store.list_frames(second.video.id)
    assert [f[0] for f in frames] == list(range(0, 40, 4))
    assert frames[:4] == partial  # the committed frames were kept, not redone
    ids = engine.store.embedding_ids(engine.model_id)
    assert np.array_equal(engine.vector_index(engine.model_id).ids(), ids)
    assert first.detections + second.detections == len(ids)
    engine.close()


def test_stored_rows_are_what_detect_says_about_each_frame(indexed: dict,
                                                           synth_video: tuple[Path, dict]) -> None:
    """Boxes, scores and vectors in the store are exactly `detect`'s output for the sampled frames."""
    engine: Engine = indexed["engine"]
    video = indexed["synth"].video
    indices = [f[0] for f in engine.store.list_frames(video.id)][:4]  # the first batch
    with open_video(synth_video[0]) as reader:
        expected = engine.model.detect(list(reader.frames(indices)), score_thresh=0.0)
    for index, det in zip(indices, expected, strict=True):
        stored = sorted(engine.store.frame_detections(video.id, index), key=lambda d: d.id)
        assert len(stored) == len(det) > 0
        assert np.allclose([d.box for d in stored], det.boxes.numpy(), atol=1e-3)
        assert np.allclose([d.score for d in stored], det.scores.numpy(), atol=1e-5)
        vectors = engine.store.get_embeddings([d.id for d in stored])
        assert np.allclose(vectors, det.embeddings.numpy(), atol=1e-5)


def corrupt_mjpg(path: Path, n_frames: int, bad_frame: int) -> Path:
    """An MJPG AVI whose JPEG of `bad_frame` is zeroed: it opens (its last frame decodes) but that frame
    fails to decode midway through indexing."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(n_frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [m.start() for m in re.finditer(b"\xff\xd8", bytes(data))]  # JPEG start-of-image markers
    assert len(starts) == n_frames
    data[starts[bad_frame]:starts[bad_frame] + 400] = bytes(400)
    path.write_bytes(bytes(data))
    return path


def test_decode_error_midway_marks_the_video_failed(tmp_path: Path, single_thread: None) -> None:
    # OpenCV decodes forward, so the damage at frame 50 shows only when indexing gets there (decord's
    # read-ahead sometimes meets it while opening the file, which makes that case flaky to set up).
    video = corrupt_mjpg(tmp_path / "damaged.avi", n_frames=100, bad_frame=50)
    config = make_config(tmp_path / "data", sample_fps=2.0, decode_backend="opencv")
    engine = Engine(config, model=tiny_model())
    with pytest.raises(VideoError, match="frames 40..55 failed to decode"):
        engine.index_video(video)  # batches of 4 sampled frames: 0-15, 20-35, then 40-55 fails
    (record,) = engine.store.list_videos()
    assert record.status == "failed" and "failed to decode" in record.error
    assert [f[0] for f in engine.store.list_frames(record.id)] == list(range(0, 40, 5))  # 2 whole batches
    assert record.last_committed_frame == 35
    ids = engine.store.embedding_ids(engine.model_id)
    assert np.array_equal(VectorIndex.load(engine.index_file(engine.model_id)).ids(), ids)
    with pytest.raises(VideoError):  # a retry resumes at frame 40 and meets the same damage
        engine.index_video(video)
    assert len(engine.store.list_frames(record.id)) == 8
    engine.close()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="prefetch_batches"):
        IndexOptions(prefetch_batches=0)
    with pytest.raises(ValueError, match="routing_layers"):
        IndexOptions(routing_layers="layers.(")
