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
    - glibc serves blocks above its mmap threshold (at most 32 MiB) with mmap and returns them
      to the OS on free, and trims the heap top above M_TRIM_THRESHOLD: every re-allocation of
      an im2col matrix (up to ~400 MB for vgg9) then page-faults and zero-fills again. The
      former setting here (M_MMAP_THRESHOLD 1 GiB, M_TRIM_THRESHOLD 4 GiB through ctypes'
      default int conversion, which truncated it to 0) made it worse: every free trimmed.
      M_MMAP_MAX = 0 serves every block from the heap and the largest M_TRIM_THRESHOLD keeps
      freed memory there, so a training step reuses the previous step's
      pages (measured: a freed 400 MB array re-allocated with 0 page faults instead of 661).
      The same as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 in the environment.
    """
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]  # (param, int value)
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never trim
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap-served blocks
    except (OSError, AttributeError):  # not glibc: keep the defaults
        pass
