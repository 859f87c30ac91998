"""Meta-tests: the gradient checkers in tests/gradcheck.py fail on deliberately broken backwards.

A checker that never fails proves nothing. Each broken backward below is a realistic slip
(transposed kernel axes on a square kernel, a flipped sign, a missing 1/k^2, a missing 1/N, a
one-pixel shift); both adjoint_check and elementwise_fd must raise GradcheckError naming the op,
while the correct backward passes on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import (GradcheckError, KinkError, adjoint_check, adjoint_check_avoiding_kinks,
                       away_from_zero, elementwise_fd, random_cotangent)
from refsnn.ops.conv import Conv2dGrads, conv2d_backward, conv2d_forward
from refsnn.ops.activation import relu_backward, relu_forward
from refsnn.ops.linear import LinearGrads, linear_backward, linear_forward
from refsnn.ops.loss import cross_entropy_backward, cross_entropy_forward
from refsnn.ops.pool import avg_pool2d_backward, avg_pool2d_forward

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py


def _conv_inputs(seed=0):
    rng = np.random.default_rng(seed)
    # square 3x3 kernel: a transposed-axes grad_w has the right shape and only the checker sees it
    return rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 3))


def _conv_case(broken: str):
    x, w = _conv_inputs()

    def f(x, w):
        return conv2d_forward(x, w, stride=1, padding=1)

    def vjp(c):
        g = conv2d_backward(c, x, w, stride=1, padding=1)
        if broken == "w_transposed_kernel_axes":
            return Conv2dGrads(x=g.x, w=g.w.transpose(0, 1, 3, 2))
        if broken == "x_shifted_one_pixel":
            return Conv2dGrads(x=np.roll(g.x, 1, axis=3), w=g.w)
        if broken == "w_sign":
            return Conv2dGrads(x=g.x, w=-g.w)
        return g

    return f, {"x": x, "w": w}, vjp


def _relu_case(broken: str):
    x = away_from_zero(np.random.default_rng(1).standard_normal((2, 3, 4)), 1e-3)

    def vjp(c):
        g = relu_backward(c, relu_forward(x))
        if broken == "wrong_sign":
            g = -g
        elif broken == "mask_from_negative_side":  # uses [x < 0] instead of [x > 0]
            g = np.where(x < 0, c, 0.0)
        return {"x": g}

    return relu_forward, {"x": x}, vjp


def _pool_case(broken: str):
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 4))

    def vjp(c):
        g = avg_pool2d_backward(c, x.shape, kernel=2)
        return {"x": g * 4 if broken == "missing_1_over_k2" else g}

    return (lambda x: avg_pool2d_forward(x, kernel=2)), {"x": x}, vjp


def _linear_case(broken: str):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))  # square w

    def vjp(c):
        g = linear_backward(c, x, w)
        return LinearGrads(x=g.x, w=g.w.T) if broken == "w_transposed" else g

    return linear_forward, {"x": x, "w": w}, vjp


def _ce_case(broken: str):
    rng = np.random.default_rng(4)
    logits, labels = rng.standard_normal((3, 5)), np.array([0, 4, 2])

    def vjp(c):
        g = cross_entropy_backward(float(c), logits, labels)
        return {"logits": g * 3 if broken == "missing_1_over_N" else g}

    return (lambda logits: cross_entropy_forward(logits, labels)), {"logits": logits}, vjp


BROKEN = [
    ("conv2d_backward", _conv_case, "w_transposed_kernel_axes"),
    ("conv2d_backward", _conv_case, "x_shifted_one_pixel"),
    ("conv2d_backward", _conv_case, "w_sign"),
    ("relu_backward", _relu_case, "wrong_sign"),
    ("relu_backward", _relu_case, "mask_from_negative_side"),
    ("avg_pool2d_backward", _pool_case, "missing_1_over_k2"),
    ("linear_backward", _linear_case, "w_transposed"),
    ("cross_entropy_backward", _ce_case, "missing_1_over_N"),
]


@pytest.mark.parametrize("op, make, broken", BROKEN, ids=[f"{o}-{b}" for o, _, b in BROKEN])
def test_adjoint_check_fails_on_broken_backward(op, make, broken):
    f, inputs, vjp = make(broken)
    with pytest.raises(GradcheckError, match=rf"{op}\[{broken}\]: adjoint check failed"):
        adjoint_check(f, inputs, vjp, np.random.default_rng(10), name=f"{op}[{broken}]")


@pytest.mark.parametrize("op, make, broken", BROKEN, ids=[f"{o}-{b}" for o, _, b in BROKEN])
def test_elementwise_fd_fails_on_broken_backward(op, make, broken):
    f, inputs, vjp = make(broken)
    with pytest.raises(GradcheckError, match=rf"{op}\[{broken}\]: \d+ of \d+ entries disagree"):
        elementwise_fd(f, inputs, vjp, np.random.default_rng(11), name=f"{op}[{broken}]")


@pytest.mark.parametrize("make", sorted({m for _, m, _ in BROKEN}, key=lambda m: m.__name__))
def test_checkers_pass_on_the_correct_backward(make):
    """The same inputs with the real backward pass: the failures above are the bugs' doing."""
    f, inputs, vjp = make("none")
    res = adjoint_check(f, inputs, vjp, np.random.default_rng(12), name=make.__name__)
    assert res.rel_err < 1e-8, res
    rows = elementwise_fd(f, inputs, vjp, np.random.default_rng(13), name=make.__name__)
    assert rows and rows[0][0] <= 1.0


