"""The SNN model (refsnn/models/snn.py): whole-network BPTT gradients and forward semantics.

Setup: width 1/16 (4..32 channels, hidden 256), T = 3, N = 2, 3 classes, float64; vgg9 on a
1x16x16 input and resnet12 on a non-square 3x16x12 input (identity and 1x1 shortcuts); SNN
dropout 0.2 everywhere, with masks drawn. Leaks are drawn in [0.5, 1); each threshold is set,
layer by layer in network order, to ~ the RMS of its layer's pre-reset membrane (times a random
0.8..1.2), so z = u-/v - 1 spreads over about [-2.5, 1] in every layer (with the SPEC's v = 1
and N(0, 0.01) linear init the deep layers would sit at z ~ -1 with a vanishing surrogate, and
a wrong threshold gradient would hide in the rounding).

Gradient checks run in smooth mode (s = P(z), the surrogate's primitive) with
detach_reset=False: the forward is then differentiable and snn_backward must be its exact
gradient. The main checks use the **sigmoid** surrogate, whose primitive is C^inf, so central
differences are clean at every point; the SPEC's **pwl** surrogate has a primitive that is only
C^1 (P'' jumps at z = -1, 0, 1), so its whole-network check rejects tangents along which any z
crosses a kink (the same pattern mechanism as the ANN's ReLU checks). The hard-spike
(heaviside) forward and the SPEC's detach_reset=True backward go through the same composition
code; the LIF layer tests pin those modes down (tests/neurons/test_lif.py), and here the
heaviside forward is compared with a step-by-step (t outer, layers inner) reference.

Tangent scaling: weights differ in size by 30x between layers (conv N(0, ~0.2), linear
N(0, 0.01)) and thresholds by more; a standard normal tangent on a 0.01-sized weight is a huge
relative step, and the central difference's truncation error (~eps^2 f''') then reached 5e-7
relative. So each parameter is checked in units of its own size: the checker perturbs
q_k = p_k / 2^k_exp, with 2^k_exp ~ RMS(p_k) a power of two (q_k * 2^k_exp == p_k exactly), and
the vjp is scaled by the same factor (chain rule). Truncation then stays below 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest

import naive
from gradcheck import adjoint_check, adjoint_check_avoiding_kinks, elementwise_fd
from refsnn.models.arch import build_arch, draw_dropout_masks, init_params
from refsnn.models.snn import (BlockRecord, ConvRecord, LinearRecord, OutputRecord,
                               snn_backward, snn_forward, snn_init_neurons, snn_param_shapes,
                               snn_trace_arrays, spiking_layers)
from tolerances import assert_close, tol

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

IN_SHAPES = {"vgg9": (1, 16, 16), "resnet12": (3, 16, 12)}
ARCHS = tuple(IN_SHAPES)
T, N, CLASSES, WIDTH = 3, 2, 3, 1 / 16
KINDS = ("weight", "threshold", "leak")


def make_arch(name):
    return build_arch(name, in_shape=IN_SHAPES[name], classes=CLASSES, width=WIDTH,
                      dropout_conv=0.2, dropout_fc=0.2)


class Case:
    """One SNN at one point: float64 params (weights, calibrated thresholds, leaks), input,
    dropout masks and forward options; the tape at that point."""

    def __init__(self, name, seed=0, *, spike="smooth", surrogate="sigmoid", timesteps=T,
                 dropout=True):
        self.arch = make_arch(name)
        rng = np.random.default_rng(seed)
        self.params = init_params(self.arch, rng, np.float64)
        self.params.update(snn_init_neurons(self.arch, np.float64))
        for layer in spiking_layers(self.arch):
            self.params[f"{layer.name}.leak"] = np.asarray(rng.uniform(0.5, 1.0))
        self.x = rng.standard_normal((N,) + IN_SHAPES[name])
        self.masks = draw_dropout_masks(self.arch, N, rng, np.float64) if dropout else None
        self.timesteps = timesteps
        self.fwd = dict(spike=spike, surrogate=surrogate)
        for layer in spiking_layers(self.arch):  # calibrate v_l in network order
            um = snn_trace_arrays(self.arch, self.params, self.forward(self.params)[1])[
                f"trace.{layer.name}.membrane_pre"]
            self.params[f"{layer.name}.threshold"] = np.asarray(
                np.sqrt(np.mean(um**2)) * rng.uniform(0.8, 1.2))
        self.U, self.tape = self.forward(self.params)
        # power-of-two unit per parameter (see the module docstring)
        self.unit = {k: 2.0 ** np.round(np.log2(np.sqrt(np.mean(np.square(p)))))
                     for k, p in self.params.items()}

    def forward(self, params):
        return snn_forward(self.arch, params, self.x, timesteps=self.timesteps, masks=self.masks,
                           **self.fwd)

    def backward(self, grad_u, *, detach_reset=False, tape=None):
        return snn_backward(grad_u, self.arch, self.params, self.tape if tape is None else tape,
                            masks=self.masks, surrogate=self.fwd["surrogate"],
                            detach_reset=detach_reset)

    # the scaled problem: inputs q = p / unit
    def q(self):
        return {k: np.asarray(p / self.unit[k]) for k, p in self.params.items()}

    def f(self, **q):
        return self.forward({k: v * self.unit[k] for k, v in q.items()})[0]

    def vjp(self, c):
        return {k: g * self.unit[k] for k, g in self.backward(c).items()}

    def z_pattern(self, q):
        """Which pwl piece (z < -1, -1..0, 0..1, >= 1) every neuron is on, at every step."""
        params = {k: v * self.unit[k] for k, v in q.items()}
        tr = snn_trace_arrays(self.arch, params, self.forward(params)[1])
        out = []
        for layer in spiking_layers(self.arch):
            z = tr[f"trace.{layer.name}.membrane_pre"] / params[f"{layer.name}.threshold"] - 1
            out.append(np.digitize(z, (-1.0, 0.0, 1.0)))
        return tuple(out)


def _wrt(case, kind):
    return [k for k in case.params if kind is None or k.endswith("." + kind)]


# --- gradients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS + (None,), ids=KINDS + ("all-jointly",))
@pytest.mark.parametrize("name", ARCHS)
def test_snn_adjoint_by_parameter_kind(name, kind):
    """<J t, c> == <t, J^T c>: one random tangent over every weight, every threshold, every
    leak, and all of them jointly (output U, random cotangent); sigmoid smooth mode."""
    case = Case(name)
    res = adjoint_check(case.f, case.q(), case.vjp, np.random.default_rng(1), wrt=_wrt(case, kind),
                        rtol=tol(np.float64, "model_adjoint")["rtol"],
                        name=f"snn_backward[{name}, {kind or 'all'}]")
    assert res.rel_err <= res.rtol and res.lhs != 0.0


@pytest.mark.parametrize("name", ARCHS)
def test_snn_elementwise_fd_every_neuron_parameter(name):
    """Every threshold and every leak on its own (each a scalar: a wrong layer cannot hide
    behind the others), plus 2 random entries of every weight tensor."""
    case = Case(name, seed=1)
    rng = np.random.default_rng(2)
    neuron_keys = _wrt(case, "threshold") + _wrt(case, "leak")
    rows = elementwise_fd(case.f, case.q(), case.vjp, rng, wrt=neuron_keys,
                          name=f"snn_backward[{name}] neurons")
    assert {r[1] for r in rows} == set(neuron_keys)
    rows = elementwise_fd(case.f, case.q(), case.vjp, rng, wrt=_wrt(case, "weight"),
                          max_entries=2, name=f"snn_backward[{name}] weights")
    assert len(rows) == 2 * len(_wrt(case, "weight"))


@pytest.mark.parametrize("name", ARCHS)
def test_snn_adjoint_pwl_surrogate(name):
    """The SPEC surrogate (pwl) in smooth mode, all parameters jointly; tangents along which
    any neuron's z changes pwl piece are redrawn (its primitive is only C^1)."""
    case = Case(name, seed=2, surrogate="pwl")
    res, _ = adjoint_check_avoiding_kinks(
        case.f, case.q(), case.vjp, np.random.default_rng(3), pattern=case.z_pattern,
        max_draws=10, rtol=tol(np.float64, "model_adjoint")["rtol"],
        name=f"snn_backward[{name}, pwl, all]")
    assert res.rel_err <= res.rtol


