"""Winograd F(2x2, 3x3) convolution: equal to the im2col reference to rounding, its backward the
exact adjoint, and the same bits at any thread count.

(refsnn/ops/winograd.py; the automatic choice in refsnn/ops/conv_relu.py)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradcheck import adjoint_check, away_from_zero
from refsnn.ops import winograd
from refsnn.ops.activation import relu_backward, relu_forward, zero_units_of
from refsnn.ops.conv import conv2d_backward, conv2d_forward
from refsnn.ops.conv_relu import conv2d_relu_backward, conv2d_relu_forward
from refsnn.ops.winograd import (winograd_applies, winograd_conv_backward,
                                 winograd_conv_forward, winograd_filter)
from strategies import seeds

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py


@st.composite
def cases(draw, dtype=np.float64):
    """x (N, C_in, H, W), w (C_out, C_in, 3, 3): odd and even sides from 1 (one cropped tile)
    to 7, a few channel counts."""
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    c_in = draw(st.integers(1, 9))
    c_out = draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(seeds))
    return (rng.standard_normal((n, c_in, h, w)).astype(dtype),
            rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype), rng)


def _rel(a, b):
    """max |a - b| relative to the largest |b| (the errors of a transform-based conv scale with
    the magnitudes summed, not with each output, which may cancel to ~0)."""
    assert a.shape == b.shape and a.dtype == b.dtype, f"{a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@given(case=cases())
def test_forward_and_backward_equal_im2col_float64(case):
    """Float64: y, grad_x, grad_w within 1e-12 (relative to the largest value) of
    conv2d_forward / conv2d_backward, which a wrong index or sign misses by O(1)."""
    x, w, rng = case
    out = winograd_conv_forward(x, w)
    y = conv2d_forward(x, w, stride=1, padding=1)
    assert _rel(out.y, y) < 1e-12
    g = rng.standard_normal(y.shape)
    got = winograd_conv_backward(g, out.v, w, x.shape)
    ref = conv2d_backward(g, x, w, stride=1, padding=1)
    assert _rel(got.x, ref.x) < 1e-12
    assert _rel(got.w, ref.w) < 1e-12


@given(case=cases(dtype=np.float32))
def test_float32_close_to_float64_reference(case):
    """Float32 against the float64 im2col result: within 1e-5 of the largest value (eps 1.2e-7
    times the few-hundred-term sums and the transforms' additions)."""
    x, w, rng = case
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    out = winograd_conv_forward(x, w)
    assert out.y.dtype == np.float32 and out.v.dtype == np.float32
    y64 = conv2d_forward(x64, w64, stride=1, padding=1)
    assert _rel(out.y.astype(np.float64), y64) < 1e-5
    g = rng.standard_normal(y64.shape)
    got = winograd_conv_backward(g.astype(np.float32), out.v, w, x.shape)
    ref = conv2d_backward(g, x64, w64, stride=1, padding=1)
    assert _rel(got.x.astype(np.float64), ref.x) < 1e-5
    assert _rel(got.w.astype(np.float64), ref.w) < 1e-5


@given(case=cases(), seed=seeds)
def test_adjoint_central_differences(case, seed):
    """<J t, c> by central differences of the Winograd forward itself equals <t, J^T c> from its
    backward, perturbing x and w jointly (the map is bilinear: no truncation error)."""
    x, w, _ = case

    def f(x, w):
        return winograd_conv_forward(x, w).y

    def vjp(c):
        g = winograd_conv_backward(c, winograd_conv_forward(x, w).v, w, x.shape)
        return {"x": g.x, "w": g.w}

    adjoint_check(f, {"x": x, "w": w}, vjp, np.random.default_rng(seed),
                  name="winograd_conv")


@given(case=cases(), seed=seeds)
def test_relu_gating_and_pass_units_match_reference(case, seed):
    """relu=True and the gated backward equal relu(conv) and conv's VJP of relu_backward's
    gradient, with an all-zero filter whose channel passes its gradient (zero_units)."""
    x, w, _ = case
    rng = np.random.default_rng(seed)
    w = w.copy()
    w[0] = 0.0  # a pruned filter: its output is exactly 0 on both paths
    units = zero_units_of(w)
    out = winograd_conv_forward(x, w, relu=True)
    z = conv2d_forward(x, w, stride=1, padding=1)
    y = relu_forward(z)
    assert _rel(out.y, y) < 1e-12 and np.all(out.y[:, 0] == 0.0)
    g = rng.standard_normal(y.shape)
    got = winograd_conv_backward(g, out.v, w, x.shape, y_relu=out.y, pass_units=units)
    ref = conv2d_backward(relu_backward(g, z, zero_units=units), x, w, stride=1, padding=1)
    assert _rel(got.x, ref.x) < 1e-12
    assert _rel(got.w, ref.w) < 1e-12


def test_relu_adjoint_away_from_kinks():
    """The fused ReLU path passes the adjoint check where no output sits near 0."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 5, 5, 6)), rng.standard_normal((3, 5, 3, 3))
    z = conv2d_forward(x, w, stride=1, padding=1)
    bias = away_from_zero(z, 0.3) - z  # a fixed shift that moves every output off the kink

    def f(x):
        return relu_forward(conv2d_forward(x, w, stride=1, padding=1) + bias)

    def vjp(c):  # through the Winograd backward with the gate of the shifted outputs
        y = f(x)
        return {"x": winograd_conv_backward(c, winograd_conv_forward(x, w).v, w, x.shape,
                                            y_relu=y).x}

    adjoint_check(f, {"x": x}, vjp, rng, eps=1e-7, name="winograd relu gate")


def test_filter_transform_is_g_w_gt():
    """U[4r + s, o, c] = (G g G^T)[r, s], against the matrices written out."""
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    w = np.random.default_rng(0).standard_normal((3, 2, 3, 3))
    u = winograd_filter(w)
    want = np.einsum("rp,ocpq,sq->rsoc", G, w, G).reshape(16, 3, 2)
    np.testing.assert_allclose(u, want, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_parallel_equals_serial_bitwise(dtype, numba_threads):
    """Every kernel writes disjoint slices in a fixed order: 1 and 2 threads give the same bits."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 18, 6, 5)).astype(dtype)  # 5 images over 2 threads
    w = rng.standard_normal((17, 18, 3, 3)).astype(dtype)
    g = rng.standard_normal((5, 17, 6, 5)).astype(dtype)

    def run():
        out = winograd_conv_forward(x, w, relu=True)
        b = winograd_conv_backward(g, out.v, w, x.shape, y_relu=out.y)
        return out.y, out.v, out.u, b.x, b.w

    for a, b in zip(numba_threads(1, run), numba_threads(2, run)):
        assert np.array_equal(a, b)


def test_overwrite_v_and_passing_u_give_the_same_numbers():
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 4, 5, 5)), rng.standard_normal((3, 4, 3, 3))
    out = winograd_conv_forward(x, w)
    assert np.array_equal(out.u, winograd_filter(w))
    g = rng.standard_normal(out.y.shape)
    keep = winograd_conv_backward(g, out.v, w, x.shape)
    v = out.v.copy()
    over = winograd_conv_backward(g, v, w, x.shape, overwrite_v=True, u=out.u)
    assert np.array_equal(keep.x, over.x) and np.array_equal(keep.w, over.w)
    for need_x in (True, False):
        with pytest.raises(ValueError, match="u must be"):
            winograd_conv_backward(g, out.v, w, x.shape, u=out.u[:, :1], need_x=need_x)
    assert winograd_conv_backward(g, out.v, w, x.shape, need_x=False).x is None


