"""Tests of refsnn.optim without torch: hand-derived steps, properties, kernel == py_func.

The comparison with torch.optim itself is in tests/crosscheck/test_optim_torch.py.
"""

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn import optim
from refsnn._fma import fma
from refsnn.optim import (
    adam_init,
    adam_momentum,
    adam_step,
    sgd_init,
    sgd_momentum,
    sgd_step,
)

DTYPES = [np.float32, np.float64]
# float64: 1e-14 allows a few ulp of rounding between the kernels and a formula written in
# plain Python; float32: 1e-6 allows a few float32 ulp (2**-23 = 1.2e-7).
RTOL = {np.float32: 1e-6, np.float64: 1e-14}

# numba's first call compiles (or loads its cache): no deadline.
props = settings(deadline=None)


@st.composite
def param_dicts(draw, dtype=None):
    """(params, grads): 1-3 tensors of distinct shapes (scalars included), values from an rng."""
    if dtype is None:
        dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 3))
    shapes = draw(
        st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple),
                 min_size=n, max_size=n)
    )
    params = {f"layer{i}.weight": np.ascontiguousarray(rng.standard_normal(s).astype(dtype))
              for i, s in enumerate(shapes)}
    grads = {k: np.asarray(rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}
    return params, grads


def copy(d):
    return {k: v.copy() for k, v in d.items()}


# ---------------------------------------------------------------------------------------------
# Hand-derived steps


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_momentum_dampening_weight_decay_by_hand(dtype):
    # lr = 0.5, momentum = 0.5, dampening = 0.5, weight_decay = 0.25; every number below is a
    # short binary fraction, so every operation is exact and the comparison is ==.
    # p0 = [2, -4]
    # step 1, g = [1, 0]:   d = g + 0.25 p = [1.5, -1]
    #                       buf = d (first step: a copy, no dampening) = [1.5, -1]
    #                       p = p - 0.5 buf = [1.25, -3.5]
    # step 2, g = [0, 2]:   d = [0.3125, 1.125]
    #                       buf = 0.5 buf + 0.5 d = [0.90625, 0.0625]
    #                       p = [0.796875, -3.53125]
    # step 3, g = [-1, 1]:  d = [-1 + 0.19921875, 1 - 0.8828125] = [-0.80078125, 0.1171875]
    #                       buf = [0.453125 - 0.400390625, 0.03125 + 0.05859375]
    #                           = [0.052734375, 0.08984375]
    #                       p = [0.796875 - 0.0263671875, -3.53125 - 0.044921875]
    #                         = [0.7705078125, -3.576171875]
    params = {"w": np.array([2.0, -4.0], dtype)}
    state = sgd_init(params)
    expected_p = [[1.25, -3.5], [0.796875, -3.53125], [0.7705078125, -3.576171875]]
    expected_buf = [[1.5, -1.0], [0.90625, 0.0625], [0.052734375, 0.08984375]]
    for k, g in enumerate([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]):
        sgd_step(params, {"w": np.array(g, dtype)}, state, lr=0.5, momentum=0.5,
                 dampening=0.5, weight_decay=0.25)
        np.testing.assert_array_equal(params["w"], np.array(expected_p[k], dtype))
        np.testing.assert_array_equal(state["momentum_buffer.w"], np.array(expected_buf[k], dtype))
        assert int(state["step.w"]) == k + 1
    assert params["w"].dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_nesterov_by_hand(dtype):
    # lr = 0.5, momentum = 0.5, nesterov, weight_decay = 0.25 (exact binary fractions again)
    # p0 = [2, -4]
    # step 1, g = [1, 0]:  d = [1.5, -1];  buf = d = [1.5, -1]
    #                      g' = d + 0.5 buf = [2.25, -1.5];  p = [0.875, -3.25]
    # step 2, g = [0, 2]:  d = [0.21875, 2 - 0.8125] = [0.21875, 1.1875]
    #                      buf = 0.5 buf + d = [0.96875, 0.6875]
    #                      g' = d + 0.5 buf = [0.703125, 1.53125]
    #                      p = [0.875 - 0.3515625, -3.25 - 0.765625] = [0.5234375, -4.015625]
    params = {"w": np.array([2.0, -4.0], dtype)}
    state = sgd_init(params)
    for g in ([1.0, 0.0], [0.0, 2.0]):
        sgd_step(params, {"w": np.array(g, dtype)}, state, lr=0.5, momentum=0.5,
                 nesterov=True, weight_decay=0.25)
    np.testing.assert_array_equal(params["w"], np.array([0.5234375, -4.015625], dtype))
    np.testing.assert_array_equal(state["momentum_buffer.w"], np.array([0.96875, 0.6875], dtype))


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_by_hand(dtype, amsgrad):
    # lr = 0.1, beta1 = 0.5, beta2 = 0.75, eps = 0 (allowed: v > 0 here), one scalar p0 = 1.
    # step 1, g = 1:   m = 0.5 * 1 = 0.5;  v = 0.25 * 1 = 0.25
    #                  bc1 = 1 - 0.5 = 0.5;  bc2 = 1 - 0.75 = 0.25
    #                  p = 1 - (0.1/0.5) * 0.5 / (sqrt(0.25)/sqrt(0.25)) = 1 - 0.1 = 0.9
    # step 2, g = -2:  m = 0.25 - 1 = -0.75;  v = 0.75*0.25 + 0.25*4 = 1.1875
    #                  bc1 = 0.75;  bc2 = 1 - 0.5625 = 0.4375
    #                  p = 0.9 + (0.1/0.75) * 0.75 / sqrt(1.1875/0.4375) = 0.9 + 0.1 sqrt(7/19)
    # step 3, g = 0:   m = -0.375;  v = 0.75 * 1.1875 = 0.890625;  vmax = 1.1875 (amsgrad)
    #                  bc1 = 0.875;  bc2 = 1 - 0.421875 = 0.578125
    #                  p = p2 + (0.1/0.875) * 0.375 / sqrt(v_used / 0.578125)
    p2 = 0.9 + 0.1 * math.sqrt(7 / 19)
    v_used = 1.1875 if amsgrad else 0.890625
    p3 = p2 + (0.1 / 0.875) * 0.375 / math.sqrt(v_used / 0.578125)
    params = {"w": np.array([1.0], dtype)}
    state = adam_init(params, amsgrad=amsgrad)
    kw = dict(lr=0.1, beta1=0.5, beta2=0.75, eps=0.0, amsgrad=amsgrad)
    for g, p_expected, m, v in [(1.0, 0.9, 0.5, 0.25), (-2.0, p2, -0.75, 1.1875),
                                (0.0, p3, -0.375, 0.890625)]:
        adam_step(params, {"w": np.array([g], dtype)}, state, **kw)
        np.testing.assert_allclose(params["w"], [p_expected], rtol=RTOL[dtype])
        # the moments are exact binary fractions: ==
        np.testing.assert_array_equal(state["exp_avg.w"], np.array([m], dtype))
        np.testing.assert_array_equal(state["exp_avg_sq.w"], np.array([v], dtype))
    if amsgrad:
        np.testing.assert_array_equal(state["max_exp_avg_sq.w"], np.array([1.1875], dtype))
    assert int(state["step.w"]) == 3


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_constant_gradient_moves_lr_per_step(dtype):
    # With a constant gradient g the bias-corrected moments are exactly g and g*g at every
    # step, so each step moves p by lr * g / (|g| + eps): p_k = p0 - k * lr * g / (|g| + eps).
    g = np.array([0.5, -3.0, 1e-3], dtype)
    params = {"w": np.array([1.0, 2.0, -1.5], dtype)}
    state = adam_init(params, amsgrad=False)
    for k in range(1, 4):
        adam_step(params, {"w": g}, state, lr=0.01, eps=1e-8)
        expected = np.array([1.0, 2.0, -1.5]) - k * 0.01 * g.astype(np.float64) / (
            np.abs(g.astype(np.float64)) + 1e-8
        )
        np.testing.assert_allclose(params["w"], expected, rtol=10 * RTOL[dtype])


# ---------------------------------------------------------------------------------------------
# Properties


def _options(draw_kind):
    return st.fixed_dictionaries({
        "momentum": st.sampled_from([0.0, 0.5, 0.9]),
        "dampening": st.sampled_from([0.0, 0.1]),
        "weight_decay": st.sampled_from([0.0, 5e-4, 0.1]),
    }) if draw_kind == "sgd" else st.fixed_dictionaries({
        "beta1": st.sampled_from([0.0, 0.5, 0.9]),
        "beta2": st.sampled_from([0.0, 0.9, 0.999]),
        "weight_decay": st.sampled_from([0.0, 0.1]),
        "amsgrad": st.booleans(),
    })


@props
@given(data=param_dicts(), opts=_options("sgd"), steps=st.integers(1, 3))
def test_sgd_zero_lr_leaves_params_unchanged(data, opts, steps):
    params, grads = data
    before = copy(params)
    state = sgd_init(params)
    for _ in range(steps):
        sgd_step(params, grads, state, lr=0.0, **opts)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


@props
@given(data=param_dicts(), opts=_options("adam"), steps=st.integers(1, 3))
def test_adam_zero_lr_leaves_params_unchanged(data, opts, steps):
    params, grads = data
    before = copy(params)
    state = adam_init(params, amsgrad=opts["amsgrad"])
    for _ in range(steps):
        adam_step(params, grads, state, lr=0.0, **opts)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


@props
@given(data=param_dicts(), lr=st.floats(0.0, 1.0), wd=st.floats(0.0, 0.5))
def test_sgd_weight_decay_on_zero_grad_scales_params(data, lr, wd):
    # g = 0 + wd * p, p <- p - lr * g = p * (1 - lr * wd)  (up to rounding)
    params, grads = data
    zero = {k: np.zeros_like(v) for k, v in grads.items()}
    before = copy(params)
    sgd_step(params, zero, sgd_init(params), lr=lr, weight_decay=wd)
    for k, p in params.items():
        dtype = p.dtype.type
        expected = before[k].astype(np.float64) * (1.0 - lr * wd)
        np.testing.assert_allclose(p, expected, rtol=4 * RTOL[dtype], atol=0)


@props
@given(data=param_dicts(), opts=_options("sgd"), adam_opts=_options("adam"),
       pick=st.integers(0, 2))
def test_no_decay_names_are_not_decayed(data, opts, adam_opts, pick):
    # zero gradient: only weight decay could move a parameter, so exempt ones stay put exactly
    params, grads = data
    names = sorted(params)
    exempt = (names[pick % len(names)],)
    zero = {k: np.zeros_like(v) for k, v in grads.items()}
    for kind in ("sgd", "adam"):
        ps = copy(params)
        if kind == "sgd":
            o = dict(opts, weight_decay=0.1)
            sgd_step(ps, zero, sgd_init(ps), lr=0.5, no_decay=exempt, **o)
        else:
            o = dict(adam_opts, weight_decay=0.1)
            adam_step(ps, zero, adam_init(ps, amsgrad=o["amsgrad"]), lr=0.5, no_decay=exempt, **o)
        for k in names:
            if k in exempt:
                np.testing.assert_array_equal(ps[k], params[k])
            else:
                moved = ps[k] != params[k]
                assert moved[params[k] != 0].all(), f"{kind}: {k} was not decayed"


@props
@given(data=param_dicts(), amsgrad=st.booleans())
def test_state_slots_shapes_and_dtypes(data, amsgrad):
    params, grads = data
    sgd = sgd_init(params)
    adam = adam_init(params, amsgrad=amsgrad)
    slots = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
    assert set(sgd) == {f"{s}.{n}" for n in params for s in ("momentum_buffer", "step")}
    assert set(adam) == {f"{s}.{n}" for n in params for s in slots + ["step"]}
    for state, optimizer_slots in ((sgd, ["momentum_buffer"]), (adam, slots)):
        for n, p in params.items():
            for s in optimizer_slots:
                a = state[f"{s}.{n}"]
                assert (a.shape, a.dtype) == (p.shape, p.dtype)
                assert not a.any() and a.flags.c_contiguous
                assert not np.shares_memory(a, p)
            step = state[f"step.{n}"]
            assert (step.shape, step.dtype, int(step)) == ((), np.int64, 0)
    sgd_step(params, grads, sgd, lr=0.1, momentum=0.9)
    adam_step(params, grads, adam, lr=0.1, amsgrad=amsgrad)
    for n, p in params.items():
        assert sgd[f"momentum_buffer.{n}"].shape == p.shape
        assert int(sgd[f"step.{n}"]) == 1 and int(adam[f"step.{n}"]) == 1
        assert adam[f"exp_avg.{n}"].shape == p.shape


@props
@given(data=param_dicts())
def test_grads_are_not_modified(data):
    params, grads = data
    before = copy(grads)
    sgd_step(params, grads, sgd_init(params), lr=0.1, momentum=0.9, weight_decay=0.1)
    adam_step(params, grads, adam_init(params, amsgrad=True), lr=0.1, weight_decay=0.1,
              amsgrad=True)
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])


