"""Keep freed heap memory in the process so big CPU tensors reuse it instead of faulting in fresh pages.

glibc serves every allocation above its mmap threshold (128 KiB, raised dynamically up to 32 MiB) with a
fresh mmap and unmaps it on free, so each new multi-MB tensor costs one page fault per 4 KiB page. On our
2-core CI VMs that is ~2.5 us per fault: a 6 MB elementwise op took 4.7 ms where the arithmetic takes 0.3
(bench/bench_scan.py; a nano dual-stream forward went from 0.34 s to 0.26 s on one thread). Raising the
mmap and trim thresholds keeps freed blocks in the heap for the next tensor of that size.

Process-wide, so the entry points (app, train, evaluate, benchmarks) call it, not the library on import.
The cost: freed memory is returned to the OS only when more than ``trim_bytes`` sit free at the top of
the heap, so the resident size stays near its peak. Set ``FSLORA_KEEP_FREED_MEMORY=0`` to opt out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
OPT_OUT_ENV = "FSLORA_KEEP_FREED_MEMORY"


@functools.cache
def keep_freed_memory(mmap_bytes: int = 1 << 30, trim_bytes: int = 1 << 30) -> bool:
    """Tell glibc malloc to serve tensors up to ``mmap_bytes`` from the heap; True when it took effect.

    A no-op returning False off Linux/glibc, under ``FSLORA_KEEP_FREED_MEMORY=0``, or when mallopt
    refuses a value (it then keeps its defaults).
    """
    if os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and friends have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, mmap_bytes) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_bytes) == 1
    if not applied:
        logger.debug("mallopt refused the thresholds; keeping glibc's defaults")
    return applied