@pytest.mark.parametrize("name", ARCHS)
def test_detach_reset_is_irrelevant_for_one_step(name):
    """With T = 1 no gradient reaches a post-reset membrane (du[T] = 0), so both reset
    conventions give bit-identical gradients; with T = 3 they differ (the reset term is used)."""
    c = np.random.default_rng(4).standard_normal((N, CLASSES))
    one = Case(name, seed=3, spike="heaviside", surrogate="pwl", timesteps=1)
    a, b = one.backward(c, detach_reset=True), one.backward(c, detach_reset=False)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    three = Case(name, seed=3, spike="heaviside", surrogate="pwl")
    a, b = three.backward(c, detach_reset=True), three.backward(c, detach_reset=False)
    assert any(not np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ARCHS)
def test_grads_have_param_names_shapes_and_dtype(name, dtype):
    """Hard spikes, SPEC defaults (pwl, detach_reset=True): a gradient for every parameter in
    snn_param_shapes order; thresholds and leaks 0-d; all in the layer dtype."""
    arch = make_arch(name)
    rng = np.random.default_rng(5)
    params = init_params(arch, rng, dtype)
    params.update(snn_init_neurons(arch, dtype, threshold=0.05))
    x = rng.standard_normal((N,) + IN_SHAPES[name]).astype(dtype)
    masks = draw_dropout_masks(arch, N, rng, dtype)
    u, tape = snn_forward(arch, params, x, timesteps=T, masks=masks)
    assert u.shape == (N, CLASSES) and u.dtype == dtype
    grads = snn_backward(rng.standard_normal(u.shape).astype(dtype), arch, params, tape,
                         masks=masks)
    shapes = snn_param_shapes(arch)
    assert list(grads) == list(shapes)
    for k, shape in shapes.items():
        assert grads[k].shape == shape and grads[k].dtype == dtype, (k, grads[k].shape,
                                                                      grads[k].dtype)
    assert any(np.any(grads[k] != 0) for k in grads if k.endswith(".threshold"))


