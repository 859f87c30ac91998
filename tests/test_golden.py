"""The golden traces in tests/golden/ pin refsnn's numbers (SPEC 7).

Each file was written by ``tools/make_golden.py`` (tiny deterministic checkpoints: vgg9 and
resnet12, float64, T = 3, N = 2, random inputs, train mode with dropout; see that file). Here:

- recomputing each trace from its own stored parameters, input, labels and dropout masks with
  today's ``make_trace`` gives the stored arrays: every trace, output, loss and gradient;
- the stored numbers obey the SPEC's equations by themselves (no refsnn code involved): the
  strict spike rule, the soft same-step reset, leaky integration from u[0] = 0, the direct
  input, the dropout values and the mean cross-entropy of the summed output; so a golden file
  regenerated after a convention slip would fail here even though it "matches itself";
- regenerating the files with the tool reproduces them (checkpoint building, random inputs and
  dropout draws included).

A failure of the first test after a deliberate change of refsnn's numerics means: regenerate
with ``python tools/make_golden.py`` and record it in CHANGELOG.md under Changed with a
``Numerics:`` prefix. tests/crosscheck/test_snn_torch.py checks the same files against torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from refsnn.compare import compare_traces, format_report, read_trace
from refsnn.models.arch import dropout_layers
from refsnn.models.snn import snn_param_shapes, spiking_layers
from refsnn.trace import QUANTITIES, arch_from_meta, make_trace

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(__file__).parent / "golden"
EXPECTED = ("vgg9_w0.015625_T3", "resnet12_w0.03125_T3")
GOLDEN = sorted(GOLDEN_DIR.glob("*.safetensors"))

# Recomputation vs the stored file. On the machine that wrote the files the match is bit for
# bit (max abs difference 0); another BLAS build (AVX2 vs AVX-512 GEMM kernels) may round a
# sum differently in the last bit: ~1e-16 relative per operation, ~1e-14 through the network.
# 1e-12 (relative and absolute; values here are O(1e-3..10)) allows that and nothing more:
# any change to the equations or conventions moves values by >= 1e-6 relative or flips a
# spike (the files keep every |u-/v - 1| > 1e-9, tools/make_golden.py TIE_MARGIN).
GOLDEN_TOL = dict(rtol=1e-12, atol=1e-12)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def recompute(arrays: dict, meta: dict) -> dict:
    """make_trace on the stored parameters, pruning masks, input, labels and dropout masks."""
    cfg = meta["config"]
    params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    params.update({k: v for k, v in arrays.items() if k.startswith("mask.")})
    masks = {k[len("dropout."):]: v for k, v in arrays.items() if k.startswith("dropout.")}
    return make_trace(arch_from_meta(meta), params, arrays["input"], arrays["label"],
                      timesteps=meta["timesteps"], masks=masks or None,
                      surrogate=cfg["surrogate"], gamma=cfg["gamma"], dtype=np.float64)


def test_golden_files_present():
    names = {p.stem for p in GOLDEN}
    assert set(EXPECTED) <= names, f"missing golden traces {set(EXPECTED) - names} in {GOLDEN_DIR}"
    total = sum(p.stat().st_size for p in GOLDEN)
    assert total < 800 * 1024, f"tests/golden/ holds {total / 1024:.0f} KiB; keep it small"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_trace_recomputes(path):
    arrays, meta = read_trace(path)
    new = recompute(arrays, meta)
    assert set(new) == set(arrays), (f"names differ: only stored {set(arrays) - set(new)}, "
                                     f"only recomputed {set(new) - set(arrays)}")
    rep = compare_traces(arrays, new, **GOLDEN_TOL, layer_order=meta["layers"],
                         param_order=meta["params"], strict=True)
    assert rep.ok, format_report(rep, name_a=str(path), name_b="make_trace now",
                                 only_failures=True)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_trace_obeys_the_spec_equations(path):
    """SPEC 5.1 checked on the stored numbers alone, layer by layer and step by step."""
    a, meta = read_trace(path)
    arch = arch_from_meta(meta)
    t_steps, n = meta["timesteps"], a["input"].shape[0]
    assert meta["dtype"] == "float64" and meta["mode"] == "train"
    assert [layer.name for layer in spiking_layers(arch)] == meta["layers"]
    assert list(snn_param_shapes(arch)) == meta["params"]
    assert {"spike", "reset", "surrogate", "loss"} <= set(meta["conventions"])
    assert set(meta["generator"]["versions"]) >= {"refsnn", "numpy", "numba", "python"}
    for name in meta["layers"]:
        v = a[f"param.{name}.threshold"]
        lam = a[f"param.{name}.leak"]
        cur, um, s, u = (a[f"trace.{name}.{q}"] for q in QUANTITIES)
        assert cur.shape == um.shape == s.shape == u.shape and cur.shape[:2] == (t_steps, n)
        assert np.array_equal(s, (um / v - 1.0 > 0.0).astype(s.dtype)), f"{name}: spike rule"
        assert np.array_equal(u, um - v * s), f"{name}: reset u = u- - v s"
        assert np.array_equal(um[0], cur[0]), f"{name}: u-[1] = I[1] (u[0] = 0)"
        np.testing.assert_allclose(um[1:], lam * u[:-1] + cur[1:], rtol=1e-14, atol=1e-14,
                                   err_msg=f"{name}: u-[t] = lam u[t-1] + I[t]")
        assert 0 < s.sum() < s.size, f"{name}: a golden layer must spike, but not always"
    first = meta["layers"][0]
    assert all(np.array_equal(c, a[f"trace.{first}.current"][0])
               for c in a[f"trace.{first}.current"]), "direct input: I_1[t] is the same at every t"
    for name, p in dropout_layers(arch):
        m = a[f"dropout.{name}"]
        assert set(np.unique(m).tolist()) == {0.0, 1.0 / (1.0 - p)}, f"dropout.{name} values"
    U, y = a["output"], a["label"]
    lse = np.log(np.exp(U - U.max(1, keepdims=True)).sum(1)) + U.max(1)
    np.testing.assert_allclose(a["loss"], np.mean(lse - U[np.arange(n), y]), rtol=1e-14)
    for k in meta["params"]:  # masked weights exactly 0, and the mask does not touch the grad
        if f"mask.{k}" in a:
            assert np.all(a[f"param.{k}"][a[f"mask.{k}"] == 0] == 0)
        assert a[f"grad.{k}"].shape == a[f"param.{k}"].shape


def test_make_golden_reproduces_the_files():
    """The whole generator (checkpoint, random input, dropout draws, trace) gives the files."""
    tool = _load_tool("make_golden")
    assert set(tool.CASES) == set(EXPECTED)
    for name in EXPECTED:
        stored, _ = read_trace(GOLDEN_DIR / f"{name}.safetensors")
        arrays, meta = tool.golden_trace(name)
        rep = compare_traces(stored, arrays, **GOLDEN_TOL, layer_order=meta["layers"],
                             param_order=meta["params"], strict=True)
        assert rep.ok, format_report(rep, name_a=name, name_b="regenerated", only_failures=True)
