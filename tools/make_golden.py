"""Regenerate the golden traces in tests/golden/ (SPEC 7), which pin refsnn's numbers.

    NUMBA_NUM_THREADS=1 python tools/make_golden.py            # ~1 s; writes tests/golden/*
    python tools/make_golden.py --check                         # recompute, compare, write nothing

For each case below the script builds a deterministic tiny SNN checkpoint itself (no training,
no dataset), writes it to a temporary folder exactly as the training CLI would (stage "snn"),
runs the trace command's library function on it (``refsnn.trace.trace_checkpoint``, random
inputs, train mode so dropout masks are drawn and recorded) and writes the trace, with this
generator's name and library versions added to its metadata under "generator".

The checkpoint (``tiny_snn_checkpoint``), all from ``numpy.random.default_rng(seed)``:
- weights: the SPEC init (init_params), then (if ``density`` is given) an irregular pruning
  mask of that density (Bernoulli) with the weights set to exactly 0 where it is 0, as sparse
  learning leaves them;
- leaks: 1.0 for the first spiking layer, uniform in [0.6, 1.0) for the others (the gradient of
  a leak < 1 and its carry-over between steps are then exercised), rounded to 3 digits;
- thresholds: layer by layer in network order, the 80th percentile of the layer's pre-reset
  membrane at t = 1 on the trace's own input and dropout masks, rounded to 3 significant
  digits, and raised in 1 % steps while some membrane, at any step, ties with it (pooled
  spikes make currents such as exactly 0.25). With the SPEC's v = 1 the deep layers of a
  width-1/64 network would never fire. Calibrated on t = 1, every layer fires from the first
  step on, integrates over several steps and has a nonzero leak gradient (thresholds set from
  all steps left the deep layers silent until the last step: a leak path never exercised).

The generator then checks (``check_nontrivial``) that every layer spikes at t = 1 and later,
that some neurons sit inside the surrogate's window |z| < 1, that every leak gradient is
nonzero, and that no membrane lies within ``TIE_MARGIN`` of its threshold (|u-/v - 1| > 1e-9):
a spike that could flip under a different but correct summation order would make the golden
file machine-dependent.

Sizes are chosen to keep tests/golden/ small (float64 throughout, about 0.5 MB in all): vgg9
at width 1/64 on a 1x16x16 input (the smallest for which its four pools leave >= 1x1), dense
(a checkpoint without pruning masks), and resnet12 at width 1/32 on 3x8x8 (stride-2 stages
down to 1x1; identity and 1x1-conv shortcuts) with pruning masks of density 0.6. Both T = 3,
N = 2, 3 classes. Regenerate only for a deliberate change of refsnn's numerics, and say so in
CHANGELOG.md ("Numerics: ...").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "tests" / "golden"
TIE_MARGIN = 1e-9  # min |u-/v - 1| over every neuron and step of a golden trace

# name -> (arch, in_shape, width, classes, T, N, seed, pruning-mask density or None)
CASES = {
    "vgg9_w0.015625_T3": ("vgg9", (1, 16, 16), 1 / 64, 3, 3, 2, 11, None),
    "resnet12_w0.03125_T3": ("resnet12", (3, 8, 8), 1 / 32, 3, 3, 2, 12, 0.6),
}


def tiny_snn_checkpoint(arch_name: str, *, in_shape: tuple, width: float, classes: int,
                        timesteps: int, batch: int, seed: int, density: float | None = 0.6,
                        dtype=np.float64, stage: str = "snn") -> tuple[dict, dict]:
    """(arrays, meta) of a deterministic tiny SNN checkpoint, in the training CLI's format.

    arrays: "<layer>.weight", "<layer>.threshold" (0-d), "<layer>.leak" (0-d),
    "mask.<layer>.weight" (unless density is None) and one "optim.exp_avg.<layer>.weight" per
    weight (zeros: readers must ignore optimizer state). meta: stage, epoch, arch, config
    (arch, width, dataset "synthetic", data_dir None, timesteps, surrogate "pwl", gamma 0.3,
    dtype, seed) and dataset (name, classes, mean, std, in_shape). Thresholds are calibrated on
    ``random_batch(arch, batch, seed)`` with the dropout masks drawn from default_rng(seed):
    the input and masks of ``refsnn.trace --input random --seed seed --batch batch`` in train
    mode (module docstring).
    """
    from refsnn.models.arch import build_arch, draw_dropout_masks, init_params
    from refsnn.models.snn import snn_init_neurons, spiking_layers
    from refsnn.trace import random_batch

    dtype = np.dtype(dtype)
    arch = build_arch(arch_name, in_shape=tuple(in_shape), classes=classes, width=width,
                      dropout_conv=0.2, dropout_fc=0.2)
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, np.float64)
    masks = {}
    for k in list(params) if density is not None else ():  # masked weights exactly 0
        masks[f"mask.{k}"] = (rng.random(params[k].shape) < density).astype(np.float64)
        params[k] = params[k] * masks[f"mask.{k}"]
    params.update(snn_init_neurons(arch, np.float64))
    for i, layer in enumerate(spiking_layers(arch)):
        leak = 1.0 if i == 0 else float(f"{rng.uniform(0.6, 1.0):.3f}")
        params[f"{layer.name}.leak"] = np.asarray(leak)
    x, _ = random_batch(arch, batch, seed, np.float64)
    drop = draw_dropout_masks(arch, batch, np.random.default_rng(seed), np.float64)
    for layer in spiking_layers(arch):  # v_l from the layer's own membrane, in network order
        key = f"{layer.name}.threshold"
        um = _membrane(arch, params, x, timesteps, drop, layer.name)
        v0 = max(float(np.quantile(um[0], 0.8)), 1e-3)  # ~20% of the neurons fire at t = 1
        for k in range(50):  # step off ties: pooled spikes make currents like 0.25 or 0.5
            params[key] = np.asarray(float(f"{v0 * (1 + 0.01 * k):.3g}"))
            um = _membrane(arch, params, x, timesteps, drop, layer.name)
            if np.min(np.abs(um / params[key] - 1.0)) > TIE_MARGIN:
                break
        else:
            raise ValueError(f"tiny_snn_checkpoint: no tie-free threshold for {layer.name}")
    arrays = {k: v.astype(dtype) for k, v in params.items()}
    arrays.update({k: v.astype(dtype) for k, v in masks.items()})
    arrays.update({f"optim.exp_avg.{k}": np.zeros_like(v, dtype=dtype)
                   for k, v in params.items() if k.endswith(".weight")})
    cfg = {"arch": arch_name, "width": width, "dataset": "synthetic", "data_dir": None,
           "timesteps": timesteps, "surrogate": "pwl", "gamma": 0.3, "dtype": dtype.name,
           "seed": seed}
    meta = {"stage": stage, "epoch": 0, "step": 0, "arch": arch_name, "config": cfg,
            "dataset": {"name": "synthetic", "classes": [f"class{i}" for i in range(classes)],
                        "mean": [0.0] * in_shape[0], "std": [1.0] * in_shape[0],
                        "in_shape": list(in_shape)}}
    return arrays, meta


def _membrane(arch, params, x, timesteps, masks, name):
    """u-[t] of layer ``name``, (T, N, ...), for the given parameters."""
    from refsnn.models.snn import snn_forward, snn_trace_arrays

    tape = snn_forward(arch, params, x, timesteps=timesteps, masks=masks)[1]
    return snn_trace_arrays(arch, params, tape)[f"trace.{name}.membrane_pre"]


def write_tiny_checkpoint(path, arch_name: str, **kwargs) -> str:
    """tiny_snn_checkpoint saved with refsnn's save_checkpoint; returns the path."""
    from refsnn.checkpoint import save_checkpoint

    arrays, meta = tiny_snn_checkpoint(arch_name, **kwargs)
    save_checkpoint(path, arrays, meta)
    return os.fspath(path)


