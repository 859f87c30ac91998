"""Stage C, threshold initialisation (refsnn/convert.py, SPEC 5.4).

The independent reference for every layer is snn_forward itself: with the thresholds already
found for layers < l (and arbitrary ones for l and later), the tape's current of layer l gives
p_l[t] by a sort. Tiny shapes: width 1/16, 2-4 images, T_init <= 12; float64 unless stated.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from refsnn.convert import (MIN_THRESHOLD, calibrate_thresholds, calibration_batch,
                            convert_checkpoint_arrays, default_scale, init_thresholds,
                            percentile_rank, spec_percentile)
from refsnn.models.arch import Linear, build_arch, init_params, weight_layers
from refsnn.models.snn import (snn_forward, snn_init_neurons, snn_param_shapes,
                               snn_trace_arrays, spiking_layers)
from refsnn.ops.conv import conv2d_forward

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

IN_SHAPES = {"vgg9": (3, 16, 16), "resnet12": (3, 16, 12)}
N, T_INIT = 3, 8
# A lower percentile than the SPEC's keeps spikes flowing to the deepest layers of these tiny
# nets in few steps (at 99.7 and T_init = 8 the classifier layers of vgg9 receive no spikes).
PCT = 90.0


def make_arch(name):
    return build_arch(name, in_shape=IN_SHAPES[name], classes=3, width=1 / 16,
                      dropout_conv=0.2, dropout_fc=0.2)


def make_case(name, seed=0, dtype=np.float64):
    arch = make_arch(name)
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, dtype)
    for layer in weight_layers(arch):  # linear init N(0, 0.01) is too weak to spike: rescale
        if isinstance(layer, Linear):
            params[f"{layer.name}.weight"] *= dtype(20.0)
    x = rng.standard_normal((N,) + IN_SHAPES[name]).astype(dtype)
    return arch, params, x


def rank_reference(n, percentile):
    """k = 1 + round_half_up(percentile/100 * (n - 1)) in decimal arithmetic (independent of
    percentile_rank's Fraction code)."""
    q = Decimal(repr(float(percentile))) / Decimal(100)
    return 1 + int((q * (n - 1)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- the percentile ------------------------------------------------------------------------------

def test_percentile_rank_hand_examples():
    # n = 501: 0.997 * 500 = 498.5 exactly, an exact half. Round half up -> 499, k = 500.
    # Python's round(498.5) = 498 (half to even) would give k = 499: the convention matters.
    assert percentile_rank(501, 99.7) == 500
    assert 1 + round(0.997 * 500) == 499
    # n = 1000: 0.997 * 999 = 996.003 -> 996, k = 997
    assert percentile_rank(1000, 99.7) == 997
    # n = 4, 50 %: 0.5 * 3 = 1.5 -> 2, k = 3 (half up; numpy's "nearest" would pick 2)
    assert percentile_rank(4, 50) == 3
    assert percentile_rank(1, 99.7) == 1
    assert percentile_rank(7, 100) == 7  # the maximum
    assert percentile_rank(10, 1.0) == 1  # 0.09 -> 0: the minimum
    # exact arithmetic: 0.7 % of 500 is 3.5 exactly (half up -> 4, k = 5), while the floats
    # give 0.7 / 100 * 500 = 3.4999999999999996, which floor(x + 0.5) would round to 3
    assert percentile_rank(501, 0.7) == 5
    assert 0.7 / 100 * 500 < 3.5


def test_spec_percentile_hand_example():
    # values 0..500 in a scrambled order: the k = 500th smallest is 499
    a = np.random.default_rng(1).permutation(501).astype(np.float64)
    v = spec_percentile(a, 99.7)
    assert v.shape == () and v.dtype == np.float64 and v == 499.0
    assert spec_percentile(a.astype(np.float32), 100).dtype == np.float32


@pytest.mark.parametrize("n", [1, 2, 3, 10, 333, 501, 1000, 1001, 4097])
@pytest.mark.parametrize("percentile", [99.7, 50.0, 12.5, 100, 0.5])
def test_spec_percentile_against_sort(n, percentile):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n,))
    a[rng.integers(0, n, n // 4)] = 0.25  # ties
    expected = np.sort(a)[rank_reference(n, percentile) - 1]
    assert percentile_rank(n, percentile) == rank_reference(n, percentile)
    assert spec_percentile(a.reshape(1, n), percentile) == expected


def test_spec_percentile_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        spec_percentile(np.array([1.0, np.nan, 2.0]))


# --- thresholds ----------------------------------------------------------------------------------

def test_first_layer_is_percentile_of_direct_current():
    arch, params, x = make_case("vgg9")
    pct, th = calibrate_thresholds(arch, params, x, timesteps_init=T_INIT)
    layer = weight_layers(arch)[0]
    cur = conv2d_forward(x, params[f"{layer.name}.weight"], stride=1, padding=1)
    expected = np.sort(cur.ravel())[rank_reference(cur.size, 99.7) - 1]
    assert pct[layer.name].shape == (T_INIT,)
    assert np.all(pct[layer.name] == expected)  # I_1[t] is the same at every t
    assert th[f"{layer.name}.threshold"] == expected
    scaled = init_thresholds(arch, params, x, timesteps_init=T_INIT, timesteps=5)
    assert scaled[f"{layer.name}.threshold"] == np.float64(0.2 * expected)


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_every_layer_against_snn_forward(name):
    """p_l[t] = k-th smallest of layer l's current in snn_forward run for T_init steps with
    v_1..v_{l-1} found so far; layer l's own and later thresholds must not matter."""
    arch, params, x = make_case(name)
    pct, th = calibrate_thresholds(arch, params, x, timesteps_init=T_INIT, percentile=PCT)
    assert list(pct) == [layer.name for layer in spiking_layers(arch)]  # network order
    assert list(th) == [f"{layer.name}.threshold" for layer in spiking_layers(arch)]
    base = dict(params)
    base.update(snn_init_neurons(arch, np.float64))
    found = {}
    for i, layer in enumerate(spiking_layers(arch)):
        for arbitrary in (0.37, 5.0):  # thresholds of l and later: anything
            p = dict(base, **{f"{s.name}.threshold": np.asarray(arbitrary * (1 + j))
                              for j, s in enumerate(spiking_layers(arch)[i:])})
            p.update(found)
            _, tape = snn_forward(arch, p, x, timesteps=T_INIT)
            cur = snn_trace_arrays(arch, p, tape)[f"trace.{layer.name}.current"]
            k = rank_reference(cur[0].size, PCT)
            expected = np.array([np.sort(cur[t].ravel())[k - 1] for t in range(T_INIT)])
            np.testing.assert_array_equal(pct[layer.name], expected, err_msg=layer.name)
        v = max(expected.max(), MIN_THRESHOLD)
        assert th[f"{layer.name}.threshold"] == v
        found[f"{layer.name}.threshold"] = th[f"{layer.name}.threshold"]
    # the last hidden layer still receives spikes: the check above was not all-zero currents
    assert np.any(pct[spiking_layers(arch)[-1].name] != 0)


def test_scale_alpha():
    arch, params, x = make_case("vgg9")
    _, unscaled = calibrate_thresholds(arch, params, x, timesteps_init=T_INIT, percentile=PCT)
    assert default_scale(1) == 0.2 and default_scale(5) == 0.2 and default_scale(6) == 0.3
    for kwargs, alpha in (({"timesteps": 5}, 0.2), ({"timesteps": 2}, 0.2),
                          ({"timesteps": 10}, 0.3), ({"timesteps": 5, "scale": 0.7}, 0.7),
                          ({"scale": 1.0}, 1.0)):
        th = init_thresholds(arch, params, x, timesteps_init=T_INIT, percentile=PCT, **kwargs)
        assert list(th) == list(unscaled)
        for k, v in th.items():
            assert v.shape == () and v.dtype == np.float64
            assert v == max(alpha * float(unscaled[k]), MIN_THRESHOLD), (k, kwargs)


def test_later_layers_do_not_change_earlier_thresholds():
    arch, params, x = make_case("vgg9")
    _, before = calibrate_thresholds(arch, params, x, timesteps_init=T_INIT, percentile=PCT)
    changed = dict(params)
    rng = np.random.default_rng(5)
    changed["conv4.weight"] = rng.standard_normal(params["conv4.weight"].shape)
    _, after = calibrate_thresholds(arch, changed, x, timesteps_init=T_INIT, percentile=PCT)
    names = list(before)
    i4 = names.index("conv4.threshold")
    for k in names[:i4]:
        assert after[k] == before[k], k
    assert after["conv4.threshold"] != before["conv4.threshold"]


def test_deterministic_and_independent_of_time_chunk():
    arch, params, x = make_case("resnet12")
    ref = calibrate_thresholds(arch, params, x, timesteps_init=T_INIT, percentile=PCT)
    for chunk in (None, 1, 3, T_INIT, 100):
        got = calibrate_thresholds(arch, params, x, timesteps_init=T_INIT, percentile=PCT,
                                   time_chunk=chunk)
        for a, b in zip(ref, got):
            assert list(a) == list(b)
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k}, time_chunk={chunk}")


def test_float32_dtype():
    arch, params, x = make_case("vgg9", dtype=np.float32)
    th = init_thresholds(arch, params, x, timesteps_init=4)
    assert all(v.dtype == np.float32 and v.shape == () and v >= MIN_THRESHOLD
               for v in th.values())


def test_dead_layer_is_clamped():
    arch, params, x = make_case("vgg9")
    params["conv2.weight"] = np.zeros_like(params["conv2.weight"])  # I_2 = 0: p = 0
    pct, th = calibrate_thresholds(arch, params, x, timesteps_init=4)
    assert np.all(pct["conv2"] == 0) and th["conv2.threshold"] == MIN_THRESHOLD
    assert init_thresholds(arch, params, x, timesteps_init=4)["conv2.threshold"] == MIN_THRESHOLD


@pytest.mark.parametrize("kwargs, match", [
    ({"percentile": 0}, "percentile"), ({"percentile": -1.0}, "percentile"),
    ({"percentile": 100.01}, "percentile"), ({"percentile": float("nan")}, "percentile"),
    ({"timesteps_init": 0}, "timesteps_init"), ({"scale": 0.0}, "scale"),
    ({"scale": -0.2}, "scale"), ({"scale": float("inf")}, "scale"),
    ({"timesteps": 0}, "timesteps"), ({"time_chunk": 0}, "time_chunk"),
    ({"min_threshold": 0.0}, "min_threshold"),
])
def test_bad_options(kwargs, match):
    arch, params, x = make_case("vgg9")
    with pytest.raises(ValueError, match=match):
        init_thresholds(arch, params, x, **{"timesteps_init": 2, **kwargs})


def test_bad_inputs():
    arch, params, x = make_case("vgg9")
    with pytest.raises(TypeError, match="percentile"):
        init_thresholds(arch, params, x, percentile=True)
    with pytest.raises(ValueError, match="x.shape"):
        init_thresholds(arch, params, x[:, :2], timesteps_init=2)
    with pytest.raises(ValueError, match="conv3.weight"):
        init_thresholds(arch, {k: v for k, v in params.items() if k != "conv3.weight"}, x)
    with pytest.raises(ValueError, match="float32"):
        init_thresholds(arch, params, x.astype(np.float32), timesteps_init=2)


# --- the SNN parameter dict and the batch ---------------------------------------------------------

def test_convert_checkpoint_arrays():
    arch, params, x = make_case("resnet12")
    th = init_thresholds(arch, params, x, timesteps_init=3)
    rng = np.random.default_rng(2)
    ann = dict(params)
    for layer in weight_layers(arch):
        m = (rng.random(params[f"{layer.name}.weight"].shape) < 0.5).astype(np.float64)
        ann[f"{layer.name}.weight"] = params[f"{layer.name}.weight"] * m
        ann[f"mask.{layer.name}.weight"] = m
    ann["optim.exp_avg.fc.weight"] = np.zeros(3)  # ignored
    out = convert_checkpoint_arrays(arch, ann, th)
    shapes = snn_param_shapes(arch)
    masks = [f"mask.{layer.name}.weight" for layer in weight_layers(arch)]
    assert list(out) == list(shapes) + masks
    for k, shape in shapes.items():
        assert out[k].shape == shape and out[k].dtype == np.float64, k
        if k.endswith(".leak"):
            assert out[k] == 1.0
        elif k.endswith(".threshold"):
            assert out[k] == th[k]
        else:
            np.testing.assert_array_equal(out[k], ann[k])
            assert out[k] is not ann[k]  # a copy
    for k in masks:
        np.testing.assert_array_equal(out[k], ann[k])
    # the result runs through the SNN as it is
    snn_forward(arch, {k: out[k] for k in shapes}, x, timesteps=2)


def test_convert_checkpoint_arrays_errors():
    arch, params, x = make_case("vgg9")
    th = {f"{s.name}.threshold": np.asarray(0.5) for s in spiking_layers(arch)}
    with pytest.raises(ValueError, match="lacks 'conv1.threshold'"):
        convert_checkpoint_arrays(arch, params, {k: v for k, v in th.items()
                                                 if k != "conv1.threshold"})
    with pytest.raises(ValueError, match="fc3.threshold"):
        convert_checkpoint_arrays(arch, params, dict(th, **{"fc3.threshold": 1.0}))
    with pytest.raises(ValueError, match="finite scalar > 0"):
        convert_checkpoint_arrays(arch, params, dict(th, **{"conv2.threshold": 0.0}))
    m = np.ones_like(params["conv2.weight"])
    m[0, 0, 0, 0] = 0.0
    with pytest.raises(ValueError, match="masked weights must be exactly 0"):
        convert_checkpoint_arrays(arch, dict(params, **{"mask.conv2.weight": m}), th)


def test_calibration_batch():
    x = np.random.default_rng(0).integers(0, 256, (20, 3, 8, 6), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    a = calibration_batch(x, mean, std, rng=np.random.default_rng(7), batch_size=8,
                          dtype=np.float64)
    b = calibration_batch(x, mean, std, rng=np.random.default_rng(7), batch_size=8,
                          dtype=np.float64)
    assert a.shape == (8, 3, 8, 6) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert calibration_batch(x, mean, std, rng=np.random.default_rng(7), batch_size=64).shape \
        == (20, 3, 8, 6)


def test_on_layer_reports_every_spiking_layer_in_order():
    from refsnn.convert import calibrate_thresholds
    from refsnn.models.arch import build_arch, init_params
    from refsnn.models.snn import spiking_layers

    arch = build_arch("resnet12", in_shape=(3, 8, 8), classes=4, width=0.0625)
    params = init_params(arch, np.random.default_rng(0), np.float64)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8))
    seen = []
    _, thresholds = calibrate_thresholds(arch, params, x, timesteps_init=3,
                                         on_layer=seen.append)
    assert seen == [layer.name for layer in spiking_layers(arch)]
    assert list(thresholds) == [f"{name}.threshold" for name in seen]
