"""refsnn.runtime.configure_runtime: freed large buffers stay in the heap for reuse."""

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
