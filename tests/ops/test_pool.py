"""avg_pool2d_forward / avg_pool2d_backward and their kernels (refsnn/ops/pool.py).

Average pooling is linear, so it has no kinks or ties: central differences are exact up to
rounding and no draw needs rejecting.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import naive
from gradcheck import adjoint_check, elementwise_fd
from refsnn.ops import pool
from refsnn.ops.pool import avg_pool2d_backward, avg_pool2d_forward
from strategies import pool_configs, seeds
from tolerances import assert_close

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

DTYPES = (np.float32, np.float64)


def _what(fn, case):
    return f"{fn}(x.shape={case.x.shape}, kernel={case.kernel}, stride={case.stride})"


# (a) adjoint ------------------------------------------------------------------------------

@given(case=pool_configs(), seed=seeds)
def test_avg_pool2d_adjoint(case, seed):
    x, k, s = case
    adjoint_check(lambda x: avg_pool2d_forward(x, kernel=k, stride=s), {"x": x},
                  lambda c: {"x": avg_pool2d_backward(c, x.shape, kernel=k, stride=s)},
                  np.random.default_rng(seed), name=_what("avg_pool2d_backward", case))


# (b) element-wise FD ----------------------------------------------------------------------

@pytest.mark.parametrize("shape, kernel, stride", [
    ((2, 2, 4, 6), 2, None),
    ((1, 2, 5, 7), 2, None),  # odd sizes: floor mode drops the last row and column
    ((2, 1, 5, 4), 3, 1),  # overlapping windows
    ((1, 2, 7, 5), 2, 3),  # gaps between windows
])
def test_avg_pool2d_elementwise_fd(shape, kernel, stride):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    elementwise_fd(lambda x: avg_pool2d_forward(x, kernel=kernel, stride=stride), {"x": x},
                   lambda c: {"x": avg_pool2d_backward(c, shape, kernel=kernel, stride=stride)},
                   rng, name=f"avg_pool2d_backward({shape}, kernel={kernel}, stride={stride})")


# (c) against the naive references ---------------------------------------------------------

@given(case=pool_configs(), seed=seeds)
def test_avg_pool2d_matches_naive(case, seed):
    x, k, s = case
    assert_close(avg_pool2d_forward(x, kernel=k, stride=s),
                 naive.avg_pool2d_forward_naive(x, kernel=k, stride=s), kind="forward",
                 what=_what("avg_pool2d_forward", case))
    g = np.random.default_rng(seed).standard_normal(case.out_shape)
    assert_close(avg_pool2d_backward(g, x.shape, kernel=k, stride=s),
                 naive.avg_pool2d_backward_naive(g, x.shape, kernel=k, stride=s),
                 kind="backward", what=_what("avg_pool2d_backward", case))


def test_avg_pool2d_default_is_2x2_stride_2_reshape_mean():
    """Defaults kernel=2, stride=None=2: y equals the reshape-mean of SPEC's AvgPool2d(2, 2)."""
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 4))
    expected = x.reshape(2, 3, 3, 2, 2, 2).mean(axis=(3, 5))
    assert_close(avg_pool2d_forward(x), expected, kind="forward", what="avg_pool2d_forward()")


# (d) dtypes -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool2d_keeps_dtype_and_float32_accuracy(dtype):
    rng = np.random.default_rng(4)
    x64 = rng.standard_normal((2, 3, 5, 6))
    y = avg_pool2d_forward(x64.astype(dtype), kernel=2, stride=1)
    assert y.dtype == dtype and y.shape == (2, 3, 4, 5)
    assert_close(y, naive.avg_pool2d_forward_naive(x64, kernel=2, stride=1).astype(dtype),
                 kind="forward", what=f"avg_pool2d_forward[{np.dtype(dtype)}]")
    g64 = rng.standard_normal(y.shape)
    gx = avg_pool2d_backward(g64.astype(dtype), x64.shape, kernel=2, stride=1)
    assert gx.dtype == dtype and gx.shape == x64.shape
    assert_close(gx, naive.avg_pool2d_backward_naive(g64, x64.shape, kernel=2, stride=1)
                 .astype(dtype), kind="backward", what=f"avg_pool2d_backward[{np.dtype(dtype)}]")


