"""What machine a benchmark ran on, and its float32 matrix-multiply peak measured here."""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np

from pipeline.environment import cpu_model, gpu_name


def matmul_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """Median GFLOP/s of an n x n float32 matrix product with NumPy's BLAS (all cores)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def describe_machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "gpu": gpu_name() or "none",
        "python": platform.python_version(),
    }
