"""SNN training through the weight-sparse layers (snn_forward/snn_backward(sparse=...)).

vgg9 and vgg11 at width 1/16, T = 3, float64, irregular masks at densities 1, 0.3, 0.05,
calibrated thresholds (test_snn_infer's helper), dropout masks drawn, the forward by events or
by shifted planes or GEMMs (event_max_density 1 or 0). With sparse= naming every conv after
the first and every hidden linear layer, the forward must give the dense path's spikes and
logits to 1e-12 relative, and the backward every gradient to 1e-12 relative of its scale,
except that the sparse layers' weight gradients are zero at pruned weights (the dense path
computes them there too): compared as dense gradient x mask.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import models.test_snn_infer as infer_tests
import refsnn.models.snn as snn_module
from models.test_snn_infer import T, _network
from refsnn.models.arch import Linear, build_arch, draw_dropout_masks, init_params
from refsnn.models.snn import (live_indices, snn_backward, snn_forward, snn_init_neurons,
                               snn_trace_arrays, sparse_layer_names)
from refsnn.ops.event import pack_event_weights, refresh_event_weights

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py


def _sparse(arch, params):
    return {name: pack_event_weights(params[f"{name}.weight"])
            for name in sparse_layer_names(arch)}


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(["vgg9", "vgg11"]), seed=st.integers(0, 2**16),
       density=st.sampled_from([1.0, 0.3, 0.05]), dropout=st.booleans(),
       event=st.sampled_from([0.0, 1.0]), gw_positions=st.sampled_from([0, 64]))
def test_sparse_convs_give_the_dense_numbers_at_the_mask(name, seed, density, dropout, event,
                                                         gw_positions):
    """event: event_max_density, 0 (shifted-plane kernels and GEMMs only) or 1 (every sparse
    layer's forward by events, and the conv weight gradient too on maps of at most
    gw_positions positions: 0 none, 64 all of these small maps; the default is 64)."""
    saved = snn_module.EVENT_GRAD_W_MAX_POSITIONS
    snn_module.EVENT_GRAD_W_MAX_POSITIONS = gw_positions
    try:
        _check_sparse_network(name, seed, density, dropout, event)
    finally:
        snn_module.EVENT_GRAD_W_MAX_POSITIONS = saved


def _check_sparse_network(name, seed, density, dropout, event):
    infer_tests.IN_SHAPES.setdefault("vgg11", (3, 16, 16))
    arch, params, x = _network(name, seed, density, "irregular")
    arch = build_arch(name, in_shape=x.shape[1:], classes=4, width=1 / 16, dropout_conv=0.2,
                      dropout_fc=0.2)  # the same layers, with dropout rates
    rng = np.random.default_rng(seed)
    masks = draw_dropout_masks(arch, x.shape[0], rng, np.float64) if dropout else None
    sparse = _sparse(arch, params)
    U, tape = snn_forward(arch, params, x, timesteps=T, masks=masks)
    U2, tape2 = snn_forward(arch, params, x, timesteps=T, masks=masks, sparse=sparse,
                            event_max_density=event)
    scale = max(1.0, float(np.abs(U).max()))
    assert float(np.abs(U2 - U).max()) <= 1e-12 * scale
    tr, tr2 = snn_trace_arrays(arch, params, tape), snn_trace_arrays(arch, params, tape2)
    for key in tr:
        if key.endswith(".spikes"):
            np.testing.assert_array_equal(tr2[key], tr[key], err_msg=key)
    grad_u = rng.standard_normal(U.shape)
    g = snn_backward(grad_u, arch, params, tape, masks=masks)
    g2 = snn_backward(grad_u, arch, params, tape2, masks=masks, sparse=sparse)
    for key, ref in g.items():
        layer = key.split(".")[0]
        if key.endswith(".weight") and layer in sparse:
            ref = ref * (params[key] != 0)
        err = float(np.abs(g2[key] - ref).max(initial=0.0))
        assert err <= 1e-12 * max(1.0, float(np.abs(ref).max(initial=0.0))), key


def test_consumed_tape_gives_the_same_gradients_bit_for_bit():
    """snn_backward(consume_tape=True) writes its temporaries over the tape's im2col matrices
    (lower peak memory): the same gradients as a backward that leaves the tape intact."""
    arch, params, x = _network("vgg9", 3, 0.3, "irregular")
    U, tape = snn_forward(arch, params, x, timesteps=T)
    grad_u = np.random.default_rng(3).standard_normal(U.shape)
    kept = snn_backward(grad_u, arch, params, tape)
    consumed = snn_backward(grad_u, arch, params, snn_forward(arch, params, x, timesteps=T)[1],
                            consume_tape=True)
    for key, ref in kept.items():
        np.testing.assert_array_equal(consumed[key], ref, err_msg=key)
    with pytest.raises(TypeError, match="consume_tape must be a bool"):
        snn_backward(grad_u, arch, params, tape, consume_tape="yes")


def test_refreshed_packing_follows_an_optimiser_step():
    arch, params, x = _network("vgg9", 1, 0.3, "irregular")
    sparse = _sparse(arch, params)
    for name in sparse:  # a step that keeps the mask: every live weight changes
        w = params[f"{name}.weight"]
        w -= 0.01 * np.sign(w)
    stale = snn_forward(arch, params, x, timesteps=T)[0]
    fresh = {k: refresh_event_weights(ew, params[f"{k}.weight"]) for k, ew in sparse.items()}
    got = snn_forward(arch, params, x, timesteps=T, sparse=fresh)[0]
    assert float(np.abs(got - stale).max()) <= 1e-12 * max(1.0, float(np.abs(stale).max()))


def test_errors_name_the_layer():
    arch = build_arch("resnet12", in_shape=(3, 16, 12), classes=4, width=1 / 16)
    params = init_params(arch, np.random.default_rng(0), np.float64)
    params.update(snn_init_neurons(arch, np.float64))
    x = np.zeros((1, 3, 16, 12))
    first = arch.layers[0].name
    with pytest.raises(ValueError, match="stride-1 convs after the first"):
        snn_forward(arch, params, x, timesteps=2,
                    sparse={first: pack_event_weights(params[f"{first}.weight"])})
    arch, params, x = _network("vgg9", 0, 1.0, "irregular")
    with pytest.raises(ValueError, match="event_max_density"):
        snn_forward(arch, params, x, timesteps=2, event_max_density=1.5)
    with pytest.raises(ValueError, match="current"):
        snn_forward(arch, params, x, timesteps=2,
                    sparse={"conv2": pack_event_weights(params["conv3.weight"])})
    out = arch.layers[-1].name  # the output layer (its input is the spike count) stays dense
    assert isinstance(arch.layers[-1], Linear) and not arch.layers[-1].act
    assert "fc1" in sparse_layer_names(arch) and out not in sparse_layer_names(arch)
    with pytest.raises(ValueError, match="hidden linear layers"):
        snn_forward(arch, params, x, timesteps=2,
                    sparse={out: pack_event_weights(params[f"{out}.weight"])})


def test_packed_gradients_are_the_dense_ones_at_the_packing():
    """packed_grads=True: the sparse layers' weight gradients per live weight in increasing
    flat index, equal bit for bit to the unpacked ones read there (the others unchanged)."""
    arch, params, x = _network("vgg9", 5, 0.3, "irregular")
    sparse = _sparse(arch, params)
    grad_u = np.random.default_rng(5).standard_normal((x.shape[0], arch.classes))
    full = snn_backward(grad_u, arch, params, snn_forward(arch, params, x, timesteps=T,
                                                          sparse=sparse)[1], sparse=sparse)
    packed = snn_backward(grad_u, arch, params, snn_forward(arch, params, x, timesteps=T,
                                                            sparse=sparse)[1], sparse=sparse,
                          packed_grads=True)
    assert list(packed) == list(full)
    for key, ref in full.items():
        name = key[:-len(".weight")]
        if key.endswith(".weight") and name in sparse:
            assert packed[key].shape == (sparse[name].value.size,)
            ew = sparse[name]
            np.testing.assert_array_equal(packed[key], ref.reshape(-1)[ew.index[ew.order]])
            assert np.all(np.diff(ew.index[ew.order]) > 0)
            np.testing.assert_array_equal(live_indices(sparse)[key], ew.index[ew.order])
        else:
            np.testing.assert_array_equal(packed[key], ref, err_msg=key)
    with pytest.raises(TypeError, match="packed_grads must be a bool"):
        snn_backward(grad_u, arch, params, snn_forward(arch, params, x, timesteps=T)[1],
                     packed_grads=1)
