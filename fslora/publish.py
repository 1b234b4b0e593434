"""Turn a finished training run into a release checkpoint: weights + a model card with the evaluation.

    python -m fslora.publish --run runs/ablation/fslora --eval runs/ablation/fslora/eval.json \
        [--stage runs/nano_synthps_pretrain] --out weights/fslora-nano-synthps [--max-mb 25] [--notes card.md]

The run's ``final`` model is re-saved with `save_pretrained` (safetensors + config + model card), and the
card gets the figures of ``--eval`` (a ``python -m fslora.evaluate --json`` report: the split it was
measured on is named) and the exact commands of every stage (``--stage`` runs first, e.g. the backbone
pretraining, then ``--run``), read from the runs' ``command.txt``. Fails without writing anything when the
weights exceed ``--max-mb`` (the app bundles them in git).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fslora.models.checkpoint import WEIGHTS_NAME
from fslora.training.loop import run_commands


def training_text(stages: Sequence[Path], run: Path, report: dict[str, Any]) -> str:
    """The model card's "training data" section: what each stage ran and what the figures measure."""
    lines: list[str] = []
    for i, folder in enumerate([*stages, run], start=1):
        config = folder / "config.yaml"
        lines.append(
            f"Stage {i} (`{folder}`, full config in its `config.yaml`):"
            if config.is_file()
            else f"Stage {i} (`{folder}`):"
        )
        lines += [""] + [f"    {c}" for c in run_commands(folder) or ["(command not recorded)"]] + [""]
    lines.append(
        f"Metrics below: `python -m fslora.evaluate` on `{report.get('root')}` ({report.get('split')}, "
        f"{report.get('gallery_images')} gallery images, score threshold {report.get('score_thresh')}), "
        "a split generated with a seed the training never saw."
    )
    return "\n".join(lines)


def publish(
    run: Path, eval_json: Path, out: Path, *, stages: Sequence[Path] = (), max_mb: float = 25.0,
    notes: Path | None = None,
) -> Path:
    """Write the release folder ``out`` from ``run/final``; ValueError when something does not fit."""
    from fslora.models import FSLoRAPersonSearch

    final = run / "final"
    if not (final / "config.json").is_file():
        raise ValueError(f"{final}: no finished model (config.json missing); has the run ended?")
    report = json.loads(eval_json.read_text())
    metrics = {k: v for k, v in report.get("metrics", {}).items() if isinstance(v, int | float)}
    if not metrics:
        raise ValueError(f"{eval_json}: no metrics (is it a `fslora.evaluate --json` report?)")
    model = FSLoRAPersonSearch.from_pretrained(final, device="cpu")
    text = training_text(stages, run, report)
    if notes is not None:  # data sources, licences, figures measured elsewhere: the card names them all
        text = notes.read_text().strip() + "\n\n" + text
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        staged = model.save_pretrained(
            Path(tmp) / out.name, metrics=metrics, training_data=text
        )
        size_mb = (staged / WEIGHTS_NAME).stat().st_size / 2**20
        if size_mb > max_mb:
            raise ValueError(f"weights are {size_mb:.1f} MB, more than --max-mb {max_mb:g}")
        (staged / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fslora.publish", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run", type=Path, required=True, help="the finished run folder (its final/ is published)"
    )
    p.add_argument("--eval", type=Path, required=True, help="fslora.evaluate --json report of that model")
    p.add_argument("--stage", type=Path, action="append", default=[], help="earlier stage run (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="release folder (replaced)")
    p.add_argument("--max-mb", type=float, default=25.0, help="largest weights file allowed")
    p.add_argument("--notes", type=Path, help="markdown put first in the card (sources...)")
    args = p.parse_args(argv)
    try:
        out = publish(args.run, args.eval, args.out, stages=args.stage, max_mb=args.max_mb, notes=args.notes)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
