"""refsnn.compare (and refsnn.trace's command line): what a comparison catches and reports.

The compare tests start from the golden traces (tests/golden/, real SNN traces of vgg9 and
resnet12) and perturb copies: one gradient entry by 1e-6 relative, one spike at a chosen layer
and step, a shape, a missing array. The CLI tests write a tiny SNN checkpoint in tmp_path
(tools/make_golden.py's builder, the training CLI's format) and run ``main(argv)`` of both
commands on it with random inputs, so no dataset is needed; one test uses the shipped
embedded dataset for ``--input test``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from refsnn import compare, trace
from refsnn.checkpoint import load_checkpoint, save_checkpoint
from refsnn.compare import compare_traces, format_report, read_trace
from refsnn.models.arch import dropout_layers
from refsnn.models.snn import snn_param_shapes
from refsnn.trace import QUANTITIES, arch_from_meta

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(__file__).parent / "golden"
VGG = GOLDEN_DIR / "vgg9_w0.015625_T3.safetensors"
RESNET = GOLDEN_DIR / "resnet12_w0.03125_T3.safetensors"


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _golden(path):
    arrays, meta = read_trace(path)
    return arrays, {k: v.copy() for k, v in arrays.items()}, meta


def _compare(a, b, meta, **kw):
    return compare_traces(a, b, rtol=kw.pop("rtol", compare.DEFAULT_RTOL),
                          atol=kw.pop("atol", compare.DEFAULT_ATOL), layer_order=meta["layers"],
                          param_order=meta["params"], **kw)


def _write(path, arrays, meta):
    save_checkpoint(path, arrays, meta)
    return str(path)


# --- the library function ----------------------------------------------------------------------

@pytest.mark.parametrize("path", [VGG, RESNET], ids=["vgg9", "resnet12"])
def test_identical_traces_agree(path):
    a, b, meta = _golden(path)
    rep = _compare(a, b, meta, strict=True)
    assert rep.ok and rep.first_divergence is None and not rep.grad_divergences
    assert not rep.only_in_a and not rep.only_in_b
    assert len(rep.rows) == len(a) and all(r.max_abs == 0.0 and r.n_bad == 0 for r in rep.rows)
    # the table is in network order: setup, traces layer by layer, output, loss, gradients
    names = [r.name for r in rep.rows]
    assert names[:2] == ["input", "label"] and names.index("output") < names.index("loss")
    traces = [n for n in names if n.startswith("trace.")]
    assert traces[:4] == [f"trace.{meta['layers'][0]}.{q}" for q in QUANTITIES]
    assert [n[len("grad."):] for n in names if n.startswith("grad.")] == meta["params"]


@pytest.mark.parametrize("grad", ["conv3.weight", "fc1.threshold", "conv5.leak"])
def test_gradient_perturbed_by_1e6_relative_is_caught_and_named(grad, tmp_path, capsys):
    a, b, meta = _golden(VGG)
    g = b[f"grad.{grad}"]
    idx = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    assert g[idx] != 0
    g[idx] *= 1 + 1e-6
    rep = _compare(a, b, meta)
    assert not rep.ok and rep.grad_divergences == (grad,)
    assert rep.first_divergence is None  # the traces themselves agree
    row = next(r for r in rep.rows if r.name == f"grad.{grad}")
    assert row.n_bad == 1 and row.first_bad == tuple(int(i) for i in idx)
    assert row.max_rel == pytest.approx(1e-6 / (1 + 1e-6), rel=1e-6)
    # the same through the command line: exit 1, the parameter named
    _, meta_file = load_checkpoint(VGG)
    pb = _write(tmp_path / "b.safetensors", b, meta_file)
    assert compare.main([str(VGG), pb]) == 1
    out = capsys.readouterr().out
    assert f"diverging gradients (1): {grad}" in out and "result: DIVERGE" in out


def test_rounding_level_differences_pass_the_default_tolerance():
    """Summation-order noise (1e-13 relative on every float) is not a divergence."""
    a, b, meta = _golden(RESNET)
    rng = np.random.default_rng(0)
    for k, v in b.items():
        if v.dtype == np.float64 and not k.endswith(".spikes"):
            b[k] = v * (1 + 1e-13 * rng.standard_normal(v.shape))
    rep = _compare(a, b, meta, strict=True)
    assert rep.ok, format_report(rep, only_failures=True)
    assert max(r.max_rel for r in rep.rows) > 0


@pytest.mark.parametrize("path, layer, t", [
    (VGG, "conv4", 2), (VGG, "fc2", 3), (VGG, "conv1", 1),
    (RESNET, "layer2.0.conv2", 2), (RESNET, "stem.conv3", 3),
], ids=["vgg9-conv4-t2", "vgg9-fc2-t3", "vgg9-conv1-t1", "resnet12-block-conv2-t2",
        "resnet12-stem-t3"])
def test_flipped_spike_reports_its_layer_and_step(path, layer, t):
    a, b, meta = _golden(path)
    s = b[f"trace.{layer}.spikes"]
    idx = (t - 1,) + tuple(int(i) for i in np.unravel_index(s[t - 1].size // 3, s.shape[1:]))
    s[idx] = 1.0 - s[idx]
    rep = _compare(a, b, meta)
    d = rep.first_divergence
    assert not rep.ok and (d.layer, d.t, d.quantity, d.index) == (layer, t, "spikes", idx)
    assert (d.a, d.b) == (a[f"trace.{layer}.spikes"][idx], s[idx])
    assert "first divergence: layer " + f"{layer}, t={t}, spikes" in format_report(rep)


def test_first_divergence_is_the_first_layer_then_step_then_quantity():
    """A divergence made at (conv4, t=2) spreads to later steps and layers; the report points
    at its origin. Layer order wins over step order: an earlier layer diverging at a later step
    is reported before a later layer at an earlier step (its inputs were equal everywhere)."""
    a, b, meta = _golden(VGG)
    b["trace.conv4.membrane_pre"][1:] += 1e-3  # t = 2, 3
    b["trace.conv4.spikes"][2, 0, 0, 0, 0] = 1 - b["trace.conv4.spikes"][2, 0, 0, 0, 0]
    b["trace.conv5.current"][1:] += 1e-3  # downstream, t = 2, 3
    b["trace.fc1.membrane"][0] += 1e-3  # a later layer at an earlier step
    rep = _compare(a, b, meta)
    d = rep.first_divergence
    assert (d.layer, d.t, d.quantity, d.index[0]) == ("conv4", 2, "membrane_pre", 1)
    assert [(x.layer, x.t, x.quantity) for x in rep.layer_divergences] == [
        ("conv4", 2, "membrane_pre"), ("conv5", 2, "current"), ("fc1", 1, "membrane")]
    b["trace.conv2.membrane"][2] += 1e-3  # earlier layer, later step
    assert _compare(a, b, meta).first_divergence[:3] == ("conv2", 3, "membrane")


def test_shape_mismatch_is_reported_and_fails(tmp_path, capsys):
    a, b, meta = _golden(VGG)
    b["grad.fc1.weight"] = b["grad.fc1.weight"][:, :-1].copy()
    b["trace.conv2.current"] = b["trace.conv2.current"][:2].copy()  # T = 2 instead of 3
    rep = _compare(a, b, meta)
    assert not rep.ok and rep.grad_divergences == ("fc1.weight",)
    row = next(r for r in rep.rows if r.name == "grad.fc1.weight")
    assert (row.shape_a, row.shape_b, row.n_bad) == (a["grad.fc1.weight"].shape,
                                                     b["grad.fc1.weight"].shape, -1)
    assert rep.first_divergence[:3] == ("conv2", None, "current")
    _, meta_file = load_checkpoint(VGG)
    assert compare.main([str(VGG), _write(tmp_path / "b.safetensors", b, meta_file)]) == 1
    out = capsys.readouterr().out
    assert "shape mismatch (2): trace.conv2.current, grad.fc1.weight" in out
    assert "first divergence: layer conv2, current: shapes differ" in out


def test_missing_arrays_are_listed_and_fail_only_when_strict(tmp_path, capsys):
    a, b, meta = _golden(RESNET)
    del b["grad.layer3.0.shortcut.weight"], b["mask.fc.weight"]
    b["extra.thing"] = np.zeros(2)
    rep = _compare(a, b, meta)
    assert rep.ok and rep.only_in_b == ("extra.thing",)
    assert rep.only_in_a == ("mask.fc.weight", "grad.layer3.0.shortcut.weight")
    assert not _compare(a, b, meta, strict=True).ok
    _, meta_file = load_checkpoint(RESNET)
    pb = _write(tmp_path / "b.safetensors", b, meta_file)
    assert compare.main([str(RESNET), pb]) == 0
    assert "only in A (2): mask.fc.weight, grad.layer3.0.shortcut.weight" in \
        capsys.readouterr().out
    assert compare.main([str(RESNET), pb, "--strict"]) == 1


def test_dtype_mismatch_float32_trace():
    """A float32 trace against the float64 one: the dtype is shown; the values agree at float32
    tolerances (not at the float64 defaults); --strict fails on the dtype itself."""
    a, _, meta = _golden(VGG)
    b = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in a.items()}
    assert not _compare(a, b, meta).ok
    rep = _compare(a, b, meta, rtol=1e-6, atol=1e-7)
    assert rep.ok and "float64/float32" in format_report(rep)
    assert not _compare(a, b, meta, rtol=1e-6, atol=1e-7, strict=True).ok


def test_nan_inf_and_zero_handling():
    a = {"x": np.array([np.nan, np.inf, 0.0, 1.0, -np.inf])}
    rep = compare_traces(a, {"x": a["x"].copy()}, rtol=0.0, atol=0.0, layer_order=None)
    assert rep.ok and rep.rows[0].max_rel == 0.0
    for j, value in enumerate((1.0, -np.inf, 2e-12, np.nan, 0.0)):  # 2e-12 > atol * scale 1
        b = {"x": a["x"].copy()}
        b["x"][j] = value
        rep = compare_traces(a, b, rtol=1e-9, atol=1e-12, layer_order=None)
        assert rep.rows[0].first_bad == (j,) and not rep.ok, (j, value)
    assert compare_traces(a, {"x": a["x"] + np.array([0, 0, 5e-13, 0, 0])}, rtol=0.0,
                          atol=1e-12, layer_order=None).ok  # within atol * scale (1)
    small = {"x": np.array([0.0, 1e-9])}  # the floor scales with the array: 1e-12 * 1e-9
    assert not compare_traces(small, {"x": np.array([2e-21, 1e-9])}, rtol=1e-9, atol=1e-12,
                              layer_order=None).ok


def test_layer_order_without_metadata_follows_the_names():
    names = ["fc1", "conv10", "conv2", "layer1.0.conv2", "stem.conv1", "layer1.0.conv1",
             "layer10.0.conv1", "layer2.0.conv1"]
    a = {f"trace.{n}.{q}": np.zeros((2, 1, 3)) for n in names for q in QUANTITIES}
    b = {k: v.copy() for k, v in a.items()}
    for n in names:
        b[f"trace.{n}.spikes"][1, 0, 0] = 1.0
    rep = compare_traces(a, b, rtol=1e-9, atol=1e-12, layer_order=None)
    assert [d.layer for d in rep.layer_divergences] == [
        "stem.conv1", "conv2", "conv10", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1",
        "layer10.0.conv1", "fc1"]
    rep = compare_traces(a, b, rtol=1e-9, atol=1e-12, layer_order=["fc1", "conv10"])
    assert [d.layer for d in rep.layer_divergences][:3] == ["fc1", "conv10", "stem.conv1"]


def test_make_trace_validates_its_arguments():
    a, meta = read_trace(VGG)
    arch = arch_from_meta(meta)
    params = {k[len("param."):]: v for k, v in a.items() if k.startswith("param.")}
    masks = {k[len("dropout."):]: v for k, v in a.items() if k.startswith("dropout.")}
    kw = dict(timesteps=3, surrogate="pwl", gamma=0.3)
    with pytest.raises(ValueError, match="one mask per dropout layer"):
        trace.make_trace(arch, params, a["input"], a["label"], masks={"conv9": 1.0}, **kw)
    with pytest.raises(ValueError, match="params lacks 'fc3.weight'"):
        trace.make_trace(arch, {k: v for k, v in params.items() if k != "fc3.weight"},
                         a["input"], a["label"], masks=masks, **kw)
    with pytest.raises(ValueError, match="integer labels"):
        trace.make_trace(arch, params, a["input"], a["label"] * 1.0, masks=masks, **kw)
    with pytest.raises(ValueError, match="dtype must be one of"):
        trace.make_trace(arch, params, a["input"], a["label"], masks=masks, dtype=np.float16,
                         **kw)


def test_compare_rejects_bad_tolerances():
    with pytest.raises(ValueError, match="rtol must be a finite number >= 0"):
        compare_traces({}, {}, rtol=-1.0, atol=0.0, layer_order=None)


# --- command lines -----------------------------------------------------------------------------

@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A resnet12 SNN checkpoint (stage snn, width 1/32 on 3x8x12, T = 3, pruning masks and
    optimizer state), written as the training CLI writes it."""
    tool = _load_tool("make_golden")
    return tool.write_tiny_checkpoint(tmp_path / "snn.safetensors", "resnet12",
                                      in_shape=(3, 8, 12), width=1 / 32, classes=3, timesteps=3,
                                      batch=2, seed=5)


