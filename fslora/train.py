"""Train a person-search model from a YAML config.

    python -m fslora.train --config configs/train/NAME.yaml [--out DIR] [--set key=value ...]
    python -m fslora.train --out DIR --resume [--set epochs=30]     # continue a run exactly

- ``--out`` defaults to ``runs/<config file name>``; a folder that already holds a run is refused unless
  ``--resume`` is given.
- ``--resume`` continues from the newest checkpoint with the config saved in the run folder
  (``RUN/config.yaml``); ``--set`` may still change it (e.g. more epochs). ``--config`` is optional then.
- ``--set a.b=value`` overrides any config field (value parsed as YAML).
- ``--max-steps N`` stops after N optimizer steps in total, with a checkpoint (smoke tests, time slots).
See `fslora.training.loop` for the run folder layout and `fslora.training.config` for the fields.
Exit status 2 for a bad invocation or config (the message names the field), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from fslora.training.config import TrainConfig, apply_overrides, load_yaml_with_base
from fslora.utils.cpu_memory import keep_freed_memory

logger = logging.getLogger("fslora.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fslora.train", description="Train an FSLoRA person-search model."
    )
    p.add_argument("--config", type=Path, default=None, help="training YAML (configs/train/*.yaml)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=0.01 (repeatable)",
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many optimizer steps in total"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The run's config and folder from the command line (ValueError / FileNotFoundError when bad)."""
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.resume:
        if args.out is None and args.config is None:
            raise ValueError("--resume needs --out (the run folder) or --config (runs/<config name>)")
        out = args.out if args.out is not None else Path("runs") / args.config.stem
        saved = out / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: {saved} not found (is {out} a run folder?)")
        raw = load_yaml_with_base(saved)
        apply_overrides(raw, args.overrides)
        try:
            return TrainConfig.from_dict(raw, base_dir=out), out
        except ValueError as e:
            raise ValueError(f"{saved}: {e}") from e
    if args.config is None:
        raise ValueError("--config is required (unless --resume continues an existing run)")
    config = TrainConfig.from_yaml(args.config, args.overrides)
    return config, args.out if args.out is not None else Path("runs") / args.config.stem


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = shlex.join(["python", "-m", "fslora.train", *argv])
    try:
        config, out = resolve_config(args)
        keep_freed_memory()
        if args.threads is not None:
            import torch

            torch.set_num_threads(max(1, args.threads))
        from fslora.training.loop import Trainer  # heavy imports after the cheap checks

        trainer = Trainer(
            config,
            out,
            command=command,
            resume=args.resume,
            max_steps=args.max_steps,
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = trainer.fit()
    if summary["stopped"]:
        logger.info(
            "stopped at step %d; continue with: python -m fslora.train --out %s --resume",
            summary["step"],
            out,
        )
        return 130 if trainer.stop_requested else 0
    logger.info("done: %s", summary["final"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
