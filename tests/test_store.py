"""app/store on a real SQLite file (and AppConfig, whose database URL it opens)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.config import DEFAULTS_FILE, AppConfig
from app.store import FrameWrite, SchemaVersionError, Store, file_sha256
from app.video import VideoInfo, probe

DIM = 8


def write_video(path: Path, level: int, n_frames: int = 20) -> Path:
    """A small real MJPG video whose frames are flat grey `level` (so two levels = two contents)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for _ in range(n_frames):
        writer.write(np.full((24, 32, 3), level, np.uint8))
    writer.release()
    return path


def frame_write(index: int, n_dets: int, rng: np.random.Generator, masks: bool = False) -> FrameWrite:
    boxes = np.sort(rng.uniform(0, 30, (n_dets, 4)), axis=1)[:, [0, 1, 2, 3]]
    emb = rng.standard_normal((n_dets, DIM)).astype(np.float32)
    routing = {("det", "layers.0.blocks.0.mlp.fc1"): rng.uniform(0, 1, (2, 6, 5))} if masks else {}
    return FrameWrite(frame_index=index, timestamp_s=index / 10.0, boxes=boxes,
                      scores=rng.uniform(0.5, 1.0, n_dets), embeddings=emb, masks=routing)


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    with Store(f"sqlite:///{tmp_path / 'db' / 'app.db'}") as s:
        yield s


@pytest.fixture()
def video_file(tmp_path: Path) -> Path:
    return write_video(tmp_path / "cam1.avi", level=60)


def add(store: Store, path: Path, model_id: int) -> int:
    record, _ = store.add_video(path, model_id, probe(path))
    return record.id


# -- engine, schema -----------------------------------------------------------------------------------