def test_adjoint_check_detects_transpose_for_many_seeds():
    """Not a lucky draw: the transposed-kernel grad_w fails for each of 20 tangent seeds."""
    f, inputs, vjp = _conv_case("w_transposed_kernel_axes")
    for seed in range(20):
        with pytest.raises(GradcheckError):
            adjoint_check(f, inputs, vjp, np.random.default_rng(seed), name="conv2d_backward")


def test_elementwise_fd_reports_worst_entries():
    f, inputs, vjp = _pool_case("missing_1_over_k2")
    with pytest.raises(GradcheckError) as info:
        elementwise_fd(f, inputs, vjp, np.random.default_rng(14), name="avg_pool2d_backward",
                       n_report=3)
    msg = str(info.value)
    assert msg.count("grad_x[") == 3 and "analytic" in msg and "numeric" in msg


# Kinks ------------------------------------------------------------------------------------

def test_kink_crossing_breaks_the_check_without_pattern():
    """Inputs within eps*|t| of 0: the central difference straddles the kink and the check
    fails even though relu_backward is right. This is why draws are filtered."""
    x = np.random.default_rng(5).standard_normal((4, 5)) * 1e-9
    with pytest.raises(GradcheckError):
        adjoint_check(relu_forward, {"x": x}, lambda c: {"x": relu_backward(c, relu_forward(x))},
                      np.random.default_rng(6), name="relu_backward")


def test_pattern_turns_kink_crossing_into_kink_error():
    x = np.random.default_rng(5).standard_normal((4, 5)) * 1e-9
    with pytest.raises(KinkError, match=r"relu_backward: \d+ activation\(s\) change sign"):
        adjoint_check(relu_forward, {"x": x}, lambda c: {"x": relu_backward(c, relu_forward(x))},
                      np.random.default_rng(6), name="relu_backward",
                      pattern=lambda inp: (inp["x"] > 0,))


def test_avoiding_kinks_gives_up_at_an_exact_kink():
    """x = 0: every tangent with a positive entry changes the pattern; after max_draws the
    helper raises GradcheckError instead of looping or silently passing."""
    x = np.zeros((3, 3))
    with pytest.raises(GradcheckError, match=r"no kink-free tangent in 5 draws"):
        adjoint_check_avoiding_kinks(relu_forward, {"x": x},
                                     lambda c: {"x": relu_backward(c, relu_forward(x))},
                                     np.random.default_rng(7), pattern=lambda i: (i["x"] > 0,),
                                     max_draws=5, name="relu_backward")


def test_avoiding_kinks_still_catches_a_broken_backward():
    """Kink filtering must not hide a wrong gradient: a wrong sign still fails."""
    f, inputs, vjp = _relu_case("wrong_sign")
    with pytest.raises(GradcheckError, match="adjoint check failed"):
        adjoint_check_avoiding_kinks(f, inputs, vjp, np.random.default_rng(8),
                                     pattern=lambda i: (i["x"] > 0,), name="relu_backward")


# Guards -----------------------------------------------------------------------------------

def test_checkers_refuse_float32_inputs():
    x = np.zeros((2, 2), np.float32)
    with pytest.raises(TypeError, match=r"finite differences need float64 inputs; x is float32"):
        adjoint_check(relu_forward, {"x": x}, lambda c: {"x": c}, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"float64"):
        elementwise_fd(relu_forward, {"x": x}, lambda c: {"x": c}, np.random.default_rng(0))


def test_missing_gradient_is_an_error():
    x, w = _conv_inputs()
    with pytest.raises(GradcheckError, match=r"conv2d_backward: vjp returned no gradient for "
                                              r"\['x'\]"):
        adjoint_check(lambda x, w: conv2d_forward(x, w, stride=1, padding=1), {"x": x, "w": w},
                      lambda c: conv2d_backward(c, x, w, stride=1, padding=1, need_x=False),
                      np.random.default_rng(0), name="conv2d_backward")


def test_random_cotangent_is_never_constant():
    rng = np.random.default_rng(0)
    for shape in [(2,), (3, 4), (1, 2, 3, 4)]:
        c = random_cotangent(shape, rng)
        assert c.shape == shape and c.dtype == np.float64
        assert not np.all(c == c.flat[0])
