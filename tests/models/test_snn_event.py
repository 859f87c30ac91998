"""The fused event-driven engine (refsnn/models/snn_event.py) against the reference snn_forward.

VGG networks (vgg9 1x28x28 with odd maps under its pools, vgg11 3x16x16 with a pool right
after conv1, vgg16 2x32x16 non-square) at width 1/16, T = 3, float64, weights masked
irregularly or by whole filters, thresholds calibrated so every layer spikes (the helper of
test_snn_infer). The engine adds each current's products onto the leaked membrane one event
at a time instead of summing the current first (the first layer's current by direct
convolution instead of the GEMM), so it must give the reference's spike counts in every
layer and its logits to 1e-12 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import models.test_snn_infer as infer_tests
from models.test_snn_infer import T, _network, _reference
from refsnn.models.arch import Conv, build_arch, init_params
from refsnn.models.snn import snn_init_neurons
from refsnn.models.snn_event import pack_event_conv, pack_event_network, snn_event_infer
from refsnn.models.snn_infer import pack_snn_weights
from refsnn.ops.event import pack_event_weights

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

# vgg9 at 28x28 pools 7x7 -> 3x3 -> 1x1: a pool that drops a row and column, and one of a
# 3x3 map (kernel 2, not 3)
SHAPES = {"vgg9": (1, 28, 28), "vgg11": (3, 16, 16), "vgg16": (2, 32, 16)}


@pytest.fixture(autouse=True)
def _vgg_shapes(monkeypatch):
    monkeypatch.setattr(infer_tests, "IN_SHAPES", {**infer_tests.IN_SHAPES, **SHAPES})


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(tuple(SHAPES)), seed=st.integers(0, 2**16),
       density=st.sampled_from([1.0, 0.3, 0.05]),
       prune=st.sampled_from(["irregular", "channel"]))
def test_event_engine_gives_the_reference_spikes_and_logits(name, seed, density, prune):
    infer_tests.IN_SHAPES.update(SHAPES)  # hypothesis runs outside the fixture's scope
    arch, params, x = _network(name, seed, density, prune)
    U, counts = _reference(arch, params, x)
    out = snn_event_infer(arch, params, x, timesteps=T)
    assert out.spikes == counts
    assert float(np.abs(out.logits - U).max()) <= 1e-12 * max(1.0, float(np.abs(U).max()))
    # the same numbers whichever packing the caller passes (built here when None)
    for packed in (pack_snn_weights(arch, params), pack_event_network(arch, params)):
        again = snn_event_infer(arch, params, x, timesteps=T, packed=packed)
        np.testing.assert_array_equal(again.logits, out.logits)
    first = arch.layers[0].name
    assert out.paths[first] == "dense" and set(out.paths.values()) <= {"dense", "event"}


def test_float32_spikes_and_logits_close():
    arch, params, x = _network("vgg9", 4, 0.3, "irregular")
    p32 = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
    U, counts = _reference(arch, p32, x.astype(np.float32))
    out = snn_event_infer(arch, p32, x.astype(np.float32), timesteps=T)
    assert out.logits.dtype == np.float32
    # float32 rounding may move a membrane across its threshold; on this network (seeded) it
    # does not, and the logits then agree to float32 rounding of the sums
    assert out.spikes == counts
    assert float(np.abs(out.logits - U).max()) <= 1e-5 * max(1.0, float(np.abs(U).max()))


def test_parallel_equals_serial(numba_threads):
    arch, params, x = _network("vgg11", 7, 0.3, "irregular")
    packed = pack_snn_weights(arch, params)

    def run():
        return snn_event_infer(arch, params, x, timesteps=T, packed=packed)

    one, two = numba_threads(1, run), numba_threads(2, run)
    np.testing.assert_array_equal(one.logits, two.logits)  # one sample per prange iteration
    assert one.spikes == two.spikes


def test_offsets_address_the_channels_last_membrane():
    # w[o, c, p, q] nonzero at two entries; offset = ((pad - p) * W_out + (pad - q)) * C_out + o
    w = np.zeros((3, 2, 3, 3))
    w[2, 1, 0, 2], w[0, 1, 2, 1] = 1.5, -2.0
    conv = Conv("c", 2, 3, 3, 1, 1, 0.0, (5, 4), (5, 4))
    ec = pack_event_conv(pack_event_weights(w), conv)
    np.testing.assert_array_equal(ec.ptr, [0, 0, 2])
    np.testing.assert_array_equal(ec.offset, [((1 - 0) * 4 + (1 - 2)) * 3 + 2,
                                              ((1 - 2) * 4 + (1 - 1)) * 3 + 0])
    np.testing.assert_array_equal(ec.value, [1.5, -2.0])


def test_errors_name_the_problem():
    arch = build_arch("resnet12", in_shape=(3, 16, 12), classes=4, width=1 / 16)
    params = init_params(arch, np.random.default_rng(0), np.float64)
    params.update(snn_init_neurons(arch, np.float64))
    with pytest.raises(ValueError, match="residual blocks"):
        snn_event_infer(arch, params, np.zeros((1, 3, 16, 12)), timesteps=2)
    conv = Conv("c", 2, 3, 3, 2, 1, 0.0, (6, 6), (3, 3))
    with pytest.raises(ValueError, match="stride 2"):
        pack_event_conv(pack_event_weights(np.ones((3, 2, 3, 3))), conv)
    arch, params, x = _network("vgg9", 0, 1.0, "irregular")
    with pytest.raises(ValueError, match="timesteps"):
        snn_event_infer(arch, params, x, timesteps=0)
