"""refsnn.runtime: freed large buffers stay in the heap for reuse; the entry points make
OpenBLAS's idle threads sleep."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from refsnn.runtime import configure_runtime


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_reallocating_a_freed_large_buffer_does_not_fault_again():
    # 64 MB: above glibc's largest mmap threshold (32 MiB), so without the setting every
    # allocation is a fresh mmap whose pages fault (and are zero-filled) on first touch
    configure_runtime()
    size = 64 << 20

    def faults_of_one_allocation():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones(size // 8)  # touches every page
        del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_one_allocation()  # the first touch of the heap pages
    again = [faults_of_one_allocation() for _ in range(3)]
    assert max(again) < 16, f"page faults per re-allocation of 64 MB: {again}"


_PROBE = """
import builtins, os, sys
seen = []
_import = builtins.__import__
def probe(name, *args, **kwargs):
    if name == "numpy" and "numpy" not in sys.modules and not seen:
        seen.append(os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
    return _import(name, *args, **kwargs)
builtins.__import__ = probe
import refsnn.{module}
print(seen[0] if seen else "numpy never imported")
"""


@pytest.mark.parametrize("module", ["train", "evaluate"])
@pytest.mark.parametrize("preset", [None, "8"])
def test_entry_points_set_the_blas_thread_timeout_before_numpy_loads(module, preset):
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when numpy first loads it: the entry points
    must set it before their first numpy import (and keep a value the user set)."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    out = subprocess.run([sys.executable, "-c", _PROBE.format(module=module)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == (preset or "4")
