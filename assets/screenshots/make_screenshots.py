"""Regenerates the README screenshots of the app's tabs (library, search, experts, model).

    .venv/bin/python assets/screenshots/make_screenshots.py [--data-dir /tmp/fslora-screenshots]

Runs `app.py` exactly as a first launch does (default model, SynthPS demo video indexed in the
background), drives Debian's Chromium with Playwright, and writes small PNGs next to this file.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _save(page, name: str, width: int = 900) -> None:
    raw = HERE / f".{name}.raw.png"
    page.screenshot(path=str(raw), full_page=True)
    image = Image.open(raw).convert("RGB")
    image.thumbnail((width, 2000))
    image.quantize(colors=128).save(HERE / f"{name}.png", optimize=True)
    raw.unlink()
    print(f"wrote {HERE / (name + '.png')}")


def _click_frame_at(page, x: float, y: float, served_scale: float) -> None:
    img = page.locator("#frame-image img")
    box = img.bounding_box()
    natural_w, natural_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    scale = min(box["width"] / natural_w, box["height"] / natural_h, 1.0)
    off_x, off_y = (box["width"] - natural_w * scale) / 2, (box["height"] - natural_h * scale) / 2
    img.click(position={"x": off_x + x * served_scale * scale, "y": off_y + y * served_scale * scale})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="app data folder (default: a new temp folder)")
    args = parser.parse_args()
    from gradio_client import Client  # noqa: PLC0415
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="fslora-screenshots-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    config = data_dir / "screenshots-app.yaml"
    data_dir.mkdir(parents=True, exist_ok=True)
    config.write_text("sample_fps: 1.0\nbatch_frames: 2\n")
    server = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--data-dir",
                               str(data_dir), "--config", str(config), "--demo", "synth"], cwd=REPO)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        client = Client(url, verbose=False, download_files=False)
        while not (videos := client.predict(api_name="/videos")) or videos[0]["status"] != "done":
            time.sleep(3)
        video_id = int(videos[0]["id"])
        frames = client.predict(video_id, api_name="/frames")
        position = len(frames) // 2
        det = max(frames[position]["detections"], key=lambda d: d["score"])
        x, y = (det["box"][0] + det["box"][2]) / 2, (det["box"][1] + det["box"][3]) / 2

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
                                        headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            expect(page.locator("#header")).to_contain_text("Model:")
            expect(page.locator("#library-table")).to_contain_text("done")
            _save(page, "library")
            page.get_by_role("tab", name="Search").click()
            page.click("#video-dd input")
            page.get_by_role("option").first.click()
            expect(page.locator("#frame-caption")).to_contain_text("frame 0 ")  # the video's first frame
            slider = page.locator("#frame-slider input[type=number]")
            slider.fill(str(position))
            slider.press("Enter")
            shown = f"frame {frames[position]['frame_index']} "
            expect(page.locator("#frame-caption")).to_contain_text(shown)
            _click_frame_at(page, x, y, served_scale=1.0)
            expect(page.locator("#query-info")).to_contain_text("Query:", timeout=60_000)
            page.locator("#results-gallery .thumbnail-item").nth(1).click()
            expect(page.locator("#result-caption")).to_contain_text("similarity")
            _save(page, "search")
            page.get_by_role("tab", name="Experts").click()
            page.click("#experts-btn")
            expect(page.locator("#experts-info")).to_contain_text("layer", timeout=120_000)
            _save(page, "experts")
            page.get_by_role("tab", name="Model").click()
            _save(page, "model")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
