"""Low-level ops: the selective scan (Mamba's S6 recurrence) with reference, chunked and CUDA backends."""

from fslora.ops.selective_scan import BACKENDS, selective_scan

__all__ = ["BACKENDS", "selective_scan"]
