"""Channel-pruned networks executed physically smaller (refsnn/prune/compact.py).

vgg9 and resnet12 at width 1/16, T = 3, float64, whole filters killed at random (density 1,
0.6, 0.3; test_snn_infer's calibrated networks), dropout drawn for the full network or none.
The compact network must give the full network's logits and every gradient to 1e-12 relative
(to the logits' scale, and to the largest gradient entry), the same spikes on the kept
channels, and the full network must have no spike and exactly zero gradient on everything
removed (the premise of removing it).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.test_snn_infer import T, _network
from refsnn.models.arch import (Block, Conv, build_arch, draw_dropout_masks, weight_layers,
                                weight_shape)
from refsnn.models.snn import snn_backward, snn_forward, snn_param_shapes, snn_trace_arrays
from refsnn.prune.compact import (channel_plan, compact_arch, gather_dropout, gather_params,
                                  scatter_grads)

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py


def _alive(params, conv):
    return params[f"{conv.name}.weight"].reshape(conv.c_out, -1).any(axis=1)


@settings(max_examples=12, deadline=None)
@example(name="vgg9", seed=609, density=0.6, dropout=False)  # a threshold grad. of 2e-7
@given(name=st.sampled_from(["vgg9", "resnet12"]), seed=st.integers(0, 2**16),
       density=st.sampled_from([1.0, 0.6, 0.3]), dropout=st.booleans())
def test_compact_network_gives_the_full_numbers(name, seed, density, dropout):
    _, params, x = _network(name, seed, density, "channel")
    arch = build_arch(name, in_shape=x.shape[1:], classes=4, width=1 / 16, dropout_conv=0.2,
                      dropout_fc=0.2)
    rng = np.random.default_rng(seed)
    drop = draw_dropout_masks(arch, x.shape[0], rng, np.float64) if dropout else None
    U, tape = snn_forward(arch, params, x, timesteps=T, masks=drop)
    trace = snn_trace_arrays(arch, params, tape)
    grad_u = rng.standard_normal(U.shape)
    g = snn_backward(grad_u, arch, params, tape, masks=drop)

    plan = channel_plan(arch, params)
    small = compact_arch(arch, plan)
    p_small = gather_params(arch, plan, params)
    assert {k: v.shape for k, v in p_small.items()} == snn_param_shapes(small)
    d_small = gather_dropout(arch, plan, drop)
    U2, tape2 = snn_forward(small, p_small, x, timesteps=T, masks=d_small)
    scale = max(1.0, float(np.abs(U).max()))
    assert float(np.abs(U2 - U).max()) <= 1e-12 * scale
    trace2 = snn_trace_arrays(small, p_small, tape2)
    for conv in (c for c in weight_layers(arch) if isinstance(c, Conv)):
        key = f"trace.{conv.name}.spikes"
        if key not in trace:
            continue  # a shortcut conv: its neuron is conv2's
        kept = plan.out[conv.name]
        np.testing.assert_array_equal(trace2[key], trace[key][:, :, kept], err_msg=key)
        removed = np.setdiff1d(np.arange(conv.c_out), kept)
        assert not trace[key][:, :, removed].any(), f"{key}: a removed channel spiked"
    g2 = scatter_grads(arch, plan, snn_backward(grad_u, small, p_small, tape2, masks=d_small),
                       {k: v.shape for k, v in params.items()})
    assert set(g2) == set(g)
    # relative to the largest gradient entry of the network: a threshold's or leak's gradient
    # is a sum over every neuron of the layer that can cancel to far below its terms
    gs = max(float(np.abs(v).max()) for v in g.values())
    for key in g:
        assert float(np.abs(g2[key] - g[key]).max()) <= 1e-12 * gs, key
        if key.endswith(".weight"):  # the full gradient is exactly 0 where nothing is kept
            kept = np.zeros(g[key].shape, dtype=bool)
            kept[tuple(_idx(plan, key))] = True
            assert not g[key][~kept].any(), f"{key}: nonzero gradient on a removed weight"


def _idx(plan, key):
    name = key[:-len(".weight")]
    o, i = plan.out[name], plan.inp[name]
    if o is not None:
        return np.ix_(o, i)
    return (slice(None), i if i is not None else slice(None))


def test_plan_keeps_alive_filters_and_residual_stream_unions():
    """vgg9: a conv keeps exactly its alive filters, the next conv those as inputs, fc1 their
    H*W features. resnet12: the blocks with identity shortcuts keep the union of the alive
    filters writing into their stream (stem conv3, then each conv2), dead ones as zero rows."""
    arch, params, _ = _network("vgg9", 11, 0.5, "channel")
    plan = channel_plan(arch, params)
    convs = [c for c in weight_layers(arch) if isinstance(c, Conv)]
    for prev, conv in zip(convs, convs[1:]):
        np.testing.assert_array_equal(plan.out[prev.name], np.flatnonzero(_alive(params, prev)))
        np.testing.assert_array_equal(plan.inp[conv.name], plan.out[prev.name])
    last, fc1 = convs[-1], weight_layers(arch)[len(convs)]
    per = fc1.n_in // last.c_out
    np.testing.assert_array_equal(
        plan.inp[fc1.name], (plan.out[last.name][:, None] * per + np.arange(per)).ravel())
    assert plan.out[fc1.name] is None

    arch, params, _ = _network("resnet12", 12, 0.5, "channel")
    plan = channel_plan(arch, params)
    stem3 = [layer for layer in arch.layers if isinstance(layer, Conv)][-1]
    block = next(b for b in arch.layers if isinstance(b, Block))
    assert block.shortcut is None  # layer1.0: identity, so stem conv3 starts the stream
    union = _alive(params, stem3) | _alive(params, block.conv2)
    np.testing.assert_array_equal(plan.out[stem3.name], np.flatnonzero(union))
    np.testing.assert_array_equal(plan.out[block.conv2.name], plan.out[stem3.name])
    np.testing.assert_array_equal(plan.inp[block.conv1.name], plan.out[stem3.name])
    np.testing.assert_array_equal(plan.out[block.conv1.name],
                                  np.flatnonzero(_alive(params, block.conv1)))


def test_a_layer_with_no_alive_filter_keeps_channel_zero():
    arch, params, _ = _network("vgg9", 13, 1.0, "channel")
    params["conv4.weight"][:] = 0.0
    plan = channel_plan(arch, params)
    np.testing.assert_array_equal(plan.out["conv4"], [0])
    np.testing.assert_array_equal(plan.inp["conv5"], [0])
    small = compact_arch(arch, plan)
    assert plan.removes_anything(arch)
    assert [c.c_out for c in weight_layers(small) if c.name == "conv4"] == [1]


def test_dense_network_removes_nothing():
    arch, params, _ = _network("resnet12", 14, 1.0, "channel")
    plan = channel_plan(arch, params)
    assert not plan.removes_anything(arch)
    assert compact_arch(arch, plan) == arch


def test_a_plan_of_another_network_is_refused():
    arch, params, _ = _network("vgg9", 15, 0.5, "channel")
    other, other_params, _ = _network("resnet12", 15, 0.5, "channel")
    plan = channel_plan(other, other_params)
    with pytest.raises(ValueError, match="compact_arch: plan has no entry for layer 'conv1'"):
        compact_arch(arch, plan)
    wide = build_arch("vgg9", in_shape=(1, 16, 16), classes=4, width=1 / 8)
    wide_plan = channel_plan(wide, {k: np.ones(v) for k, v in _weight_shapes(wide).items()})
    with pytest.raises(ValueError, match="gather_params: plan keeps output indices"):
        gather_params(arch, wide_plan, params)
    with pytest.raises(TypeError, match="scatter_grads: plan must be a ChannelPlan"):
        scatter_grads(arch, {"out": {}}, {}, {})


def _weight_shapes(arch):
    return {f"{layer.name}.weight": weight_shape(layer) for layer in weight_layers(arch)}