def test_float32_close_to_float64():
    """The same smooth network in float32: gradients within 1e-3 (max norm, per tensor)."""
    case = Case("resnet12", seed=6)
    p32 = {k: np.asarray(v, dtype=np.float32) for k, v in case.params.items()}
    m32 = {k: v.astype(np.float32) for k, v in case.masks.items()}
    u32, tape32 = snn_forward(case.arch, p32, case.x.astype(np.float32), timesteps=T,
                              masks=m32, **case.fwd)
    c = np.random.default_rng(7).standard_normal(u32.shape)
    g32 = snn_backward(c.astype(np.float32), case.arch, p32, tape32, masks=m32,
                       surrogate="sigmoid", detach_reset=False)
    g64 = case.backward(c)
    for k in g64:
        assert g32[k].dtype == np.float32
        assert np.max(np.abs(g32[k] - g64[k])) <= 1e-3 * max(np.max(np.abs(g64[k])), 1e-6), k


# --- forward semantics ---------------------------------------------------------------------------

def snn_forward_stepwise(arch, params, x, timesteps, masks):
    """SPEC 5.1 literally: for t = 1..T, layers in order, one step each (heaviside), with the
    naive ops (einsum conv, reshape-mean pool, loop-free matmul). Returns U and, per spiking
    layer, lists over t of (current, membrane_pre, spikes, membrane)."""
    from refsnn.models.arch import Block, Conv, Linear, Pool

    u = {layer.name: 0.0 for layer in spiking_layers(arch)}
    rec = {layer.name: [] for layer in spiking_layers(arch)}

    def conv(layer, h):
        return naive.conv2d_forward_einsum(h, params[f"{layer.name}.weight"],
                                           stride=layer.stride, padding=layer.padding)

    def neuron(layer, current):
        v, lam = params[f"{layer.name}.threshold"], params[f"{layer.name}.leak"]
        um = lam * u[layer.name] + current  # u = lam u + I
        s = (um / v - 1 > 0).astype(x.dtype)  # strict
        u[layer.name] = um - v * s  # soft reset, same step
        rec[layer.name].append((current, um, s, u[layer.name]))
        return s

    def drop(h, name):
        return h * masks[name] if masks is not None and name in masks else h

    out = 0.0
    for _ in range(timesteps):
        h = x  # direct input: the same image at every step
        for layer in arch.layers:
            if isinstance(layer, Conv):
                h = drop(neuron(layer, conv(layer, h)), layer.name)
            elif isinstance(layer, Pool):
                h = naive.avg_pool2d_forward_naive(h, kernel=2)
            elif isinstance(layer, Linear):
                z = h.reshape(h.shape[0], -1) @ params[f"{layer.name}.weight"].T
                if layer.act:
                    h = drop(neuron(layer, z), layer.name)
                else:
                    out = out + z  # U = sum_t W_L x_L[t]
            elif isinstance(layer, Block):
                hid = drop(neuron(layer.conv1, conv(layer.conv1, h)), layer.conv1.name)
                short = conv(layer.shortcut, h) if layer.shortcut else h
                h = neuron(layer.conv2, conv(layer.conv2, hid) + short)
    return out, rec