def test_trace_cli_writes_every_array(tiny_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "t.safetensors")
    assert trace.main([tiny_checkpoint, "--out", out, "--input", "random", "--batch", "3",
                       "--seed", "7", "--timesteps", "4"]) == 0
    assert "spikes per layer: stem.conv1" in capsys.readouterr().out
    arrays, meta = read_trace(out)
    ckpt, ckpt_meta = load_checkpoint(tiny_checkpoint)
    arch = arch_from_meta(ckpt_meta)
    params = list(snn_param_shapes(arch))
    expected = ({"input", "label", "output", "loss"} | {f"param.{k}" for k in params}
                | {f"grad.{k}" for k in params} | {f"mask.{k}" for k in params if "weight" in k}
                | {f"dropout.{k}" for k, _ in dropout_layers(arch)}
                | {f"trace.{n}.{q}" for n in meta["layers"] for q in QUANTITIES})
    assert set(arrays) == expected
    assert all(v.dtype == np.float64 for k, v in arrays.items() if k != "label")
    assert arrays["input"].shape == (3, 3, 8, 12) and arrays["label"].dtype == np.int64
    assert arrays["trace.layer2.0.conv1.spikes"].shape == (4, 3, 4, 2, 3)  # (T, N, C, H, W)
    assert arrays["loss"].shape == () and arrays["output"].shape == (3, 3)
    for k in params:  # the checkpoint's parameters, unchanged
        np.testing.assert_array_equal(arrays[f"param.{k}"], ckpt[k])
    x, y = trace.random_batch(arch, 3, 7, np.float64)
    np.testing.assert_array_equal(arrays["input"], x)
    np.testing.assert_array_equal(arrays["label"], y)
    assert (meta["timesteps"], meta["mode"], meta["seed"], meta["dtype"], meta["input"]) == (
        4, "train", 7, "float64", "random")
    assert meta["config"] == ckpt_meta["config"] and meta["kind"] == "trace"
    assert {"spike", "reset", "surrogate", "loss"} <= set(meta["conventions"])
    assert "u/v - 1 > 0 strict" in meta["conventions"]["spike"]
    assert {"refsnn", "numpy", "numba", "safetensors"} <= set(meta["versions"])
    # the same command twice gives the same file; compare agrees with itself
    out2 = str(tmp_path / "t2.safetensors")
    assert trace.main([tiny_checkpoint, "--out", out2, "--input", "random", "--batch", "3",
                       "--seed", "7", "--timesteps", "4"]) == 0
    assert compare.main([out, out2, "--rtol", "0", "--atol", "0", "--strict"]) == 0


