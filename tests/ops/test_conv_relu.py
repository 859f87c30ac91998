"""The fused conv2d -> ReLU pair equals the two separate ops bit for bit.

(refsnn/ops/conv_relu.py)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from refsnn.ops import conv_relu
from refsnn.ops.activation import relu_backward, relu_forward, zero_units_of
from refsnn.ops.conv import conv2d_backward, conv2d_forward, im2col
from refsnn.ops.conv_relu import conv2d_relu_backward, conv2d_relu_forward
from strategies import conv2d_configs, seeds

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py


def _same(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, \
        f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    assert np.array_equal(a, b), f"{what}: max |diff| = {np.abs(a - b).max()}"


@given(case=conv2d_configs(), seed=seeds)
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_fused_equals_composition_bitwise(case, seed, dtype):
    x, w, s, p = case
    x, w = x.astype(dtype), w.astype(dtype)
    rng = np.random.default_rng(seed)
    out = conv2d_relu_forward(x, w, stride=s, padding=p)
    y_ref = relu_forward(conv2d_forward(x, w, stride=s, padding=p))
    _same(out.y, y_ref, "forward")
    kh, kw = w.shape[2:]
    _same(out.cols, im2col(x, kh, kw, s, p, *y_ref.shape[2:]), "cols")
    g = rng.standard_normal(y_ref.shape).astype(dtype)
    cols_before = out.cols.copy()
    got = conv2d_relu_backward(g, out, x.shape, w, stride=s, padding=p)
    ref = conv2d_backward(relu_backward(g, y_ref), x, w, stride=s, padding=p)
    _same(got.w, ref.w, "grad_w")
    _same(got.x, ref.x, "grad_x")
    _same(out.cols, cols_before, "cols left intact by the backward")
    assert conv2d_relu_backward(g, out, x.shape, w, stride=s, padding=p, need_x=False).x is None


def test_relu_semantics_at_zero_and_nan():
    """Outputs <= 0 become 0 and get gradient 0; NaN passes through (as relu_forward)."""
    x = np.zeros((1, 1, 1, 3))
    x[0, 0, 0] = [np.nan, 0.0, 2.0]
    w = np.ones((1, 1, 1, 1))
    out = conv2d_relu_forward(x, w)
    assert np.isnan(out.y[0, 0, 0, 0]) and out.y[0, 0, 0, 1] == 0.0 and out.y[0, 0, 0, 2] == 2.0
    g = conv2d_relu_backward(np.full((1, 1, 1, 3), 5.0), out, x.shape, w)
    assert g.x[0, 0, 0, 1] == 0.0 and g.x[0, 0, 0, 2] == 5.0


@pytest.mark.parametrize("name", ["_cm_to_nchw_relu_kernel", "_nchw_to_cm_relu_kernel"])
def test_kernels_equal_py_func_and_serial(name, numba_threads):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 3, 5))  # (C_out, N, P) or (N, C_out, P)
    fn = getattr(conv_relu, name)
    if name == "_cm_to_nchw_relu_kernel":
        args, shape = (a,), (3, 4, 5)
    else:
        args, shape = (a, rng.standard_normal(a.shape)), (3, 4, 5)
    outs = []
    for threads in (1, 2):
        o = np.full(shape, np.nan)
        numba_threads(threads, fn, *args, o)
        outs.append(o)
    ref = np.full(shape, np.nan)
    fn.py_func(*args, ref)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], ref)


def test_backward_rejects_mismatched_grad():
    x, w = np.zeros((1, 2, 4, 4)), np.zeros((3, 2, 3, 3))
    out = conv2d_relu_forward(x, w, padding=1)
    with pytest.raises(ValueError, match="conv2d_relu_backward: grad_y.shape"):
        conv2d_relu_backward(np.zeros((1, 3, 4, 5)), out, x.shape, w, padding=1)
    with pytest.raises(TypeError, match="conv2d_relu_backward"):
        conv2d_relu_backward(np.zeros((1, 3, 4, 4), np.float32), out, x.shape, w, padding=1)


# --- all-zero filters: ReLU's right derivative at 0 (zero_units) -------------------------------

@given(case=conv2d_configs(max_channels=4), seed=seeds)
def test_zero_units_equal_composition_bitwise(case, seed):
    """With zero_units, the fused backward equals relu_backward(g, y, zero_units=...) followed
    by conv2d_backward, bit for bit; channels not flagged keep torch's y > 0 mask."""
    x, w, s, p = case
    rng = np.random.default_rng(seed)
    w = w.copy()
    w[rng.random(w.shape[0]) < 0.5] = 0.0
    zero = zero_units_of(w)
    out = conv2d_relu_forward(x, w, stride=s, padding=p)
    g = rng.standard_normal(out.y.shape)
    got = conv2d_relu_backward(g, out, x.shape, w, stride=s, padding=p, zero_units=zero)
    ref = conv2d_backward(relu_backward(g, out.y, zero_units=zero), x, w, stride=s, padding=p)
    _same(got.w, ref.w, "grad_w")
    _same(got.x, ref.x, "grad_x")
    plain = conv2d_relu_backward(g, out, x.shape, w, stride=s, padding=p)
    _same(got.w[~zero], plain.w[~zero], "grad_w of the nonzero filters")


def test_zero_filter_gradient_is_the_right_derivative():
    """f(w) = sum(r * relu(conv(x, w))) with filter o all zero and x > 0. For a direction d
    that is >= 0 on filter o (0 elsewhere), conv(x, d) >= 0, so f(w + h d) = f(w) +
    h <r_o, conv(x, d_o)> exactly for h > 0: the one-sided difference equals <grad_w, d> up
    to rounding. torch's derivative 0 at 0 would give 0 instead."""
    rng = np.random.default_rng(7)
    x = rng.random((2, 3, 6, 5)) + 0.1
    w = rng.standard_normal((4, 3, 3, 3))
    w[2] = 0.0
    r = rng.standard_normal((2, 4, 6, 5))
    d = np.zeros_like(w)
    d[2] = rng.random((3, 3, 3))

    def f(wt):
        return float(np.sum(r * conv2d_relu_forward(x, wt, padding=1).y))

    out = conv2d_relu_forward(x, w, padding=1)
    grads = conv2d_relu_backward(r, out, x.shape, w, padding=1, zero_units=zero_units_of(w))
    h = 1e-3
    one_sided = (f(w + h * d) - f(w)) / h
    assert np.isclose(one_sided, np.sum(grads.w * d), rtol=1e-10, atol=1e-12), \
        (one_sided, np.sum(grads.w * d))
    assert np.any(grads.w[2] != 0)
    assert not np.any(conv2d_relu_backward(r, out, x.shape, w, padding=1).w[2])  # torch's


def test_zero_units_checked():
    x, w = np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3))
    out = conv2d_relu_forward(x, w, padding=1)
    g = np.ones(out.y.shape)
    with pytest.raises(ValueError, match=r"conv2d_relu_backward: zero_units.shape=\(2,\), "
                                         r"expected \(3,\)"):
        conv2d_relu_backward(g, out, x.shape, w, padding=1, zero_units=np.zeros(2, bool))
    with pytest.raises(TypeError, match="conv2d_relu_backward: zero_units must be a bool"):
        conv2d_relu_backward(g, out, x.shape, w, padding=1, zero_units=np.zeros(3))
