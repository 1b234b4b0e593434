"""The CLI (`python -m app`): commands, output formats, exit codes and one-line errors, on real files.

Most cases call `app.cli.main` in-process (the same code `python -m app` runs, minus the interpreter
start); one test runs the real module in a subprocess to check exit codes and that stderr holds our one
error line and nothing else (no traceback, no decoder chatter).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from model_factory import tiny_model

from app import engine as engine_module
from app.cli import main
from app.vector_index import VectorIndex, index_path
from fslora.data.synthps import render_video

REPO = Path(__file__).resolve().parent.parent




@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "walk.mp4"
    render_video(path, seed=21, size=(192, 320), fps=4.0, duration_s=8.0, n_people=4)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, walk: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    truncated = root / "truncated.mp4"
    truncated.write_bytes(walk.read_bytes()[: walk.stat().st_size // 2])
    text = root / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    empty = root / "empty.mp4"
    empty.touch()
    return {"truncated": truncated, "text": text, "empty": empty, "missing": root / "does-not-exist.mp4"}


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def index_args(data: Path, checkpoint: Path, *paths: Path, extra: tuple = ()) -> list[object]:
    return ["index", *paths, "--model", checkpoint, "--data-dir", data, "--fps", "1", "--score-thresh", "0",
            "--no-progress", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, walk: Path) -> Path:
    """A data folder with walk.mp4 indexed through the CLI (8 frames at 1 fps)."""
    data = tmp_path_factory.mktemp("data")
    assert main([str(a) for a in index_args(data, checkpoint, walk)]) == 0
    return data


def db_state(capsys: pytest.CaptureFixture[str], data: Path) -> dict:
    code, out, _ = run(capsys, "stats", "--json", "--data-dir", data)
    assert code == 0
    stats = json.loads(out)
    return {k: stats[k] for k in ("videos", "frames", "detections", "routing_thumbnails", "videos_detail")}


# -- the commands -------------------------------------------------------------------------------------


def test_index_stats_and_skip(capsys: pytest.CaptureFixture[str], indexed: Path, checkpoint: Path,
                              walk: Path) -> None:
    code, out, _ = run(capsys, "stats", "--json", "--data-dir", indexed)
    stats = json.loads(out)
    assert code == 0 and stats["videos"] == 1 and stats["frames"] == 8 and stats["detections"] > 0
    assert stats["videos_detail"][0]["status"] == "done" and stats["videos_detail"][0]["indexed_frames"] == 8
    assert stats["models_detail"][0]["index_vectors"] == stats["detections"]
    code, out, _ = run(capsys, "stats", "--data-dir", indexed)
    assert code == 0 and f"detections {stats['detections']}" in out and "walk.mp4: done" in out

    before = db_state(capsys, indexed)
    code, out, _ = run(capsys, *index_args(indexed, checkpoint, walk.parent))  # a folder, recursively
    assert code == 0 and out.startswith("skipped: video 1 walk.mp4")
    assert db_state(capsys, indexed) == before


def test_search_by_detection_and_by_click(capsys: pytest.CaptureFixture[str], indexed: Path) -> None:
    code, out, _ = run(capsys, "search", "--detection-id", 3, "--top-k", 4, "--json", "--data-dir", indexed)
    result = json.loads(out)
    assert code == 0 and len(result["hits"]) == 4
    assert result["query"]["detection_id"] == 3 and result["hits"][0]["detection_id"] == 3
    assert result["hits"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert set(result["hits"][0]) >= {"video_id", "video_name", "frame_index", "timestamp_s", "box", "score"}
    assert result["appearances"] and result["appearances"][0]["best"]["detection_id"] == 3

    x1, y1, x2, y2 = result["query"]["box"]
    frame = result["query"]["frame_index"]
    code, out, _ = run(capsys, "search", "--video", "walk.mp4", "--frame", frame, "--x", (x1 + x2) / 2,
                       "--y", (y1 + y2) / 2, "--json", "--data-dir", indexed)
    clicked = json.loads(out)["query"]
    assert code == 0 and clicked["source"] == "click" and clicked["frame_index"] == frame
    cx1, cy1, cx2, cy2 = clicked["box"]
    assert cx1 <= (x1 + x2) / 2 <= cx2 and cy1 <= (y1 + y2) / 2 <= cy2

    code, out, _ = run(capsys, "search", "--detection-id", 3, "--data-dir", indexed)  # the table
    assert code == 0 and "rank" in out and "appearance(s)" in out


def test_export_csv_and_json(capsys: pytest.CaptureFixture[str], indexed: Path, tmp_path: Path) -> None:
    n = db_state(capsys, indexed)["detections"]
    code, out, _ = run(capsys, "export", "--format", "csv", "--data-dir", indexed)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == n
    assert [int(r["detection_id"]) for r in rows] == list(range(1, n + 1))
    assert {r["video_name"] for r in rows} == {"walk.mp4"}
    code, out, _ = run(capsys, "export", "--format", "json", "--out", tmp_path / "d.json",
                       "--data-dir", indexed)
    exported = json.loads((tmp_path / "d.json").read_text())
    assert code == 0 and len(exported) == n and f"{n} detections written" in out
    assert exported[0]["x2"] == pytest.approx(float(rows[0]["x2"]))


def test_remove_and_reindex(capsys: pytest.CaptureFixture[str], indexed: Path, tmp_path: Path) -> None:
    data = shutil.copytree(indexed, tmp_path / "data")
    n = db_state(capsys, data)["detections"]
    code, out, _ = run(capsys, "remove", "walk.mp4", "--data-dir", data)
    assert code == 0 and f"its {n} detections" in out
    state = db_state(capsys, data)
    assert state["videos"] == state["frames"] == state["detections"] == 0
    assert len(VectorIndex.load(index_path(data / "indexes", 1))) == 0
    code, _, err = run(capsys, "remove", "walk.mp4", "--data-dir", data)
    assert code == 2 and err.startswith("error: no video named 'walk.mp4'")
    code, out, _ = run(capsys, "reindex", "--data-dir", data)
    assert code == 0 and "model 1: index rebuilt from the database, 0 vectors" in out


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated or corrupt"),
    ("text", "not a readable video"),
    ("empty", "file is empty"),
    ("missing", "no such file or folder"),
])
def test_bad_input_is_exit_2_with_one_line_and_no_change(capsys: pytest.CaptureFixture[str], indexed: Path,
                                                         checkpoint: Path, bad_files: dict[str, Path],
                                                         kind: str, message: str) -> None:
    before = db_state(capsys, indexed)
    code, out, err = run(capsys, *index_args(indexed, checkpoint, bad_files[kind]))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert str(bad_files[kind]) in lines[0] and "Traceback" not in err
    assert db_state(capsys, indexed) == before


def test_a_bad_file_among_good_ones_does_not_stop_the_others(
        capsys: pytest.CaptureFixture[str], checkpoint: Path, walk: Path, bad_files: dict[str, Path],
        tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(bad_files["text"], folder / "a-notes.mp4")
    shutil.copy(walk, folder / "b-walk.mp4")
    (folder / "readme.txt").write_text("not a video extension: ignored")
    code, out, err = run(capsys, *index_args(tmp_path / "data", checkpoint, folder))
    assert code == 2 and "a-notes.mp4" in err and len(err.strip().splitlines()) == 1
    assert "done: video" in out and "b-walk.mp4: 8 frames indexed" in out


def test_video_with_nobody_is_indexed_empty_and_searches_return_nothing(
        capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path) -> None:
    """A plain colour video. An untrained model scores every region ~0.95, so here "nobody" is the verdict
    of a threshold no score can pass (scores are sigmoids <= 1); what is checked is the app's side: the
    video is indexed with a frame row per sampled frame and 0 detections, and searches find nothing."""
    path = tmp_path / "wall.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for _ in range(30):
        writer.write(np.full((120, 160, 3), (40, 120, 200), np.uint8))
    writer.release()
    data = tmp_path / "data"
    code, out, _ = run(capsys, *index_args(data, checkpoint, path, extra=("--score-thresh", "1.0")))
    assert code == 0 and "wall.avi: 3 frames indexed, 0 new detections" in out
    state = db_state(capsys, data)
    assert state["frames"] == 3 and state["detections"] == 0 and state["videos_detail"][0]["status"] == "done"
    crop = tmp_path / "someone.png"
    cv2.imwrite(str(crop), np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8))
    code, out, _ = run(capsys, "search", "--image", crop, "--model", checkpoint, "--json", "--data-dir", data)
    assert code == 0 and json.loads(out)["hits"] == [] and json.loads(out)["appearances"] == []
    code, _, err = run(capsys, "search", "--video", "wall.avi", "--frame", 10, "--x", 80, "--y", 60,
                       "--data-dir", data)
    assert code == 2 and "hits nobody" in err and "0 people detected" in err


def test_no_model_and_bad_queries_are_clear(capsys: pytest.CaptureFixture[str], indexed: Path, walk: Path,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "BUNDLED_CHECKPOINT", tmp_path / "no-such-checkpoint")
    code, _, err = run(capsys, "index", walk, "--data-dir", tmp_path / "data", "--no-progress")
    assert code == 2 and err.startswith("error: no model:") and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "index", walk, "--model", tmp_path / "nope", "--data-dir", tmp_path / "data")
    assert code == 2 and "cannot load model" in err
    code, _, err = run(capsys, "search", "--detection-id", 9999, "--data-dir", indexed)
    assert code == 2 and err.strip() == "error: no detection with id 9999"
    code, _, err = run(capsys, "search", "--video", "walk.mp4", "--frame", 4, "--data-dir", indexed)
    assert code == 2 and "--video needs --x, --y as well" in err
    code, _, err = run(capsys, "search", "--video", "other.mp4", "--frame", 0, "--x", 1, "--y", 1,
                       "--data-dir", indexed)
    assert code == 2 and "no video named 'other.mp4'" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse: neither --detection-id nor --video
        main(["search", "--data-dir", str(indexed)])
    assert exit_info.value.code == 2


def test_python_dash_m_app_exit_codes_and_clean_stderr(checkpoint: Path, bad_files: dict[str, Path],
                                                       tmp_path: Path) -> None:
    def cli(*argv: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", *map(str, argv)], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    done = cli("index", bad_files["text"], "--model", checkpoint, "--data-dir", tmp_path, "--threads", "1")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr  # no FFmpeg / decord / OpenCV chatter
    assert lines[0].startswith(f"error: video {bad_files['text']}: not a readable video")
    done = cli("stats", "--data-dir", tmp_path)
    assert done.returncode == 0 and "videos 0" in done.stdout and done.stderr == ""