def test_sgd_without_momentum_keeps_no_buffer():
    # torch keeps momentum_buffer None while momentum == 0: here the count stays 0, the
    # buffer zero; the first step with momentum then copies the gradient.
    params = {"w": np.array([1.0, 2.0, 3.0])}
    state = sgd_init(params)
    sgd_step(params, {"w": np.array([1.0, 1.0, 1.0])}, state, lr=0.1)
    assert int(state["step.w"]) == 0 and not state["momentum_buffer.w"].any()
    g = np.array([0.5, -1.0, 2.0])
    sgd_step(params, {"w": g}, state, lr=0.1, momentum=0.9, dampening=0.5)
    np.testing.assert_array_equal(state["momentum_buffer.w"], g)
    assert int(state["step.w"]) == 1


def test_non_contiguous_grad_is_read_correctly():
    params = {"w": np.arange(6.0).reshape(2, 3)}
    g = np.arange(6.0).reshape(3, 2).T  # (2, 3), Fortran order
    sgd_step(params, {"w": g}, sgd_init(params), lr=1.0)
    np.testing.assert_array_equal(params["w"], np.arange(6.0).reshape(2, 3) - g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_momentum_accessors(dtype):
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((2, 3)).astype(dtype)}
    grads = {"w": rng.standard_normal((2, 3)).astype(dtype)}
    s = sgd_init(params)
    sgd_step(params, grads, s, lr=0.1, momentum=0.9)
    m = sgd_momentum(s, "w")
    np.testing.assert_array_equal(m, grads["w"])  # first step: the buffer is the gradient
    assert np.shares_memory(m, s["momentum_buffer.w"]) and not m.flags.writeable
    a = adam_init(params, amsgrad=True)
    adam_step(params, grads, a, lr=0.1, amsgrad=True)
    # after one step m = 0.1 g, v = 0.001 g^2: m / (sqrt(v) + 1e-8) = 0.1 g / (0.0316 |g| + 1e-8)
    expected = 0.1 * grads["w"].astype(np.float64) / (
        np.sqrt(0.001) * np.abs(grads["w"].astype(np.float64)) + 1e-8)
    got = adam_momentum(a, "w")
    assert got.dtype == dtype and got.shape == (2, 3)
    np.testing.assert_allclose(got, expected, rtol=10 * RTOL[dtype])


