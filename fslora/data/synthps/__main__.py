"""Command line: ``python -m fslora.data.synthps --out DIR --seed N [--split standard|tiny] [--video]``.

Without ``--video`` it writes an image split (JPEGs, ``annotations.json``, ``README.md``); with
``--video`` it writes ``--videos`` MP4s of the same identity pool seen by different cameras, each
with a JSON sidecar. Prints a JSON summary (counts, seconds, megabytes) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .presets import PRESETS
from .split import generate_split
from .video import render_video


def _size_mb(root: Path) -> float:
    return round(sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fslora.data.synthps", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (created)")
    ap.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical images")
    ap.add_argument(
        "--split", default="standard", choices=sorted(PRESETS), help="size preset of the image split"
    )
    ap.add_argument(
        "--video", action="store_true", help="render walking-people videos instead of an image split"
    )
    ap.add_argument("--videos", type=int, default=2, help="with --video: how many cameras (one MP4 each)")
    ap.add_argument("--seconds", type=float, default=20.0, help="with --video: length of each video")
    ap.add_argument("--fps", type=float, default=10.0, help="with --video: frame rate")
    ap.add_argument("--people", type=int, default=6, help="with --video: identities in the shared pool")
    ap.add_argument("--workers", type=int, default=1, help="processes rendering the image split")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.video:
        summary: dict = {"videos": []}
        for cam in range(args.videos):
            path = args.out / f"synthps_seed{args.seed}_cam{cam}.mp4"
            side = render_video(
                path, args.seed, camera=cam, fps=args.fps, duration_s=args.seconds, n_people=args.people
            )
            summary["videos"].append(
                {
                    "path": str(path),
                    "frames": side["num_frames"],
                    "boxes": sum(len(f["persons"]) for f in side["frames"]),
                }
            )
    else:
        split = generate_split(
            args.out, args.seed, args.split, workers=max(1, args.workers), progress=not args.no_progress
        )
        summary = {"name": split.name, "stats": split.meta["stats"]}
    seconds = time.perf_counter() - start
    summary.update(out=os.fspath(args.out), seconds=round(seconds, 2), megabytes=_size_mb(args.out))
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
