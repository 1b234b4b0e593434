"""Indexing throughput: the whole pipeline (decode thread -> detect -> SQLite + FAISS) vs detect alone.

A clip of the first `--clip-s` seconds of a video (default vtest.avi) is written as MJPG; its frames
sampled at `--fps` are
  detect-only  - decoded up front (not timed), then `model.detect` in batches of `--batch` (timed);
  end-to-end   - `Engine.index_video` on a fresh data folder (decode, detect, commit per batch, vector
                 adds and index saves, all timed).
pipeline efficiency = end-to-end frames/s / detect-only frames/s (1.0 = decoding and writing are fully
hidden behind inference; the target is >= 0.85). Decode-only frames/s is reported too. Each mode runs
`--repeats` times alternately; efficiency is given from the best runs and from the medians. On a busy
machine wall times swing by tens of percent, so the CPU seconds of both modes are reported as well:
`pipeline_cpu_overhead` (extra CPU of the pipeline over detect alone) is the stable figure.

The model is a random nano model (configs/models/nano.yaml, so the real input size and proposal counts)
unless `--model` names a checkpoint; it runs on the CPU unless `--device` says otherwise.

With `--baseline CHECKPOINT`, that model indexes the same clip end to end in the same loop (runs
alternate), and `speedup_vs_baseline` = end-to-end frames/s of `--model` / the baseline's (best runs).

Prints one JSON document. Usage:
    python bench/bench_indexing.py                       # vtest.avi, 8 s clip, 2 fps, batch 4
    python bench/bench_indexing.py --threads 2 --repeats 3
    python bench/bench_indexing.py --model weights/fslora-mobilenetv2-real \
        --baseline weights/fslora-nano-synthps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a plain checkout
from app.config import AppConfig  # noqa: E402
from app.engine import Engine  # noqa: E402
from app.video import open_video  # noqa: E402
from fslora.models import FSLoRAPersonSearch, PersonSearchConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = Path(os.environ.get("FSLORA_TEST_VIDEO", Path.home() / ".cache" / "fslora" / "vtest.avi"))


def write_clip(source: Path, target: Path, seconds: float) -> Path:
    """The first `seconds` of `source` as an MJPG AVI (decoded like any user video)."""
    with open_video(source) as reader:
        n = min(reader.info.n_frames, round(seconds * reader.info.fps))
        frames = reader.frames(range(n))
        fps = reader.info.fps
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return target


def load_model(source: str | None, device: str, proposals: int | None) -> FSLoRAPersonSearch:
    if source:
        if proposals is not None:
            raise SystemExit("--proposals applies to the random nano model only (a checkpoint keeps its own)")
        return FSLoRAPersonSearch.from_pretrained(source, device=device)
    d = yaml.safe_load((REPO / "configs" / "models" / "nano.yaml").read_text())
    if proposals is not None:  # the box head (VMamba stage 3 on every RoI) dominates CPU time
        d.setdefault("rpn", {})["post_nms_top_n_test"] = proposals
    torch.manual_seed(0)
    return FSLoRAPersonSearch(PersonSearchConfig.from_dict(d)).to(device).eval()


def time_decode(clip: Path, fps: float, batch: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    with open_video(clip) as reader:
        indices = reader.sample_indices(fps)
        frames = np.concatenate([reader.frames(indices[i:i + batch]) for i in range(0, len(indices), batch)])
    return time.perf_counter() - start, frames


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_detect(model: FSLoRAPersonSearch, frames: np.ndarray, batch: int,
                score_thresh: float) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of detect over all frames."""
    start, cpu = time.perf_counter(), cpu_seconds()
    for i in range(0, len(frames), batch):
        model.detect(list(frames[i:i + batch]), score_thresh=score_thresh)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, cpu_seconds() - cpu


