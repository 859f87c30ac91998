"""Weight-sparse conv forward / VJP (refsnn/ops/sparse_conv.py) against the dense reference.

Stride 1, any kernel and padding, weights masked at densities 0, 0.05, 0.3, 1, inputs dense or
sparse: float64 to 1e-12 relative of the largest |value|, float32 to 1e-5; the weight gradient
compared at the live weights (pruned weights get none).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from refsnn.ops.event import pack_event_weights, unpack_event_grad
from refsnn.ops.sparse_conv import (conv2d_sparse_backward, conv2d_sparse_forward,
                                    conv2d_sparse_forward_keep)
from strategies import seeds

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

RTOL = {np.float64: 1e-12, np.float32: 1e-5}


@st.composite
def stride1_cases(draw):
    kh, kw, pad = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * pad), 8))
    w = draw(st.integers(max(1, kw - 2 * pad), 8))
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return (n, c_in, h, w), (c_out, c_in, kh, kw), pad


def _close(actual, expected, dtype, what):
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert actual.dtype == np.dtype(dtype) and err <= RTOL[dtype] * scale, (what, err)


@given(case=stride1_cases(), rho_x=st.sampled_from([0.1, 1.0]),
       rho_w=st.sampled_from([0.0, 0.05, 0.3, 1.0]), seed=seeds,
       dtype=st.sampled_from([np.float64, np.float32]))
def test_sparse_conv_equals_the_dense_conv_at_the_mask(case, rho_x, rho_w, seed, dtype):
    (xs, ws, pad), rng = case, np.random.default_rng(seed)
    x = (rng.standard_normal(xs) * (rng.random(xs) < rho_x)).astype(dtype)
    w = (rng.standard_normal(ws) * (rng.random(ws) < rho_w)).astype(dtype)
    ew = pack_event_weights(w)
    y = conv2d_sparse_forward(x, ew, padding=pad)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    _close(y, naive.conv2d_forward_naive(x64, w64, stride=1, padding=pad), dtype, "y")
    gy = rng.standard_normal(y.shape).astype(dtype)
    g = conv2d_sparse_backward(gy, x, ew, padding=pad)
    ref_x, ref_w = naive.conv2d_backward_naive(gy.astype(np.float64), x64, w64, stride=1,
                                               padding=pad)
    _close(g.x, ref_x, dtype, "grad_x")
    _close(unpack_event_grad(ew, g.w), ref_w * (w != 0), dtype, "grad_w at the live weights")
    assert conv2d_sparse_backward(gy, x, ew, padding=pad, need_x=False).x is None
    only_x = conv2d_sparse_backward(gy, x, ew, padding=pad, need_w=False)
    assert only_x.w is None
    np.testing.assert_array_equal(only_x.x, g.x)


@given(case=stride1_cases(), n=st.integers(1, 7), block=st.integers(1, 8), seed=seeds,
       dtype=st.sampled_from([np.float64, np.float32]))
def test_sample_blocks_change_no_output_and_grad_x_bit(case, n, block, seed, dtype):
    """Blocks of B samples (the last one padded with zero planes) give y and grad_x bit for bit
    as one sample per block (each output sums the live weights in entry order either way), and
    grad_w to rounding (its sums run over blocks)."""
    (xs, ws, pad), rng = case, np.random.default_rng(seed)
    xs = (n,) + xs[1:]
    x = (rng.standard_normal(xs) * (rng.random(xs) < 0.5)).astype(dtype)
    w = (rng.standard_normal(ws) * (rng.random(ws) < 0.5)).astype(dtype)
    ew = pack_event_weights(w)
    y1, xp1 = conv2d_sparse_forward_keep(x, ew, padding=pad, block=1)
    yb, xpb = conv2d_sparse_forward_keep(x, ew, padding=pad, block=block)
    np.testing.assert_array_equal(yb, y1)
    gy = rng.standard_normal(y1.shape).astype(dtype)
    g1 = conv2d_sparse_backward(gy, x, ew, padding=pad, xp=xp1)
    gb = conv2d_sparse_backward(gy, x, ew, padding=pad, xp=xpb)
    np.testing.assert_array_equal(gb.x, g1.x)
    _close(gb.w, g1.w.astype(np.float64), dtype, "grad_w over blocks")
    np.testing.assert_array_equal(conv2d_sparse_backward(gy, x, ew, padding=pad,
                                                         block=block).w, gb.w)


def test_kept_padded_planes_give_the_same_backward_bit_for_bit():
    rng = np.random.default_rng(8)
    x = (rng.random((3, 4, 6, 7)) < 0.3).astype(np.float64)
    w = rng.standard_normal((5, 4, 3, 3)) * (rng.random((5, 4, 3, 3)) < 0.4)
    ew = pack_event_weights(w)
    y, xp = conv2d_sparse_forward_keep(x, ew, padding=1)
    np.testing.assert_array_equal(y, conv2d_sparse_forward(x, ew, padding=1))
    gy = rng.standard_normal(y.shape)
    kept = conv2d_sparse_backward(gy, x, ew, padding=1, xp=xp)
    fresh = conv2d_sparse_backward(gy, x, ew, padding=1)
    np.testing.assert_array_equal(kept.x, fresh.x)
    np.testing.assert_array_equal(kept.w, fresh.w)
    with pytest.raises(ValueError, match="xp must be the forward's"):
        conv2d_sparse_backward(gy, x, ew, padding=1, xp=xp[:, :, :-1])


def test_parallel_equals_serial(numba_threads):
    rng = np.random.default_rng(4)
    x = (rng.random((19, 3, 7, 6)) < 0.3).astype(np.float32)  # 19 samples, blocks of 2:
    w = (rng.standard_normal((5, 3, 3, 3)) * (rng.random((5, 3, 3, 3)) < 0.4)).astype(np.float32)
    ew = pack_event_weights(w)
    gy = rng.standard_normal((19, 5, 7, 6)).astype(np.float32)

    def run():  # 10 blocks (the last one half empty) in chunks of 2 blocks
        return (conv2d_sparse_forward(x, ew, padding=1, block=2),
                conv2d_sparse_backward(gy, x, ew, padding=1, block=2))

    (y1, g1), (y2, g2) = numba_threads(1, run), numba_threads(2, run)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(g1.x, g2.x)
    np.testing.assert_array_equal(g1.w, g2.w)  # fixed chunks, summed in chunk order


def test_errors_name_the_argument():
    ew = pack_event_weights(np.ones((2, 3, 3, 3)))
    with pytest.raises(TypeError, match="ew must be"):
        conv2d_sparse_forward(np.zeros((1, 3, 4, 4)), np.ones((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="C_in=4"):
        conv2d_sparse_forward(np.zeros((1, 4, 4, 4)), ew)
    with pytest.raises(ValueError, match="output would be empty"):
        conv2d_sparse_forward(np.zeros((1, 3, 1, 1)), ew)
    with pytest.raises(ValueError, match="block"):
        conv2d_sparse_forward(np.zeros((1, 3, 4, 4)), ew, padding=1, block=0)
    with pytest.raises(ValueError, match="grad_y.shape"):
        conv2d_sparse_backward(np.zeros((1, 2, 3, 3)), np.zeros((1, 3, 4, 4)), ew, padding=1)
