"""All-zero units in the ANN (refsnn/models/ann.py, ann_backward's "ReLU at 0").

A conv filter or linear row whose weights are all zero has pre-activation exactly 0 on every
sample (no bias). ann_backward takes ReLU's right derivative there, so such a unit gets the
gradient of "growing" it: for a direction d that is >= 0 on the unit's weights (0 elsewhere)
and a layer whose inputs are >= 0 (post-ReLU, pooled), the unit's pre-activation h * (d * x)
is >= 0 for h > 0 and the loss is smooth in h on (0, h0): the one-sided second-order
difference (-f(2h) + 4 f(h) - 3 f(0)) / (2h) equals <grad, d> up to O(h^2). Channel-mode
sparse learning (SPEC 4.2.5) needs this: with torch's derivative 0 a dead filter has no
momentum to be ranked by, and a filter regrown at 0 never moves.
"""

from __future__ import annotations

import numpy as np
import pytest

from refsnn.models.ann import ann_backward, ann_forward
from refsnn.models.arch import build_arch, init_params
from refsnn.ops.loss import cross_entropy_backward, cross_entropy_forward
from refsnn.optim import adam_init, adam_momentum, adam_step

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

IN_SHAPE, N, CLASSES = (3, 16, 16), 4, 3


def _case(seed, zero):
    """vgg9 at width 1/16, float64, no dropout; the units in ``zero`` ({name: index}) zeroed."""
    arch = build_arch("vgg9", in_shape=IN_SHAPE, classes=CLASSES, width=1 / 16)
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, np.float64)
    params = {k: v * (30.0 if v.ndim == 2 else 1.0) for k, v in params.items()}  # fc away from 0
    for name, o in zero.items():
        params[f"{name}.weight"][o] = 0.0
    x, y = rng.standard_normal((N,) + IN_SHAPE), rng.integers(0, CLASSES, N)
    return arch, params, x, y, rng


def _loss(arch, params, x, y):
    return cross_entropy_forward(ann_forward(arch, params, x)[0], y)


def _grads(arch, params, x, y):
    logits, tape = ann_forward(arch, params, x)
    return ann_backward(cross_entropy_backward(1.0, logits, y), arch, params, tape)


@pytest.mark.parametrize("name,unit", [("conv3", 5), ("conv6", 0), ("fc1", 7), ("fc2", 3)])
def test_zero_unit_gradient_is_the_one_sided_derivative(name, unit):
    """Inputs of conv3, conv6, fc1 and fc2 are post-ReLU (and pooled): >= 0. The gradient of
    the zeroed unit matches the one-sided difference and is not zero (torch's would be)."""
    arch, params, x, y, rng = _case(3, {name: unit})
    key = f"{name}.weight"
    g = _grads(arch, params, x, y)[key]
    assert np.any(g[unit] != 0), f"{key}[{unit}] got no gradient"
    d = np.zeros_like(params[key])
    d[unit] = rng.random(d[unit].shape)

    def f(h):
        p = dict(params)
        p[key] = params[key] + h * d
        return _loss(arch, p, x, y)

    h = 1e-5
    one_sided = (-f(2 * h) + 4 * f(h) - 3 * f(0.0)) / (2 * h)
    expected = float(np.sum(g * d))
    assert abs(one_sided - expected) <= 1e-6 * abs(expected) + 1e-12, (one_sided, expected)


def test_only_the_zero_units_own_gradient_differs_from_torchs_rule():
    """zero_units=False is torch's derivative 0 everywhere. The rules differ only in the
    gradient reaching the zero filter's output; its weights are 0, so it adds exact zeros to
    the input gradient: every other gradient is the same bit for bit."""
    arch, params, x, y, _ = _case(4, {"conv4": 2})
    g = _grads(arch, params, x, y)
    logits, tape = ann_forward(arch, params, x)
    torch_rule = ann_backward(cross_entropy_backward(1.0, logits, y), arch, params, tape,
                              zero_units=False)
    others = np.arange(params["conv4.weight"].shape[0]) != 2
    for k in g:
        if k == "conv4.weight":
            assert np.array_equal(g[k][others], torch_rule[k][others])
            assert not np.any(torch_rule[k][2]) and np.any(g[k][2])
        else:
            assert np.array_equal(g[k], torch_rule[k]), k


def test_regrown_filter_learns_and_dead_filters_have_momentum():
    """Stage B's situation: a masked (dead) filter, W <- W * M after every step, gets Adam
    momentum (what channel-mode regrowth ranks by); a filter regrown at 0 moves off 0 in
    one step."""
    arch, params, x, y, _ = _case(5, {"conv5": 1})
    state = adam_init(params, amsgrad=False)
    for _ in range(2):
        grads = _grads(arch, params, x, y)
        adam_step(params, grads, state, lr=1e-3)
        params["conv5.weight"][1] = 0.0  # masked
    assert np.any(adam_momentum(state, "conv5.weight")[1] != 0)
    grads = _grads(arch, params, x, y)  # now regrown at 0: no mask after this step
    adam_step(params, grads, state, lr=1e-3)
    assert np.any(params["conv5.weight"][1] != 0)


def test_zero_units_flag_checked():
    arch, params, x, y, _ = _case(6, {})
    logits, tape = ann_forward(arch, params, x)
    with pytest.raises(TypeError, match="ann_backward: zero_units must be a bool, got str"):
        ann_backward(np.zeros_like(logits), arch, params, tape, zero_units="yes")
