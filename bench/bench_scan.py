"""Benchmark the selective-scan backends on CPU and print one JSON document.

For each shape: forward time of the sequential reference, of the chunked scan and of our compiled CPU
kernel (``backend="cpu"``, what ``auto`` uses on CPU; best of N), their ratios, forward+backward times
of both (training), the errors against the reference, and the chunked scan's peak memory measured as
max RSS of a fresh subprocess (tracemalloc cannot see torch's allocations).

    python bench/bench_scan.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fslora.ops import selective_scan  # noqa: E402
from fslora.utils.cpu_memory import keep_freed_memory  # noqa: E402

SHAPES = {  # name -> (batch, dim, d_state, seqlen)
    "b2_d192_n1_L4096": (2, 192, 1, 4096),
    "b1_d384_n1_L56x94": (1, 384, 1, 56 * 94),
}


def make_inputs(b: int, d: int, n: int, L: int, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """VMamba-like inputs: A = -exp(A_log), softplus'd delta with bias, shared-per-direction B/C."""
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "u": torch.randn(b, d, L, generator=gen),
        "delta": torch.randn(b, d, L, generator=gen),
        "A": -torch.exp(torch.randn(d, n, generator=gen) * 0.5),
        "B": torch.randn(b, 4, n, L, generator=gen),
        "C": torch.randn(b, 4, n, L, generator=gen),
        "D": torch.ones(d),
        "delta_bias": torch.randn(d, generator=gen) * 0.1,
    }
    return {k: v.requires_grad_(requires_grad) for k, v in inputs.items()}


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def forward_backward(inputs: dict[str, torch.Tensor], backend: str = "chunked") -> None:
    y = selective_scan(**inputs, delta_softplus=True, backend=backend)
    y.sum().backward()
    for t in inputs.values():
        t.grad = None


def peak_rss_mib(shape: tuple[int, int, int, int], backward: bool) -> dict[str, float]:
    """Run one chunked call in a fresh interpreter; report its RSS before the call and the peak during it."""
    cmd = [sys.executable, __file__, "--child-memory", ",".join(map(str, shape))]
    if backward:
        cmd.append("--child-backward")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout)


def _proc_status_mib(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the RSS high-water mark so the peak excludes the transient cost of importing torch."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child_memory(shape_arg: str, backward: bool) -> None:
    b, d, n, L = map(int, shape_arg.split(","))
    inputs = make_inputs(b, d, n, L, requires_grad=backward)
    reset = _reset_peak_rss()
    before = _proc_status_mib("VmRSS")
    if backward:
        forward_backward(inputs)
    else:
        with torch.no_grad():
            selective_scan(**inputs, delta_softplus=True, backend="chunked")
    peak = _proc_status_mib("VmHWM") if reset else None
    if peak is None or before is None:  # no /proc: fall back to the process-lifetime peak
        before, peak = 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
              "scan_peak_delta_mib": round(peak - before, 1)}
    print(json.dumps(result))


def bench_shape(shape: tuple[int, int, int, int], repeats: int) -> dict:
    inputs = make_inputs(*shape)
    with torch.no_grad():
        run = lambda backend: selective_scan(**inputs, delta_softplus=True, backend=backend)  # noqa: E731
        ref_s = best_time(lambda: run("reference"), max(1, repeats // 2))
        chunked_s = best_time(lambda: run("chunked"), repeats)
        kernel_s = best_time(lambda: run("cpu"), repeats)
        y_ref, y_chk, y_ker = run("reference"), run("chunked"), run("cpu")
    grad_inputs = make_inputs(*shape, requires_grad=True)
    fwd_bwd_s = best_time(lambda: forward_backward(grad_inputs), repeats)
    kernel_fwd_bwd_s = best_time(lambda: forward_backward(grad_inputs, "cpu"), repeats)
    return {
        "shape_b_d_n_L": list(shape),
        "reference_forward_ms": round(ref_s * 1e3, 2),
        "chunked_forward_ms": round(chunked_s * 1e3, 2),
        "speedup_chunked_vs_reference": round(ref_s / chunked_s, 1),
        "cpu_kernel_forward_ms": round(kernel_s * 1e3, 2),
        "speedup_cpu_kernel_vs_reference": round(ref_s / kernel_s, 1),
        "chunked_forward_backward_ms": round(fwd_bwd_s * 1e3, 2),
        "cpu_kernel_forward_backward_ms": round(kernel_fwd_bwd_s * 1e3, 2),
        "max_abs_err_rel_to_scale": float((y_chk - y_ref).abs().max() / y_ref.abs().max()),
        "cpu_kernel_max_abs_err_rel_to_scale": float((y_ker - y_ref).abs().max() / y_ref.abs().max()),
        "chunked_memory_forward": peak_rss_mib(shape, backward=False),
        "chunked_memory_forward_backward": peak_rss_mib(shape, backward=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-backward", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    heap_reuse = keep_freed_memory()  # as the app and the CLIs run (FSLORA_KEEP_FREED_MEMORY=0: off)
    if args.child_memory:
        child_memory(args.child_memory, args.child_backward)
        return
    report = {
        "benchmark": "selective_scan",
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "keep_freed_memory": heap_reuse,
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "processor": platform.processor() or platform.machine(),
        "results": {name: bench_shape(shape, args.repeats) for name, shape in SHAPES.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
