"""Helpers shared by the UI tests (no tests of its own): a cheap random checkpoint, the app as a real
subprocess on a free port, and the Chromium flags of the browser tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

from fslora.models import FSLoRAPersonSearch, PersonSearchConfig

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def small_random_checkpoint(folder: Path, seed: int = 0, name: str = "small-random-nano") -> Path:
    """A random nano model cheap on CPU: frames resized to 192 px and 30 proposals (the RoI box head,
    VMamba's last stage run per proposal, dominates the nano model's time)."""
    config = PersonSearchConfig.from_yaml(REPO / "configs" / "models" / "nano.yaml")
    config.name = name
    config.transform.min_size, config.transform.max_size = 192, 320
    config.rpn.post_nms_top_n_test = 30
    torch.manual_seed(seed)
    return FSLoRAPersonSearch(config).save_pretrained(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`python app.py ...` as a subprocess; `start()` waits until it answers HTTP."""

    def __init__(self, data_dir: Path, *args: str, log_name: str = "app-server.log") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.data_dir = data_dir
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / log_name
        self.command = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(self.port),
                        "--data-dir", str(data_dir), *args]
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> AppServer:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONPATH": str(REPO)}
        env.pop("GRADIO_TEMP_DIR", None)  # the app puts it inside its data folder
        self._log = open(self.log_path, "w")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "config", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app did not answer within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()


def write_app_config(path: Path, **fields: object) -> Path:
    """A small AppConfig YAML (fast sampling for CPU tests)."""
    lines = [f"{k}: {v}" for k, v in {"sample_fps": 1.0, "batch_frames": 2, "score_thresh": 0.5,
                                       **fields}.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
