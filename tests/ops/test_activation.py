"""ReLU, dropout and flatten (refsnn/ops/activation.py) and their element-wise kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from gradcheck import adjoint_check, away_from_zero, elementwise_fd
from refsnn.ops import activation
from refsnn.ops.activation import (dropout_backward, dropout_forward, dropout_mask,
                                   flatten_backward, flatten_forward, relu_backward, relu_forward,
                                   zero_units_of)
from strategies import nd_arrays, seeds
from tolerances import assert_close

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

DTYPES = (np.float32, np.float64)
CHUNK = activation._CHUNK


def _relu_pattern(inputs):
    return (inputs["x"] > 0,)


# ---------------------------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------------------------

@given(x=nd_arrays(), seed=seeds)
def test_relu_adjoint(x, seed):
    """(a) Inputs moved >= 1e-3 from the kink (>> eps*|t| ~ 5e-6), and the pattern re-checked."""
    x = away_from_zero(x, 1e-3)
    adjoint_check(lambda x: relu_forward(x), {"x": x},
                  lambda c: {"x": relu_backward(c, relu_forward(x))},
                  np.random.default_rng(seed), name=f"relu_backward(x.shape={x.shape})",
                  pattern=_relu_pattern)


def test_relu_elementwise_fd():
    rng = np.random.default_rng(0)
    x = away_from_zero(rng.standard_normal((2, 3, 4)), 1e-3)
    elementwise_fd(relu_forward, {"x": x}, lambda c: {"x": relu_backward(c, relu_forward(x))},
                   rng, name="relu_backward(2, 3, 4)", pattern=_relu_pattern)


@given(x=nd_arrays(), seed=seeds)
def test_relu_matches_naive(x, seed):
    """(c) Exact: ReLU is a selection, no rounding."""
    y = relu_forward(x)
    assert_close(y, naive.relu_forward_naive(x), kind="py_func", what="relu_forward")
    g = np.random.default_rng(seed).standard_normal(x.shape)
    assert_close(relu_backward(g, y), naive.relu_backward_naive(g, x), kind="py_func",
                 what="relu_backward")


def test_relu_gradient_at_zero_is_zero():
    """x = 0 exactly: y = 0 and grad 0 (torch's choice: relu_backward uses y > 0)."""
    x = np.array([-1.0, 0.0, -0.0, 2.0])
    y = relu_forward(x)
    assert np.array_equal(y, [0.0, 0.0, 0.0, 2.0])
    assert np.array_equal(relu_backward(np.array([3.0, 5.0, 7.0, 11.0]), y), [0.0, 0.0, 0.0, 11.0])


def test_relu_zero_units_pass_gradient_on_their_axis1_slices():
    """zero_units flags slices along axis 1 (channels / features): there grad_x = grad_y
    whatever y is; elsewhere torch's mask y > 0, unchanged."""
    rng = np.random.default_rng(5)
    for shape in ((3, 4), (2, 4, 3, 2)):
        y = relu_forward(rng.standard_normal(shape))
        y[:, 1] = 0.0  # a unit whose weights are all zero: pre-activation 0 everywhere
        g = rng.standard_normal(shape)
        zero = np.array([False, True, False, True])
        got = relu_backward(g, y, zero_units=zero)
        expected = np.where(y > 0, g, 0.0)
        expected[:, zero] = g[:, zero]
        assert np.array_equal(got, expected), shape
        assert np.array_equal(relu_backward(g, y, zero_units=np.zeros(4, bool)),
                              relu_backward(g, y))


@given(seed=seeds, rows=st.integers(1, 6), cols=st.integers(1, 7))
def test_zero_units_of_equals_numpy_any(seed, rows, cols):
    """zero_units_of(w)[o] == not any(w[o] != 0), with -0.0 zero and NaN nonzero."""
    rng = np.random.default_rng(seed)
    w = rng.choice(np.array([0.0, -0.0, 1.5, np.nan]), size=(rows, cols), p=[.6, .2, .1, .1])
    w[rng.random(rows) < 0.4] = 0.0
    assert np.array_equal(zero_units_of(w), ~np.any(w != 0, axis=1))
    w4 = w.reshape(rows, 1, 1, cols)
    assert np.array_equal(zero_units_of(w4), ~np.any(w != 0, axis=1))
    with pytest.raises(ValueError, match=r"zero_units_of: w must be a conv .* got shape"):
        zero_units_of(w[0])


def test_relu_propagates_nan_like_torch():
    """relu_forward's docstring: 'y = max(x, 0) ... Matches torch.relu'; torch.relu(nan) = nan.
    """
    x = np.array([np.nan, -1.0, 1.0])
    y = relu_forward(x)
    assert np.isnan(y[0]), (f"relu_forward([nan, -1, 1]) = {y}, expected [nan, 0, 1] like "
                            f"np.maximum(x, 0) and torch.relu")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_keeps_dtype_and_shape(dtype):
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(dtype)
    y = relu_forward(x)
    assert y.dtype == dtype and y.shape == x.shape
    g = relu_backward(np.random.default_rng(2).standard_normal(x.shape).astype(dtype), y)
    assert g.dtype == dtype and g.shape == x.shape


@pytest.mark.parametrize("layout", ["transposed", "fortran", "strided"])
def test_relu_non_contiguous_inputs(layout):
    """Any memory layout gives max(x, 0), not only C-contiguous arrays.
    """
    base = np.random.default_rng(3).standard_normal((4, 6))
    x = {"transposed": base.T, "fortran": np.asfortranarray(base), "strided": base[:, ::2]}[layout]
    expected = np.maximum(x, 0.0)
    got = relu_forward(x)
    assert np.array_equal(got, expected), (f"relu_forward on a {layout} array returned "
                                           f"{got.ravel()[:4]}..., expected "
                                           f"{expected.ravel()[:4]}...")
    g = np.random.default_rng(4).standard_normal(x.shape)
    g = {"transposed": g.T.copy().T, "fortran": np.asfortranarray(g), "strided": g}[layout]
    y_f = np.asfortranarray(expected) if layout != "strided" else expected
    assert np.array_equal(relu_backward(g, y_f), np.where(expected > 0, g, 0.0)), \
        f"relu_backward on {layout} arrays"


def test_relu_rejects_bad_inputs():
    with pytest.raises(TypeError, match=r"relu_forward: x must have dtype float32 or float64"):
        relu_forward(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"relu_forward: x must be a numpy.ndarray"):
        relu_forward([1.0, -1.0])
    with pytest.raises(ValueError, match=r"relu_backward: grad_y.shape=\(3,\), expected \(4,\)"):
        relu_backward(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match=r"relu_backward: .*grad_y=float32, y=float64"):
        relu_backward(np.zeros(4, np.float32), np.zeros(4))


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_mask_values_are_zero_or_inverse_keep(p, dtype):
    mask = dropout_mask((3, 4, 5, 6), p, np.random.default_rng(5), dtype)
    assert mask.dtype == dtype and mask.shape == (3, 4, 5, 6)
    scale = np.dtype(dtype).type(1.0 / (1.0 - p))
    values = set(np.unique(mask).tolist())
    assert values <= {0.0, float(scale)}, f"dropout_mask(p={p}) values {values}"


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_mask_keep_fraction(p):
    """Keep fraction of n = 200,000 draws is Binomial(n, 1-p)/n: std sqrt(p(1-p)/n) <= 1.12e-3.

    Tolerance: 5 standard deviations (two-sided probability ~6e-7 of a false failure).
    """
    n = 200_000
    mask = dropout_mask((n,), p, np.random.default_rng(6), np.float64)
    frac = np.count_nonzero(mask) / n
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(frac - (1 - p)) <= 5 * sigma, f"keep fraction {frac}, expected {1 - p} +- " \
                                             f"{5 * sigma}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_p0_is_ones(dtype):
    mask = dropout_mask((2, 3, 4), 0.0, np.random.default_rng(7), dtype)
    assert mask.dtype == dtype and np.array_equal(mask, np.ones((2, 3, 4)))


def test_dropout_mask_reproducible_from_seed():
    a = dropout_mask((5, 7), 0.3, np.random.default_rng(42), np.float32)
    b = dropout_mask((5, 7), 0.3, np.random.default_rng(42), np.float32)
    c = dropout_mask((5, 7), 0.3, np.random.default_rng(43), np.float32)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # the draw is documented: keep = rng.random(shape) >= p
    keep = np.random.default_rng(42).random((5, 7)) >= 0.3
    assert np.array_equal(a != 0, keep)


def test_dropout_mask_rejects_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"dropout_mask: p must be in \[0, 1\), got 1.0"):
        dropout_mask((2,), 1.0, rng, np.float64)
    with pytest.raises(ValueError, match=r"dropout_mask: p must be in \[0, 1\), got -0.1"):
        dropout_mask((2,), -0.1, rng, np.float64)
    with pytest.raises(TypeError, match=r"dropout_mask: rng must be a numpy.random.Generator"):
        dropout_mask((2,), 0.5, np.random.RandomState(0), np.float64)
    with pytest.raises(TypeError, match=r"dropout_mask: p must be a number"):
        dropout_mask((2,), "0.5", rng, np.float64)


