"""Tape-free SNN inference (refsnn/models/snn_infer.py) against the reference snn_forward.

Networks: vgg9 (1x16x16) and resnet12 (3x16x12, identity and 1x1 shortcuts) at width 1/16,
T = 3, float64, weights masked irregularly (density 1, 0.3, 0.05) or by whole filters
(channel pruning), thresholds calibrated layer by layer to the RMS of the pre-reset membrane
(x 0.8..1.2) so every layer spikes. Every path must give the reference's spikes (counts per
layer) and its logits to 1e-12 relative; the dense path without pruning is the reference's
own computation, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.models.arch import build_arch, init_params, weight_layers
from refsnn.models.snn import snn_forward, snn_init_neurons, snn_trace_arrays, spiking_layers
from refsnn.models.snn_infer import PATHS, pack_snn_weights, snn_infer

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

IN_SHAPES = {"vgg9": (1, 16, 16), "resnet12": (3, 16, 12)}
T, N = 3, 3


def _network(name, seed, density, prune):
    arch = build_arch(name, in_shape=IN_SHAPES[name], classes=4, width=1 / 16)
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, np.float64)
    params.update(snn_init_neurons(arch, np.float64))
    for layer in weight_layers(arch)[1:]:  # the first layer stays dense (as trained ones do)
        w = params[f"{layer.name}.weight"]
        if prune == "irregular":
            w *= rng.random(w.shape) < density
        else:  # whole output filters die; keep at least one per layer
            alive = rng.random(w.shape[0]) < density
            alive[rng.integers(w.shape[0])] = True
            w *= alive.reshape((-1,) + (1,) * (w.ndim - 1))
    x = rng.standard_normal((N,) + IN_SHAPES[name])
    for layer in spiking_layers(arch):  # calibrate v_l in network order
        tape = snn_forward(arch, params, x, timesteps=T)[1]
        um = snn_trace_arrays(arch, params, tape)[f"trace.{layer.name}.membrane_pre"]
        rms = float(np.sqrt(np.mean(um**2)))
        params[f"{layer.name}.threshold"] = np.asarray(max(rms, 1e-3) * rng.uniform(0.8, 1.2))
    return arch, params, x


def _reference(arch, params, x):
    U, tape = snn_forward(arch, params, x, timesteps=T)
    tr = snn_trace_arrays(arch, params, tape)
    counts = {layer.name: int(np.count_nonzero(tr[f"trace.{layer.name}.spikes"]))
              for layer in spiking_layers(arch)}
    return U, counts


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(tuple(IN_SHAPES)), seed=st.integers(0, 2**16),
       density=st.sampled_from([1.0, 0.3, 0.05]), prune=st.sampled_from(["irregular",
                                                                         "channel"]))
def test_every_path_gives_the_reference_spikes_and_logits(name, seed, density, prune):
    arch, params, x = _network(name, seed, density, prune)
    U, counts = _reference(arch, params, x)
    assert sum(counts.values()) > 0
    packed = pack_snn_weights(arch, params)
    scale = max(1.0, float(np.abs(U).max()))
    for path in PATHS:
        out = snn_infer(arch, params, x, timesteps=T, path=path, packed=packed)
        assert out.spikes == counts, path
        assert float(np.abs(out.logits - U).max()) <= 1e-12 * scale, path
        if path != "auto":  # forced: every layer after the first takes it
            first = arch.layers[0].name  # the analog image: always dense
            assert {p for k, p in out.paths.items() if k != first} == {path}


def test_dense_path_without_pruning_is_the_reference_bit_for_bit():
    arch, params, x = _network("resnet12", 5, 1.0, "irregular")
    out = snn_infer(arch, params, x, timesteps=T, path="dense")
    np.testing.assert_array_equal(out.logits, snn_forward(arch, params, x, timesteps=T)[0])


def test_auto_compares_the_density_product_with_the_crossover(monkeypatch):
    from refsnn.models import snn_infer as mod

    arch, params, x = _network("vgg9", 1, 0.05, "irregular")
    first = arch.layers[0].name
    for crossover, want in ((1.0, {"event"}), (-1.0, {"dense"})):  # product is in [0, 1]
        monkeypatch.setattr(mod, "EVENT_CROSSOVER", crossover)
        out = snn_infer(arch, params, x, timesteps=T)
        assert out.paths[first] == "dense"  # the analog image, whatever the rule
        assert {p for k, p in out.paths.items() if k != first} == want
    monkeypatch.setattr(mod, "EVENT_CROSSOVER", 0.02)
    # with every weight live, a layer goes event only if its own input is <= 2 % nonzero
    full_arch, full_params, full_x = _network("vgg9", 1, 1.0, "irregular")
    out = snn_infer(full_arch, full_params, full_x, timesteps=T)
    tape = snn_forward(full_arch, full_params, full_x, timesteps=T)[1]
    for rec in tape[1:]:
        name = getattr(rec.layer, "name", None)
        if name in out.paths and hasattr(rec, "x"):
            rho = np.count_nonzero(rec.x) / rec.x.size
            assert out.paths[name] == ("event" if rho <= 0.02 else "dense"), (name, rho)


def test_all_weights_pruned_gives_zero_logits_and_no_spikes_after_the_first_layer():
    arch, params, x = _network("vgg9", 2, 1.0, "irregular")
    for layer in weight_layers(arch):
        params[f"{layer.name}.weight"][...] = 0.0
    for path in PATHS:
        out = snn_infer(arch, params, x, timesteps=T, path=path)
        np.testing.assert_array_equal(out.logits, np.zeros_like(out.logits))
        assert sum(out.spikes.values()) == 0


def test_errors_name_the_argument():
    arch, params, x = _network("vgg9", 0, 1.0, "irregular")
    with pytest.raises(ValueError, match="path"):
        snn_infer(arch, params, x, timesteps=T, path="sparse")
    packed = pack_snn_weights(arch, params)
    packed["conv2"] = packed["conv3"]
    with pytest.raises(ValueError, match="re-run pack_snn_weights"):
        snn_infer(arch, params, x, timesteps=T, path="event", packed=packed)
    with pytest.raises(ValueError, match="timesteps"):
        snn_infer(arch, params, x, timesteps=0)
