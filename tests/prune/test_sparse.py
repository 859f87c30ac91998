"""Sparse learning (refsnn/prune, SPEC 4.2): masks, sparse_update, channel mode (the allocation
arithmetic: test_allocate.py).

References are independent of the code under test: prune and regrow sets against a stable
np.argsort per layer, counts against ceil(p * nnz) and round(d * total), and
dead_input_channels against refsnn.metrics' channel FLOPs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refsnn import metrics
from refsnn.models.arch import Conv, build_arch, init_params, weight_layers
from refsnn.models.snn import snn_init_neurons
from refsnn.optim import adam_init, adam_step, sgd_init, sgd_step
from refsnn.prune import (apply_masks, dead_input_channels, init_masks, masks_from_weights,
                          momenta, momentum_of, sparse_update)

seeds = st.integers(0, 2**32 - 1)


def tiny_arch(name="vgg9", width=1 / 16):
    shape = {"vgg9": (1, 16, 16), "resnet12": (2, 16, 12)}[name]
    return build_arch(name, in_shape=shape, classes=3, width=width)


def copy(d):
    return {k: v.copy() for k, v in d.items()}


def unit_of(w, mode):
    return int(np.prod(w.shape[1:])) if mode == "channel" and w.ndim == 4 else 1


def units_view(a, unit):
    """Per-unit view: flat weights, or (C_out,) per filter (first entry; masks are uniform)."""
    return a.reshape(-1) if unit == 1 else a.reshape(a.shape[0], -1)[:, 0]


def scores(a, unit):
    a = a.astype(np.float64)
    return np.abs(a).reshape(-1) if unit == 1 else np.square(a.reshape(a.shape[0], -1)).sum(1)


# --- strategies: a configuration (layers, rates), then the data ----------------------------------

@st.composite
def sparse_cases(draw, mode="irregular"):
    """(params, masks, momentum, p, d): 1-4 layers, conv (4-D) or linear (2-D), names drawn so
    that sorted order differs from insertion order; masks Bernoulli(init density)."""
    n_layers = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(seeds))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    params, masks, mom = {}, {}, {}
    init_d = draw(st.sampled_from([0.05, 0.3, 0.7, 1.0]))
    for i in range(n_layers):
        name = f"{'zyxw'[i]}{i}.weight"
        if draw(st.booleans()):
            shape = (draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3)),
                     draw(st.integers(1, 3)))
        else:
            shape = (draw(st.integers(1, 6)), draw(st.integers(1, 8)))
        w = rng.standard_normal(shape).astype(dtype)
        u = rng.random(shape[:1] if mode == "channel" and len(shape) == 4 else shape)
        live = u < init_d
        if live.ndim == 1:
            live = np.broadcast_to(live[:, None, None, None], shape)
        params[name] = w * live  # masked weights 0 (one may be -0.0: apply_masks fixes it)
        masks[f"mask.{name}"] = live.astype(dtype)
        m = rng.standard_normal(shape).astype(dtype)
        if draw(st.booleans()):  # ties in |m|: coarse values
            m = np.round(m)
        mom[name] = m
    apply_masks(params, masks)
    total = sum(w.size for w in params.values())
    p = draw(st.sampled_from([0.0, 0.005, 0.1, 0.3, 0.5, 0.9]))
    d = draw(st.one_of(st.just(1.0), st.just(0.5), st.floats(0.5 / total, 0.999),
                       st.floats(min(0.5 / total, 0.2), 0.2)))
    return params, masks, mom, p, d


# --- masks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["irregular", "channel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_masks_draw_order_dtype_and_keys(mode, dtype):
    arch = tiny_arch("resnet12")
    params = init_params(arch, np.random.default_rng(1), dtype)
    params.update(snn_init_neurons(arch, dtype))  # thresholds and leaks: never masked
    masks = init_masks(arch, params, density=0.3, rng=np.random.default_rng(7), mode=mode)
    assert list(masks) == [f"mask.{ly.name}.weight" for ly in weight_layers(arch)]
    ref = np.random.default_rng(7)  # the documented draw order, rebuilt by hand
    for ly in weight_layers(arch):
        m = masks[f"mask.{ly.name}.weight"]
        w = params[f"{ly.name}.weight"]
        assert m.dtype == w.dtype and m.shape == w.shape, ly.name
        if mode == "channel" and isinstance(ly, Conv):
            expect = np.broadcast_to((ref.random(ly.c_out) < 0.3)[:, None, None, None], w.shape)
        else:
            expect = ref.random(w.shape) < 0.3
        np.testing.assert_array_equal(m, expect.astype(dtype), err_msg=ly.name)
    ones = init_masks(arch, params, density=1.0, rng=np.random.default_rng(7), mode=mode)
    assert all(np.all(m == 1) for m in ones.values())


def test_masks_from_weights():
    w = np.array([[0.0, -0.0, 1.5], [2.0, 0.0, -3.0]])
    conv = np.zeros((3, 2, 1, 2))
    conv[0, 1, 0, 1] = -1.0
    conv[2, 0, 0, 0] = 0.5
    params = {"fc.weight": w, "c.weight": conv, "c.threshold": np.asarray(1.0),
              "c.leak": np.asarray(1.0)}
    m = masks_from_weights(params)
    assert set(m) == {"mask.fc.weight", "mask.c.weight"}
    np.testing.assert_array_equal(m["mask.fc.weight"], [[0, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(m["mask.c.weight"], conv != 0)
    mc = masks_from_weights(params, mode="channel")
    np.testing.assert_array_equal(mc["mask.c.weight"][:, 0, 0, 0], [1, 0, 1])
    assert np.all(mc["mask.c.weight"] == mc["mask.c.weight"][:, :1, :1, :1])
    np.testing.assert_array_equal(mc["mask.fc.weight"], m["mask.fc.weight"])


@given(seed=seeds, dtype=st.sampled_from([np.float32, np.float64]))
def test_apply_masks_exact_positive_zero(seed, dtype):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 2, 3)).astype(dtype)
    flat = w.reshape(-1)
    flat[rng.integers(0, flat.size, 5)] = rng.choice(np.array([-0.0, np.nan, np.inf, -np.inf]), 5)
    m = (rng.random(w.shape) < 0.5).astype(dtype)
    before = w.copy()
    params = {"c.weight": w, "c.threshold": np.asarray(0.5, dtype)}
    apply_masks(params, {"mask.c.weight": m})
    dead = m == 0
    assert np.all(w[dead] == 0) and not np.any(np.signbit(w[dead]))
    live = ~dead
    assert before[live].tobytes() == w[live].tobytes()  # bitwise untouched (NaN included)
    assert float(params["c.threshold"]) == np.float32(0.5)


# --- the update: properties -----------------------------------------------------------------------

def check_update(params0, masks0, mom, p, d, mode, params1, masks1, info):
    """Every SPEC 4.2 invariant of one sparse_update, against independent references."""
    total = sum(w.size for w in params0.values())
    assert info.total == total and info.target == round(d * total)
    live_count = sum(int(np.count_nonzero(m)) for m in masks1.values())
    assert info.live == live_count
    units = {n: unit_of(w, mode) for n, w in params0.items()}
    if mode == "irregular" or d == 1.0:
        assert live_count == info.target  # exact: tolerance 0 weights
    else:
        gap = live_count - info.target
        assert abs(gap) < max(units.values()), gap  # less than one filter of the largest layer
        if gap < 0:  # short: only when no linear layer had room
            assert all(np.all(masks1[f"mask.{n}"] == 1) for n in params0 if units[n] == 1)
        if gap > 0:  # above: only when no linear layer had live weights left
            assert all(np.all(masks1[f"mask.{n}"] == 0) for n in params0 if units[n] == 1)
    for name, w0 in params0.items():
        m0, m1, w1, u = masks0[f"mask.{name}"], masks1[f"mask.{name}"], params1[name], units[name]
        ly = info.layers[name]
        assert m1.dtype == w0.dtype and m1.shape == w0.shape
        assert np.all((m1 == 0) | (m1 == 1))
        assert np.all(w1[m1 == 0] == 0) and not np.any(np.signbit(w1[m1 == 0]))  # +0.0
        if u > 1:  # whole filters live or die together
            assert np.all(m1 == m1[:, :1, :1, :1]), name
        assert ly.live == int(np.count_nonzero(m1)) and ly.live_before == np.count_nonzero(m0)
        if d == 1.0:
            assert ly.pruned == 0 and np.all(m1 == 1)
            assert w1.tobytes() == w0.tobytes()  # no-op: dead weights were already +0.0
            continue
        lv0, lv1 = units_view(m0, u) != 0, units_view(m1, u) != 0
        # prune: ceil(p * live units), then drift; survivors = live and W unchanged, nonzero
        k = math.ceil(p * int(lv0.sum()))
        assert ly.pruned == k * u, (name, ly.pruned, k, u)
        same = units_view(w1 == w0, u) if u == 1 else (w1 == w0).reshape(w0.shape[0], -1).all(1)
        nonzero = units_view(w0 != 0, u) if u == 1 else (w0 != 0).reshape(w0.shape[0], -1).any(1)
        survivors = lv0 & lv1 & same & nonzero
        idx = np.flatnonzero(lv0)
        removed = (ly.pruned + ly.drift_pruned) // u
        order = np.argsort(scores(w0, u)[idx], kind="stable")  # ties: lower index first
        expect = np.zeros_like(lv0)
        expect[idx[order[removed:]]] = True
        # a surviving weight that is exactly 0 cannot be told from a revived one: skip those
        np.testing.assert_array_equal(survivors, expect & nonzero, err_msg=name)
        # regrow: the largest |m| among the dead after pruning, revived at 0
        dead_after_prune = lv0 & ~expect | ~lv0
        regrown = lv1 & ~(expect & lv0)
        assert int(regrown.sum()) * u == ly.regrown
        if u == 1:
            assert np.all(w1.reshape(-1)[regrown] == 0)
        else:
            assert np.all(w1.reshape(w1.shape[0], -1)[regrown] == 0)
        didx = np.flatnonzero(dead_after_prune)
        rorder = np.argsort(-scores(mom[name], u)[didx], kind="stable")
        want = np.zeros_like(lv0)
        want[didx[rorder[:int(regrown.sum())]]] = True
        np.testing.assert_array_equal(regrown, want, err_msg=name)
        # redistribution within 0.99 of the free positions unless the residual forced it
        free = int((~(expect & lv0)).sum())
        assert ly.cap == u * (99 * free // 100)
        if not info.forced:
            assert ly.regrown <= ly.cap, (name, ly.regrown, ly.cap)


@pytest.mark.parametrize("mode", ["irregular", "channel"])
@given(data=st.data())
def test_sparse_update_properties(mode, data):
    params, masks, mom, p, d = data.draw(sparse_cases(mode))
    total = sum(w.size for w in params.values())
    if round(d * total) < 1:
        return
    p1, m_in = copy(params), copy(masks)
    masks1, info = sparse_update(p1, m_in, mom, prune_rate=p, target_density=d, mode=mode)
    for k in masks:  # the input masks are not modified
        assert m_in[k].tobytes() == masks[k].tobytes()
    check_update(params, masks, mom, p, d, mode, p1, masks1, info)
    # deterministic, and independent of the dicts' order: bitwise equal on repeat
    p2 = dict(reversed(list(copy(params).items())))
    masks2, info2 = sparse_update(p2, dict(reversed(list(masks.items()))), mom, prune_rate=p,
                                  target_density=d, mode=mode)
    assert info2 == info
    for k in masks1:
        assert masks2[k].tobytes() == masks1[k].tobytes()
    for k in p1:
        assert p2[k].tobytes() == p1[k].tobytes()


@pytest.mark.parametrize("mode", ["irregular", "channel"])
def test_drift_above_target_is_pruned(mode):
    # init at 0.9, target 0.2, p = 0.05: the prune rate alone removes far too little
    arch = tiny_arch()
    rng = np.random.default_rng(3)
    params = init_params(arch, rng, np.float64)
    masks = init_masks(arch, params, density=0.9, rng=rng, mode=mode)
    apply_masks(params, masks)
    mom = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    p1 = copy(params)
    masks1, info = sparse_update(p1, masks, mom, prune_rate=0.05, target_density=0.2, mode=mode)
    assert sum(ly.drift_pruned for ly in info.layers.values()) > 0
    assert sum(ly.regrown for ly in info.layers.values()) < max(
        ly.unit for ly in info.layers.values())  # only the rounding overshoot comes back
    check_update(params, masks, mom, 0.05, 0.2, mode, p1, masks1, info)


def test_hand_worked_example():
    """Two linear layers, every number derived by hand.

    a: (2, 5), 4 live;  b: (4, 5), 10 live;  total 30, d = 0.5 -> N* = 15; p = 0.5.
    prune: a ceil(0.5*4) = 2, b ceil(0.5*10) = 5  ->  live 7, budget B = 15 - 7 = 8.
    shares: mean|m| over live: a 3.0, b 1.0  ->  3/4, 1/4.
    free after pruning: a 10 - 2 = 8, cap floor(0.99*8) = 7; b 20 - 5 = 15, cap 14.
    water-fill: a 8 * 3/4 = 6 < 7, b 2 < 14: no cap reached -> a 6, b 2 (integers).
    """
    wa = np.array([[0.1, -0.4, 0.0, 0.3, 0.0], [0.0, 0.0, 0.2, 0.0, 0.0]])  # live: 4 nonzeros
    wb = np.zeros((4, 5))
    wb.reshape(-1)[:10] = np.arange(1, 11) * np.array([1, -1] * 5)  # live: the first 10
    params = {"a.weight": wa, "b.weight": wb}
    masks = masks_from_weights(params)
    ma = np.full(wa.shape, 3.0) * np.where(masks["mask.a.weight"] == 1, 1, 0.5)  # live |m| = 3
    ma.reshape(-1)[[2, 4]] = [5.0, 4.0]  # dead: the largest |m| are regrown first
    mb = np.ones(wb.shape)
    mom = {"a.weight": ma, "b.weight": -mb}
    p1 = copy(params)
    masks1, info = sparse_update(p1, masks, mom, prune_rate=0.5, target_density=0.5)
    a, b = info.layers["a.weight"], info.layers["b.weight"]
    assert (a.pruned, a.regrown, a.cap, a.share) == (2, 6, 7, 0.75)
    assert (b.pruned, b.regrown, b.cap, b.share) == (5, 2, 14, 0.25)
    assert info.live == info.target == 15 and not info.forced
    # a: prune 0.1 (index 0) and 0.2 (index 7); regrow 2 (|m| 5), 4 (|m| 4), then |m| 3 ties
    # among the dead: just-pruned 0 and 7 carry |m| 3, the never-live ones 1.5: 0, 7 next,
    # then the lowest indices with 1.5: 5, 6
    np.testing.assert_array_equal(np.flatnonzero(masks1["mask.a.weight"]),
                                  [0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(p1["a.weight"].reshape(-1)[[1, 3]], [-0.4, 0.3])
    assert np.all(p1["a.weight"].reshape(-1)[[0, 2, 4, 5, 6, 7]] == 0)
    # b: prune |W| 1..5 (indices 0..4); all |m| tie: regrow the two lowest dead indices 0, 1
    np.testing.assert_array_equal(np.flatnonzero(masks1["mask.b.weight"]),
                                  [0, 1, 5, 6, 7, 8, 9])


def test_residual_forces_beyond_the_cap():
    # one layer of 10, 9 live, p = 0.5: prune ceil(4.5) = 5 -> 4 live; N* = round(9.5) = 10
    # (half to even); budget 6 but cap floor(0.99 * 6) = 5: the residual forces the 6th
    w = np.arange(1.0, 11.0).reshape(2, 5)
    w[1, 4] = 0.0
    params = {"a.weight": w}
    masks1, info = sparse_update(copy(params), masks_from_weights(params),
                                 {"a.weight": np.ones((2, 5))}, prune_rate=0.5,
                                 target_density=0.95)
    ly = info.layers["a.weight"]
    assert (ly.pruned, ly.cap, ly.regrown, info.live, info.forced) == (5, 5, 6, 10, True)


def test_density_one_is_a_noop_and_tiny_density():
    arch = tiny_arch()
    rng = np.random.default_rng(5)
    params = init_params(arch, rng, np.float32)
    mom = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    ones = init_masks(arch, params, density=1.0, rng=rng)
    p1 = copy(params)
    masks1, info = sparse_update(p1, ones, mom, prune_rate=0.5, target_density=1.0)
    assert all(p1[k].tobytes() == params[k].tobytes() for k in params)
    assert all(np.all(m == 1) for m in masks1.values()) and info.live == info.total
    assert all(ly.pruned == ly.regrown == 0 for ly in info.layers.values())
    total = info.total
    for mode in ("irregular", "channel"):
        masks = init_masks(arch, params, density=0.01, rng=rng, mode=mode)
        p2 = copy(params)
        apply_masks(p2, masks)
        masks2, info2 = sparse_update(p2, masks, mom, prune_rate=0.5, target_density=2.0 / total,
                                      mode=mode)
        assert info2.target == 2
        if mode == "irregular":
            assert info2.live == 2
    with pytest.raises(ValueError, match="target_density"):
        sparse_update(copy(params), ones, mom, prune_rate=0.5, target_density=0.4 / total)


# --- a tiny training loop: optimizer steps, apply_masks, epoch-end updates ------------------------

@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("mode", ["irregular", "channel"])
def test_training_loop_keeps_masked_weights_zero(opt, mode):
    arch = tiny_arch("resnet12", width=1 / 32)
    rng = np.random.default_rng(11)
    params = init_params(arch, rng, np.float64)
    params.update(snn_init_neurons(arch, np.float64))
    masks = init_masks(arch, params, density=0.3, rng=rng, mode=mode)
    apply_masks(params, masks)
    if opt == "sgd":
        state = sgd_init(params)
        step = lambda g: sgd_step(params, g, state, lr=0.1, momentum=0.9, nesterov=True,  # noqa
                                  weight_decay=5e-4, no_decay=[k for k in params
                                                               if not k.endswith(".weight")])
    else:
        state = adam_init(params, amsgrad=True)
        step = lambda g: adam_step(params, g, state, lr=1e-2, amsgrad=True,  # noqa: E731
                                   weight_decay=1e-4)
    for epoch in range(3):
        for _ in range(4):
            grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
            step(grads)
            apply_masks(params, masks)
            for k, m in masks.items():
                w = params[k[len("mask."):]]
                assert np.all(w[m == 0] == 0) and not np.any(np.signbit(w[m == 0]))
        before = copy(params)
        mom = momenta(opt, state, masks)
        masks_new, info = sparse_update(params, masks, mom, prune_rate=0.3, target_density=0.3,
                                        mode=mode)
        check_update({k: before[k] for k in mom}, masks, mom, 0.3, 0.3, mode,
                     params, masks_new, info)
        assert set(masks_new) == set(masks)  # thresholds and leaks never get a mask
        thr = [k for k in params if not k.endswith(".weight")]
        assert all(params[k].tobytes() == before[k].tobytes() for k in thr)
        masks = masks_new


def test_momentum_of():
    params = {"w.weight": np.array([[1.0, -2.0]])}
    st_sgd = sgd_init(params)
    sgd_step(params, {"w.weight": np.array([[0.5, -1.0]])}, st_sgd, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(momentum_of("sgd", st_sgd, "w.weight"), [[0.5, -1.0]])
    st_adam = adam_init(params, amsgrad=False)
    adam_step(params, {"w.weight": np.array([[0.5, -1.0]])}, st_adam, lr=0.1)
    m, v = st_adam["exp_avg.w.weight"], st_adam["exp_avg_sq.w.weight"]
    np.testing.assert_array_equal(momentum_of("adam", st_adam, "w.weight"),
                                  m / (np.sqrt(v) + 1e-8))
    with pytest.raises(ValueError, match="optimizer_name"):
        momentum_of("rmsprop", st_adam, "w.weight")


# --- channel mode ---------------------------------------------------------------------------------

def channel_flops_from_dead_inputs(arch, masks):
    """Channel FLOPs rebuilt from dead_input_channels; must equal metrics' channel_flops."""
    dead = dead_input_channels(arch, masks)
    live = metrics.live_weights(arch, masks)
    total = 0
    for ly in weight_layers(arch):
        if isinstance(ly, Conv):
            f = int(live[ly.name].reshape(ly.c_out, -1).any(axis=1).sum())
            total += (ly.kernel ** 2 * (ly.c_in - dead[ly.name].size) * f
                      * ly.out_hw[0] * ly.out_hw[1])
        else:
            total += (ly.n_in - dead[ly.name].size) * ly.n_out
    return total


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dead_input_channels_match_metrics(name, seed):
    arch = tiny_arch(name, width=1 / 8)
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, np.float64)
    masks = init_masks(arch, params, density=0.5, rng=rng, mode="channel")
    dead = dead_input_channels(arch, masks)
    assert list(dead) == [ly.name for ly in weight_layers(arch)]
    assert channel_flops_from_dead_inputs(arch, masks) == \
        metrics.compression_ratio(arch, masks).channel_flops
    filt = {ly.name: masks[f"mask.{ly.name}.weight"].reshape(ly.c_out, -1)[:, 0] == 0
            for ly in weight_layers(arch) if isinstance(ly, Conv)}
    if name == "vgg9":  # each conv's dead inputs are exactly the previous conv's dead filters
        convs = [ly for ly in weight_layers(arch) if isinstance(ly, Conv)]
        assert dead[convs[0].name].size == 0
        for prev, nxt in zip(convs, convs[1:]):
            np.testing.assert_array_equal(dead[nxt.name], np.flatnonzero(filt[prev.name]))
        hw = arch.layers[-4].out_hw  # the pool before fc1
        per = hw[0] * hw[1]
        expect = [c * per + j for c in np.flatnonzero(filt[convs[-1].name]) for j in range(per)]
        np.testing.assert_array_equal(dead["fc1"], expect)
        assert dead["fc2"].size == dead["fc3"].size == 0
    else:  # a block's conv2 sees conv1's dead filters; a block output is dead only if both
        blk = [ly for ly in arch.layers if hasattr(ly, "conv2")][1]  # layer2.0: 1x1 shortcut
        np.testing.assert_array_equal(dead[blk.conv2.name], np.flatnonzero(filt[blk.conv1.name]))
        nxt = [ly for ly in arch.layers if hasattr(ly, "conv2")][2]
        both = filt[blk.conv2.name] & filt[blk.shortcut.name]
        np.testing.assert_array_equal(dead[nxt.conv1.name], np.flatnonzero(both))