@given(x=nd_arrays(), seed=seeds, p=st.sampled_from([0.0, 0.3, 0.5]))
def test_dropout_adjoint_and_exact_product(x, seed, p):
    rng = np.random.default_rng(seed)
    mask = dropout_mask(x.shape, p, rng, np.float64)
    y = dropout_forward(x, mask)
    assert np.array_equal(y, x * mask), "dropout_forward must equal x * mask exactly"
    adjoint_check(lambda x: dropout_forward(x, mask), {"x": x},
                  lambda c: {"x": dropout_backward(c, mask)}, rng,
                  name=f"dropout_backward(x.shape={x.shape}, p={p})")


def test_dropout_elementwise_fd():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 4))
    mask = dropout_mask(x.shape, 0.4, rng, np.float64)
    elementwise_fd(lambda x: dropout_forward(x, mask), {"x": x},
                   lambda c: {"x": dropout_backward(c, mask)}, rng, name="dropout_backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_keeps_dtype(dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4)).astype(dtype)
    mask = dropout_mask(x.shape, 0.5, rng, dtype)
    assert dropout_forward(x, mask).dtype == dtype
    assert dropout_backward(x, mask).dtype == dtype


def test_dropout_non_contiguous_inputs():
    """Transposed inputs give x * mask (outputs are allocated in C order)."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 6)).T
    mask = dropout_mask((4, 6), 0.5, rng, np.float64).T
    assert np.array_equal(dropout_forward(x, mask), x * mask), \
        "dropout_forward on transposed arrays"
    assert np.array_equal(dropout_backward(x, mask), x * mask), \
        "dropout_backward on transposed arrays"


def test_dropout_forward_rejects_bad_inputs():
    x, mask = np.zeros((2, 3)), np.ones((2, 3))
    with pytest.raises(ValueError,
                       match=r"dropout_forward: mask.shape=\(3, 2\), expected \(2, 3\)"):
        dropout_forward(x, mask.T.copy())
    with pytest.raises(TypeError, match=r"dropout_forward: .*x=float64, mask=float32"):
        dropout_forward(x, mask.astype(np.float32))


def test_dropout_backward_errors_name_dropout_backward():
    """STYLE 2.7: the message names the function and the argument.
    """
    with pytest.raises(ValueError, match=r"dropout_backward: .*mask"):
        dropout_backward(np.zeros((2, 3)), np.ones((3, 2)))
    with pytest.raises(TypeError, match=r"dropout_backward: .*grad_y=float64"):
        dropout_backward(np.zeros((2, 3)), np.ones((2, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# Flatten
# ---------------------------------------------------------------------------------------------

@given(x=nd_arrays(min_dims=2, max_dims=4), seed=seeds)
def test_flatten_round_trip_and_adjoint(x, seed):
    y = flatten_forward(x)
    assert y.shape == (x.shape[0], int(np.prod(x.shape[1:])))
    assert np.array_equal(y, x.reshape(x.shape[0], -1)), "flatten must be C order (torch.flatten)"
    assert np.array_equal(flatten_backward(y, x.shape), x)
    adjoint_check(flatten_forward, {"x": x}, lambda c: {"x": flatten_backward(c, x.shape)},
                  np.random.default_rng(seed), name=f"flatten_backward({x.shape})")


def test_flatten_index_formula_and_non_contiguous():
    """index c*H*W + h*W + w, for a Fortran-ordered input too."""
    x = np.asfortranarray(np.random.default_rng(11).standard_normal((2, 3, 4, 5)))
    y = flatten_forward(x)
    assert y[1, 2 * 20 + 3 * 5 + 4] == x[1, 2, 3, 4]
    assert np.array_equal(y, np.ascontiguousarray(x).reshape(2, -1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_keeps_dtype(dtype):
    x = np.zeros((2, 3, 4), dtype)
    assert flatten_forward(x).dtype == dtype
    assert flatten_backward(flatten_forward(x), x.shape).dtype == dtype


def test_flatten_rejects_bad_inputs():
    with pytest.raises(TypeError, match=r"flatten_forward: x must have dtype"):
        flatten_forward(np.zeros((2, 3), dtype=np.int8))


# ---------------------------------------------------------------------------------------------
# Kernels: (f) jit == py_func, (g) parallel == serial
# ---------------------------------------------------------------------------------------------

def _kernel_args(dtype, n, seed=12):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    x[::7] = 0.0  # exact zeros: the tie at the kink
    y = np.maximum(x, 0).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    m = dropout_mask((n,), 0.5, rng, dtype)
    return {"_relu_forward_kernel": (x,), "_relu_backward_kernel": (g, y),
            "_mul_kernel": (x, m)}


KERNELS = ("_relu_forward_kernel", "_relu_backward_kernel", "_mul_kernel")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", KERNELS)
def test_activation_kernel_equals_py_func(name, dtype):
    args = _kernel_args(dtype, 50)[name]
    fn = getattr(activation, name)
    a, b = np.full(50, np.nan, dtype), np.full(50, np.nan, dtype)
    fn(*args, a)
    getattr(fn, "py_func", fn)(*args, b)
    assert not np.isnan(a).any(), f"{name} left entries unwritten"
    assert_close(a, b, kind="py_func", what=f"activation.{name} jit vs py_func")


@pytest.mark.parametrize("name", KERNELS)
def test_activation_kernel_parallel_equals_serial(name, numba_threads):
    n = 3 * CHUNK + 123  # four chunks, the last one partial
    args = _kernel_args(np.float64, n, seed=13)[name]
    fn = getattr(activation, name)
    outs = []
    for threads in (1, 2):
        out = np.full(n, np.nan)
        numba_threads(threads, fn, *args, out)
        outs.append(out)
    assert not np.isnan(outs[0]).any(), f"{name} left entries unwritten"
    assert np.array_equal(outs[0], outs[1]), f"activation.{name}: 2 threads differ from 1"