def test_sqlite_wal_and_foreign_keys(store: Store, tmp_path: Path) -> None:
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    # WAL is a property of the file: a plain sqlite3 connection sees it too
    raw = sqlite3.connect(tmp_path / "db" / "app.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_schema_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    Store(url).close()
    Store(url).close()  # reopening the same version is fine
    raw = sqlite3.connect(tmp_path / "app.db")
    raw.execute("UPDATE schema_version SET version = 99")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaVersionError, match="schema version 99, this app needs version 1"):
        Store(url)
    # a database of something else that uses our table names, without a version table
    other = tmp_path / "other.db"
    raw = sqlite3.connect(other)
    raw.execute("CREATE TABLE videos (id INTEGER PRIMARY KEY, title TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaVersionError, match="no schema_version table"):
        Store(f"sqlite:///{other}")


# -- models and videos --------------------------------------------------------------------------------


def test_register_model_is_idempotent(store: Store) -> None:
    a = store.register_model("fslora-nano", "cfg1", DIM, revision="v1")
    assert store.register_model("fslora-nano", "cfg1", DIM, revision="v1") == a
    b = store.register_model("fslora-nano", "cfg2", DIM, revision="v1")
    assert b.id != a.id and [m.id for m in store.list_models()] == [a.id, b.id]
    with pytest.raises(ValueError, match="embedding_dim"):
        store.register_model("fslora-nano", "cfg1", 16, revision="v1")


def test_add_video_dedupes_by_content_and_model(store: Store, video_file: Path, tmp_path: Path) -> None:
    m1 = store.register_model("m", "h1", DIM).id
    m2 = store.register_model("m", "h2", DIM).id
    info = probe(video_file)
    first, created = store.add_video(video_file, m1, info)
    assert created and first.status == "pending" and first.last_committed_frame == -1
    assert first.content_hash == file_sha256(video_file) and first.n_frames == 20 and first.fps == 10.0
    copy = shutil.copy(video_file, tmp_path / "renamed.avi")
    again, created = store.add_video(copy, m1, info)
    assert not created and again.id == first.id  # same bytes, same model: the same video
    other_model, created = store.add_video(video_file, m2, info)
    assert created and other_model.id != first.id  # another embedding space indexes it again
    other_file = write_video(tmp_path / "cam2.avi", level=200)
    _, created = store.add_video(other_file, m1, probe(other_file))
    assert created
    assert [v.id for v in store.list_videos(model_id=m1)] == [first.id, first.id + 2]
    assert store.stats()["videos"] == 3
    with pytest.raises(KeyError):
        store.add_video(other_file, 999, VideoInfo(other_file, 10.0, 20, 32, 24, 2.0, "MJPG", "opencv"))


def test_status_is_checked_in_code_and_in_the_database(store: Store, video_file: Path) -> None:
    vid = add(store, video_file, store.register_model("m", "h", DIM).id)
    store.set_status(vid, "failed", error="decoder crashed")
    record = store.get_video(vid)
    assert (record.status, record.error) == ("failed", "decoder crashed")
    assert record.updated_at >= record.created_at
    with pytest.raises(ValueError, match="status"):
        store.set_status(vid, "paused")
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(text("UPDATE videos SET status = 'paused' WHERE id = :id"), {"id": vid})


# -- batches, resume point, reads ---------------------------------------------------------------------


def test_write_batch_advances_resume_point(store: Store, video_file: Path) -> None:
    rng = np.random.default_rng(0)
    model = store.register_model("m", "h", DIM)
    vid = add(store, video_file, model.id)
    batch1 = [frame_write(0, 2, rng, masks=True), frame_write(5, 0, rng), frame_write(10, 3, rng)]
    ids1 = store.write_batch(vid, batch1)
    assert len(ids1) == 5 and ids1.dtype == np.int64
    record = store.get_video(vid)
    assert record.last_committed_frame == 10 and record.resume_frame == 11 and record.status == "indexing"
    ids2 = store.write_batch(vid, [frame_write(15, 1, rng)])
    assert store.get_video(vid).last_committed_frame == 15 and ids2[0] > ids1[-1]
    # a batch at or before the resume point (a crashed run replaying) is refused
    with pytest.raises(ValueError, match="last committed frame 15"):
        store.write_batch(vid, [frame_write(15, 1, rng)])
    with pytest.raises(ValueError, match="increase"):
        store.write_batch(vid, [frame_write(25, 1, rng), frame_write(20, 1, rng)])
    assert store.list_frames(vid) == [(0, 0.0, 2), (5, 0.5, 0), (10, 1.0, 3), (15, 1.5, 1)]

    # embeddings come back bit-exact, by id order, in chunks
    chunks = list(store.iter_embeddings(model.id, chunk_size=2))
    assert [len(ids) for ids, _ in chunks] == [2, 2, 2]
    ids = np.concatenate([c[0] for c in chunks])
    vectors = np.concatenate([c[1] for c in chunks])
    expected = np.concatenate([f.embeddings for f in batch1] + [np.zeros((0, DIM))])
    assert np.array_equal(ids, np.concatenate([ids1, ids2]))
    assert np.array_equal(store.embedding_ids(model.id), ids)
    assert np.array_equal(vectors[:5], expected)
    assert np.array_equal(store.get_embeddings([ids1[3], ids1[0]]), expected[[3, 0]])

    # a search result: detections in the asked order with frame and video, unknown ids left out
    hits = store.fetch_detections([ids1[4], 10_000, ids1[0]])
    assert [h.id for h in hits] == [ids1[4], ids1[0]]
    assert (hits[0].frame_index, hits[0].timestamp_s, hits[0].video_id, hits[0].video_name) == (10, 1.0, vid,
                                                                                                "cam1.avi")
    assert hits[0].box == pytest.approx(tuple(batch1[2].boxes[2])) and hits[0].score == pytest.approx(
        batch1[2].scores[2])
    in_frame = store.frame_detections(vid, 10)
    assert len(in_frame) == 3 and [h.score for h in in_frame] == sorted(batch1[2].scores, reverse=True)

    routing = store.get_routing(vid, 0)
    masks = routing[("det", "layers.0.blocks.0.mlp.fc1")]
    written = next(iter(batch1[0].masks.values()))
    assert masks.shape == (2, 6, 5) and np.abs(masks - written).max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
    assert store.get_routing(vid, 5) == {}


def test_write_batch_is_one_transaction(store: Store, video_file: Path) -> None:
    """A failure in the middle of a batch (here the database itself refuses a detection, after the frame
    rows went in) leaves no trace: no frames, no detections, and the resume point unchanged."""
    rng = np.random.default_rng(1)
    vid = add(store, video_file, store.register_model("m", "h", DIM).id)
    store.write_batch(vid, [frame_write(0, 1, rng)])
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER refuse_big BEFORE INSERT ON detections WHEN NEW.x1 > 1000 "
                          "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"))
    bad = frame_write(10, 2, rng)
    bad.boxes[1] = [2000.0, 0.0, 2010.0, 10.0]
    with pytest.raises(IntegrityError, match="refused by test trigger"):
        store.write_batch(vid, [frame_write(5, 2, rng, masks=True), bad])
    stats = store.stats()
    assert (stats["frames"], stats["detections"], stats["routing_thumbnails"]) == (1, 1, 0)
    assert store.get_video(vid).last_committed_frame == 0


