"""`python -m app`: index, search, stats, export, reindex and remove without the UI.

Exit codes: 0 success, 2 bad input (a missing path, a file that is not a usable video, an unknown
video or detection, a click on nobody, no model), 1 any other failure, 130 interrupted (Ctrl-C; the
committed batches are kept and the same command resumes). Errors are one line on stderr, never a
traceback (`--debug` shows it). When several files are indexed, a file that is not a usable video is
reported and the others are still indexed (exit code 2); a path that does not exist stops the command
before anything is indexed (a typo should not start an hour of work on the other paths).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from app.config import AppConfig
from app.engine import EXPORT_FIELDS, Engine
from app.search import SearchFilters, SearchResult
from app.video import VideoError

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                              ".flv", ".ts", ".3gp"})
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("app.cli")


class InputError(ValueError):
    """Bad input named on the command line (exit code 2)."""


# -- arguments ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, help="folder of the database and indexes (default: config)")
    common.add_argument("--config", type=Path, help="YAML file of AppConfig overrides (configs/app.yaml)")
    common.add_argument("--debug", action="store_true", help="log details and show tracebacks")

    parser = argparse.ArgumentParser(prog="python -m app",
                                     description="FSLoRA video person search (headless).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", parents=[common], help="index video files or folders (recursive)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--fps", type=float, help="frames per second sampled (default: config sample_fps)")
    p.add_argument("--model", help="checkpoint folder or Hub repo id (default: the bundled checkpoint)")
    p.add_argument("--revision", help="Hub revision of --model")
    p.add_argument("--device", help="cpu | cuda (default: CUDA when available)")
    p.add_argument("--batch", type=int, help="frames per inference batch and commit")
    p.add_argument("--score-thresh", type=float, help="minimum person score stored")
    p.add_argument("--routing", action="store_true", help="store expert-mask thumbnails per frame")
    p.add_argument("--threads", type=int, help="torch CPU threads for the model (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("search", parents=[common], help="find a person across all indexed videos")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--detection-id", type=int, help="query = this stored detection")
    how.add_argument("--video", help="query = the person clicked in this video (id or name) ...")
    how.add_argument("--image", type=Path, help="query = this image crop of a person (needs the model)")
    p.add_argument("--frame", type=int, help="... at this frame index")
    p.add_argument("--x", type=float, help="... at this x (pixels)")
    p.add_argument("--y", type=float, help="... and this y (pixels)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--in-videos", help="comma-separated video ids to search in")
    p.add_argument("--start", type=float, help="earliest timestamp (s)")
    p.add_argument("--end", type=float, help="latest timestamp (s)")
    p.add_argument("--min-score", type=float, default=0.0, help="minimum detection score")
    p.add_argument("--exclude-own-video", action="store_true", help="leave out the query's own video")
    p.add_argument("--model", help="model for --image (default: the bundled checkpoint)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("stats", parents=[common], help="counts, videos and indexes")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("export", parents=[common], help="every detection as CSV or JSON")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--out", type=Path, help="output file (default: stdout)")

    p = sub.add_parser("reindex", parents=[common], help="rebuild the FAISS indexes from the database")
    p.add_argument("--model-id", type=int, help="only this model (default: all)")

    p = sub.add_parser("remove", parents=[common], help="delete a video and its detections")
    p.add_argument("video", metavar="VIDEO", help="video id or name")
    return parser


def load_config(args: argparse.Namespace) -> AppConfig:
    config = AppConfig.from_yaml(args.config) if args.config else AppConfig()
    changes: dict[str, Any] = {}
    if args.data_dir is not None:
        changes["data_dir"] = args.data_dir
    for arg, field in (("fps", "sample_fps"), ("batch", "batch_frames"), ("score_thresh", "score_thresh")):
        if getattr(args, arg, None) is not None:
            changes[field] = getattr(args, arg)
    return replace(config, **changes) if changes else config


def video_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, plus the video files (by extension) found recursively in the folders named."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            out.extend(sorted(found))
        elif path.exists():
            out.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return out


# -- commands -----------------------------------------------------------------------------------------


def cmd_index(engine: Engine, args: argparse.Namespace) -> int:
    from app.indexer import IndexOptions  # noqa: PLC0415  (keeps the other commands light)

    files = video_files(args.paths)
    if not files:
        raise InputError("no video files found in " + ", ".join(map(str, args.paths)))
    options = IndexOptions(capture_routing=args.routing)
    failed = 0
    for path in files:
        bar = None if args.no_progress else _progress_bar(path.name)
        try:
            result = engine.index_video(path, options=options, progress=bar.update if bar else None)
        except VideoError as exc:
            failed += 1
            _error(str(exc))
            continue
        finally:
            if bar is not None:
                bar.close()
        n_frames = len(engine.store.list_frames(result.video.id))
        print(f"{result.outcome}: video {result.video.id} {result.video.name}: {n_frames} frames indexed, "
              f"{result.detections} new detections")
    return EXIT_BAD_INPUT if failed else EXIT_OK


class _progress_bar:  # noqa: N801  (used like a function)
    """tqdm over sampled frames, fed with `app.indexer.Progress`; shown from the first finished batch
    (a file refused at open leaves no empty bar behind its error line)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._bar: Any = None

    def update(self, progress: Any) -> None:
        if self._bar is None:
            from tqdm import tqdm  # noqa: PLC0415

            self._bar = tqdm(desc=self._name, unit="frame", total=progress.frames_total, file=sys.stderr,
                             leave=False)
        self._bar.n = progress.frames_done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def cmd_search(engine: Engine, args: argparse.Namespace) -> int:
    if args.top_k <= 0:
        raise InputError(f"--top-k must be positive, got {args.top_k}")
    videos = None
    if args.in_videos:
        videos = frozenset(engine.resolve_video(v).id for v in args.in_videos.split(",") if v.strip())
    filters = SearchFilters(video_ids=videos, start_s=args.start, end_s=args.end, min_score=args.min_score,
                            exclude_query_video=args.exclude_own_video)
    if args.detection_id is not None:
        result = engine.search_detection(args.detection_id, args.top_k, filters)
    elif args.video is not None:
        missing = [f"--{n}" for n in ("frame", "x", "y") if getattr(args, n) is None]
        if missing:
            raise InputError(f"--video needs {', '.join(missing)} as well")
        video = engine.resolve_video(args.video)
        result = engine.search_click(video.id, args.frame, args.x, args.y, args.top_k, filters)
    else:
        result = engine.search_image(_read_image(args.image), args.top_k, filters)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_result(result)
    return EXIT_OK


