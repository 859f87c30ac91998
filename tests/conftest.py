"""Shared pytest setup for refsnn's tests.

Hypothesis profiles (STYLE 2.6), chosen by the HYPOTHESIS_PROFILE environment variable; the
default is ``ci`` when the CI variable is set, else ``dev``:

- ``dev``: max_examples=25, deadline=None (numba's first call compiles or loads its cache,
  which can take seconds and would trip a deadline).
- ``ci``: the same, plus derandomize=True (the same examples on every run), database=None
  (no example database written in CI) and print_blob=True (a failure prints the blob that
  reproduces it with @reproduce_failure).

Helpers shared by several test files (gradcheck.py, naive.py, strategies.py, tolerances.py)
live next to this file; tests/ has no __init__.py, so this directory is put on sys.path once
here and they are imported as top-level modules (``from gradcheck import adjoint_check``).

Debugging a kernel: run ``NUMBA_DISABLE_JIT=1 python -m pytest ...`` to execute every numba
kernel as plain Python (tracebacks, pdb, coverage).
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True, max_examples=25
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def numba_threads():
    """``run(n, fn, *args)``: call fn with numba's thread count set to n; restored afterwards.

    For the parallel-equals-serial tests (STYLE 2.5): skipped, with a reason, if numba was
    started with fewer than 2 threads (NUMBA_NUM_THREADS=1), where there is nothing to compare.
    """
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip(f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}: no parallelism to test")
    saved = numba.get_num_threads()

    def run(n, fn, *args):
        numba.set_num_threads(n)
        try:
            return fn(*args)
        finally:
            numba.set_num_threads(saved)

    yield run
    numba.set_num_threads(saved)


@pytest.fixture
def numba_one_thread():
    """Run the test with numba at 1 thread (restored afterwards); opt in per module with
    ``pytestmark = pytest.mark.usefixtures("numba_one_thread")``.

    Why: on the shared 2-core machines, with other jobs running, every parallel kernel launch
    waits for a second worker to be scheduled; a whole-model gradient check (hundreds of tiny
    launches) measured 17 s with 2 threads and 0.8 s with 1. Results are unaffected: the
    parallel kernels are bit-identical to serial, which the ``numba_threads`` tests check with
    2 threads explicitly.
    """
    import numba

    saved = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(saved)
