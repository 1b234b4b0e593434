"""Run the SynthPS ablation (the paper's adapter table) end to end and write its table.

    python -m fslora.ablation --eval-root data/synthps-seed1 [--rows baseline lora slm flm fslora] \
        [--out runs/ablation] [--jobs 2] [--threads 1]

Each row is ``configs/train/nano_synthps_<row>.yaml`` (``--prefix mnv2_ablation``: the MobileNetV2 rows,
``configs/train/mnv2_ablation_<row>.yaml``): the same start, data, budget and seed, only the adapter
switches differ. A row is trained with ``python -m fslora.train``
into ``OUT/<row>`` and evaluated with ``python -m fslora.evaluate`` on ``--eval-root`` (a SynthPS split
whose seed training never saw) into ``OUT/<row>/eval.json``. Each step runs in its own process, ``--jobs``
rows at a time with ``--threads`` torch threads each (on a 2-core machine two 1-thread jobs beat one
2-thread job). Re-running continues: a finished row is not retrained or re-evaluated, an interrupted
training resumes from its last checkpoint. The table goes to ``OUT/ablation.md`` and ``OUT/ablation.json``.
Each row's search figures are also compared with the reference row (the baseline when it ran, else the
first row) by a paired bootstrap over the queries (`fslora.evaluation.compare`): the difference in mAP with
its 95 % interval, so a win inside the noise reads as one.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fslora.evaluation.compare import DEFAULT_RESAMPLES, as_dict, compare_reports

ROWS: dict[str, tuple[str, str]] = {
    # row -> (SLM, FLM) as the paper's table marks them; "baseline" has no adapter at all
    "baseline": ("-", "-"),
    "lora": ("", ""),
    "slm": ("x", ""),
    "flm": ("", "x"),
    "fslora": ("x", "x"),
}
ROW_TITLES = {
    "baseline": "NAE baseline (backbone fine-tuned, no adapter)",
    "lora": "LoRA (one per task)",
    "slm": "SLM only",
    "flm": "FLM only",
    "fslora": "FSLoRA (SLM + FLM)",
}
_TRAINABLE = re.compile(r"params total (\d+), trainable (\d+)")


def row_config(config_dir: Path, row: str, prefix: str = "nano_synthps") -> Path:
    return config_dir / f"{prefix}_{row}.yaml"


def _run(cmd: list[str], log: Path) -> None:
    """One step of a row in its own process; its output goes to ``log`` (appended across restarts)."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed with exit status {code}; see {log}")


def run_row(row: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) and evaluate one row; returns its figures."""
    run = args.out / row
    log = args.out / f"{row}.log"
    run.parent.mkdir(parents=True, exist_ok=True)
    python = [sys.executable]
    threads = ["--threads", str(args.threads)]
    start = time.perf_counter()
    if not (run / "final" / "config.json").is_file():
        train = [*python, "-m", "fslora.train", "--out", str(run), "--no-progress", *threads]
        if (run / "config.yaml").is_file():
            train += ["--resume"]
        else:
            train += ["--config", str(row_config(args.config_dir, row, args.prefix))]
        _run(train, log)
    eval_json = run / "eval.json"
    if not eval_json.is_file():
        evaluate = [
            *python,
            "-m",
            "fslora.evaluate",
            "--checkpoint",
            str(run / "final"),
            "--dataset",
            "synthps",
            "--root",
            str(args.eval_root),
            "--json",
            str(eval_json),
            "--no-progress",
            *threads,
        ]
        if args.max_queries is not None:
            evaluate += ["--max-queries", str(args.max_queries)]
        _run(evaluate, log)
    report = json.loads(eval_json.read_text())
    match = None
    if log.is_file():
        found = _TRAINABLE.findall(log.read_text())
        match = found[-1] if found else None
    return {
        "row": row,
        "title": ROW_TITLES[row],
        "slm": ROWS[row][0],
        "flm": ROWS[row][1],
        "params_total": int(match[0]) if match else None,
        "params_trainable": int(match[1]) if match else None,
        "eval_split": report["split"],
        "eval_json": str(eval_json),
        "metrics": report["metrics"],
        "seconds_this_call": round(time.perf_counter() - start, 1),
    }


def add_paired_comparisons(results: list[dict[str, Any]]) -> str | None:
    """Give every row ``vs_reference``: its paired bootstrap against the reference row (the baseline if
    it ran, else the first row); returns the reference row's name (None when nothing could be paired)."""
    if not results:
        return None
    reference = next((r for r in results if r["row"] == "baseline"), results[0])
    try:
        ref_report = json.loads(Path(reference["eval_json"]).read_text())
    except (KeyError, OSError, json.JSONDecodeError):
        return None
    if "per_query" not in ref_report:
        return None
    for r in results:
        if r is reference:
            continue
        try:
            report = json.loads(Path(r["eval_json"]).read_text())
            paired = compare_reports(report, ref_report, names=(r["row"], reference["row"]))
        except (KeyError, OSError, ValueError) as e:  # an old report without per-query figures
            r["vs_reference"] = {"error": str(e)}
            continue
        r["vs_reference"] = {"row": reference["row"], **{p.metric: as_dict(p) for p in paired}}
    return reference["row"]