def test_avg_pool2d_non_contiguous_inputs():
    rng = np.random.default_rng(5)
    x = np.asfortranarray(rng.standard_normal((2, 3, 6, 4)))
    g = rng.standard_normal((2, 3, 2, 3)).swapaxes(2, 3)  # (2, 3, 3, 2), not C-contiguous
    assert np.array_equal(avg_pool2d_forward(x), avg_pool2d_forward(np.ascontiguousarray(x)))
    assert np.array_equal(avg_pool2d_backward(g, x.shape),
                          avg_pool2d_backward(np.ascontiguousarray(g), x.shape))


# (e) bad inputs ---------------------------------------------------------------------------

def test_avg_pool2d_rejects_bad_inputs():
    x = np.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"avg_pool2d_forward: x must have 4 dimensions"):
        avg_pool2d_forward(x[0])
    with pytest.raises(ValueError, match=r"avg_pool2d_forward: input 1x4 is smaller than the "
                                         r"2x2 pooling window"):
        avg_pool2d_forward(np.zeros((2, 3, 1, 4)))
    with pytest.raises(ValueError, match=r"avg_pool2d_forward: kernel must be >= 1, got 0"):
        avg_pool2d_forward(x, kernel=0)
    with pytest.raises(ValueError, match=r"avg_pool2d_forward: stride must be >= 1, got 0"):
        avg_pool2d_forward(x, stride=0)
    with pytest.raises(TypeError, match=r"avg_pool2d_forward: x must have dtype"):
        avg_pool2d_forward(x.astype(np.int32))
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: grad_y.shape=\(2, 3, 3, 2\), "
                                         r"expected \(2, 3, 2, 2\)"):
        avg_pool2d_backward(np.zeros((2, 3, 3, 2)), x.shape)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: x_shape must be \(N, C, H, W\)"):
        avg_pool2d_backward(np.zeros((2, 3, 2, 2)), (3, 4, 4))
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: grad_y must have 4 dimensions"):
        avg_pool2d_backward(np.zeros((3, 2, 2)), x.shape)


# (f) kernels equal their .py_func ---------------------------------------------------------

def _kernel_args(dtype, kernel, stride, seed=6):
    rng = np.random.default_rng(seed)
    planes, h, w = 4, 7, 6
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    x = rng.standard_normal((planes, h, w)).astype(dtype)
    g = rng.standard_normal((planes, ho, wo)).astype(dtype)
    scale = np.dtype(dtype).type(1.0 / (kernel * kernel))
    return {"_avg_pool_forward_kernel": ((x, kernel, stride, scale), (planes, ho, wo)),
            "_avg_pool_backward_kernel": ((g, kernel, stride, scale), (planes, h, w))}


KERNELS = ("_avg_pool_forward_kernel", "_avg_pool_backward_kernel")


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1), (2, 3)])
@pytest.mark.parametrize("name", KERNELS)
def test_pool_kernel_equals_py_func_float64(name, kernel, stride):
    args, shape = _kernel_args(np.float64, kernel, stride)[name]
    fn = getattr(pool, name)
    a, b = np.full(shape, np.nan), np.full(shape, np.nan)
    fn(*args, a)
    getattr(fn, "py_func", fn)(*args, b)
    assert_close(a, b, kind="py_func", what=f"pool.{name}(kernel={kernel}, stride={stride})")


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1)])
@pytest.mark.parametrize("name", KERNELS)
def test_pool_kernel_equals_py_func_float32(name, kernel, stride):
    """Float32: the compiled kernel and its plain-Python twin must give the same bits.

    Guards against float64 literals in the kernel (``x * 0.0``, ``1.0 / k**2``): numba types
    them as float64 and would accumulate float32 input in float64, so the float32 result
    would depend on whether JIT is on. The scale is passed in the input's dtype.
    """
    args, shape = _kernel_args(np.float32, kernel, stride, seed=7)[name]
    fn = getattr(pool, name)
    a, b = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    fn(*args, a)
    getattr(fn, "py_func", fn)(*args, b)
    assert_close(a, b, kind="py_func",
                 what=f"pool.{name}(kernel={kernel}, stride={stride}) float32 jit vs py_func")


# (g) parallel equals serial ---------------------------------------------------------------

@pytest.mark.parametrize("name", KERNELS)
def test_pool_kernel_parallel_equals_serial(name, numba_threads):
    args, shape = _kernel_args(np.float64, 3, 2, seed=8)[name]
    fn = getattr(pool, name)
    outs = []
    for threads in (1, 2):
        out = np.full(shape, np.nan)
        numba_threads(threads, fn, *args, out)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1]), f"pool.{name}: 2 threads differ from 1 thread"
