"""linear_forward / linear_backward (refsnn/ops/linear.py).

linear.py has no numba kernel (one np.matmul per product), so checks (f) kernel == py_func and
(g) parallel == serial do not apply; everything else does.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import naive
from gradcheck import adjoint_check, elementwise_fd
from refsnn.ops.linear import SMALL_BATCH, LinearGrads, linear_backward, linear_forward
from strategies import linear_configs, seeds
from tolerances import assert_close

DTYPES = (np.float32, np.float64)


def _what(fn, case):
    return f"{fn}(x.shape={case.x.shape}, w.shape={case.w.shape})"


# (a) adjoint ------------------------------------------------------------------------------

@given(case=linear_configs(), seed=seeds)
def test_linear_adjoint(case, seed):
    x, w = case
    adjoint_check(linear_forward, {"x": x, "w": w}, lambda c: linear_backward(c, x, w),
                  np.random.default_rng(seed), name=_what("linear_backward", case))


@given(case=linear_configs(), seed=seeds)
def test_linear_adjoint_need_x_false(case, seed):
    x, w = case

    def vjp(c):
        g = linear_backward(c, x, w, need_x=False)
        assert g.x is None, "linear_backward(need_x=False) must return x=None"
        return g

    adjoint_check(lambda w: linear_forward(x, w), {"w": w}, vjp, np.random.default_rng(seed),
                  name=_what("linear_backward[need_x=False]", case))


# (b) element-wise FD ----------------------------------------------------------------------

@pytest.mark.parametrize("n, n_in, n_out", [(2, 3, 4), (3, 5, 2), (1, 4, 4)])
def test_linear_elementwise_fd(n, n_in, n_out):
    rng = np.random.default_rng(n * 100 + n_in * 10 + n_out)
    x, w = rng.standard_normal((n, n_in)), rng.standard_normal((n_out, n_in))
    elementwise_fd(linear_forward, {"x": x, "w": w}, lambda c: linear_backward(c, x, w), rng,
                   name=f"linear_backward(x.shape={x.shape}, w.shape={w.shape})")


# (c) against the naive reference ----------------------------------------------------------

@given(case=linear_configs(), seed=seeds)
def test_linear_matches_naive(case, seed):
    x, w = case
    assert_close(linear_forward(x, w), naive.linear_forward_naive(x, w), kind="forward",
                 what=_what("linear_forward", case))
    g = np.random.default_rng(seed).standard_normal((x.shape[0], w.shape[0]))
    got = linear_backward(g, x, w)
    assert isinstance(got, LinearGrads)
    gx, gw = naive.linear_backward_naive(g, x, w)
    assert_close(got.x, gx, kind="backward", what=_what("linear_backward", case) + ".x")
    assert_close(got.w, gw, kind="backward", what=_what("linear_backward", case) + ".w")


@pytest.mark.parametrize("n", [1, SMALL_BATCH, SMALL_BATCH + 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_both_forward_orientations_match_naive(n, dtype):
    """Batches up to SMALL_BATCH go as (w @ x^T)^T, larger ones as x @ w^T: both C-contiguous
    (N, n_out) in x's dtype, equal to the float64 naive loop within the forward tolerance."""
    rng = np.random.default_rng(n)
    x64, w64 = rng.standard_normal((n, 9)), rng.standard_normal((4, 9))
    y = linear_forward(x64.astype(dtype), w64.astype(dtype))
    assert y.dtype == dtype and y.shape == (n, 4) and y.flags.c_contiguous
    assert_close(y, naive.linear_forward_naive(x64, w64).astype(dtype), kind="forward",
                 what=f"linear_forward[n={n}, {np.dtype(dtype)}]")


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_dtype_and_float32_accuracy(dtype):
    """(d) outputs keep the input dtype; float32 lands within float32 tolerance of float64."""
    rng = np.random.default_rng(1)
    x64, w64 = rng.standard_normal((3, 7)), rng.standard_normal((5, 7))
    g64 = rng.standard_normal((3, 5))
    x, w, g = x64.astype(dtype), w64.astype(dtype), g64.astype(dtype)
    y = linear_forward(x, w)
    assert y.dtype == dtype and y.shape == (3, 5)
    assert_close(y, naive.linear_forward_naive(x64, w64).astype(dtype), kind="forward",
                 what=f"linear_forward[{np.dtype(dtype)}]")
    got = linear_backward(g, x, w)
    gx, gw = naive.linear_backward_naive(g64, x64, w64)
    assert_close(got.x, gx.astype(dtype), kind="backward", what="linear_backward.x")
    assert_close(got.w, gw.astype(dtype), kind="backward", what="linear_backward.w")


def test_linear_non_contiguous_inputs():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((6, 4)).T, rng.standard_normal((3, 6))[:, ::2]  # (4, 6), (3, 3)
    x = x[:, :3]
    g = np.asfortranarray(rng.standard_normal((4, 3)))
    assert np.array_equal(linear_forward(x, w),
                          linear_forward(np.ascontiguousarray(x), np.ascontiguousarray(w)))
    a = linear_backward(g, x, w)
    b = linear_backward(np.ascontiguousarray(g), np.ascontiguousarray(x), np.ascontiguousarray(w))
    assert_close(a.x, b.x, kind="forward", what="linear_backward.x (views vs copies)")
    assert_close(a.w, b.w, kind="forward", what="linear_backward.w (views vs copies)")


# (e) bad inputs ---------------------------------------------------------------------------

def test_linear_rejects_bad_inputs():
    x, w = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"linear_forward: x must have 2 dimensions"):
        linear_forward(x[None], w)
    with pytest.raises(ValueError, match=r"linear_forward: w must have 2 dimensions"):
        linear_forward(x, w[0])
    with pytest.raises(ValueError, match=r"x has n_in=3 features but w expects n_in=5"):
        linear_forward(x, np.zeros((4, 5)))
    with pytest.raises(TypeError, match=r"x=float64, w=float32"):
        linear_forward(x, w.astype(np.float32))
    with pytest.raises(TypeError, match=r"x must have dtype float32 or float64, got int"):
        linear_forward(x.astype(int), w)
    with pytest.raises(ValueError, match=r"linear_backward: grad_y.shape=\(2, 3\), expected "
                                         r"\(2, 4\)"):
        linear_backward(np.zeros((2, 3)), x, w)
    with pytest.raises(TypeError, match=r"linear_backward: .*grad_y=float32, x=float64"):
        linear_backward(np.zeros((2, 4), np.float32), x, w)
