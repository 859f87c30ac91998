"""Process-wide settings for the command-line entry points (train, evaluate, bench).

Library functions never call these: they change process state (OpenBLAS's idle threads,
numba's threading layer and glibc's allocator thresholds), which is the application's
choice, not a library's. This module imports nothing heavy, so an entry point can call
configure_blas_threads before its first numpy import.
"""

from __future__ import annotations

import os
import sys

BLAS_THREAD_TIMEOUT = "4"  # OpenBLAS's idle threads spin 2**4 cycles, then sleep


def configure_blas_threads() -> bool:
    """Set OPENBLAS_THREAD_TIMEOUT=4 unless the environment sets it; True if it can still act.

    After each GEMM, OpenBLAS's worker threads spin for 2**28 cycles (~0.1 s) by default,
    on the same 2 cores as the Numba kernels that follow (LIF, im2col/col2im, Adam). Measured
    on the vgg9 SNN training step (T = 5, batch 32, 2 threads): 39.4 -> 33.1 ms/image with
    the timeout at 2**4 cycles; the LIF backward kernels of one step 194 -> 107 ms. OpenBLAS
    reads the variable once, when it loads (numpy's first import): call this before importing
    numpy. Returns False if numpy is already imported (then it only sets the variable for
    child processes). Results do not change: only how the idle threads wait.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT)
    return "numpy" not in sys.modules


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
