"""conv2d_forward / conv2d_backward and their numba layout kernels (refsnn/ops/conv.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import naive
from gradcheck import adjoint_check, elementwise_fd
from refsnn.ops import conv
from refsnn.ops.conv import Conv2dGrads, conv2d_backward, conv2d_forward
from strategies import conv2d_configs, seeds
from tolerances import assert_close

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

DTYPES = (np.float32, np.float64)


def _what(fn, case):
    return (f"{fn}(x.shape={case.x.shape}, w.shape={case.w.shape}, stride={case.stride}, "
            f"padding={case.padding})")


def _case(shape_x, shape_w, stride, padding, dtype=np.float64, seed=0):
    from strategies import ConvCase

    rng = np.random.default_rng(seed)
    return ConvCase(rng.standard_normal(shape_x).astype(dtype),
                    rng.standard_normal(shape_w).astype(dtype), stride, padding)


# Tiny fixed cases: non-square input and kernel, C_in != C_out, each stride/padding path.
TINY = [
    ((2, 2, 4, 5), (3, 2, 3, 2), 1, 0),
    ((2, 2, 5, 4), (3, 2, 2, 3), 2, 1),
    ((1, 3, 6, 5), (2, 3, 3, 3), 3, 2),
    ((2, 1, 3, 3), (2, 1, 4, 1), 1, 2),  # kernel larger than the input: padding makes it fit
]


# (a) adjoint property ---------------------------------------------------------------------

@given(case=conv2d_configs(), seed=seeds)
def test_conv2d_adjoint(case, seed):
    x, w, s, p = case

    def f(x, w):
        return conv2d_forward(x, w, stride=s, padding=p)

    def vjp(c):
        return conv2d_backward(c, x, w, stride=s, padding=p)

    adjoint_check(f, {"x": x, "w": w}, vjp, np.random.default_rng(seed),
                  name=_what("conv2d_backward", case))


@given(case=conv2d_configs(), seed=seeds)
def test_conv2d_adjoint_weight_only_need_x_false(case, seed):
    """need_x=False returns x=None and the same grad_w (the first layer of a network)."""
    x, w, s, p = case

    def vjp(c):
        g = conv2d_backward(c, x, w, stride=s, padding=p, need_x=False)
        assert g.x is None, "conv2d_backward(need_x=False) must return x=None"
        return g

    adjoint_check(lambda w: conv2d_forward(x, w, stride=s, padding=p), {"w": w}, vjp,
                  np.random.default_rng(seed), name=_what("conv2d_backward[need_x=False]", case))


# (b) element-wise finite differences on tiny shapes ---------------------------------------

@pytest.mark.parametrize("shape_x, shape_w, stride, padding", TINY)
def test_conv2d_elementwise_fd(shape_x, shape_w, stride, padding):
    case = _case(shape_x, shape_w, stride, padding, seed=1)
    x, w = case.x, case.w
    elementwise_fd(lambda x, w: conv2d_forward(x, w, stride=stride, padding=padding),
                   {"x": x, "w": w},
                   lambda c: conv2d_backward(c, x, w, stride=stride, padding=padding),
                   np.random.default_rng(2), name=_what("conv2d_backward", case))


# (c) against the naive references ---------------------------------------------------------

@given(case=conv2d_configs())
def test_conv2d_forward_matches_loops_and_einsum(case):
    x, w, s, p = case
    y = conv2d_forward(x, w, stride=s, padding=p)
    assert_close(y, naive.conv2d_forward_naive(x, w, stride=s, padding=p), kind="forward",
                 what=_what("conv2d_forward", case) + " vs loops")
    assert_close(y, naive.conv2d_forward_einsum(x, w, stride=s, padding=p), kind="forward",
                 what=_what("conv2d_forward", case) + " vs einsum")


@given(case=conv2d_configs(), seed=seeds)
def test_conv2d_backward_matches_loops_and_einsum(case, seed):
    x, w, s, p = case
    g = np.random.default_rng(seed).standard_normal(case.out_shape)
    got = conv2d_backward(g, x, w, stride=s, padding=p)
    assert isinstance(got, Conv2dGrads)
    for ref_name, ref in (("loops", naive.conv2d_backward_naive),
                          ("einsum", naive.conv2d_backward_einsum)):
        gx, gw = ref(g, x, w, stride=s, padding=p)
        what = _what("conv2d_backward", case)
        assert_close(got.x, gx, kind="backward", what=f"{what}.x vs {ref_name}")
        assert_close(got.w, gw, kind="backward", what=f"{what}.w vs {ref_name}")


@pytest.mark.parametrize("shape_x, shape_w, stride, padding", TINY)
def test_im2col_matches_docstring_formula(shape_x, shape_w, stride, padding):
    """cols[(c*kH + p)*kW + q, (n*H_out + i)*W_out + j] = x_pad[n, c, i*s + p, j*s + q]."""
    case = _case(shape_x, shape_w, stride, padding, seed=3)
    _, _, ho, wo = case.out_shape
    kh, kw = shape_w[2:]
    cols = conv.im2col(case.x, kh, kw, stride, padding, ho, wo)
    v = naive.conv_windows(case.x, kh, kw, stride=stride, padding=padding)  # (N,C,Ho,Wo,kh,kw)
    expected = v.transpose(1, 4, 5, 0, 2, 3).reshape(shape_x[1] * kh * kw, -1)
    assert_close(cols, expected, kind="py_func", what=_what("im2col", case))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_float32_close_to_float64_reference(dtype):
    """Float32 runs and lands within the float32 tolerance of the float64 loop reference."""
    for shape_x, shape_w, s, p in TINY:
        c64 = _case(shape_x, shape_w, s, p, seed=4)
        x, w = c64.x.astype(dtype), c64.w.astype(dtype)
        g64 = np.random.default_rng(5).standard_normal(c64.out_shape)
        what = _what("conv2d", c64) + f"[{np.dtype(dtype)}]"
        ref_y = naive.conv2d_forward_naive(c64.x, c64.w, stride=s, padding=p)
        ref_gx, ref_gw = naive.conv2d_backward_naive(g64, c64.x, c64.w, stride=s, padding=p)
        assert_close(conv2d_forward(x, w, stride=s, padding=p), ref_y.astype(dtype),
                     kind="forward", what=what)
        got = conv2d_backward(g64.astype(dtype), x, w, stride=s, padding=p)
        assert_close(got.x, ref_gx.astype(dtype), kind="backward", what=what + ".x")
        assert_close(got.w, ref_gw.astype(dtype), kind="backward", what=what + ".w")


# (d) dtypes and layouts -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_keeps_dtype(dtype):
    case = _case((2, 3, 5, 4), (4, 3, 3, 3), 1, 1, dtype=dtype)
    y = conv2d_forward(case.x, case.w, stride=1, padding=1)
    assert y.shape == case.out_shape and y.dtype == dtype, (y.shape, y.dtype)
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    g = conv2d_backward(gy, case.x, case.w, stride=1, padding=1)
    assert g.x.dtype == dtype and g.w.dtype == dtype, (g.x.dtype, g.w.dtype)
    assert g.x.shape == case.x.shape and g.w.shape == case.w.shape


def test_conv2d_non_contiguous_inputs_give_identical_results():
    """Transposed / Fortran-ordered / strided views give the same numbers as C-ordered copies."""
    case = _case((2, 3, 6, 5), (4, 3, 2, 3), 2, 1, seed=6)
    x_view = np.asfortranarray(case.x)
    w_view = np.ascontiguousarray(np.swapaxes(case.w, 2, 3)).swapaxes(2, 3)  # same values
    y = conv2d_forward(case.x, case.w, stride=2, padding=1)
    y2 = conv2d_forward(x_view, w_view, stride=2, padding=1)
    assert np.array_equal(y, y2)
    g = np.random.default_rng(7).standard_normal(y.shape)
    g_view = np.asfortranarray(g)
    a = conv2d_backward(g, case.x, case.w, stride=2, padding=1)
    b = conv2d_backward(g_view, x_view, w_view, stride=2, padding=1)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.w, b.w)
    # a strided (every other column) x
    big = np.random.default_rng(8).standard_normal((2, 3, 6, 10))
    assert np.array_equal(conv2d_forward(big[..., ::2], case.w, stride=1, padding=0),
                          conv2d_forward(np.ascontiguousarray(big[..., ::2]), case.w, stride=1,
                                         padding=0))


def test_conv2d_does_not_modify_inputs():
    case = _case((2, 2, 5, 4), (3, 2, 3, 2), 1, 1, seed=9)
    x0, w0 = case.x.copy(), case.w.copy()
    y = conv2d_forward(case.x, case.w, stride=1, padding=1)
    g = np.random.default_rng(0).standard_normal(y.shape)
    g0 = g.copy()
    conv2d_backward(g, case.x, case.w, stride=1, padding=1)
    assert np.array_equal(case.x, x0) and np.array_equal(case.w, w0) and np.array_equal(g, g0)


# (e) bad inputs ---------------------------------------------------------------------------

def test_conv2d_rejects_bad_inputs():
    x = np.zeros((2, 3, 8, 8))
    w = np.zeros((5, 3, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d_forward: x must have 4 dimensions"):
        conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match=r"conv2d_forward: w must have 4 dimensions"):
        conv2d_forward(x, w[0])
    with pytest.raises(ValueError, match=r"x has C_in=3 channels but w expects C_in=4"):
        conv2d_forward(x, np.zeros((5, 4, 3, 3)))
    with pytest.raises(TypeError, match=r"x=float32, w=float64"):
        conv2d_forward(x.astype(np.float32), w)
    with pytest.raises(TypeError, match=r"x must have dtype float32 or float64, got int64"):
        conv2d_forward(x.astype(np.int64), w)
    with pytest.raises(TypeError, match=r"x must be a numpy.ndarray, got list"):
        conv2d_forward(x.tolist(), w)
    with pytest.raises(ValueError, match=r"output would be empty: H_out=0"):
        conv2d_forward(np.zeros((2, 3, 2, 8)), w, padding=0)
    with pytest.raises(ValueError, match=r"stride must be >= 1, got 0"):
        conv2d_forward(x, w, stride=0)
    with pytest.raises(ValueError, match=r"padding must be >= 0, got -1"):
        conv2d_forward(x, w, padding=-1)
    with pytest.raises(TypeError, match=r"stride must be an int"):
        conv2d_forward(x, w, stride=1.5)


def test_conv2d_backward_rejects_bad_inputs():
    x, w = np.zeros((2, 3, 8, 8)), np.zeros((5, 3, 3, 3))
    gy = np.zeros((2, 5, 8, 8))
    with pytest.raises(ValueError, match=r"conv2d_backward: grad_y.shape=\(2, 5, 6, 6\), "
                                         r"expected \(2, 5, 8, 8\)"):
        conv2d_backward(np.zeros((2, 5, 6, 6)), x, w, padding=1)
    with pytest.raises(ValueError, match=r"conv2d_backward: grad_y must have 4 dimensions"):
        conv2d_backward(gy[0], x, w, padding=1)
    with pytest.raises(TypeError, match=r"conv2d_backward: .*grad_y=float32, x=float64"):
        conv2d_backward(gy.astype(np.float32), x, w, padding=1)
    with pytest.raises(ValueError, match=r"conv2d_backward: x has C_in=3 channels but w expects"):
        conv2d_backward(gy, x, np.zeros((5, 2, 3, 3)), padding=1)


# (f) numba kernels equal their .py_func ----------------------------------------------------

def _kernel_inputs(dtype, stride, padding, seed=10):
    """Arguments for each layout kernel on a tiny non-square case."""
    rng = np.random.default_rng(seed)
    n, c_in, h, w, kh, kw, c_out = 2, 3, 5, 4, 3, 2, 2
    ho, wo = conv.conv2d_output_size(h, w, kh, kw, stride, padding)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    k, P = c_in * kh * kw, ho * wo
    return {
        "_im2col_kernel": ((x, kh, kw, stride, padding, ho, wo), (k, n * P), dtype),
        "_col2im_kernel": ((rng.standard_normal((k, n * P)).astype(dtype), kh, kw, stride,
                            padding, ho, wo), (n, c_in, h, w), dtype),
        "_cm_to_nchw_kernel": ((rng.standard_normal((c_out, n, P)).astype(dtype),), (n, c_out, P),
                               dtype),
        "_nchw_to_cm_kernel": ((rng.standard_normal((n, c_out, P)).astype(dtype),), (c_out, n, P),
                               dtype),
    }


KERNELS = ("_im2col_kernel", "_col2im_kernel", "_cm_to_nchw_kernel", "_nchw_to_cm_kernel")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0), (3, 2)])
@pytest.mark.parametrize("name", KERNELS)
def test_conv_kernel_equals_py_func(name, stride, padding, dtype):
    args, out_shape, dt = _kernel_inputs(dtype, stride, padding)[name]
    kernel = getattr(conv, name)
    jit_out = np.full(out_shape, np.nan, dtype=dt)  # NaN: an unwritten entry cannot hide
    py_out = np.full(out_shape, np.nan, dtype=dt)
    kernel(*args, jit_out)
    getattr(kernel, "py_func", kernel)(*args, py_out)
    assert not np.isnan(jit_out).any(), f"{name} left entries unwritten"
    assert_close(jit_out, py_out, kind="py_func",
                 what=f"conv.{name}(stride={stride}, padding={padding}) jit vs py_func")


# (g) parallel equals serial, bit for bit ---------------------------------------------------

@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1)])
@pytest.mark.parametrize("name", KERNELS)
def test_conv_kernel_parallel_equals_serial(name, stride, padding, numba_threads):
    args, out_shape, dt = _kernel_inputs(np.float64, stride, padding, seed=11)[name]
    kernel = getattr(conv, name)
    outs = {}
    for threads in (1, 2):
        out = np.full(out_shape, np.nan, dtype=dt)
        numba_threads(threads, kernel, *args, out)
        outs[threads] = out
    assert np.array_equal(outs[1], outs[2]), f"conv.{name}: 2 threads differ from 1 thread"


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
def test_conv2d_parallel_equals_serial_end_to_end(stride, padding, numba_threads):
    case = _case((3, 4, 9, 7), (5, 4, 3, 2), stride, padding, seed=12)
    g = np.random.default_rng(13).standard_normal(case.out_shape)

    def run():
        y = conv2d_forward(case.x, case.w, stride=stride, padding=padding)
        return y, conv2d_backward(g, case.x, case.w, stride=stride, padding=padding)

    (y1, g1), (y2, g2) = numba_threads(1, run), numba_threads(2, run)
    assert np.array_equal(y1, y2) and np.array_equal(g1.x, g2.x) and np.array_equal(g1.w, g2.w)


def test_backward_with_the_forwards_cols_is_bit_identical():
    # conv2d_forward_keep's y equals conv2d_forward's, and conv2d_backward(cols=) gives the same
    # bits as rebuilding im2col; the passed matrix is left unchanged (read only)
    from refsnn.ops.conv import conv2d_backward, conv2d_forward, conv2d_forward_keep

    rng = np.random.default_rng(0)
    for dtype, (stride, padding) in ((np.float32, (1, 1)), (np.float64, (2, 0))):
        x = rng.standard_normal((3, 4, 7, 6)).astype(dtype)
        w = rng.standard_normal((5, 4, 3, 3)).astype(dtype)
        out = conv2d_forward_keep(x, w, stride=stride, padding=padding)
        assert np.array_equal(out.y, conv2d_forward(x, w, stride=stride, padding=padding))
        g = rng.standard_normal(out.y.shape).astype(dtype)
        kept = out.cols.copy()
        a = conv2d_backward(g, x, w, stride=stride, padding=padding, cols=out.cols)
        b = conv2d_backward(g, x, w, stride=stride, padding=padding)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.w, b.w)
        assert np.array_equal(out.cols, kept)
        # overwrite_cols=True: the same bits, and the matrix is reused as the backward's scratch
        c = conv2d_backward(g, x, w, stride=stride, padding=padding, cols=out.cols,
                            overwrite_cols=True)
        assert np.array_equal(c.x, b.x) and np.array_equal(c.w, b.w)
        assert not np.array_equal(out.cols, kept)


def test_backward_rejects_cols_of_another_shape():
    from refsnn.ops.conv import conv2d_backward, conv2d_forward_keep

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    out = conv2d_forward_keep(x, w, padding=1)
    with pytest.raises(ValueError, match="cols must be"):
        conv2d_backward(np.ones_like(out.y), x, w, padding=1, cols=out.cols[:, :-1])
    with pytest.raises(ValueError, match="cols must be"):
        conv2d_backward(np.ones_like(out.y), x, w, padding=1, cols=out.cols.astype(np.float32))
    with pytest.raises(TypeError, match="overwrite_cols must be a bool"):
        conv2d_backward(np.ones_like(out.y), x, w, padding=1, cols=out.cols, overwrite_cols=1)
