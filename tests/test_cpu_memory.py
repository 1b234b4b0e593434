"""keep_freed_memory: big tensors reuse freed heap (counted as page faults), and the opt-out works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Rounds of two live 40 MB tensors; the minor page faults of 20 rounds after two warm-up rounds. 40 MB is
# above the largest mmap threshold glibc ever picks by itself (32 MiB on 64-bit), so with its defaults every
# such tensor is a fresh mmap that faults in all its pages; with keep_freed_memory the heap block is reused.
CHILD = """
import json, resource, sys
import torch
sys.path.insert(0, {root!r})
from fslora.utils.cpu_memory import keep_freed_memory
applied = keep_freed_memory()
x = torch.ones(10_000_000)
for _ in range(2):  # warm-up: the first rounds fault in either case
    live = [x * 2 for _ in range(2)]
    del live
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    live = [x * 2 for _ in range(2)]
    del live
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({{"applied": applied, "faults": faults}}))
"""


def run_child(opt_out: bool) -> dict:
    env = {**os.environ, "FSLORA_KEEP_FREED_MEMORY": "0" if opt_out else "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_tensors_are_reused_instead_of_faulting_in_fresh_pages():
    tuned, default = run_child(opt_out=False), run_child(opt_out=True)
    assert tuned["applied"] is True and default["applied"] is False
    # glibc default: 40 fresh mmaps of ~9800 4-KiB pages each (with transparent huge pages always on, 2 MiB
    # pages fault instead: ~20 each); tuned: the same heap blocks are reused
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    huge_pages = thp.is_file() and "[always]" in thp.read_text()
    assert default["faults"] > 40 * (10 if huge_pages else 5000)
    assert tuned["faults"] < default["faults"] / 10