# ---------------------------------------------------------------------------------------------
# Kernels: compiled == plain Python, bit for bit


def py_func(kernel):
    # under NUMBA_DISABLE_JIT=1 the kernel is already the plain function
    return getattr(kernel, "py_func", kernel)


def test_fma_is_fused_in_both_modes():
    # a*b + c with a = 2**-24 (1 + 2**-18), b = 1 - 2**-18, c = 1 + 2**-23 (all float32):
    # exact value 1 + 2**-23 + 2**-24 - 2**-60, just below the midpoint between the float32s
    # 1 + 2**-23 and 1 + 2**-22, so fma rounds down to 1 + 2**-23. Rounding to float64 first
    # lands on the midpoint and then ties to even, up: a naive emulation gets 1 + 2**-22.
    a = np.float32(2.0**-24 * (1 + 2.0**-18))
    b = np.float32(1 - 2.0**-18)
    c = np.float32(1 + 2.0**-23)
    jitted = numba.njit(lambda a, b, c: fma(a, b, c))
    assert fma(a, b, c) == np.float32(1 + 2.0**-23)
    # (a float64 fma would give 1 + 2**-23 + 2**-24, so this also shows float32 arithmetic)
    assert jitted(a, b, c) == np.float32(1 + 2.0**-23)
    # float32 overflow: float32 max + half an ulp is a tie and rounds to inf, less does not
    f32max = np.finfo(np.float32).max
    assert fma(f32max, np.float32(1), np.float32(2.0**103)) == np.inf
    assert fma(f32max, np.float32(1), np.float32(2.0**102)) == f32max
    assert jitted(f32max, np.float32(1), np.float32(2.0**103)) == np.inf
    assert jitted(f32max, np.float32(1), np.float32(2.0**102)) == f32max
    assert fma(1e308, 10.0, -1e300) == jitted(1e308, 10.0, -1e300) == np.inf
    # float64: fma(x, x, -x*x) is the rounding error of x*x, which an unfused a*b + c loses
    x = 1.0 + 2.0**-30
    assert fma(x, x, -(x * x)) == jitted(x, x, -(x * x)) == 2.0**-60
    rng = np.random.default_rng(7)
    for dtype in DTYPES:
        for a, b, c in rng.standard_normal((200, 3)).astype(dtype):
            assert fma(a, b, c) == jitted(a, b, c)
        for a, b, c in [(0.0, 1.0, -0.0), (-0.0, 1.0, -0.0), (1.0, -1.0, 1.0), (np.inf, 0.0, 1.0),
                        (np.inf, 1.0, -np.inf), (np.nan, 1.0, 1.0), (3e38, 10.0, -3e38),
                        (1e-30, -1e-30, 0.0), (2e38, 2.0, -3e38)]:
            a, b, c = dtype(a), dtype(b), dtype(c)
            want, got = fma(a, b, c), jitted(a, b, c)
            assert (np.isnan(want) and np.isnan(got)) or (
                want == got and np.signbit(want) == np.signbit(got)), (dtype, a, b, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first, nesterov, use_wd", [(True, False, True), (False, False, True),
                                                     (False, True, False), (False, True, True)])