def test_write_batch_validates_shapes(store: Store, video_file: Path) -> None:
    rng = np.random.default_rng(2)
    vid = add(store, video_file, store.register_model("m", "h", DIM).id)
    wrong_dim = FrameWrite(0, 0.0, np.zeros((1, 4)), np.ones(1), np.ones((1, DIM + 1), np.float32))
    with pytest.raises(ValueError, match=r"frame 0: .* do not match \(N, 4\), \(N,\), \(N, 8\)"):
        store.write_batch(vid, [wrong_dim])
    nan = frame_write(0, 1, rng)
    nan.embeddings[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        store.write_batch(vid, [nan])
    assert store.stats()["frames"] == 0


def test_remove_video_cascades(store: Store, video_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    model = store.register_model("m", "h", DIM)
    keep = add(store, write_video(tmp_path / "keep.avi", level=120), model.id)
    gone = add(store, video_file, model.id)
    kept_ids = store.write_batch(keep, [frame_write(0, 2, rng, masks=True)])
    gone_ids = store.write_batch(gone, [frame_write(0, 3, rng, masks=True), frame_write(5, 1, rng)])
    removed = store.remove_video(gone)
    assert sorted(removed.tolist()) == sorted(gone_ids.tolist())
    with store.engine.connect() as conn:  # the database itself deleted the children (ON DELETE CASCADE)
        frames = conn.execute(text("SELECT COUNT(*) FROM frames WHERE video_id = :v"), {"v": gone}).scalar()
        assert frames == 0
        assert conn.execute(text("SELECT COUNT(*) FROM detections")).scalar() == 2
        assert conn.execute(text("SELECT COUNT(*) FROM routing_thumbnails")).scalar() == 2
    assert np.array_equal(store.embedding_ids(model.id), kept_ids)
    assert store.fetch_detections(gone_ids) == []
    with pytest.raises(KeyError):
        store.remove_video(gone)
    stats = store.stats()
    assert (stats["videos"], stats["frames"], stats["detections"]) == (1, 1, 2)
    assert stats["videos_by_status"]["indexing"] == 1 and stats["db_bytes"] > 0


# -- configuration --------------------------------------------------------------------------------------


def test_app_config_yaml_defaults_match_the_dataclass(tmp_path: Path) -> None:
    on_disk = yaml.safe_load(DEFAULTS_FILE.read_text())
    assert set(on_disk) == {f.name for f in fields(AppConfig)}
    assert AppConfig.from_yaml(DEFAULTS_FILE) == AppConfig()
    assert AppConfig().db_url == "sqlite:///data/fslora.db"
    override = tmp_path / "mine.yaml"
    override.write_text("data_dir: /srv/ps\nann_threshold: 5000\n")
    config = AppConfig.from_yaml(override, sample_fps=1.0)
    assert (config.ann_threshold, config.sample_fps, config.max_resolution) == (5000, 1.0, 4096)
    assert config.db_url == "sqlite:////srv/ps/fslora.db" and config.index_dir == Path("/srv/ps/indexes")
    assert AppConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(("values", "field"), [
    ({"sample_fps": 0}, "sample_fps"),
    ({"hnsw_m": -4}, "hnsw_m"),
    ({"decode_backend": "ffmpeg"}, "decode_backend"),
    ({"ann_kind": "ivf"}, "ann_kind"),
    ({"search_threads": -1}, "search_threads"),
    ({"score_thresh": 1.5}, "score_thresh"),
    ({"sampel_fps": 2.0}, "sampel_fps"),
])
def test_app_config_rejects_bad_values(values: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AppConfig.from_dict(values)


# -- PostgreSQL through the same code -------------------------------------------------------------------


def _postgres_bin_dir() -> Path | None:
    """The bin folder of a local PostgreSQL server install (initdb, pg_ctl), if any."""
    candidates = [Path(p).resolve().parent for p in (shutil.which("pg_ctl"),) if p]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()), None)


@pytest.fixture(scope="module")
def postgres_url() -> str:
    """A throw-away PostgreSQL server (initdb in a temp dir, unix socket only, as a non-root user)."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed")
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (Debian package postgresql) on this machine")
    root = Path(tempfile.mkdtemp(prefix="fslora-pg-"))
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "fslora", "--auth=trust", "--encoding=UTF8",
           "--no-sync")
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
           f"-k {root} -c listen_addresses= -c fsync=off", "start")
        yield f"postgresql+psycopg://fslora@/postgres?host={root}"
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_same_code_on_postgresql(postgres_url: str, video_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    with Store(postgres_url) as store:
        model = store.register_model("m", "h", DIM)
        vid = add(store, video_file, model.id)
        other = add(store, write_video(tmp_path / "cam2.avi", level=200), model.id)
        assert not store.add_video(video_file, model.id, probe(video_file))[1]
        ids = store.write_batch(vid, [frame_write(0, 2, rng, masks=True), frame_write(5, 3, rng)])
        kept = store.write_batch(other, [frame_write(0, 1, rng)])
        assert store.get_video(vid).resume_frame == 6
        with pytest.raises(ValueError, match="last committed frame 5"):
            store.write_batch(vid, [frame_write(5, 1, rng)])
        got_ids, vectors = next(iter(store.iter_embeddings(model.id)))
        assert np.array_equal(got_ids, np.concatenate([ids, kept])) and vectors.dtype == np.float32
        assert [h.id for h in store.fetch_detections(ids[::-1])] == ids[::-1].tolist()
        assert store.get_routing(vid, 0)[("det", "layers.0.blocks.0.mlp.fc1")].shape == (2, 6, 5)
        assert store.list_frames(vid) == [(0, 0.0, 2), (5, 0.5, 3)]
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(text("UPDATE videos SET status = 'paused' WHERE id = :id"), {"id": vid})
        assert sorted(store.remove_video(vid).tolist()) == sorted(ids.tolist())
        stats = store.stats()
        counts = (stats["videos"], stats["frames"], stats["detections"], stats["routing_thumbnails"])
        assert counts == (1, 1, 1, 0)
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE schema_version SET version = 7"))
    with pytest.raises(SchemaVersionError, match="schema version 7"):
        Store(postgres_url)