def _read_image(path: Path) -> Any:
    import cv2  # noqa: PLC0415

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _print_result(result: SearchResult) -> None:
    q = result.query.detection
    if q is not None:
        print(f"query: detection {q.id} in video {q.video_id} ({q.video_name}) frame {q.frame_index} "
              f"at {q.timestamp_s:.2f} s")
    else:
        print(f"query: {result.query.source}")
    if not result.hits:
        print("no matches")
        return
    print(f"{'rank':>4} {'sim':>6} {'det':>7} {'video':<24} {'frame':>6} {'time s':>8} {'score':>5}  box")
    for rank, h in enumerate(result.hits, 1):
        box = ",".join(f"{v:.0f}" for v in h.box)
        print(f"{rank:>4} {h.similarity:6.3f} {h.detection_id:>7} {h.video_name[:24]:<24} {h.frame_index:>6} "
              f"{h.timestamp_s:8.2f} {h.score:5.2f}  {box}")
    print(f"{len(result.appearances)} appearance(s):")
    for a in result.appearances:
        print(f"  {a.similarity:6.3f} {a.video_name} {a.start_s:.1f}-{a.end_s:.1f} s "
              f"({len(a.hits)} hits, best: detection {a.best.detection_id} frame {a.best.frame_index})")


def cmd_stats(engine: Engine, args: argparse.Namespace) -> int:
    stats = engine.stats()
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
        return EXIT_OK
    print(f"database: {engine.config.db_url}")
    print(f"models {stats['models']}, videos {stats['videos']}, frames {stats['frames']}, "
          f"detections {stats['detections']}, routing thumbnails {stats['routing_thumbnails']}")
    print("videos by status: " + ", ".join(f"{k} {v}" for k, v in stats["videos_by_status"].items()))
    for m in stats["models_detail"]:
        print(f"model {m['id']} {m['name']}: {m['index_vectors']} vectors in {m['index_file']}")
    for v in stats["videos_detail"]:
        error = f" ({v['error']})" if v["error"] else ""
        print(f"video {v['id']} {v['name']}: {v['status']}{error}, {v['indexed_frames']} frames indexed")
    return EXIT_OK