def test_sgd_kernel_equals_py_func(dtype, first, nesterov, use_wd):
    rng = np.random.default_rng(11)
    p, g, buf = (rng.standard_normal(13).astype(dtype) for _ in range(3))
    args = (dtype(-0.03), dtype(0.01), use_wd, dtype(0.9), dtype(0.8), True, first, nesterov)
    outs = []
    for kernel in (optim._sgd_kernel, py_func(optim._sgd_kernel)):
        pp, bb = p.copy(), buf.copy()
        kernel(pp, g, bb, *args)
        outs.append((pp, bb))
    for x, y in zip(*outs):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad, weight_small", [(False, True), (True, True), (True, False)])
def test_adam_kernel_equals_py_func(dtype, amsgrad, weight_small):
    rng = np.random.default_rng(12)
    p, g, m = (rng.standard_normal(13).astype(dtype) for _ in range(3))
    v, vmax = (np.abs(rng.standard_normal(13)).astype(dtype) for _ in range(2))
    w = dtype(0.1 if weight_small else 0.7)
    args = (dtype(0.01), True, w, w - dtype(1), weight_small, dtype(0.999), dtype(1 - 0.999),
            amsgrad, dtype(0.0316), dtype(1e-8), dtype(-0.2))
    outs = []
    for kernel, extra in ((optim._adam_kernel, ()), (py_func(optim._adam_chunk), (0, p.size))):
        arrays = [a.copy() for a in (p, m, v, vmax)]
        pp, mm, vv, vx = arrays
        kernel(pp, g, mm, vv, vx if amsgrad else vv, *args, *extra)
        outs.append(arrays)
    for x, y in zip(*outs):
        np.testing.assert_array_equal(x, y)


