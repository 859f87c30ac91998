"""Surrogate gradients (refsnn/neurons/surrogate.py): each grad is the derivative of its primitive.

The primitive is what lif_forward(spike="smooth") computes and the grad is what lif_backward
uses, so a docstring/code drift in either (snnTorch's ATan slip) breaks the smooth-mode
gradient checks; these tests catch it at the source, by differentiating every primitive
numerically (spikingjelly's surrogate test) and comparing with the docstring formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from refsnn.neurons import surrogate as sg
from refsnn.neurons.surrogate import SURROGATES, surrogate_grad, surrogate_primitive
from tolerances import tol

# hyperparameters for each surrogate, by name; the defaults and one other setting
PARAMS = {"pwl": [dict(gamma=0.3), dict(gamma=1.7)],
          "sigmoid": [dict(gamma=0.3, alpha=4.0), dict(gamma=0.8, alpha=1.5)]}
KINKS = {"pwl": (-1.0, 0.0, 1.0), "sigmoid": ()}  # where P'' jumps (P' is continuous anyway)
EPS = 1e-6
# Central difference of P at eps = 1e-6: truncation eps^2 |P'''| / 6 (0 for the quadratic
# pieces of pwl, <= 1e-12 * gamma alpha^3 / 6 ~ 1e-11 for sigmoid) plus cancellation
# ~2.2e-16 * |P| / eps ~ 1e-10 (|P| <= gamma <= 1.7). 1e-8 absolute leaves 100x margin; a wrong
# formula (a missing alpha, a factor 1/2) is off by O(gamma).
FD_ATOL = 1e-8


def _call(fn, z, params, name):
    return fn(z, *(params[p] for p in SURROGATES[name].params))


def _cases():
    return [(name, p) for name, ps in PARAMS.items() for p in ps]


@pytest.mark.parametrize("name,params", _cases())
def test_grad_is_the_derivative_of_the_primitive_on_a_grid(name, params):
    """g(z) == (P(z + eps) - P(z - eps)) / 2 eps on 801 points of [-4, 4], kinks excluded."""
    pair = SURROGATES[name]
    zs = np.linspace(-4.0, 4.0, 801) + 1e-3 / 3  # offset: no grid point lands on a kink
    zs = [z for z in zs if all(abs(z - k) > 10 * EPS for k in KINKS[name])]
    worst = 0.0
    for z in zs:
        num = (_call(pair.primitive, z + EPS, params, name)
               - _call(pair.primitive, z - EPS, params, name)) / (2 * EPS)
        ana = _call(pair.grad, z, params, name)
        worst = max(worst, abs(num - ana))
        assert abs(num - ana) <= FD_ATOL, (
            f"{name}{params}: grad({z:.6g}) = {ana!r} but the central difference of "
            f"primitive is {num!r} (docstring/code drift?)")
    assert worst < FD_ATOL


@given(name=st.sampled_from(sorted(SURROGATES)), z=st.floats(-6.0, 6.0),
       gamma=st.floats(0.05, 2.0), alpha=st.floats(0.5, 8.0))
def test_grad_is_the_derivative_of_the_primitive_property(name, z, gamma, alpha):
    assume(all(abs(z - k) > 10 * EPS for k in KINKS[name]))
    params = {"gamma": gamma, "alpha": alpha}
    pair = SURROGATES[name]
    num = (_call(pair.primitive, z + EPS, params, name)
           - _call(pair.primitive, z - EPS, params, name)) / (2 * EPS)
    # truncation scales with alpha^3 for sigmoid: alpha <= 8 gives <= 1e-12 * 2 * 512 / 6 ~ 2e-10
    assert abs(num - _call(pair.grad, z, params, name)) <= FD_ATOL


def test_pwl_grad_is_the_spec_formula():
    """SPEC 5.2: ds/dz = gamma * max(0, 1 - |z|), checked against numpy on a grid."""
    for gamma in (0.3, 1.25):
        for z in np.linspace(-2.5, 2.5, 101):
            assert sg.pwl_grad(z, gamma) == gamma * max(0.0, 1.0 - abs(z))


def test_pwl_primitive_piecewise_values():
    """The docstring's four pieces, at hand-computed points (gamma = 0.3):
    z = -2 -> 0;  z = -1 -> 0;  z = -0.5 -> 0.3 * 0.5^2 / 2 = 0.0375;  z = 0 -> 0.15;
    z = 0.5 -> 0.3 * (1 - 0.25 / 2) = 0.2625;  z = 1 -> 0.3;  z = 3 -> 0.3."""
    expected = {-2.0: 0.0, -1.0: 0.0, -0.5: 0.0375, 0.0: 0.15, 0.5: 0.2625, 1.0: 0.3, 3.0: 0.3}
    for z, p in expected.items():
        assert sg.pwl_primitive(z, 0.3) == pytest.approx(p, abs=1e-15), z
    # continuous at the joins (one-sided values agree to O(delta^2))
    for k in KINKS["pwl"]:
        assert abs(sg.pwl_primitive(k - 1e-9, 0.3) - sg.pwl_primitive(k + 1e-9, 0.3)) < 1e-9


def test_sigmoid_formulas():
    """P(z) = gamma sig(alpha z); g(z) = gamma alpha sig (1 - sig); g(0) = gamma alpha / 4."""
    for z in (-3.0, -0.4, 0.0, 0.25, 2.0):
        s = 1.0 / (1.0 + math.exp(-4.0 * z))
        assert sg.sigmoid_primitive(z, 0.3, 4.0) == pytest.approx(0.3 * s, rel=1e-14)
        assert sg.sigmoid_grad(z, 0.3, 4.0) == pytest.approx(0.3 * 4.0 * s * (1 - s), rel=1e-12)
    assert sg.sigmoid_grad(0.0, 0.3, sg.DEFAULT_ALPHA) == 0.3 == sg.pwl_grad(0.0, 0.3)


@pytest.mark.parametrize("name,params", _cases())
def test_primitive_is_a_step_from_0_to_gamma(name, params):
    """P(-inf) = 0 and P(+inf) = gamma: the integral of each surrogate is gamma, so the smooth
    spike has the same height scale for every surrogate; P is non-decreasing (g >= 0)."""
    pair = SURROGATES[name]
    assert _call(pair.primitive, -60.0, params, name) == pytest.approx(0.0, abs=1e-15)
    assert _call(pair.primitive, 60.0, params, name) == pytest.approx(params["gamma"], rel=1e-15)
    zs = np.linspace(-5, 5, 201)
    vals = [_call(pair.primitive, z, params, name) for z in zs]
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert all(_call(pair.grad, z, params, name) >= 0.0 for z in zs)


def test_sigmoid_is_stable_far_out():
    """The logistic is evaluated with exp of a non-positive argument only: no overflow."""
    for z in (-1e4, -800.0, 800.0, 1e4):
        assert math.isfinite(sg.sigmoid_primitive(z, 0.3, 4.0))
        assert sg.sigmoid_grad(z, 0.3, 4.0) == 0.0


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_kernel_dispatch_matches_the_named_pair(name):
    """surrogate_grad/primitive(code, ...) (what the LIF kernels call) == SURROGATES[name]."""
    pair = SURROGATES[name]
    params = {"gamma": 0.45, "alpha": 3.0}
    for z in np.linspace(-2.2, 2.2, 23):
        assert surrogate_grad(pair.code, z, 0.45, 3.0) == _call(pair.grad, z, params, name)
        assert (surrogate_primitive(pair.code, z, 0.45, 3.0)
                == _call(pair.primitive, z, params, name))


def test_codes_are_distinct():
    codes = [p.code for p in SURROGATES.values()]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("fn", [sg.pwl_grad, sg.pwl_primitive], ids=lambda f: f.__name__)
def test_pwl_kernels_equal_py_func(fn):
    """Exact: only + - * and comparisons."""
    for z in np.linspace(-2.3, 2.3, 47):
        assert fn(z, 0.3) == fn.py_func(z, 0.3)


@pytest.mark.parametrize("fn", [sg.sigmoid_grad, sg.sigmoid_primitive],
                         ids=lambda f: f.__name__)
def test_sigmoid_kernels_equal_py_func(fn):
    """exp: LLVM vs libm may differ in the last bits (tolerances 'py_func_transcendental')."""
    rtol = tol(np.float64, "py_func_transcendental")["rtol"]
    for z in np.linspace(-6.3, 6.3, 47):
        a, b = fn(z, 0.3, 4.0), fn.py_func(z, 0.3, 4.0)
        assert abs(a - b) <= rtol * abs(b), (z, a, b)


def test_float32_arguments():
    """The LIF kernels call these with float32 z in float32 layers: finite, close to float64."""
    for name, pair in SURROGATES.items():
        for z in (-1.5, -0.25, 0.0, 0.6, 2.0):
            args = [np.float32(0.3), np.float32(4.0)][:len(pair.params)]
            a = pair.grad(np.float32(z), *args)
            b = pair.grad(z, *[float(x) for x in args])
            assert abs(a - b) <= 1e-6, (name, z, a, b)
