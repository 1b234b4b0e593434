"""Paired comparison of two evaluations of the same queries: is model A's edge over B real or noise?

An ablation row that wins by 0.3 mAP on 480 queries may be noise. Both models answer the same queries, so
the fair test is paired: resample the queries with replacement (a bootstrap), recompute the mean
difference of each per-query figure (AP, top-k hit) each time, and report the 95 % interval of the
difference and the share of resamples in which A came out ahead. The per-query figures come from
``python -m fslora.evaluate --json`` (its ``per_query`` list).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_RESAMPLES",
    "PairedDifference",
    "as_dict",
    "compare_reports",
    "load_report",
    "paired_bootstrap",
]

FIGURES = {"ap": "mAP", "top1": "top1", "top5": "top5", "top10": "top10"}  # per-query key -> metric name
DEFAULT_RESAMPLES = 10_000
_CHUNK = 1000  # resamples drawn at a time (bounds memory to _CHUNK x queries indices)


@dataclass(frozen=True)
class PairedDifference:
    """mean(A) - mean(B) over the shared queries, with its bootstrap interval."""

    metric: str
    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    share_a_ahead: float  # resamples with A > B (ties count half)
    num_queries: int

    @property
    def significant(self) -> bool:
        """Whether the 95 % interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    metric: str = "mAP",
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Bootstrap the mean paired difference of per-query figures ``a[i]`` vs ``b[i]``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{metric}: need equally long 1-D per-query lists, got {a.shape} {b.shape}")
    if a.size == 0:
        raise ValueError(f"{metric}: no queries to compare")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            diff[rng.integers(0, diff.size, size=(min(_CHUNK, resamples - start), diff.size))].mean(axis=1)
            for start in range(0, resamples, _CHUNK)
        ]
    )
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    ahead = float(np.mean(means > 0) + 0.5 * np.mean(means == 0))
    return PairedDifference(
        metric=metric,
        a=float(a.mean()),
        b=float(b.mean()),
        difference=float(diff.mean()),
        ci_low=float(low),
        ci_high=float(high),
        share_a_ahead=ahead,
        num_queries=int(a.size),
    )


def load_report(path: str | Path) -> dict[str, Any]:
    """An ``fslora.evaluate --json`` report that has per-query figures (clear errors otherwise)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such evaluation report") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON evaluation report ({e})") from None
    if not isinstance(report, dict) or not isinstance(report.get("per_query"), list):
        raise ValueError(
            f"{path}: no 'per_query' list; re-run python -m fslora.evaluate --json (reports written before "
            "per-query figures were recorded cannot be compared pairwise)"
        )
    if not report["per_query"]:
        raise ValueError(f"{path}: 'per_query' is empty (no query had its person in the gallery)")
    return report


def _keyed(report: dict[str, Any], name: str) -> dict[tuple[int, str, int], dict[str, Any]]:
    try:
        return {(int(q["query"]), str(q["image"]), int(q["pid"])): q for q in report["per_query"]}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{name}: malformed per_query entry ({e!r})") from None


def compare_reports(
    report_a: dict[str, Any],
    report_b: dict[str, Any],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
) -> list[PairedDifference]:
    """Paired differences (A - B) of every per-query figure both reports have, on the same queries."""
    if report_a.get("split") != report_b.get("split"):
        raise ValueError(
            f"{names[0]} was evaluated on {report_a.get('split')!r} and {names[1]} on "
            f"{report_b.get('split')!r}: a paired comparison needs the same split"
        )
    qa, qb = _keyed(report_a, names[0]), _keyed(report_b, names[1])
    if qa.keys() != qb.keys():
        only_a, only_b = len(qa.keys() - qb.keys()), len(qb.keys() - qa.keys())
        raise ValueError(
            f"the reports scored different queries ({only_a} only in {names[0]}, {only_b} only in "
            f"{names[1]}); evaluate both with the same --max-queries"
        )
    keys = sorted(qa)
    results = []
    for field, metric in FIGURES.items():
        if all(field in qa[k] and field in qb[k] for k in keys):
            a = [float(qa[k][field]) for k in keys]
            b = [float(qb[k][field]) for k in keys]
            results.append(paired_bootstrap(a, b, metric, resamples=resamples, seed=seed))
    return results


def as_dict(result: PairedDifference) -> dict[str, Any]:
    return asdict(result) | {"significant": result.significant}