def test_update_kernels_over_chunks_equal_one_thread(numba_threads):
    """SGD and Adam (parallel over chunks) over 3 chunks and a remainder, on 2 threads and on 1:
    the same bits."""
    rng = np.random.default_rng(13)
    n = 3 * optim._CHUNK + 5
    p, g = rng.standard_normal(n), rng.standard_normal(n)

    def run():
        params = {"w": p.copy()}
        sgd = sgd_init(params)
        sgd_step(params, {"w": g}, sgd, lr=0.1, momentum=0.9, weight_decay=0.01)
        sgd_step(params, {"w": g}, sgd, lr=0.1, momentum=0.9, weight_decay=0.01)
        adam = adam_init(params, amsgrad=True)
        adam_step(params, {"w": g}, adam, lr=0.01, amsgrad=True, weight_decay=0.01)
        return params["w"]

    np.testing.assert_array_equal(numba_threads(2, run), numba_threads(1, run))


# ---------------------------------------------------------------------------------------------
# Validation: TypeError/ValueError that name the function and the argument


def _one():
    return {"w": np.ones((2, 3))}, {"w": np.ones((2, 3))}


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(lr=-0.1), ValueError, "sgd_step: lr must be >= 0"),
    (dict(lr=float("nan")), ValueError, "lr must be finite"),
    (dict(lr=True), TypeError, "lr must be a real number"),
    (dict(lr=0.1, momentum=-0.5), ValueError, "momentum must be >= 0"),
    (dict(lr=0.1, weight_decay=-1.0), ValueError, "weight_decay must be >= 0"),
    (dict(lr=0.1, nesterov=True), ValueError, "nesterov=True requires momentum > 0"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "dampening == 0"),
    (dict(lr=0.1, no_decay=("v",)), ValueError, r"no_decay names \['v'\] are not parameters"),
    (dict(lr=0.1, no_decay="w"), TypeError, "no_decay must be a collection of names"),
])
def test_sgd_step_rejects_bad_hyperparameters(kwargs, exc, match):
    params, grads = _one()
    with pytest.raises(exc, match=match):
        sgd_step(params, grads, sgd_init(params), **kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(lr=-1.0), ValueError, "adam_step: lr must be >= 0"),
    (dict(lr=0.1, beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
    (dict(lr=0.1, beta2=-0.1), ValueError, r"beta2 must be in \[0, 1\)"),
    (dict(lr=0.1, eps=-1e-8), ValueError, "eps must be >= 0"),
    (dict(lr=0.1, amsgrad=True), ValueError, "amsgrad=True but the state lacks"),
])
def test_adam_step_rejects_bad_hyperparameters(kwargs, exc, match):
    params, grads = _one()
    with pytest.raises(exc, match=match):
        adam_step(params, grads, adam_init(params, amsgrad=False), **kwargs)