def test_trace_cli_eval_mode_and_float32(tiny_checkpoint, tmp_path):
    out = str(tmp_path / "t.safetensors")
    assert trace.main([tiny_checkpoint, "--out", out, "--input", "random", "--batch", "2",
                       "--mode", "eval", "--dtype", "float32"]) == 0
    arrays, meta = read_trace(out)
    assert not any(k.startswith("dropout.") for k in arrays) and meta["mode"] == "eval"
    assert all(v.dtype == np.float32 for k, v in arrays.items() if k != "label")
    assert arrays["trace.stem.conv1.spikes"].shape[0] == 3  # the checkpoint's T


def test_trace_cli_test_split_input(tmp_path):
    """--input test: the first N test images, normalised with the checkpoint's statistics."""
    from refsnn.data.datasets import load_dataset
    from refsnn.data.transforms import make_batch

    tool = _load_tool("make_golden")
    data = load_dataset("embedded")
    arrays, meta = tool.tiny_snn_checkpoint("vgg9", in_shape=(1, 28, 28), width=1 / 64,
                                            classes=10, timesteps=2, batch=2, seed=3,
                                            density=None, stage="convert")
    meta["config"]["dataset"] = "embedded"
    meta["dataset"].update(name="embedded", classes=list(data.classes), mean=list(data.mean),
                           std=list(data.std))
    ckpt = _write(tmp_path / "convert.safetensors", arrays, meta)
    out = str(tmp_path / "t.safetensors")
    assert trace.main([ckpt, "--out", out, "--batch", "3"]) == 0
    got, _ = read_trace(out)
    np.testing.assert_array_equal(got["input"], make_batch(data.test_x[:3], data.mean, data.std,
                                                           augment=False, dtype=np.float64))
    np.testing.assert_array_equal(got["label"], data.test_y[:3])


