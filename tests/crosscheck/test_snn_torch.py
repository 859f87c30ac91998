"""refsnn's SNN against the same SNN written in torch autograd from the SPEC (worked example).

This is how to verify an implementation against refsnn; the torch side is
tools/torch_reference.py, written from SPEC 5's equations and SPEC 2's tables without refsnn
code: a step-by-step loop (t outer, layers inner), a spike function whose backward is the pwl
surrogate, the reset ``u = u- - v * s.detach()``, and torch autograd for every gradient. The
two share only what a user's implementation would share: parameter names, input, labels and
dropout masks. The recipe for your own implementation:

1. get refsnn's trace of a checkpoint: ``python -m refsnn.trace CKPT --out ref.safetensors``
   (or ``make_trace(...)`` in Python, as here);
2. run your network on ref's ``param.*``, ``input``, ``label`` and ``dropout.*`` and save the
   same names (tools/torch_reference.py ``trace_from_reference`` does this for torch);
3. ``python -m refsnn.compare ref.safetensors yours.safetensors``: exit 0 means every
   current, membrane, spike, the output, the loss and every gradient agree; otherwise it names
   the first layer and time step where the traces part, and the diverging gradients.

Checked here, in float64: vgg9, resnet12 and resnet20 (two blocks per stage: identity
shortcuts inside a stage, 1x1 convs between), T = 3..5, N = 2..4, non-square inputs,
dropout on, pruned weights, leaks < 1, thresholds calibrated so every layer spikes (the tiny
checkpoints of tools/make_golden.py), each with refsnn's convs on the im2col path and on the
Winograd path (the rule's channel floor lowered so that the tiny networks take it). Every
trace array and gradient must agree to rtol 1e-9 (refsnn.compare's defaults; observed:
~1e-15, up to ~2e-13 on scalar gradients), spikes exactly. Then
the golden files through the torch reference's command line; float32 torch against the
float64 reference; and two deliberate convention slips in the torch code, which the
comparison must catch and localise.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from refsnn import compare
from refsnn.compare import compare_traces, format_report, read_trace
from refsnn.models.arch import Conv, draw_dropout_masks
from refsnn.ops import winograd
from refsnn.trace import arch_from_meta, make_trace, random_batch

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.crosscheck, pytest.mark.usefixtures("numba_one_thread")]

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = sorted((ROOT / "tests" / "golden").glob("*.safetensors"))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


torch_reference = _load_tool("torch_reference")
make_golden = _load_tool("make_golden")


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """One torch thread: tiny shapes, and the 2 shared cores are busy (see conftest.py)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# (arch, in_shape, width, T, N, seed): small, non-square, every code path of SPEC 2
CASES = {
    "vgg9": ("vgg9", (1, 16, 20), 1 / 32, 4, 3, 21),
    "resnet12": ("resnet12", (3, 16, 12), 1 / 16, 5, 2, 22),
    "resnet20": ("resnet20", (3, 8, 12), 1 / 32, 3, 4, 23),
}


def reference_case(key, *, surrogate="pwl"):
    """refsnn's trace of a tiny calibrated SNN (train mode), plus what torch needs to redo it."""
    name, in_shape, width, t_steps, n, seed = CASES[key]
    arrays, meta = make_golden.tiny_snn_checkpoint(name, in_shape=in_shape, width=width,
                                                   classes=3, timesteps=t_steps, batch=n,
                                                   seed=seed)
    arch = arch_from_meta(meta)
    params = {k: v for k, v in arrays.items() if not k.startswith("optim.")}
    x, y = random_batch(arch, n, seed, np.float64)
    masks = draw_dropout_masks(arch, n, np.random.default_rng(seed), np.float64)
    ref = make_trace(arch, params, x, y, timesteps=t_steps, masks=masks, surrogate=surrogate,
                     gamma=0.3, dtype=np.float64)
    layers = [k[len("trace."):-len(".spikes")] for k in ref if k.endswith(".spikes")]
    make_golden.check_nontrivial(ref, layers)  # every layer spikes, no near-ties
    return arch, params, x, y, masks, ref, layers