@pytest.mark.parametrize("name", ARCHS)
def test_layerwise_forward_equals_step_by_step(name):
    """Layer-wise (all T steps of a layer, time-batched GEMMs) == SPEC's t-outer order: every
    trace array and U within rounding; spikes identical and exactly 0/1."""
    case = Case(name, seed=8, spike="heaviside", surrogate="pwl")
    u_ref, rec = snn_forward_stepwise(case.arch, case.params, case.x, T, case.masks)
    assert_close(case.U, u_ref, kind="forward", what=f"snn_forward[{name}].U", scale=True)
    traces = snn_trace_arrays(case.arch, case.params, case.tape)
    n_spikes = 0
    for layer in spiking_layers(case.arch):
        for j, field in enumerate(("current", "membrane_pre", "spikes", "membrane")):
            ref = np.stack([r[j] for r in rec[layer.name]])
            got = traces[f"trace.{layer.name}.{field}"]
            assert_close(got, ref, kind="forward", scale=True,
                         what=f"snn_forward[{name}] trace.{layer.name}.{field}")
        s = traces[f"trace.{layer.name}.spikes"]
        assert np.all((s == 0) | (s == 1))
        n_spikes += int(s.sum())
    assert n_spikes > 0


@pytest.mark.parametrize("name", ARCHS)
def test_tape_layout_and_direct_input(name):
    """The first layer's current is stored once, (N, ...), and is the trace's current at every
    t; every other neuron's arrays are (T, N, ...); the dropout mask multiplies the spikes at
    every step (the next layer's recorded input)."""
    case = Case(name, seed=9, spike="heaviside", surrogate="pwl")
    first = case.tape[0]
    assert isinstance(first, ConvRecord) and first.x.shape == (N,) + IN_SHAPES[name]
    assert first.neuron.current.shape == (N,) + first.neuron.trace.spikes.shape[2:]
    traces = snn_trace_arrays(case.arch, case.params, case.tape)
    cur = traces[f"trace.{first.layer.name}.current"]
    assert cur.shape[0] == T and all(np.array_equal(cur[t], first.neuron.current)
                                     for t in range(T))
    assert isinstance(case.tape[-1], OutputRecord)
    names = [layer.name for layer in spiking_layers(case.arch)]
    assert list(traces) == [f"trace.{n}.{f}" for n in names
                            for f in ("current", "membrane_pre", "spikes", "membrane")]
    for n in names:
        assert traces[f"trace.{n}.spikes"].shape[:2] == (T, N)
    # dropout: the same mask at every t
    for prev, rec in zip(case.tape, case.tape[1:]):
        if isinstance(prev, ConvRecord) and prev.layer.name in case.masks:
            want = prev.neuron.trace.spikes * case.masks[prev.layer.name][None]
            got = rec.x if isinstance(rec, (ConvRecord, BlockRecord)) else rec.x.reshape(want.shape)
            assert np.array_equal(got, want), prev.layer.name
        if isinstance(rec, BlockRecord) and rec.layer.conv1.name in case.masks:
            want = rec.neuron1.trace.spikes * case.masks[rec.layer.conv1.name][None]
            assert np.array_equal(rec.h_in, want)
    lin = [r for r in case.tape if isinstance(r, LinearRecord)]
    if lin:
        assert lin[0].x.shape == (T * N, lin[0].layer.n_in)


