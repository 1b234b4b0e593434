"""Crash safety of the indexer, with real processes: `python -m app index` is killed with SIGKILL in the
middle of a video, then run again; the FAISS file is deleted or corrupted, then `reindex` / opening
restores it. SQLite is the truth: no duplicate rows, no orphan vectors, the video completes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from model_factory import tiny_model

from app.cli import main
from app.store import Store
from app.vector_index import VectorIndex, index_path
from app.video import sample_indices
from fslora.data.synthps import render_video

REPO = Path(__file__).resolve().parent.parent
FPS, DURATION_S, SAMPLE_FPS = 4.0, 10.0, 2.0  # 40 frames, 20 sampled




def cli_command(*argv: object) -> list[str]:
    return [sys.executable, "-m", "app", *map(str, argv)]


def cli(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*argv), cwd=REPO, capture_output=True, text=True, timeout=180)


def last_committed(db: Path) -> int:
    """The video's resume point, read with plain sqlite3 while the indexer writes (WAL allows it)."""
    if not db.exists():
        return -1
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT last_committed_frame FROM videos").fetchone()
    except sqlite3.OperationalError:  # the schema is not created yet
        return -1
    return -1 if row is None else int(row[0])


def assert_consistent(data: Path, expected_frames: list[int]) -> None:
    """Frame rows = the sampled frames once each; FAISS file ids = detection ids."""
    with Store(f"sqlite:///{data / 'fslora.db'}") as store:
        (video,) = store.list_videos()
        frames = store.list_frames(video.id)
        assert video.status == "done"
        assert [f[0] for f in frames] == expected_frames  # each sampled frame exactly once
        ids = store.embedding_ids(video.model_id)
        assert len(ids) == sum(f[2] for f in frames) == len(np.unique(ids)) > 0
        saved = VectorIndex.load(index_path(data / "indexes", video.model_id))
        assert np.array_equal(saved.ids(), ids)  # no orphan and no missing vector


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("crash")
    checkpoint = tiny_model().save_pretrained(root / "ckpt")
    video = root / "walk.mp4"
    render_video(video, seed=5, size=(192, 320), fps=FPS, duration_s=DURATION_S, n_people=4)
    expected = sample_indices(int(FPS * DURATION_S), FPS, SAMPLE_FPS)
    assert len(expected) == 20
    return {"root": root, "checkpoint": checkpoint, "video": video, "expected": expected}


@pytest.fixture(scope="module")
def crashed_and_resumed(setup: dict) -> dict:
    """Kill the indexer after its third committed batch (of 2 frames), look, then run it again."""
    data = setup["root"] / "data"
    db = data / "fslora.db"
    args = ("index", setup["video"], "--model", setup["checkpoint"], "--data-dir", data, "--fps", SAMPLE_FPS,
            "--batch", 2, "--score-thresh", 0, "--threads", 1, "--no-progress")
    proc = subprocess.Popen(cli_command(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_after = setup["expected"][5]  # the last frame of the third batch
    deadline = time.monotonic() + 150
    while last_committed(db) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the indexer ended before it could be killed"

    with Store(f"sqlite:///{db}") as store:
        (video,) = store.list_videos()
        at_kill = {"status": video.status, "frames": [f[0] for f in store.list_frames(video.id)],
                   "detections": len(store.embedding_ids(video.model_id))}
    rerun = cli(*args)
    return {"data": data, "at_kill": at_kill, "rerun": rerun}


def test_killed_mid_video_keeps_whole_batches(setup: dict, crashed_and_resumed: dict) -> None:
    at_kill = crashed_and_resumed["at_kill"]
    assert at_kill["status"] == "indexing"
    n = len(at_kill["frames"])
    assert 6 <= n < 20 and n % 2 == 0  # whole batches only: the batch in flight was lost, not half-written
    assert at_kill["frames"] == setup["expected"][:n]


def test_rerun_completes_without_duplicates_or_orphans(setup: dict, crashed_and_resumed: dict) -> None:
    rerun = crashed_and_resumed["rerun"]
    assert rerun.returncode == 0, rerun.stderr
    assert "done: video 1 walk.mp4: 20 frames indexed" in rerun.stdout
    assert_consistent(crashed_and_resumed["data"], setup["expected"])


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_damaged_index_file_is_restored(setup: dict, crashed_and_resumed: dict, damage: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Through `app.cli.main` in-process (the same code as `python -m app`, without a new interpreter)."""
    data = crashed_and_resumed["data"]
    file = index_path(data / "indexes", 1)
    good = VectorIndex.load(file).ids()

    def spoil() -> None:
        if damage == "delete":
            file.unlink()
        else:
            raw = bytearray(file.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            file.write_bytes(bytes(raw))

    spoil()
    capsys.readouterr()
    assert main(["reindex", "--data-dir", str(data)]) == 0
    out, _ = capsys.readouterr()
    assert f"model 1: index rebuilt from the database, {len(good)} vectors" in out
    assert np.array_equal(VectorIndex.load(file).ids(), good)

    spoil()  # and opening the app repairs it too
    assert main(["stats", "--json", "--data-dir", str(data)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["models_detail"][0]["index_vectors"] == len(good)
    assert err.count("rebuilding vector index") == 1  # said once, as a warning
    assert np.array_equal(VectorIndex.load(file).ids(), good)
    assert_consistent(data, setup["expected"])
