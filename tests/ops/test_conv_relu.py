"""The fused conv2d -> ReLU pair equals the two separate ops bit for bit.

(refsnn/ops/conv_relu.py)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from refsnn.ops import conv_relu
from refsnn.ops.activation import relu_backward, relu_forward
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