def time_pipeline(model: FSLoRAPersonSearch, clip: Path,
                  config: AppConfig) -> tuple[float, float, dict[str, Any]]:
    """(wall seconds, CPU seconds, counts) of indexing the clip on a fresh data folder."""
    with Engine(config, model=model) as engine:
        start, cpu = time.perf_counter(), cpu_seconds()
        result = engine.index_video(clip)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        return wall, cpu, {"frames": result.frames, "detections": result.detections}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--clip-s", type=float, default=8.0, help="seconds of the video used")
    parser.add_argument("--fps", type=float, default=2.0, help="sampled frames per second")
    parser.add_argument("--batch", type=int, default=4, help="frames per detect call / commit")
    parser.add_argument("--score-thresh", type=float, default=0.5)
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: random nano)")
    parser.add_argument("--baseline", help="a second checkpoint indexed in the same run, for a speed ratio")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--proposals", type=int, help="RPN proposals per image kept for the box head "
                                                      "(default: the model's, 300 for nano)")
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"video {args.video} not found (set FSLORA_TEST_VIDEO or --video)")
    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.device, args.proposals)
    baseline = None
    if args.baseline:
        baseline = FSLoRAPersonSearch.from_pretrained(args.baseline, device=args.device)

    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(args.video, Path(tmp) / "clip.avi", args.clip_s)
        decode_s, frames = time_decode(clip, args.fps, args.batch)
        time_detect(model, frames[: args.batch], args.batch, args.score_thresh)  # warm-up
        detect_runs, pipeline_runs, detect_cpu, pipeline_cpu, counts, baseline_runs = [], [], [], [], {}, []
        for r in range(args.repeats):
            wall, cpu = time_detect(model, frames, args.batch, args.score_thresh)
            detect_runs.append(wall)
            detect_cpu.append(cpu)
            config = AppConfig(data_dir=Path(tmp) / f"data{r}", sample_fps=args.fps, batch_frames=args.batch,
                               score_thresh=args.score_thresh)
            wall, cpu, counts = time_pipeline(model, clip, config)
            pipeline_runs.append(wall)
            pipeline_cpu.append(cpu)
            if baseline is not None:
                config = AppConfig(data_dir=Path(tmp) / f"base{r}", sample_fps=args.fps,
                                   batch_frames=args.batch, score_thresh=args.score_thresh)
                baseline_runs.append(time_pipeline(baseline, clip, config)[0])

    n = len(frames)
    detect_fps = n / min(detect_runs)
    pipeline_fps = n / min(pipeline_runs)
    out = {
        "benchmark": "indexing",
        "video": args.video.name,
        "frame_size": [int(frames.shape[2]), int(frames.shape[1])],
        "sampled_frames": n,
        "sample_fps": args.fps,
        "batch_frames": args.batch,
        "model": args.model or "random nano (configs/models/nano.yaml)",
        "model_input": [model.config.transform.min_size, model.config.transform.max_size],
        "proposals_per_image": model.config.rpn.post_nms_top_n_test,
        "device": args.device,
        "torch_threads": args.threads,
        "detections_written": counts.get("detections"),
        "decode_only_fps": round(n / decode_s, 2),
        "detect_only_fps": round(detect_fps, 3),
        "end_to_end_fps": round(pipeline_fps, 3),
        "pipeline_efficiency": round(pipeline_fps / detect_fps, 3),
        "pipeline_efficiency_median": round(float(np.median(detect_runs) / np.median(pipeline_runs)), 3),
        "detect_runs_s": [round(s, 2) for s in detect_runs],
        "end_to_end_runs_s": [round(s, 2) for s in pipeline_runs],
        # CPU seconds are what other processes on a shared machine disturb least: the pipeline's extra
        # work (decode, writes, index) as a share of inference's
        "detect_cpu_s": [round(s, 2) for s in detect_cpu],
        "end_to_end_cpu_s": [round(s, 2) for s in pipeline_cpu],
        "pipeline_cpu_overhead": round(float(np.median(pipeline_cpu) / np.median(detect_cpu) - 1), 3),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if baseline is not None:
        out["baseline"] = args.baseline
        out["baseline_end_to_end_fps"] = round(n / min(baseline_runs), 3)
        out["baseline_end_to_end_runs_s"] = [round(s, 2) for s in baseline_runs]
        out["speedup_vs_baseline"] = round(min(baseline_runs) / min(pipeline_runs), 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