def check_nontrivial(arrays: dict, layers: list, *, margin: float = TIE_MARGIN) -> None:
    """ValueError unless every layer spikes at t = 1 and later, some z lie in (-1, 1), every
    leak gradient is nonzero, and no |z| <= margin."""
    for name in layers:
        um = arrays[f"trace.{name}.membrane_pre"]
        z = um / arrays[f"param.{name}.threshold"] - 1.0
        per_step = arrays[f"trace.{name}.spikes"].reshape(um.shape[0], -1).sum(axis=1)
        if per_step[0] == 0 or per_step[1:].sum() == 0:
            raise ValueError(f"layer {name} spikes {per_step.tolist()} per step: it must fire "
                             f"at t = 1 and later; choose another seed")
        if f"grad.{name}.leak" in arrays and arrays[f"grad.{name}.leak"] == 0:
            raise ValueError(f"layer {name}: the leak gradient is 0 (no carry-over exercised)")
        if not np.any(np.abs(z) < 1.0):
            raise ValueError(f"layer {name}: no neuron inside the surrogate window |z| < 1")
        if np.min(np.abs(z)) <= margin:
            raise ValueError(f"layer {name}: a membrane lies within {margin} of its threshold "
                             f"(min |z| = {np.min(np.abs(z)):.3g}): choose another seed")


def golden_trace(name: str) -> tuple[dict, dict]:
    """(arrays, meta) of golden case ``name``: checkpoint -> trace_checkpoint -> checks."""
    import safetensors

    from refsnn.checkpoint import library_versions
    from refsnn.trace import trace_checkpoint

    arch_name, in_shape, width, classes, t_steps, n, seed, density = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_tiny_checkpoint(os.path.join(tmp, f"{name}.safetensors"), arch_name,
                                     in_shape=in_shape, width=width, classes=classes,
                                     timesteps=t_steps, batch=n, seed=seed, density=density)
        arrays, meta = trace_checkpoint(ckpt, batch=n, seed=seed, dtype="float64",
                                        mode="train", source="random")
    check_nontrivial(arrays, meta["layers"])
    meta["generator"] = {"tool": "tools/make_golden.py", "case": name,
                         "versions": {**library_versions(),
                                      "safetensors": safetensors.__version__,
                                      "machine": platform.machine()}}
    return arrays, meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/make_golden.py",
                                description="Regenerate tests/golden/*.safetensors.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out-dir", default=str(GOLDEN_DIR))
    p.add_argument("--check", action="store_true",
                   help="recompute and compare with the files in --out-dir; write nothing")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    from refsnn.checkpoint import save_checkpoint
    from refsnn.compare import compare_traces, format_report, read_trace

    status = 0
    for name in CASES:
        arrays, meta = golden_trace(name)
        path = Path(args.out_dir) / f"{name}.safetensors"
        if args.check:
            old, old_meta = read_trace(path)
            rep = compare_traces(old, arrays, rtol=0.0, atol=0.0, layer_order=meta["layers"],
                                 param_order=meta["params"], strict=True)
            print(format_report(rep, name_a=str(path), name_b="recomputed", only_failures=True))
            status |= not rep.ok
            continue
        save_checkpoint(path, arrays, meta)
        spikes = {k: int(arrays[f"trace.{k}.spikes"].sum()) for k in meta["layers"]}
        print(f"{path}: {os.path.getsize(path) / 1024:.0f} KiB, {len(arrays)} arrays, "
              f"loss {float(arrays['loss']):.6f}, spikes {spikes}")
    return int(status)


if __name__ == "__main__":
    raise SystemExit(main())