def _paired_cell(r: dict[str, Any], reference: str | None) -> str:
    if r["row"] == reference:
        return "(reference)"
    paired = r.get("vs_reference", {}).get("mAP")
    if paired is None:
        return "-"
    low, high, mark = 100 * paired["ci_low"], 100 * paired["ci_high"], " *" if paired["significant"] else ""
    return f"{100 * paired['difference']:+.1f} [{low:+.1f}, {high:+.1f}]{mark}"


def format_markdown(results: Sequence[dict[str, Any]], eval_root: Path, reference: str | None = None) -> str:
    header = "| row | SLM | FLM | trainable params | mAP | top-1 | top-5 | det AP | det recall |"
    rule = "|---|:-:|:-:|--:|--:|--:|--:|--:|--:|"
    if reference is not None:
        header += f" mAP - {reference} [95 % CI] |"
        rule += "--:|"
    lines = [f"SynthPS ablation, evaluated on `{eval_root}` (a seed training never saw).", "", header, rule]
    for r in results:
        m = r["metrics"]
        trainable = f"{r['params_trainable']:,}" if r["params_trainable"] is not None else "?"
        line = (
            f"| {r['title']} | {r['slm']} | {r['flm']} | {trainable} | {100 * m['mAP']:.1f} | "
            f"{100 * m['top1']:.1f} | {100 * m['top5']:.1f} | {100 * m['det_ap']:.1f} | "
            f"{100 * m['det_recall']:.1f} |"
        )
        lines.append(line + (f" {_paired_cell(r, reference)} |" if reference is not None else ""))
    if reference is not None:
        resamples = f"{DEFAULT_RESAMPLES:,} resamples"
        lines += ["", f"Paired bootstrap over the queries ({resamples}); * = the interval excludes 0."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fslora.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-root", type=Path, required=True, help="SynthPS split to evaluate every row on")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="rows to run")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"), help="folder of the row runs")
    p.add_argument("--config-dir", type=Path, default=Path("configs/train"), help="where the row YAMLs are")
    p.add_argument("--prefix", default="nano_synthps",
                   help="row YAMLs are PREFIX_<row>.yaml (mnv2_ablation: the MobileNetV2 rows)")
    p.add_argument("--jobs", type=int, default=2, help="rows trained / evaluated at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--max-queries", type=int, default=None, help="evaluate on this many queries (all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.eval_root.is_dir():
        print(f"error: --eval-root {args.eval_root}: no such folder", file=sys.stderr)
        return 2
    configs = [row_config(args.config_dir, r, args.prefix) for r in args.rows]
    missing = [str(c) for c in configs if not c.is_file()]
    if missing:
        print(f"error: row configs not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.jobs < 1 or args.threads < 1:
        print("error: --jobs and --threads must be >= 1", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {row: pool.submit(run_row, row, args) for row in args.rows}
    results, failed = [], []
    for row, future in futures.items():
        try:
            results.append(future.result())
        except RuntimeError as e:
            failed.append(row)
            print(f"error: row {row}: {e}", file=sys.stderr)
    results.sort(key=lambda r: list(ROWS).index(r["row"]))  # the paper's row order, whatever ran first
    args.out.mkdir(parents=True, exist_ok=True)
    reference = add_paired_comparisons(results)
    table = format_markdown(results, args.eval_root, reference)
    (args.out / "ablation.md").write_text(table)
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
