"""Event-driven conv2d / linear forward (refsnn/ops/event.py) against the dense reference ops.

The event ops add the same products as the dense ops in another order, so they must agree to
rounding: float64 to 1e-12 relative (of the largest |y|), float32 to 1e-5; and exactly where
the exact result is representable (integer weights and inputs). Inputs are sparse (spikes or
sparse analog values), weights masked at densities including 0 (empty) and 1 (full).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from refsnn.ops.conv import conv2d_backward, conv2d_forward
from refsnn.ops.event import (EventWeights, conv2d_event_backward, conv2d_event_forward,
                              linear_event_forward, pack_event_weights, unpack_event_grad)
from refsnn.ops.linear import linear_forward
from strategies import conv2d_configs, linear_configs, seeds

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

DENSITIES = st.sampled_from([0.0, 0.05, 0.3, 1.0])
RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def _sparsify(rng, a, density, binary=False):
    keep = rng.random(a.shape) < density
    return (keep if binary else keep * a).astype(a.dtype)


def _assert_rounding_equal(actual, expected, dtype, what):
    assert actual.shape == expected.shape and actual.dtype == np.dtype(dtype), what
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert err <= RTOL[dtype] * scale, f"{what}: max error {err:.3g}, scale {scale:.3g}"


@given(case=conv2d_configs(max_side=8, max_channels=4, max_batch=3), rho_x=DENSITIES,
       rho_w=DENSITIES, binary=st.booleans(), seed=seeds,
       dtype=st.sampled_from([np.float64, np.float32]))
def test_conv_event_equals_dense(case, rho_x, rho_w, binary, seed, dtype):
    rng = np.random.default_rng(seed)
    x = _sparsify(rng, case.x, rho_x, binary).astype(dtype)
    w = _sparsify(rng, case.w, rho_w).astype(dtype)
    got = conv2d_event_forward(x, pack_event_weights(w), stride=case.stride,
                               padding=case.padding)
    ref = naive.conv2d_forward_naive(x.astype(np.float64), w.astype(np.float64),
                                     stride=case.stride, padding=case.padding)
    what = f"conv2d_event_forward(x={x.shape}, w={w.shape}, s={case.stride}, p={case.padding})"
    _assert_rounding_equal(got, ref, dtype, what)
    if dtype == np.float64:  # and the production dense path, to the same tolerance
        dense = conv2d_forward(x, w, stride=case.stride, padding=case.padding)
        _assert_rounding_equal(got, dense, dtype, what + " vs conv2d_forward")


@given(case=conv2d_configs(max_side=6, max_channels=3), seed=seeds)
def test_conv_event_exact_on_integers(case, seed):
    # small integers: every partial sum is exact in float64, so any summation order agrees
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, case.x.shape).astype(np.float64)
    w = rng.integers(-3, 4, case.w.shape).astype(np.float64)
    got = conv2d_event_forward(x, pack_event_weights(w), stride=case.stride,
                               padding=case.padding)
    np.testing.assert_array_equal(got, naive.conv2d_forward_naive(x, w, stride=case.stride,
                                                                  padding=case.padding))


@given(case=linear_configs(max_batch=4, max_in=20, max_out=6), rho_x=DENSITIES,
       rho_w=DENSITIES, seed=seeds, dtype=st.sampled_from([np.float64, np.float32]))
def test_linear_event_equals_dense(case, rho_x, rho_w, seed, dtype):
    rng = np.random.default_rng(seed)
    x = _sparsify(rng, case.x, rho_x).astype(dtype)
    w = _sparsify(rng, case.w, rho_w).astype(dtype)
    got = linear_event_forward(x, pack_event_weights(w))
    _assert_rounding_equal(got, x.astype(np.float64) @ w.astype(np.float64).T, dtype,
                           f"linear_event_forward(x={x.shape}, w={w.shape})")
    if dtype == np.float64:
        _assert_rounding_equal(got, linear_forward(x, w), dtype, "vs linear_forward")


@given(case=conv2d_configs(max_side=7, max_channels=4, max_batch=3), rho_x=DENSITIES,
       rho_w=DENSITIES, binary=st.booleans(), seed=seeds,
       dtype=st.sampled_from([np.float64, np.float32]))
def test_conv_event_backward_equals_the_masked_dense_vjp(case, rho_x, rho_w, binary, seed,
                                                         dtype):
    rng = np.random.default_rng(seed)
    x = _sparsify(rng, case.x, rho_x, binary).astype(dtype)
    w = _sparsify(rng, case.w, rho_w).astype(dtype)
    gy = rng.standard_normal(case.out_shape).astype(dtype)
    ew = pack_event_weights(w)
    got = conv2d_event_backward(gy, x, ew, stride=case.stride, padding=case.padding)
    ref = naive.conv2d_backward_naive(gy.astype(np.float64), x.astype(np.float64),
                                      w.astype(np.float64), stride=case.stride,
                                      padding=case.padding)
    what = f"conv2d_event_backward(x={x.shape}, w={w.shape}, s={case.stride}, p={case.padding})"
    _assert_rounding_equal(got.x, ref[0], dtype, what + ".x")
    # the gradient of the live weights only; pruned weights get none
    _assert_rounding_equal(unpack_event_grad(ew, got.w), ref[1] * (w != 0), dtype, what + ".w")
    assert conv2d_event_backward(gy, x, ew, stride=case.stride, padding=case.padding,
                                 need_x=False).x is None
    if dtype == np.float64:
        dense = conv2d_backward(gy, x, w, stride=case.stride, padding=case.padding)
        _assert_rounding_equal(got.x, dense.x, dtype, what + ".x vs conv2d_backward")


def test_conv_event_backward_is_the_adjoint_of_the_forward():
    # <conv(x), gy> = <x, grad_x> and, for the live weights, d<conv(x), gy>/dw = grad_w
    rng = np.random.default_rng(11)
    x = _sparsify(rng, rng.standard_normal((2, 3, 6, 5)), 0.4)
    w = _sparsify(rng, rng.standard_normal((4, 3, 3, 3)), 0.3)
    ew = pack_event_weights(w)
    y = conv2d_event_forward(x, ew, stride=1, padding=1)
    gy = rng.standard_normal(y.shape)
    g = conv2d_event_backward(gy, x, ew, stride=1, padding=1)
    np.testing.assert_allclose(np.vdot(y, gy), np.vdot(x, g.x), rtol=1e-12)
    np.testing.assert_allclose(np.vdot(y, gy), np.vdot(ew.value, g.w), rtol=1e-12)  # linear in w


def test_unpack_event_grad_inverts_the_packing():
    rng = np.random.default_rng(2)
    for shape in ((4, 3, 2, 3), (5, 7)):
        w = _sparsify(rng, rng.standard_normal(shape), 0.3)
        ew = pack_event_weights(w)
        np.testing.assert_array_equal(unpack_event_grad(ew, ew.value), w)


def test_pack_groups_live_weights_by_input_channel_and_offset():
    w = np.zeros((3, 2, 2, 2))
    w[2, 0, 1, 0], w[0, 1, 0, 1], w[1, 1, 0, 1], w[1, 1, 1, 1] = 5.0, -1.0, 2.0, 3.0
    ew = pack_event_weights(w)
    # group g = (c*2 + p)*2 + q: g 2 = (0, 1, 0) holds o=2; g 5 = (1, 0, 1) holds o=0, 1;
    # g 7 = (1, 1, 1) holds o=1
    np.testing.assert_array_equal(ew.ptr, [0, 0, 0, 1, 1, 1, 3, 3, 4])
    np.testing.assert_array_equal(ew.out, [2, 0, 1, 1])
    np.testing.assert_array_equal(ew.value, [5.0, -1.0, 2.0, 3.0])
    assert ew.shape == (3, 2, 2, 2) and ew.density == 4 / 24


def test_event_parallel_equals_serial(numba_threads):
    rng = np.random.default_rng(3)
    x = (rng.random((6, 4, 9, 7)) < 0.2).astype(np.float32)
    w = _sparsify(rng, rng.standard_normal((5, 4, 3, 3)).astype(np.float32), 0.4)
    ew = pack_event_weights(w)
    x2 = (rng.random((7, 36)) < 0.3).astype(np.float32)  # 7 samples: lanes of 4 and 3
    ew2 = pack_event_weights(_sparsify(rng, rng.standard_normal((5, 36)).astype(np.float32),
                                       0.4))

    def run():
        return conv2d_event_forward(x, ew, stride=1, padding=1), linear_event_forward(x2, ew2)

    (one, lin1), (two, lin2) = numba_threads(1, run), numba_threads(2, run)
    np.testing.assert_array_equal(one, two)  # samples dealt round-robin: bit for bit
    np.testing.assert_array_equal(lin1, lin2)
    gy = rng.standard_normal(one.shape).astype(np.float32)

    def back():
        return conv2d_event_backward(gy, x, ew, stride=1, padding=1)

    b1, b2 = numba_threads(1, back), numba_threads(2, back)
    np.testing.assert_array_equal(b1.x, b2.x)  # samples / input channels: disjoint writes
    np.testing.assert_array_equal(b1.w, b2.w)


def test_event_errors_name_the_argument():
    w = np.ones((2, 3, 3, 3))
    ew = pack_event_weights(w)
    with pytest.raises(TypeError, match="ew must be an EventWeights"):
        conv2d_event_forward(np.zeros((1, 3, 4, 4)), w)
    with pytest.raises(ValueError, match="C_in=4"):
        conv2d_event_forward(np.zeros((1, 4, 4, 4)), ew)
    with pytest.raises(ValueError, match="expected a 2-D weight"):
        linear_event_forward(np.zeros((1, 3)), ew)
    with pytest.raises(TypeError, match="dtype"):
        conv2d_event_forward(np.zeros((1, 3, 4, 4), np.float32), ew)
    with pytest.raises(ValueError, match="output would be empty"):
        conv2d_event_forward(np.zeros((1, 3, 1, 1)), ew)
    with pytest.raises(ValueError, match="w must be"):
        pack_event_weights(np.ones((2, 3, 3)))
    assert isinstance(ew, EventWeights)
