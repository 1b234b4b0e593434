"""`python app.py` on a fresh data folder: the bundled trained checkpoint, the demo video indexed in the
background, the file route serving nothing outside the media folders, and clear errors for bad flags."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_ui_support import REPO, AppServer, write_app_config

from app.engine import BUNDLED_CHECKPOINT
from app.ui_setup import DEMO_SEED, RANDOM_MODEL_NAME
from fslora.models import PersonSearchConfig


@pytest.fixture(scope="module")
def first_launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    root = tmp_path_factory.mktemp("first-launch")
    config = write_app_config(root / "app.yaml", sample_fps=0.25)  # the 8 s demo -> 2 sampled frames
    app = AppServer(root / "data", "--config", str(config), "--demo", "synth", log_name="first-launch.log")
    app.start()
    yield app
    app.stop()


def test_first_launch_indexes_the_demo_with_the_bundled_model(first_launch: AppServer):
    from gradio_client import Client

    client = Client(first_launch.url, verbose=False, download_files=False)
    deadline = time.monotonic() + 240
    videos: list[dict] = []
    while time.monotonic() < deadline:
        videos = client.predict(api_name="/videos")
        if videos and videos[0]["status"] == "done":
            break
        time.sleep(2)
    assert [v["video"] for v in videos] == [f"synthps-demo-seed{DEMO_SEED}.mp4"]
    assert videos[0]["status"] == "done" and videos[0]["frames indexed"] == 2
    model = client.predict(api_name="/model")
    bundled = PersonSearchConfig.from_yaml(BUNDLED_CHECKPOINT / "config.json").name
    assert model["untrained"] is False and model["name"] == bundled
    assert model["source"] == str(BUNDLED_CHECKPOINT)
    assert not (first_launch.data_dir / "models" / RANDOM_MODEL_NAME).exists()  # no fallback was made
    assert "UNTRAINED" not in first_launch.log()


@pytest.mark.parametrize("target", ["/etc/passwd", "DB", "APP"])
def test_file_route_refuses_files_outside_the_media_folders(first_launch: AppServer, target: str):
    path = {"/etc/passwd": "/etc/passwd", "DB": str((first_launch.data_dir / "fslora.db").resolve()),
            "APP": str(REPO / "app.py")}[target]
    for route in ("gradio_api/file=", "file="):
        response = httpx.get(first_launch.url + route + path, timeout=10)
        assert response.status_code in (403, 404), (route, path, response.status_code)
        assert "root:" not in response.text and "SQLite format" not in response.text


def test_file_route_serves_the_demo_media(first_launch: AppServer):
    demo = (first_launch.data_dir / "demo" / f"synthps-demo-seed{DEMO_SEED}.mp4").resolve()
    response = httpx.get(first_launch.url + "gradio_api/file=" + str(demo), timeout=30)
    assert response.status_code == 200 and response.content == demo.read_bytes()


def test_bad_model_flag_exits_with_a_clear_error(tmp_path: Path):
    done = subprocess.run([sys.executable, str(REPO / "app.py"), "--data-dir", str(tmp_path / "data"),
                           "--model", str(tmp_path / "no-such-checkpoint"), "--demo", "none"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: --model" in done.stdout and "no such checkpoint folder" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_bad_flag_values_are_refused(tmp_path: Path):
    done = subprocess.run([sys.executable, str(REPO / "app.py"), "--max-upload-mb", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--max-upload-mb must be positive" in done.stderr