def cmd_export(engine: Engine, args: argparse.Namespace) -> int:
    rows = engine.export_rows()
    if args.out is None:
        _write_rows(rows, args.format, sys.stdout)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as fh:
            n = _write_rows(rows, args.format, fh)
        print(f"{n} detections written to {args.out}")
    return EXIT_OK


def _write_rows(rows: Iterator[dict[str, Any]], fmt: str, fh: IO[str]) -> int:
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(fh, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
        return n
    fh.write("[")  # streamed, so a large export never sits in memory
    for row in rows:
        fh.write(("," if n else "") + "\n" + json.dumps(row))
        n += 1
    fh.write("\n]\n")
    return n


def cmd_reindex(engine: Engine, args: argparse.Namespace) -> int:
    if args.model_id is not None:
        engine.store.get_model(args.model_id)  # KeyError -> bad input
    for model_id, count in engine.reindex(args.model_id).items():
        print(f"model {model_id}: index rebuilt from the database, {count} vectors")
    return EXIT_OK


def cmd_remove(engine: Engine, args: argparse.Namespace) -> int:
    video = engine.resolve_video(args.video)
    removed = engine.remove_video(video.id)
    print(f"removed video {video.id} {video.name} and its {removed} detections")
    return EXIT_OK


COMMANDS = {"index": cmd_index, "search": cmd_search, "stats": cmd_stats, "export": cmd_export,
            "reindex": cmd_reindex, "remove": cmd_remove}


# -- entry point --------------------------------------------------------------------------------------


def _error(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)


@contextmanager
def _native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """Sends what C/C++ libraries print on file descriptor 2 (FFmpeg, decord and OpenCV messages about
    a bad file) to /dev/null, while Python's own stderr (our error line, tqdm, logging) keeps the
    real terminal. Only when sys.stderr is the process's fd 2 (not under a test's capture)."""
    try:
        real = sys.stderr.fileno() == 2 if enabled else False
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _native_stderr_silenced(not args.debug), _log_to_stderr(args.debug):
        try:
            return _run(args)
        except BrokenPipeError:  # output piped into `head` and the like: stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_FAILURE


@contextmanager
def _log_to_stderr(debug: bool) -> Iterator[None]:
    """Our loggers' warnings (debug: everything) on stderr for the duration of a command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("app", "fslora")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    engine = None
    try:
        engine = Engine(load_config(args), model_source=getattr(args, "model", None),
                        revision=getattr(args, "revision", None), device=getattr(args, "device", None),
                        threads=getattr(args, "threads", None))
        return COMMANDS[args.command](engine, args)
    except (ValueError, KeyError, FileNotFoundError) as exc:  # bad input named by the user
        if args.debug:
            raise
        _error(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _error("interrupted; committed batches are kept, run the same command again to resume")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001  (one line, not a traceback)
        if args.debug:
            raise
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    finally:
        if engine is not None:
            engine.close()