def _assert_agree(ref, other, layers, *, rtol=compare.DEFAULT_RTOL, atol=compare.DEFAULT_ATOL):
    rep = compare_traces(ref, other, rtol=rtol, atol=atol, layer_order=layers)
    assert rep.ok, format_report(rep, name_a="refsnn", name_b="torch", only_failures=True)
    return rep


@pytest.mark.parametrize("conv", ["im2col", "winograd"])
@pytest.mark.parametrize("key", list(CASES))
def test_torch_autograd_matches_refsnn_trace_and_gradients(key, conv, monkeypatch):
    """conv="winograd": the Winograd rule's channel floor lowered to 1, so that refsnn computes
    every 3x3 conv on an even map of >= 4x4 by F(2x2, 3x3) (refsnn/ops/winograd.py)."""
    if conv == "winograd":
        monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    arch, params, x, y, masks, ref, layers = reference_case(key)
    t_steps, n = CASES[key][3], CASES[key][4]
    took = [winograd.winograd_applies((t_steps * n, L.c_in) + L.in_hw, (L.c_out, L.c_in,
                                      L.kernel, L.kernel), L.stride, L.padding)
            for L in arch.layers if isinstance(L, Conv) and L.name != arch.layers[0].name]
    assert any(took) == (conv == "winograd"), took
    tt = torch_reference.torch_trace(arch, params, x, y, timesteps=CASES[key][3], masks=masks,
                                     dtype=torch.float64)
    # the same names, except the pruning masks (the torch side does not need them)
    assert set(tt) == {k for k in ref if not k.startswith("mask.")}
    rep = _assert_agree(ref, tt, layers)
    for name in layers:  # spikes: exactly equal, not just within tolerance
        np.testing.assert_array_equal(tt[f"trace.{name}.spikes"], ref[f"trace.{name}.spikes"])
    # observed: ~1e-15 of the array's scale, up to ~2e-13 on scalar threshold gradients (sums
    # over every neuron and step, with cancellation); the tolerance, 1e-9, is far above both
    worst = max(r.max_abs / r.scale for r in rep.rows if r.scale > 0)
    assert worst < 1e-10, f"max |difference| / scale = {worst:.3g}; expected ~1e-13 or less"


def test_torch_matches_refsnn_with_the_sigmoid_surrogate():
    arch, params, x, y, masks, ref, layers = reference_case("resnet12", surrogate="sigmoid")
    tt = torch_reference.torch_trace(arch, params, x, y, timesteps=CASES["resnet12"][3],
                                     masks=masks, surrogate="sigmoid", dtype=torch.float64)
    _assert_agree(ref, tt, layers)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_traces_through_the_torch_reference_cli(path, tmp_path):
    """The user's recipe on the stored golden files: torch_reference.py, then refsnn.compare."""
    out = tmp_path / "torch.safetensors"
    assert torch_reference.main([str(path), "--out", str(out)]) == 0
    assert compare.main([str(path), str(out)]) == 0
    got, meta = read_trace(out)
    assert meta["layers"] == read_trace(path)[1]["layers"] and got["loss"].shape == ()


def test_build_torch_snn_float32_forward_and_loss():
    """The benchmark entry point in float32: same spikes and outputs as the float64 reference
    at float32 tolerances; gradients land on the parameter tensors."""
    arch, params, x, y, masks, ref, layers = reference_case("vgg9")
    net = torch_reference.build_torch_snn(arch, params, timesteps=CASES["vgg9"][3],
                                          dtype=torch.float32)
    xt = torch.as_tensor(x, dtype=torch.float32)
    mt = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in masks.items()}
    record = {}
    with torch.no_grad():
        U = net.forward(xt, mt, record)
    assert U.dtype == torch.float32 and U.shape == (x.shape[0], 3)
    for name in layers:  # with a 1e-9 tie margin, float32 rounding flips no spike here
        s = torch.stack(record[(name, "spikes")]).numpy()
        np.testing.assert_array_equal(s, ref[f"trace.{name}.spikes"])
    np.testing.assert_allclose(U.detach().numpy(), ref["output"], rtol=1e-4, atol=1e-5)
    loss = net.loss(xt, torch.as_tensor(y), mt)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(float(loss.detach()) - float(ref["loss"])) < 1e-5
    g = net.params["fc1.threshold"].grad
    assert g is not None and g.dtype == torch.float32