def test_channel_update_kills_filters_and_next_inputs():
    arch = tiny_arch("vgg9", width=1 / 8)
    rng = np.random.default_rng(4)
    params = init_params(arch, rng, np.float64)
    masks = init_masks(arch, params, density=0.6, rng=rng, mode="channel")
    apply_masks(params, masks)
    mom = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    before = copy(params)
    masks1, info = sparse_update(params, masks, mom, prune_rate=0.5, target_density=0.4,
                                 mode="channel")
    check_update(before, masks, mom, 0.5, 0.4, "channel", params, masks1, info)
    assert info.live == info.target  # the linear layers absorbed the filter rounding
    dead = dead_input_channels(arch, masks1)
    convs = [ly for ly in weight_layers(arch) if isinstance(ly, Conv)]
    for prev, nxt in zip(convs, convs[1:]):
        f = masks1[f"mask.{prev.name}.weight"].reshape(prev.c_out, -1)
        np.testing.assert_array_equal(dead[nxt.name], np.flatnonzero(f[:, 0] == 0))
        assert np.all(params[f"{prev.name}.weight"][f[:, 0] == 0] == 0)
    assert any(ly.pruned for ly in info.layers.values() if ly.unit > 1)


# --- errors ---------------------------------------------------------------------------------------

def test_bad_arguments_name_the_argument():
    arch = tiny_arch()
    params = init_params(arch, np.random.default_rng(0), np.float64)
    masks = init_masks(arch, params, density=0.5, rng=np.random.default_rng(0))
    mom = {k: np.ones_like(v) for k, v in params.items()}
    ok = dict(prune_rate=0.3, target_density=0.5)

    def upd(m=masks, mo=mom, **kw):
        return sparse_update(copy(params), m, mo, **{**ok, **kw})

    for kw, word in [({"prune_rate": 1.0}, "prune_rate"), ({"prune_rate": -0.1}, "prune_rate"),
                     ({"target_density": 0.0}, "target_density"),
                     ({"target_density": 1.5}, "target_density"), ({"mode": "filter"}, "mode")]:
        with pytest.raises(ValueError, match=word):
            upd(**kw)
    with pytest.raises(TypeError, match="prune_rate"):
        upd(prune_rate="0.3")
    bad = copy(masks)
    bad["mask.conv1.weight"] = bad["mask.conv1.weight"] * 0.5
    with pytest.raises(ValueError, match="only 0 and 1"):
        upd(m=bad)
    bad = copy(masks)
    bad["mask.conv1.threshold"] = np.ones(())
    with pytest.raises(ValueError, match="never thresholds or leaks"):
        upd(m=bad)
    bad = copy(masks)
    del bad["mask.fc2.weight"]
    with pytest.raises(ValueError, match="mask.fc2.weight"):
        upd(m=bad)
    bad = copy(masks)
    bad["mask.fc1.weight"] = bad["mask.fc1.weight"].astype(np.float32)
    with pytest.raises(ValueError, match="mask.fc1.weight"):
        upd(m=bad)
    with pytest.raises(ValueError, match="momentum\\['conv2.weight'\\]"):
        upd(mo={k: v for k, v in mom.items() if k != "conv2.weight"})
    nan = copy(mom)
    nan["fc3.weight"][0, 0] = np.nan
    with pytest.raises(ValueError, match="momentum\\['fc3.weight'\\]"):
        upd(mo=nan)
    with pytest.raises(ValueError, match="mode='channel'"):  # irregular masks, channel mode
        upd(mode="channel")
    with pytest.raises(ValueError, match="density"):
        init_masks(arch, params, density=0.0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        init_masks(arch, params, density=0.5, rng=0)
    with pytest.raises(ValueError, match="mode"):
        init_masks(arch, params, density=0.5, rng=np.random.default_rng(0), mode="rows")
    with pytest.raises(ValueError, match="params lacks 'fc3.weight'"):
        init_masks(arch, {k: v for k, v in params.items() if k != "fc3.weight"}, density=0.5,
                   rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="masks\\['mask.nope.weight'\\]"):
        apply_masks(params, {"mask.nope.weight": np.ones(3)})
