"""Surrogate gradients of the spike function, each as a (primitive, grad) pair.

A spike is s = H(z) with z = u/v - 1 (SPEC 5.1). H has no useful derivative, so BPTT replaces
dH/dz by a surrogate g(z) (SPEC 5.2). Each surrogate here comes with its *primitive* P, a
smooth function with P' = g:

- ``grad`` is what lif_backward uses for ds/dz in every mode;
- ``primitive`` is the spike function of lif_forward(spike="smooth"), in which the whole
  forward is differentiable and the hand-written BPTT must equal finite differences exactly;
- tests/neurons/test_surrogate.py differentiates every primitive numerically and compares it
  with ``grad``, so a docstring formula the code does not compute is caught.

Every function is a scalar ``@numba.njit(cache=True)`` function so the LIF kernels can call it;
the kernels select the surrogate by an integer code (``SURROGATES[name].code``) passed as an
argument, never through a global. All hyperparameters are arguments.

    name       grad g(z) = ds/dz                           primitive P(z)              parameters
    "pwl"      gamma * max(0, 1 - |z|)                     piecewise quadratic, below  gamma
    "sigmoid"  gamma * alpha * sig(alpha z)(1 - sig(alpha z))   gamma * sig(alpha z)    gamma, alpha

"pwl" is SPEC 5.2 (DIET-SNN's surrogate) and the default, gamma = 0.3. "sigmoid" is the
*(option)* surrogate; alpha = 4 by default, which gives it the same peak g(0) = gamma as "pwl".
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numba

DEFAULT_GAMMA = 0.3  # SPEC 5.2
DEFAULT_ALPHA = 4.0  # sigmoid sharpness: g(0) = gamma * alpha / 4 = gamma, the pwl peak


class Surrogate(NamedTuple):
    primitive: Callable  # P(z, *params): the smooth spike function
    grad: Callable  # g(z, *params) = P'(z): the surrogate ds/dz
    code: int  # the integer the LIF kernels dispatch on
    params: tuple  # names of the hyperparameters after z, in call order


# --- "pwl": piecewise linear (SPEC 5.2) -------------------------------------------------------

@numba.njit(cache=True)
def pwl_primitive(z, gamma):
    """Primitive of the piecewise-linear surrogate (a smoothed step from 0 to gamma).

    P(z) = 0                            z < -1
         = gamma * (z + 1)^2 / 2        -1 <= z < 0
         = gamma * (1 - (1 - z)^2 / 2)  0 <= z < 1
         = gamma                        z >= 1
    C^1 (P' = pwl_grad is continuous); P'' jumps at z = -1, 0, 1.
    """
    if z < -1.0:
        return 0.0 * z
    if z < 0.0:
        return gamma * (z + 1.0) * (z + 1.0) * 0.5
    if z < 1.0:
        return gamma * (1.0 - (1.0 - z) * (1.0 - z) * 0.5)
    return gamma + 0.0 * z


@numba.njit(cache=True)
def pwl_grad(z, gamma):
    """ds/dz = gamma * max(0, 1 - |z|)   (SPEC 5.2; DIET-SNN's surrogate, gamma = 0.3)."""
    return gamma * max(0.0, 1.0 - abs(z))


# --- "sigmoid" --------------------------------------------------------------------------------

@numba.njit(cache=True)
def _sig(x):
    # numerically stable logistic 1 / (1 + exp(-x)): exp of a non-positive argument only
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=True)
def sigmoid_primitive(z, gamma, alpha):
    """P(z) = gamma * sig(alpha z),  sig(x) = 1 / (1 + exp(-x)).  Smooth (C^inf)."""
    return gamma * _sig(alpha * z)


@numba.njit(cache=True)
def sigmoid_grad(z, gamma, alpha):
    """ds/dz = gamma * alpha * sig(alpha z) * (1 - sig(alpha z))."""
    s = _sig(alpha * z)
    return gamma * alpha * s * (1.0 - s)


SURROGATES = {
    "pwl": Surrogate(pwl_primitive, pwl_grad, 0, ("gamma",)),
    "sigmoid": Surrogate(sigmoid_primitive, sigmoid_grad, 1, ("gamma", "alpha")),
}


# --- dispatch for the kernels -------------------------------------------------------------------

@numba.njit(cache=True)
def surrogate_primitive(code, z, gamma, alpha):
    """P(z) of the surrogate with integer ``code`` (alpha is ignored by "pwl")."""
    if code == 0:
        return pwl_primitive(z, gamma)
    return sigmoid_primitive(z, gamma, alpha)


@numba.njit(cache=True)
def surrogate_grad(code, z, gamma, alpha):
    """g(z) = ds/dz of the surrogate with integer ``code`` (alpha is ignored by "pwl")."""
    if code == 0:
        return pwl_grad(z, gamma)
    return sigmoid_grad(z, gamma, alpha)