def test_adam_step_rejects_amsgrad_state_without_amsgrad():
    params, grads = _one()
    with pytest.raises(ValueError, match="amsgrad=False but the state has"):
        adam_step(params, grads, adam_init(params, amsgrad=True), lr=0.1)


@pytest.mark.parametrize("step", [sgd_step, adam_step])
def test_grads_must_match_params(step):
    params, _ = _one()
    state = sgd_init(params) if step is sgd_step else adam_init(params, amsgrad=False)
    fn = step.__name__
    with pytest.raises(ValueError, match=rf"{fn}: grads must have the keys of params; missing"):
        step(params, {"x": np.ones((2, 3))}, state, lr=0.1)
    with pytest.raises(ValueError, match=rf"{fn}: grads\['w'\].shape=\(3, 2\), expected \(2, 3\)"):
        step(params, {"w": np.ones((3, 2))}, state, lr=0.1)
    with pytest.raises(TypeError, match=rf"{fn}: grads\['w'\].dtype=float32, expected float64"):
        step(params, {"w": np.ones((2, 3), np.float32)}, state, lr=0.1)
    with pytest.raises(TypeError, match="must have dtype float32 or float64, got int64"):
        step(params, {"w": np.ones((2, 3), np.int64)}, state, lr=0.1)


def test_params_and_state_must_be_updatable_in_place():
    params, grads = _one()
    state = sgd_init(params)
    with pytest.raises(ValueError, match=r"params\['w'\] must be C-contiguous and writeable"):
        sgd_step({"w": np.ones((3, 2)).T}, grads, state, lr=0.1)
    with pytest.raises(ValueError, match=r"state has no 'momentum_buffer.w'"):
        sgd_step(params, grads, {}, lr=0.1)
    bad = dict(state, **{"momentum_buffer.w": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match=r"state\['momentum_buffer.w'\] has shape .* float32"):
        sgd_step(params, grads, bad, lr=0.1)
    bad = dict(state, **{"step.w": np.zeros(1, np.int64)})
    with pytest.raises(ValueError, match=r"state\['step.w'\] must be a 0-d int64 array"):
        sgd_step(params, grads, bad, lr=0.1)
