"""Stage E metrics (refsnn/metrics.py, SPEC 6).

References are independent of the code under test: the fan-out map against a loop over every
(o, c, p, q, i, j); SynOps against a count of (live weight, nonzero input) pairs computed as a
convolution of the 0/1 input pattern with the 0/1 live pattern, on inputs rebuilt from the
golden-trace spikes (not from the tape's recorded inputs); FLOPs against hand-derived numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from refsnn import metrics as M
from refsnn.convert import init_thresholds
from refsnn.models.arch import (Block, Conv, Linear, Pool, build_arch, draw_dropout_masks,
                                init_params, weight_layers)
from refsnn.models.snn import snn_forward, snn_init_neurons, snn_trace_arrays, spiking_layers
from refsnn.ops.conv import conv2d_forward
from refsnn.ops.pool import avg_pool2d_forward

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

IN_SHAPES = {"vgg9": (3, 16, 16), "resnet12": (3, 16, 12), "resnet20": (2, 12, 16)}
T, N = 3, 2


# --- fan-out maps ---------------------------------------------------------------------------------

def fanout_brute(live, h, w, stride, padding):
    c_out, c_in, kh, kw = live.shape
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    fan = np.zeros((c_in, h, w), dtype=np.int64)
    for o in range(c_out):
        for c in range(c_in):
            for p in range(kh):
                for q in range(kw):
                    if not live[o, c, p, q]:
                        continue
                    for i in range(ho):
                        for j in range(wo):
                            r, s = i * stride + p - padding, j * stride + q - padding
                            if 0 <= r < h and 0 <= s < w:
                                fan[c, r, s] += 1
    return fan


@pytest.mark.parametrize("kh, kw, stride, padding, h, w", [
    (3, 3, 1, 1, 5, 7), (3, 3, 2, 1, 7, 6), (1, 1, 2, 0, 5, 4), (2, 3, 3, 2, 6, 8),
    (3, 2, 2, 0, 7, 5), (4, 4, 1, 3, 3, 4),
])
def test_conv_fanout_against_loops(kh, kw, stride, padding, h, w):
    rng = np.random.default_rng(kh * 100 + stride * 10 + padding)
    live = rng.random((4, 3, kh, kw)) < 0.6
    got = M.conv_fanout(live, in_hw=(h, w), stride=stride, padding=padding)
    assert got.dtype == np.int64 and got.shape == (3, h, w)
    np.testing.assert_array_equal(got, fanout_brute(live, h, w, stride, padding))
    # sum(fanout) = the nonzero-weight MAC count = a conv of ones with the 0/1 weights
    macs = conv2d_forward(np.ones((1, 3, h, w)), live.astype(np.float64), stride=stride,
                          padding=padding).sum()
    assert got.sum() == macs


def test_synop_count_kernel_matches_python():
    rng = np.random.default_rng(3)
    x = np.where(rng.random((6, 40)) < 0.3, rng.random((6, 40)), 0.0)
    fan = rng.integers(0, 9, 40).astype(np.int64)
    rows = np.empty(6, dtype=np.int64)
    rows_py = np.empty(6, dtype=np.int64)
    M._synop_count_kernel(x, fan, rows)
    M._synop_count_kernel.py_func(x, fan, rows_py)
    np.testing.assert_array_equal(rows, rows_py)
    assert M.synop_count(x, fan) == int(((x != 0) * fan).sum())
    with pytest.raises(ValueError, match="does not end in"):
        M.synop_count(x, fan[:5])


# --- SynOps and spikes of a whole network ---------------------------------------------------------

def make_case(name, seed=0, *, dropout=False, density=0.6):
    arch = build_arch(name, in_shape=IN_SHAPES[name], classes=3, width=1 / 16,
                      dropout_conv=0.2, dropout_fc=0.2)
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, np.float64)
    arrays = {}
    for layer in weight_layers(arch):
        key = f"{layer.name}.weight"
        m = (rng.random(params[key].shape) < density).astype(np.float64)
        if isinstance(layer, Linear):
            params[key] *= 20.0  # N(0, 0.01) is too weak to make these tiny layers spike
        params[key] *= m
        arrays[f"mask.{layer.name}.weight"] = m
    params.update(snn_init_neurons(arch, np.float64))
    x = rng.standard_normal((N,) + IN_SHAPES[name])
    # thresholds that keep every layer spiking: stage C's calibration at a low percentile
    params.update(init_thresholds(arch, params, x, timesteps_init=T, percentile=80.0,
                                  scale=0.5))
    masks = draw_dropout_masks(arch, N, rng, np.float64) if dropout else None
    U, tape = snn_forward(arch, params, x, timesteps=T, masks=masks)
    arrays.update(params)
    return arch, params, arrays, x, masks, tape


def layer_inputs(arch, trace, x, masks):
    """{layer: its input (T, N, ...)} rebuilt from the golden-trace spikes, pools and dropout
    masks, following the architecture (the image for the first layer; "<block>.shortcut" for
    an identity shortcut's input)."""
    def drop(s, name):
        return s * masks[name] if masks is not None and name in masks else s

    def pool(a):
        y = avg_pool2d_forward(a.reshape((-1,) + a.shape[2:]), kernel=2)
        return y.reshape(a.shape[:2] + y.shape[1:])

    out, h = {}, np.broadcast_to(x, (T,) + x.shape)
    for layer in arch.layers:
        if isinstance(layer, Pool):
            h = pool(h)
        elif isinstance(layer, (Conv, Linear)):
            out[layer.name] = h
            if isinstance(layer, Conv) or layer.act:
                h = drop(trace[f"trace.{layer.name}.spikes"], layer.name)
        elif isinstance(layer, Block):
            out[layer.conv1.name] = h
            out[layer.conv2.name] = drop(trace[f"trace.{layer.conv1.name}.spikes"],
                                         layer.conv1.name)
            out[layer.shortcut.name if layer.shortcut else f"{layer.name}.shortcut"] = h
            h = trace[f"trace.{layer.conv2.name}.spikes"]
    return out


def synops_brute(layer, x, live):
    """#{(t, n, live weight, output position): the weight's input is nonzero}: a conv (or
    matmul) of the 0/1 input pattern with the 0/1 live pattern, summed."""
    ind = (x != 0).astype(np.float64)
    if isinstance(layer, Conv):
        y = conv2d_forward(ind.reshape((-1,) + ind.shape[2:]), live.astype(np.float64),
                           stride=layer.stride, padding=layer.padding)
    else:
        y = ind.reshape(ind.shape[0] * ind.shape[1], -1) @ live.astype(np.float64).T
    return int(y.sum())


@pytest.mark.parametrize("name, dropout", [("vgg9", False), ("vgg9", True),
                                           ("resnet12", False), ("resnet20", True)])
def test_synops_against_brute_force(name, dropout):
    arch, params, arrays, x, masks, tape = make_case(name, dropout=dropout)
    live = M.live_weights(arch, arrays)
    fan = M.fanout_maps(arch, live)
    got = M.synop_counts(arch, fan, tape, dropout_masks=masks)
    inputs = layer_inputs(arch, snn_trace_arrays(arch, params, tape), x, masks)
    layers = weight_layers(arch)
    expected = {}
    for layer in layers[1:]:
        expected[layer.name] = synops_brute(layer, inputs[layer.name], live[layer.name])
    for layer in arch.layers:
        if isinstance(layer, Block) and layer.shortcut is None:  # identity: 1 add per input
            expected[f"{layer.name}.shortcut"] = int(
                np.count_nonzero(inputs[f"{layer.name}.shortcut"]))
    assert got == expected  # same keys, same exact counts
    assert all(v > 0 for v in got.values())  # every layer saw spikes: the check has teeth
    first = layers[0]
    assert M.layer1_macs(arch, fan, n_images=N, timesteps=T) == synops_brute(
        first, np.ones((T,) + x.shape), live[first.name])


def test_spike_counts_and_activity():
    arch, params, arrays, x, masks, tape = make_case("resnet12")
    trace = snn_trace_arrays(arch, params, tape)
    counts = M.spike_counts(tape)
    assert list(counts) == [layer.name for layer in spiking_layers(arch)]
    for k, v in counts.items():
        assert v == int(trace[f"trace.{k}.spikes"].sum())
    neurons = M.neuron_counts(arch)
    for k, v in neurons.items():
        assert v == trace[f"trace.{k}.spikes"][0, 0].size
    act = M.spike_activity(arch, counts, n_images=N)
    for k in counts:  # spikes per neuron per image over T steps
        assert act.per_layer[k] == pytest.approx(trace[f"trace.{k}.spikes"].sum(axis=0).mean(),
                                                 rel=1e-12)
    assert act.network == pytest.approx(sum(counts.values()) / (sum(neurons.values()) * N),
                                        rel=1e-15)
    with pytest.raises(ValueError, match="n_images"):
        M.spike_activity(arch, counts, n_images=0)


def test_spike_activity_hand_numbers():
    arch = build_arch("vgg9", in_shape=(1, 16, 16), classes=3, width=1 / 16)
    neurons = M.neuron_counts(arch)  # conv1: 4 x 16 x 16 = 1024; fc1: 256
    assert neurons["conv1"] == 1024 and neurons["fc1"] == 256
    spikes = {k: 0 for k in neurons}
    spikes["conv1"], spikes["fc1"] = 1024 * 3, 256  # 3 images: 1.0 and 1/3 spikes per neuron
    act = M.spike_activity(arch, spikes, n_images=3)
    assert act.per_layer["conv1"] == 1.0 and act.per_layer["fc1"] == pytest.approx(1 / 3)
    assert act.network == pytest.approx((3072 + 256) / (sum(neurons.values()) * 3))


def test_accumulation_over_batches():
    """Counts of two half batches, added, equal the counts of the whole batch (no dropout)."""
    arch, params, arrays, x, masks, tape = make_case("vgg9")
    fan = M.fanout_maps(arch, M.live_weights(arch, arrays))
    spikes, synops = {}, {}
    for part in (x[:1], x[1:]):
        _, tp = snn_forward(arch, params, part, timesteps=T)
        spikes = M.add_counts(spikes, M.spike_counts(tp))
        synops = M.add_counts(synops, M.synop_counts(arch, fan, tp))
    assert spikes == M.spike_counts(tape)
    assert synops == M.synop_counts(arch, fan, tape)
    with pytest.raises(ValueError, match="keys differ"):
        M.add_counts(spikes, {"conv1": 1})
    rep = M.summarise(arch, fan, spikes, synops, n_images=N, timesteps=T)
    assert rep["synops_total"] == pytest.approx(sum(synops.values()) / N)
    assert rep["macs"] == T * fan["conv1"].sum()
    assert rep["energy_snn_pj"] == pytest.approx(rep["macs"] * 4.6 + rep["synops_total"] * 0.9)
    assert rep["energy_ann_pj"] == pytest.approx(rep["ann_nonzero_flops"] * 4.6)


# --- FLOPs, compression, channels, energy ---------------------------------------------------------

def test_dense_flops_vgg9_cifar():
    # vgg9, 3x32x32, width 1, 10 classes; MACs per image per step = k*k*C_in*C_out*H_out*W_out:
    #   conv1  9*3*64*32*32    =  1,769,472      (pool -> 16x16)
    #   conv2  9*64*128*16*16  = 18,874,368
    #   conv3  9*128*256*16*16 = 75,497,472      (pool -> 8x8)
    #   conv4  9*256*256*8*8   = 37,748,736
    #   conv5  9*256*512*8*8   = 75,497,472      (pool -> 4x4)
    #   conv6  9*512*512*4*4   = 37,748,736      (pool -> 2x2)
    #   conv7  9*512*512*2*2   =  9,437,184
    #   fc1    2048*4096       =  8,388,608
    #   fc2    4096*4096       = 16,777,216
    #   fc3    4096*10         =     40,960
    #   total                  = 281,780,224 MACs = 563.56 M FLOPs counting mul and add
    #                            (PERF-NOTES: "563.6 MFLOP forward per image")
    arch = build_arch("vgg9", in_shape=(3, 32, 32), classes=10)
    f = M.dense_flops(arch)
    assert f == {"conv1": 1_769_472, "conv2": 18_874_368, "conv3": 75_497_472,
                 "conv4": 37_748_736, "conv5": 75_497_472, "conv6": 37_748_736,
                 "conv7": 9_437_184, "fc1": 8_388_608, "fc2": 16_777_216, "fc3": 40_960}
    assert sum(f.values()) == 281_780_224
    assert round(2 * sum(f.values()) / 1e6, 1) == 563.6


def test_dense_flops_resnet_shortcut():
    arch = build_arch("resnet12", in_shape=(3, 32, 32), classes=10)
    f = M.dense_flops(arch)
    # layer2.0.shortcut: 1x1, 64 -> 128, stride 2 on the 16x16 block input -> 8x8 output
    assert f["layer2.0.shortcut"] == 64 * 128 * 8 * 8
    assert f["layer2.0.conv1"] == 9 * 64 * 128 * 8 * 8
    assert f["fc"] == 512 * 2 * 2 * 10
    assert "layer1.0.shortcut" not in f  # identity


def test_compression_ratio_known_masks():
    arch = build_arch("vgg9", in_shape=(1, 16, 16), classes=3, width=1 / 16)
    params = init_params(arch, np.random.default_rng(0), np.float64)
    masks, live = {}, 0
    for i, layer in enumerate(weight_layers(arch)):
        w = params[f"{layer.name}.weight"]
        m = np.zeros(w.size)
        m[: i + 1] = 1.0  # layer i keeps exactly i + 1 weights
        masks[f"mask.{layer.name}.weight"] = m.reshape(w.shape)
        live += i + 1
    total = sum(p.size for p in params.values())
    comp = M.compression_ratio(arch, masks)
    assert comp.total == total and comp.live == live == 55
    assert comp.ratio == total / 55
    assert comp.density["conv1"] == 1 / params["conv1.weight"].size
    # masks win over weights: a live (mask 1) weight that is exactly 0 still counts
    params["conv1.weight"][...] = 0.0
    assert M.compression_ratio(arch, dict(params, **masks)).live == 55
    assert M.compression_ratio(arch, params).live == total - params["conv1.weight"].size
    # no live weight at all
    assert M.compression_ratio(arch, {k: 0 * v for k, v in masks.items()}).ratio == math.inf


def test_channel_mode_vgg():
    # vgg9 on 1x16x16, width 1/16: conv1 1->4 (16x16) A conv2 4->8 (8x8) conv3 8->16 A
    # conv4 16->16 (4x4) conv5 16->32 A conv6 32->32 (2x2) A conv7 32->32 (1x1), fc1 32->256
    arch = build_arch("vgg9", in_shape=(1, 16, 16), classes=3, width=1 / 16)
    params = init_params(arch, np.random.default_rng(1), np.float64)
    params["conv1.weight"][[0, 2]] = 0.0  # 2 of 4 conv1 filters dead
    params["conv3.weight"][5] = 0.0  # 1 of 16 conv3 filters dead
    params["conv7.weight"][[1, 2, 3]] = 0.0  # 3 of 32 conv7 filters dead -> fc1 inputs
    comp = M.compression_ratio(arch, params)
    assert comp.channels["conv1"] == (2, 4) and comp.channels["conv2"] == (8, 8)
    assert comp.channels["conv3"] == (15, 16) and comp.channels["conv7"] == (29, 32)
    # hand count: conv k*k*(live in)*(live out)*H*W, fc1 (live channels * H*W) * n_out
    c = {layer.name: layer for layer in weight_layers(arch)}
    hw = {k: c[k].out_hw[0] * c[k].out_hw[1] for k in c if isinstance(c[k], Conv)}
    expected = (9 * 1 * 2 * hw["conv1"] + 9 * 2 * 8 * hw["conv2"] + 9 * 8 * 15 * hw["conv3"]
                + 9 * 15 * 16 * hw["conv4"] + 9 * 16 * 32 * hw["conv5"]
                + 9 * 32 * 32 * hw["conv6"] + 9 * 32 * 29 * hw["conv7"]
                + 29 * 1 * 256 + 256 * 256 + 256 * 3)  # fc1 input map 1x1 after the last pool
    assert c["fc1"].n_in == 32 * 1 * 1
    assert comp.channel_flops == expected
    assert comp.dense_flops == sum(M.dense_flops(arch).values())
    assert comp.flop_reduction == comp.dense_flops / expected


def test_channel_mode_resnet_block_union():
    arch = build_arch("resnet12", in_shape=(3, 16, 16), classes=3, width=1 / 16)
    params = init_params(arch, np.random.default_rng(2), np.float64)
    dense = sum(M.dense_flops(arch).values())
    # identity block layer1.0 (4 -> 4): a dead conv2 filter keeps its output channel alive
    # through the shortcut, so layer2.0's inputs do not shrink; only conv2's own cost does
    p = {k: v.copy() for k, v in params.items()}
    p["layer1.0.conv2.weight"][1] = 0.0
    b = arch.layers[4]
    assert isinstance(b, Block) and b.shortcut is None
    hw = b.conv2.out_hw[0] * b.conv2.out_hw[1]
    comp = M.compression_ratio(arch, p)
    assert comp.channels["layer1.0.conv2"] == (3, 4)
    assert comp.channel_flops == dense - 9 * 4 * 1 * hw
    # also kill stem.conv3 filter 1: the block input channel 1 is dead, then the block output
    # channel 1 is dead (conv2 filter dead, identity input dead) -> layer2.0 conv1 and shortcut
    # lose an input channel too
    p["stem.conv3.weight"][1] = 0.0
    comp = M.compression_ratio(arch, p)
    s3 = arch.layers[2]
    b2 = arch.layers[5]
    hw_s3 = s3.out_hw[0] * s3.out_hw[1]
    hw2 = b2.conv1.out_hw[0] * b2.conv1.out_hw[1]
    saved = (9 * 4 * 1 * hw_s3  # stem.conv3's dead filter
             + 9 * 1 * 4 * hw  # layer1.0.conv1 loses input channel 1
             + 9 * 4 * 1 * hw  # layer1.0.conv2's dead filter
             + 9 * 1 * 8 * hw2 + 1 * 1 * 8 * hw2)  # layer2.0 conv1 and shortcut inputs
    assert comp.channel_flops == dense - saved


def test_energy_hand_numbers():
    e = M.energy(macs=1000, synops=5000, ann_macs=2000)
    assert e.snn == pytest.approx(1000 * 4.6 + 5000 * 0.9)  # 9100 pJ
    assert e.ann == pytest.approx(2000 * 4.6)  # 9200 pJ
    assert e.ratio == pytest.approx(9100 / 9200)
    e = M.energy(macs=10, synops=100, ann_macs=50, e_mac=3.1, e_ac=0.1)
    assert (e.snn, e.ann) == (pytest.approx(41.0), pytest.approx(155.0))
    assert M.energy(macs=5, synops=0, ann_macs=0).ratio == math.inf
    for bad in ({"e_mac": 0.0}, {"e_ac": -1.0}, {"macs": -1}, {"synops": float("nan")}):
        with pytest.raises(ValueError):
            M.energy(**{"macs": 1, "synops": 1, "ann_macs": 1, **bad})


def test_nonzero_macs_and_live_weights_errors():
    arch = build_arch("vgg9", in_shape=(1, 16, 16), classes=3, width=1 / 16)
    params = init_params(arch, np.random.default_rng(0), np.float64)
    fan = M.fanout_maps(arch, M.live_weights(arch, params))
    nz = M.nonzero_macs(arch, fan)
    assert nz["fc2"] == params["fc2.weight"].size  # dense linear: n_in * n_out
    # dense 3x3 conv with padding 1 on 16x16: each border row/column loses 1/3 of the taps
    assert nz["conv1"] == 4 * 1 * 14 * 14 * 9 + 4 * 4 * 14 * 6 + 4 * 4 * 4
    with pytest.raises(ValueError, match="neither"):
        M.live_weights(arch, {k: v for k, v in params.items() if k != "conv2.weight"})
    with pytest.raises(ValueError, match="shape"):
        M.live_weights(arch, dict(params, **{"mask.conv1.weight": np.ones((1, 1))}))


def test_synop_count_kernel_parallel_equals_serial(numba_threads):
    rng = np.random.default_rng(4)
    x = np.where(rng.random((37, 300)) < 0.2, 1.0, 0.0)
    fan = rng.integers(0, 30, 300).astype(np.int64)
    out = [np.empty(37, dtype=np.int64) for _ in range(2)]
    numba_threads(1, M._synop_count_kernel, x, fan, out[0])
    numba_threads(2, M._synop_count_kernel, x, fan, out[1])
    np.testing.assert_array_equal(out[0], out[1])