def test_automatic_choice_follows_the_shape_rule():
    """conv2d_relu_forward(method="auto") takes Winograd exactly where winograd_applies holds,
    and the two methods agree to rounding there (forward and backward)."""
    rng = np.random.default_rng(7)
    c = winograd.MIN_CHANNELS
    for side, want in ((winograd.MIN_SIZE, True), (winograd.MIN_SIZE + 4, True),
                       (winograd.MIN_SIZE + 1, False), (winograd.MIN_SIZE - 2, False)):
        x, w = rng.standard_normal((1, c, side, side)), rng.standard_normal((c, c, 3, 3))
        assert winograd_applies(x.shape, w.shape, 1, 1) is want
        auto = conv2d_relu_forward(x, w, stride=1, padding=1)
        assert auto.winograd is want
        ref = conv2d_relu_forward(x, w, stride=1, padding=1, method="im2col")
        assert _rel(auto.y, ref.y) < 1e-12
        g = rng.standard_normal(ref.y.shape)
        ga = conv2d_relu_backward(g, auto, x.shape, w, stride=1, padding=1)
        gr = conv2d_relu_backward(g, ref, x.shape, w, stride=1, padding=1)
        assert _rel(ga.x, gr.x) < 1e-12 and _rel(ga.w, gr.w) < 1e-12
    assert not winograd_applies((1, c - 1, 6, 6), (c, c - 1, 3, 3), 1, 1)  # too few inputs
    assert not winograd_applies((1, c, 6, 6), (c - 1, c, 3, 3), 1, 1)  # too few outputs
    assert not winograd_applies((1, c, 6, 6), (c, c, 3, 3), 2, 1)  # stride 2
    assert not winograd_applies((1, c, 6, 6), (c, c, 1, 1), 1, 0)  # 1x1
    assert not winograd_applies((1, c, 6, 7), (c, c, 3, 3), 1, 1)  # an odd side


def test_bad_input_names_the_argument():
    x, w = np.zeros((1, 2, 4, 4)), np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match="3x3"):
        winograd_conv_forward(x, np.zeros((3, 2, 5, 5)))
    with pytest.raises(ValueError, match="x.shape"):
        winograd_conv_forward(np.zeros((1, 4, 4, 4)), w)
    out = winograd_conv_forward(x, w)
    with pytest.raises(ValueError, match="v must be"):
        winograd_conv_backward(np.zeros((1, 3, 4, 4)), out.v[:-1], w, x.shape)
    with pytest.raises(ValueError, match="grad_y.shape"):
        winograd_conv_backward(np.zeros((1, 3, 4, 5)), out.v, w, x.shape)
    with pytest.raises(ValueError, match="y_relu must be"):
        winograd_conv_backward(np.zeros((1, 3, 4, 4)), out.v, w, x.shape,
                               y_relu=np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(TypeError, match="need_x"):
        winograd_conv_backward(np.zeros((1, 3, 4, 4)), out.v, w, x.shape, need_x=1)
    with pytest.raises(ValueError, match="method"):
        conv2d_relu_forward(x, w, padding=1, method="fft")
    with pytest.raises(ValueError, match="method='winograd' needs"):
        conv2d_relu_forward(x, w, padding=0, method="winograd")