def test_load_params_from_a_checkpoint_and_a_trace(tmp_path):
    """The torch side reads refsnn files with safetensors alone; both kinds give the same."""
    from refsnn.trace import main as trace_main

    ckpt = make_golden.write_tiny_checkpoint(tmp_path / "c.safetensors", "resnet12",
                                             in_shape=(3, 8, 8), width=1 / 32, classes=3,
                                             timesteps=2, batch=2, seed=4)
    assert trace_main([ckpt, "--out", str(tmp_path / "t.safetensors"), "--input", "random",
                       "--batch", "2"]) == 0
    from_ckpt, meta = torch_reference.load_params(ckpt)
    from_trace, _ = torch_reference.load_params(tmp_path / "t.safetensors")
    assert meta["stage"] == "snn" and sorted(from_ckpt) == sorted(from_trace)
    assert not any(k.startswith(("optim.", "mask.")) for k in from_ckpt)
    for k in from_ckpt:
        np.testing.assert_array_equal(from_ckpt[k], from_trace[k])


def test_a_reset_that_is_not_detached_is_caught_in_the_gradients(monkeypatch):
    """Convention slip 1: u = u- - v * s without detach. The forward is unchanged (every trace
    agrees), but dL/dv and everything upstream of the first spiking layer's reset differ."""
    def lif_step_no_detach(current, u, v, lam, spike_fn):
        u_pre = lam * u + current
        s = spike_fn(u_pre / v - 1.0)
        return s, u_pre - v * s, u_pre  # s not detached: a second gradient path

    arch, params, x, y, masks, ref, layers = reference_case("vgg9")
    monkeypatch.setattr(torch_reference, "lif_step", lif_step_no_detach)
    tt = torch_reference.torch_trace(arch, params, x, y, timesteps=CASES["vgg9"][3],
                                     masks=masks, dtype=torch.float64)
    rep = compare_traces(ref, tt, rtol=compare.DEFAULT_RTOL, atol=compare.DEFAULT_ATOL,
                         layer_order=layers)
    assert not rep.ok and rep.first_divergence is None  # traces agree, gradients do not
    assert "fc2.threshold" in rep.grad_divergences and "conv1.weight" in rep.grad_divergences


def test_leak_applied_after_the_reset_is_localised(monkeypatch):
    """Convention slip 2: u- = lam * (u + I) instead of lam * u + I. The first layer has
    lam = 1 (tools/make_golden.py), so the traces first part at the second spiking layer, at
    t = 1 (u[0] = 0 but I is scaled), in its pre-reset membrane: the report says exactly that."""
    def lif_step_leak_after(current, u, v, lam, spike_fn):
        u_pre = lam * (u + current)
        s = spike_fn(u_pre / v - 1.0)
        return s, u_pre - v * s.detach(), u_pre

    arch, params, x, y, masks, ref, layers = reference_case("resnet12")
    monkeypatch.setattr(torch_reference, "lif_step", lif_step_leak_after)
    tt = torch_reference.torch_trace(arch, params, x, y, timesteps=CASES["resnet12"][3],
                                     masks=masks, dtype=torch.float64)
    rep = compare_traces(ref, tt, rtol=compare.DEFAULT_RTOL, atol=compare.DEFAULT_ATOL,
                         layer_order=layers)
    assert float(ref["param.stem.conv1.leak"]) == 1.0
    d = rep.first_divergence
    assert (d.layer, d.t, d.quantity) == ("stem.conv2", 1, "membrane_pre")
    assert "first divergence: layer stem.conv2, t=1, membrane_pre" in format_report(rep)