def test_trace_cli_errors(tiny_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "t.safetensors")
    assert trace.main([str(tmp_path / "nope.safetensors"), "--out", out]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
    # an ANN checkpoint has no neurons
    arrays, meta = load_checkpoint(tiny_checkpoint)
    ann = _write(tmp_path / "ann.safetensors", arrays, {**meta, "stage": "ann"})
    assert trace.main([ann, "--out", out, "--input", "random"]) == 2
    assert "needs an SNN checkpoint" in capsys.readouterr().err
    # a wrong shape is named
    bad = dict(arrays, **{"layer2.0.conv1.weight": np.zeros((4, 2, 3, 1))})
    assert trace.main([_write(tmp_path / "bad.safetensors", bad, meta), "--out", out,
                       "--input", "random"]) == 2
    assert "'layer2.0.conv1.weight'" in capsys.readouterr().err
    # the synthetic dataset cannot be loaded for --input test
    assert trace.main([tiny_checkpoint, "--out", out]) == 2
    assert "synthetic" in capsys.readouterr().err
    assert trace.main([tiny_checkpoint, "--out", out, "--dtype", "float16"]) == 2
    assert trace.main([tiny_checkpoint]) == 2  # --out is required
    assert not Path(out).exists()


def test_compare_cli_usage_and_file_errors(tmp_path, capsys):
    assert compare.main([str(VGG)]) == 2
    assert compare.main([str(VGG), str(tmp_path / "missing.safetensors")]) == 2
    assert "no trace file" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    assert compare.main([str(VGG), str(junk)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert compare.main([str(VGG), str(VGG), "--rtol", "-1"]) == 2
    other = _write(tmp_path / "other.safetensors", {"unrelated": np.zeros(3)}, {"kind": "x"})
    assert compare.main([str(VGG), other]) == 2
    assert "no array name in common" in capsys.readouterr().err
