"""Weight-sparse linear VJP (refsnn/ops/sparse_linear.py) against the dense one at the mask.

Reference: grad_x = grad_y W and grad_w = grad_y^T x in float64 numpy (W masked, the weight
gradient compared at the live weights); inputs with densities 0, 0.1, 1 (nonbinary values:
dropout scales spikes), weights at 0, 0.05, 0.3, 1: float64 to 1e-12 relative of the largest
|value|, float32 to 1e-5. Sums in a fixed order: the same bits at any thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refsnn.ops.event import pack_event_weights, unpack_event_grad
from refsnn.ops.sparse_linear import linear_sparse_backward
from strategies import seeds

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def _close(actual, expected, dtype, what):
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert actual.dtype == np.dtype(dtype) and err <= RTOL[dtype] * scale, (what, err)


@given(n=st.integers(1, 6), c_in=st.integers(1, 9), c_out=st.integers(1, 9),
       rho_x=st.sampled_from([0.0, 0.1, 1.0]), rho_w=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
       seed=seeds, dtype=st.sampled_from([np.float64, np.float32]))
def test_sparse_linear_vjp_equals_the_dense_one_at_the_mask(n, c_in, c_out, rho_x, rho_w, seed,
                                                            dtype):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c_in)) * (rng.random((n, c_in)) < rho_x)).astype(dtype)
    w = (rng.standard_normal((c_out, c_in)) * (rng.random((c_out, c_in)) < rho_w)).astype(dtype)
    gy = rng.standard_normal((n, c_out)).astype(dtype)
    ew = pack_event_weights(w)
    g = linear_sparse_backward(gy, x, ew)
    gy64, x64, w64 = gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64)
    _close(g.x, gy64 @ w64, dtype, "grad_x")
    _close(unpack_event_grad(ew, g.w), (gy64.T @ x64) * (w != 0), dtype, "grad_w at the mask")
    only_w = linear_sparse_backward(gy, x, ew, need_x=False)
    only_x = linear_sparse_backward(gy, x, ew, need_w=False)
    assert only_w.x is None and only_x.w is None
    np.testing.assert_array_equal(only_w.w, g.w)
    np.testing.assert_array_equal(only_x.x, g.x)


def test_sums_run_in_entry_and_sample_order():
    """grad_x[n, i] adds the live entries of feature i in increasing output index, grad_w[e]
    the samples in increasing order: float32 sums written out in that order, bit for bit."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((7, 5)) * (rng.random((7, 5)) < 0.6)).astype(np.float32)
    w = (rng.standard_normal((6, 5)) * (rng.random((6, 5)) < 0.6)).astype(np.float32)
    gy = rng.standard_normal((7, 6)).astype(np.float32)
    ew = pack_event_weights(w)
    g = linear_sparse_backward(gy, x, ew)
    gx = np.zeros((7, 5), np.float32)
    for i in range(5):
        for o in range(6):
            if w[o, i] != 0:
                gx[:, i] += w[o, i] * gy[:, o]
    np.testing.assert_array_equal(g.x, gx)
    for e, (o, i) in enumerate(zip(ew.out, np.repeat(np.arange(5), np.diff(ew.ptr)))):
        s = np.float32(0)
        for m in range(7):
            if x[m, i] != 0:
                s += gy[m, o] * x[m, i]
        assert g.w[e] == s


def test_parallel_equals_serial(numba_threads):
    rng = np.random.default_rng(4)
    x = ((rng.random((33, 40)) < 0.1) * 1.25).astype(np.float32)
    w = (rng.standard_normal((30, 40)) * (rng.random((30, 40)) < 0.2)).astype(np.float32)
    gy = rng.standard_normal((33, 30)).astype(np.float32)
    ew = pack_event_weights(w)
    g1, g2 = (numba_threads(k, lambda: linear_sparse_backward(gy, x, ew)) for k in (1, 2))
    np.testing.assert_array_equal(g1.x, g2.x)
    np.testing.assert_array_equal(g1.w, g2.w)


def test_errors_name_the_argument():
    ew = pack_event_weights(np.ones((2, 3)))
    with pytest.raises(TypeError, match="ew must be"):
        linear_sparse_backward(np.zeros((1, 2)), np.zeros((1, 3)), np.ones((2, 3)))
    with pytest.raises(TypeError, match="ew must be"):
        linear_sparse_backward(np.zeros((1, 2)), np.zeros((1, 3)),
                               pack_event_weights(np.ones((2, 3, 1, 1))))
    with pytest.raises(ValueError, match="grad_y.shape"):
        linear_sparse_backward(np.zeros((1, 4)), np.zeros((1, 3)), ew)
    with pytest.raises(ValueError, match="x"):
        linear_sparse_backward(np.zeros((1, 2)), np.zeros((1, 3, 1)), ew)
    with pytest.raises((TypeError, ValueError), match="dtype"):
        linear_sparse_backward(np.zeros((1, 2), np.float32), np.zeros((1, 3)), ew)
