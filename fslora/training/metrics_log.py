"""``metrics.jsonl``: one JSON object per line - step records (losses, lr) and epoch evaluations.

Records carry ``"kind": "step"`` (with ``step``, ``epoch``, ``lr``, ``loss``, each named loss,
``grad_norm``) or ``"kind": "eval"`` (with ``epoch``, ``step`` and the protocol's figures). Lines are
flushed as they are written so a crashed run keeps its history. A resumed run first drops what was
logged after its checkpoint (`truncate`), so the file never holds a step twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only JSON-lines file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(_finite(record)) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def truncate(self, step: int, epoch: int) -> int:
        """Keep records up to optimizer step ``step`` and evaluations up to ``epoch``; returns drops."""
        records = self.read()
        kept = [
            r
            for r in records
            if (r.get("kind") == "eval" and r.get("epoch", 0) <= epoch)
            or (r.get("kind") != "eval" and r.get("step", 0) <= step)
        ]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return len(records) - len(kept)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file (a torn last line from a crash is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN / inf: they are written as null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