def test_spiking_layers_and_neuron_parameters():
    """Neurons: every Conv and every Linear but the last; a Block's conv1 and conv2 (after the
    sum), never its shortcut or the output layer."""
    vgg = make_arch("vgg9")
    assert [layer.name for layer in spiking_layers(vgg)] == (
        [f"conv{i}" for i in range(1, 8)] + ["fc1", "fc2"])
    res = make_arch("resnet12")
    names = [layer.name for layer in spiking_layers(res)]
    assert names == (["stem.conv1", "stem.conv2", "stem.conv3"]
                     + [f"layer{s}.0.conv{c}" for s in range(1, 5) for c in (1, 2)])
    neurons = snn_init_neurons(res, np.float32, threshold=0.5)
    assert list(neurons) == [f"{n}.{p}" for n in names for p in ("threshold", "leak")]
    assert all(a.shape == () and a.dtype == np.float32 for a in neurons.values())
    assert float(neurons["stem.conv1.threshold"]) == 0.5
    assert float(neurons["stem.conv1.leak"]) == 1.0
    shapes = snn_param_shapes(res)
    assert "layer2.0.shortcut.weight" in shapes and "layer2.0.shortcut.threshold" not in shapes
    assert "fc.weight" in shapes and "fc.threshold" not in shapes


def test_rejects_bad_inputs():
    arch = make_arch("vgg9")
    rng = np.random.default_rng(10)
    params = init_params(arch, rng, np.float64)
    x = rng.standard_normal((N,) + IN_SHAPES["vgg9"])
    with pytest.raises(ValueError, match=r"snn_forward: params lacks \['conv1.threshold'"):
        snn_forward(arch, params, x, timesteps=T)
    params.update(snn_init_neurons(arch, np.float64))
    with pytest.raises(ValueError, match=r"snn_forward: x.shape=\(2, 3, 16, 16\)"):
        snn_forward(arch, params, np.zeros((N, 3, 16, 16)), timesteps=T)
    with pytest.raises(ValueError, match=r"timesteps must be >= 1"):
        snn_forward(arch, params, x, timesteps=0)
    with pytest.raises(ValueError, match=r"surrogate must be one of"):
        snn_forward(arch, params, x, timesteps=T, surrogate="atan")
    masks = draw_dropout_masks(arch, N + 1, rng, np.float64)
    with pytest.raises(ValueError, match=r"masks\['conv2'\] must be a float64 array of shape"):
        snn_forward(arch, params, x, timesteps=T, masks=masks)


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_kept_im2col_gives_the_same_gradients_bit_for_bit(name):
    # the tape keeps each conv's im2col matrix for the backward; dropping it (the backward
    # rebuilds it) must not change a bit of any gradient
    case = Case(name, spike="heaviside", surrogate="pwl")
    kept = [r for r in case.tape if isinstance(r, ConvRecord) and r.cols is not None]
    assert kept, "no conv kept its im2col matrix"
    assert all(r.x.ndim == 5 for r in kept)  # the static image keeps none
    bare = [r._replace(cols=None) if isinstance(r, ConvRecord) else r for r in case.tape]
    g = np.random.default_rng(5).standard_normal(case.U.shape)
    a, b = case.backward(g, tape=case.tape), case.backward(g, tape=bare)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
