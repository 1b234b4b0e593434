"""Compare two evaluations of the same queries with a paired bootstrap (is A's edge over B real?).

    python -m fslora.compare A.json B.json [--resamples 10000] [--seed 0] [--json OUT]

A.json, B.json: reports of ``python -m fslora.evaluate --json`` on the same split and queries. Prints, per
figure (mAP, top-1/5/10), A, B, A - B with its 95 % bootstrap interval and the share of resamples where A
was ahead. Exit status 2 for unreadable or incomparable reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fslora.evaluation.compare import (
    DEFAULT_RESAMPLES,
    PairedDifference,
    as_dict,
    compare_reports,
    load_report,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fslora.compare", description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="evaluation report of model A (fslora.evaluate --json)")
    p.add_argument("b", type=Path, help="evaluation report of model B, same split and queries")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    p.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    return p


def format_table(results: Sequence[PairedDifference]) -> str:
    lines = ["figure      A        B        A - B [95 % interval]      A ahead", "-" * 64]
    for r in results:
        lines.append(
            f"{r.metric:<7} {100 * r.a:6.2f}   {100 * r.b:6.2f}   {100 * r.difference:+6.2f} "
            f"[{100 * r.ci_low:+6.2f}, {100 * r.ci_high:+6.2f}]{' *' if r.significant else '  '}   "
            f"{100 * r.share_a_ahead:5.1f} %"
        )
    lines.append(f"{results[0].num_queries} paired queries; * = the interval excludes 0" if results else "")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report_a, report_b = load_report(args.a), load_report(args.b)
        results = compare_reports(
            report_a, report_b, resamples=args.resamples, seed=args.seed, names=(str(args.a), str(args.b))
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"A = {args.a} ({report_a.get('model')})\nB = {args.b} ({report_b.get('model')})")
    print(format_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "a": str(args.a),
            "b": str(args.b),
            "split": report_a.get("split"),
            "resamples": args.resamples,
            "seed": args.seed,
            "results": [as_dict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
