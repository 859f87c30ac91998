"""Process-wide settings for the command-line entry points (train, evaluate, bench).

Library functions never call this: it changes process state (numba's threading layer and
glibc's allocator thresholds), which is the application's choice, not a library's.
"""

from __future__ import annotations

import os


def configure_runtime() -> None:
    """Pick numba's workqueue threading layer and keep freed large buffers in the heap.

    - numba's default OpenMP layer spins its threads after each parallel kernel, and numpy's
      OpenBLAS threads spin after each GEMM: alternating the two on 2 cores made the vgg9 ANN
      forward 2-3x slower here (236 ms vs 90 ms per batch of 32). The workqueue layer's threads
      sleep when idle. An explicit NUMBA_THREADING_LAYER in the environment wins.
    - glibc returns freed blocks above 32 MB to the OS with munmap, so every re-allocation of
      an im2col buffer page-faults again; raising M_MMAP_THRESHOLD / M_TRIM_THRESHOLD (the same
      as MALLOC_MMAP_THRESHOLD_=1 GiB MALLOC_TRIM_THRESHOLD_=4 GiB) keeps them for reuse.
    """
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 4 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: keep the defaults
        pass
