"""Timing shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def time_interleaved(
    fns: dict[str, Callable[[], Any]], warmup: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of every call, per function; the functions take turns round by round so
    a shared machine's load changes hit all of them alike. With --threads 1, CPU seconds measure the work
    itself rather than the wait for a core, so they are the steadier of the two."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu
