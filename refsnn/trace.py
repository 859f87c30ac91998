"""Golden traces (SPEC 7): every intermediate array of one SNN forward and backward pass.

    python -m refsnn.trace runs/vgg9-embedded/snn.safetensors --out trace.safetensors
    python -m refsnn.trace CKPT --out t.safetensors --input random --batch 2 --timesteps 3

A trace is a safetensors file (readable by numpy, PyTorch and JAX without refsnn) holding, for
one checkpoint and one batch of N images, in ``dtype`` (float64 by default):

    input                     (N, C, H, W)  normalised images (the same at every t)
    label                     (N,) int64
    param.<name>              every parameter: "<layer>.weight", "<layer>.threshold" (0-d),
                              "<layer>.leak" (0-d), names as SPEC 7
    mask.<layer>.weight       the pruning masks, when the checkpoint has them
    dropout.<layer>           (N, ...) the dropout mask used at every t (train mode only)
    trace.<layer>.current     (T, N, ...) I[t] = W * x[t]     } every spiking layer,
    trace.<layer>.membrane_pre (T, N, ...) u-[t] = lam u[t-1] + I[t]     } in network order;
    trace.<layer>.spikes      (T, N, ...) s[t] = 1 if u-[t]/v - 1 > 0 else 0   } index 0 is
    trace.<layer>.membrane    (T, N, ...) u[t] = u-[t] - v s[t]       } t = 1
    output                    (N, classes)  U = sum_t W_L x_L[t] (the logits)
    loss                      0-d: mean over the batch of CE(softmax(U), label)
    grad.<name>               dL/d<name> for every parameter (BPTT of SPEC 5.3: hard spikes,
                              the configured surrogate, spike detached in the reset), not
                              multiplied by the pruning mask (sparse learning's regrowth reads
                              the gradient of dead weights too, SPEC 4.2)

and a JSON metadata document (key "refsnn"): the checkpoint's configuration and dataset, T,
mode, seed, dtype, batch, input source, "layers" (spiking layers in network order: the order in
which refsnn.compare looks for the first divergence), "params" (parameter names in network
order), "conventions" (the rules above, spelled out) and library versions.

Inputs: ``--input test`` (default) takes the first N images of the checkpoint's dataset test
split, normalised with the checkpoint's recorded mean and std, no augmentation.
``--input random``: x ~ N(0, 1) and labels uniform in [0, classes), both drawn from
``numpy.random.default_rng([seed, 1])`` (x first), so no dataset is needed. In train mode the
dropout masks are ``draw_dropout_masks(arch, N, numpy.random.default_rng(seed), dtype)``.

The library function is ``make_trace``; ``trace_checkpoint`` is the command without the file.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .checkpoint import library_versions, load_checkpoint, save_checkpoint
from .models.arch import Arch, build_arch, draw_dropout_masks, dropout_layers
from .models.snn import (snn_backward, snn_forward, snn_param_shapes, snn_trace_arrays,
                         spiking_layers)
from .neurons.surrogate import DEFAULT_ALPHA, DEFAULT_GAMMA, SURROGATES
from .ops.loss import cross_entropy_backward, cross_entropy_forward

SNN_STAGES = ("convert", "snn")
MODES = ("train", "eval")
INPUTS = ("test", "random")
DTYPES = ("float64", "float32")
QUANTITIES = ("current", "membrane_pre", "spikes", "membrane")  # per layer, in causal order

SURROGATE_FORMULAS = {
    "pwl": "ds/dz = gamma * max(0, 1 - |z|), z = u-/v - 1 (SPEC 5.2)",
    "sigmoid": "ds/dz = gamma * alpha * sig(alpha z) * (1 - sig(alpha z)), z = u-/v - 1",
}


def conventions(surrogate: str, gamma: float, alpha: float) -> dict:
    """The rules a trace was computed with, spelled out for its metadata (STYLE 2.10)."""
    out = {
        "layout": "NCHW activations, OIHW conv weights, (out, in) linear weights; traces "
                  "time-major (T, N, ...), index 0 is t = 1",
        "input": "direct: x_1[t] = the normalised image at every t",
        "integration": "u-[t] = lam * u[t-1] + I[t], u[0] = 0",
        "spike": "u/v - 1 > 0 strict: s = 1 if u-/v - 1 > 0 else 0 (u- == v does not spike)",
        "reset": "soft, same step, spike detached in reset: u = u- - v * s; no gradient "
                 "through s there, v still gets -du * s",
        "surrogate": SURROGATE_FORMULAS[surrogate],
        "gamma": gamma,
        "dropout": "one inverted-dropout mask per layer per forward pass, reused at every t; "
                   "values 0 or 1/(1-p); applied after the spike (after the pool if any)",
        "pool": "AvgPool2d(2, 2) of spikes, fractional values used as they are",
        "output": "U = sum_t W_L x_L[t]; no leak, threshold, spike or reset; logits = U",
        "loss": "mean CE of summed output: mean_n [logsumexp(U[n]) - U[n, label[n]]]",
        "grad": "dL/dp for every parameter p, not multiplied by the pruning mask",
    }
    if surrogate == "sigmoid":
        out["alpha"] = alpha
    return out


def make_trace(arch: Arch, params: dict, x: np.ndarray, y: np.ndarray, *, timesteps: int,
               masks: dict | None = None, surrogate: str = "pwl",
               gamma: float = DEFAULT_GAMMA, alpha: float = DEFAULT_ALPHA,
               dtype=np.float64) -> dict:
    """Every golden-trace array (module docstring) of one forward/backward pass, in ``dtype``.

    L = mean_n CE(softmax(U[n]), y[n]),  U = snn_forward(...) with hard (heaviside) spikes,
    grads = snn_backward(dL/dU, ..., detach_reset=True)   (SPEC 5.1 - 5.3)

    arch: build_arch(..., dropout_conv=0.2, dropout_fc=0.2). params: "<layer>.weight",
    "<layer>.threshold", "<layer>.leak" for every name of snn_param_shapes(arch), any float
    dtype (cast to ``dtype``); "mask.<layer>.weight" entries, if any, are copied into the trace
    (the weights are expected to be 0 where the mask is). x: (N, C, H, W) normalised images;
    y: (N,) integer labels; masks: {layer: (N, ...) dropout mask} (draw_dropout_masks) or None
    (eval mode). surrogate, gamma, alpha: as lif_backward. -> {name: ndarray}, names in the
    order of the module docstring.
    """
    fn = "make_trace"
    dtype = np.dtype(dtype)
    if dtype.name not in DTYPES:
        raise ValueError(f"{fn}: dtype must be one of {DTYPES}, got {dtype.name!r}")
    if surrogate not in SURROGATES:
        raise ValueError(f"{fn}: surrogate must be one of {tuple(SURROGATES)}, got {surrogate!r}")
    shapes = snn_param_shapes(arch)
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ValueError(f"{fn}: params lacks {missing[0]!r} ({len(missing)} missing)")
    p = {k: np.asarray(params[k], dtype=dtype) for k in shapes}  # shapes: snn_forward checks
    weight_masks = {k: np.asarray(v, dtype=dtype) for k, v in params.items()
                    if k.startswith("mask.")}
    x = np.ascontiguousarray(x, dtype=dtype)
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.shape != (x.shape[0],):
        raise ValueError(f"{fn}: y must be ({x.shape[0]},) integer labels, got {y.dtype} "
                         f"{y.shape}")
    y = y.astype(np.int64)
    m = None if masks is None else {k: np.asarray(v, dtype=dtype) for k, v in masks.items()}
    if m is not None and set(m) != {name for name, _ in dropout_layers(arch)}:
        raise ValueError(f"{fn}: masks must hold one mask per dropout layer "
                         f"{[name for name, _ in dropout_layers(arch)]}, got {sorted(m)}")
    opts = dict(surrogate=surrogate, gamma=gamma, alpha=alpha)

    U, tape = snn_forward(arch, p, x, timesteps=timesteps, masks=m, spike="heaviside", **opts)
    loss = cross_entropy_forward(U, y)  # mean over the batch
    grad_U = cross_entropy_backward(1.0, U, y)  # (softmax(U) - onehot(y)) / N
    grads = snn_backward(grad_U, arch, p, tape, masks=m, detach_reset=True, **opts)

    out = {"input": x, "label": y}
    out.update({f"param.{k}": v for k, v in p.items()})
    out.update(weight_masks)
    out.update({f"dropout.{k}": v for k, v in (m or {}).items()})
    out.update(snn_trace_arrays(arch, p, tape))
    out["output"] = U
    out["loss"] = np.asarray(loss, dtype=dtype)
    out.update({f"grad.{k}": np.asarray(v, dtype=dtype) for k, v in grads.items()})
    return out


def arch_from_meta(meta: dict) -> Arch:
    """The SNN architecture recorded in a checkpoint's (or trace's) metadata.

    build_arch(config.arch, in_shape=dataset.in_shape, classes=len(dataset.classes),
               width=config.width, dropout_conv=0.2, dropout_fc=0.2)   (SNN dropout, SPEC 2)
    """
    try:
        cfg, ds = meta["config"], meta["dataset"]
        return build_arch(cfg["arch"], in_shape=tuple(ds["in_shape"]),
                          classes=len(ds["classes"]), width=cfg["width"], dropout_conv=0.2,
                          dropout_fc=0.2)
    except (KeyError, TypeError) as e:
        raise ValueError(f"arch_from_meta: metadata lacks {e} (needs config.arch, config.width, "
                         f"dataset.in_shape, dataset.classes)") from None


def random_batch(arch: Arch, n: int, seed: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``--input random``: x ~ N(0, 1) of shape (n,) + in_shape, then labels uniform in
    [0, classes), both from numpy.random.default_rng([seed, 1]) (a stream apart from the
    dropout masks' default_rng(seed)). x is drawn in float64 and cast."""
    rng = np.random.default_rng([seed, 1])
    x = rng.standard_normal((n,) + tuple(arch.in_shape)).astype(dtype)
    y = rng.integers(0, arch.classes, size=n).astype(np.int64)
    return x, y


def _split_checkpoint(arrays: dict, arch: Arch, path: str) -> dict:
    """Parameters and pruning masks of an SNN checkpoint, validated by name and shape."""
    from .checkpoint import check_names_and_shapes

    shapes = snn_param_shapes(arch)
    params = {k: v for k, v in arrays.items()
              if not k.startswith("optim.") and not k.startswith("mask.")}
    check_names_and_shapes(shapes, params, what="refsnn.trace", path=path)
    masks = {k: v for k, v in arrays.items() if k.startswith("mask.")}
    for k, v in masks.items():
        w = k[len("mask."):]
        if w not in shapes or not w.endswith(".weight") or tuple(v.shape) != shapes[w]:
            raise ValueError(f"refsnn.trace: {k!r} in {path!r} has shape {tuple(v.shape)} but "
                             f"{w!r} is {shapes.get(w, 'not a weight of this architecture')}")
    params.update(masks)
    return params


def trace_checkpoint(path: str, *, batch: int = 4, seed: int = 0, dtype: str = "float64",
                     mode: str = "train", timesteps: int | None = None,
                     data_dir: str | None = None, source: str = "test") -> tuple[dict, dict]:
    """The trace of an SNN checkpoint (stage "convert" or "snn"): (arrays, metadata).

    What ``python -m refsnn.trace`` writes (module docstring); ``source`` is its --input ("test"
    or "random"). ValueError for a checkpoint, dataset or option it cannot use.
    """
    fn = "refsnn.trace"
    for name, value, allowed in (("dtype", dtype, DTYPES), ("mode", mode, MODES),
                                 ("source", source, INPUTS)):
        if value not in allowed:
            raise ValueError(f"{fn}: {name} must be one of {allowed}, got {value!r}")
    if batch < 1:
        raise ValueError(f"{fn}: --batch must be >= 1, got {batch}")
    arrays, meta = load_checkpoint(path)
    if meta.get("stage") not in SNN_STAGES:
        raise ValueError(f"{fn}: {path!r} holds stage {meta.get('stage')!r}; a trace needs an "
                         f"SNN checkpoint (stage one of {SNN_STAGES})")
    cfg, ds = meta["config"], meta["dataset"]
    arch = arch_from_meta(meta)
    params = _split_checkpoint(arrays, arch, path)
    t_steps = int(cfg["timesteps"] if timesteps is None else timesteps)
    if t_steps < 1:
        raise ValueError(f"{fn}: --timesteps must be >= 1, got {t_steps}")
    np_dtype = np.dtype(dtype)
    if source == "random":
        x, y = random_batch(arch, batch, seed, np_dtype)
    else:
        from .data.datasets import load_dataset
        from .data.transforms import make_batch

        data = load_dataset(cfg["dataset"], data_dir or cfg.get("data_dir"))
        if tuple(data.test_x.shape[1:]) != tuple(arch.in_shape):
            raise ValueError(f"{fn}: the {cfg['dataset']} test images are "
                             f"{tuple(data.test_x.shape[1:])}, the checkpoint expects "
                             f"{tuple(arch.in_shape)}")
        if batch > len(data.test_y):
            raise ValueError(f"{fn}: --batch {batch} exceeds the {len(data.test_y)} test images")
        x = make_batch(data.test_x[:batch], ds["mean"], ds["std"], augment=False,
                       dtype=np_dtype)
        y = data.test_y[:batch].astype(np.int64)
    masks = (draw_dropout_masks(arch, batch, np.random.default_rng(seed), np_dtype)
             if mode == "train" else None)
    surrogate = cfg.get("surrogate", "pwl")
    gamma = float(cfg.get("gamma", DEFAULT_GAMMA))
    alpha = float(cfg.get("alpha", DEFAULT_ALPHA))
    out = make_trace(arch, params, x, y, timesteps=t_steps, masks=masks, surrogate=surrogate,
                     gamma=gamma, alpha=alpha, dtype=np_dtype)
    import safetensors

    trace_meta = {
        "kind": "trace", "stage": meta["stage"], "epoch": meta.get("epoch"),
        "checkpoint": os.path.basename(os.fspath(path)), "arch": cfg["arch"], "config": cfg,
        "dataset": ds, "timesteps": t_steps, "mode": mode, "seed": seed, "dtype": dtype,
        "batch": batch, "input": source,
        "layers": [layer.name for layer in spiking_layers(arch)],
        "params": list(snn_param_shapes(arch)),
        "conventions": conventions(surrogate, gamma, alpha),
        "versions": {**library_versions(), "safetensors": safetensors.__version__},
    }
    return out, trace_meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m refsnn.trace",
        description="Write the golden trace (SPEC 7) of an SNN checkpoint: inputs, parameters, "
                    "every layer's current/membrane/spikes at every step, output, loss and "
                    "every gradient.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="an SNN checkpoint (stage convert or snn)")
    p.add_argument("--out", required=True, help="the trace file to write (.safetensors)")
    p.add_argument("--batch", type=int, default=4, help="N, images in the batch")
    p.add_argument("--seed", type=int, default=0,
                   help="dropout masks: default_rng(seed); --input random: default_rng([seed, 1])")
    p.add_argument("--dtype", choices=DTYPES, default="float64")
    p.add_argument("--mode", choices=MODES, default="train",
                   help="train: dropout masks drawn and recorded; eval: no dropout")
    p.add_argument("--timesteps", type=int, default=None,
                   help="T (default: the checkpoint's configured T)")
    p.add_argument("--data-dir", default=None, help="override the dataset folder it recorded")
    p.add_argument("--input", choices=INPUTS, default="test",
                   help="test: first N test images; random: N(0, 1) inputs, no dataset needed")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage error (2) or --help (0): an int, not an exception
        return int(e.code or 0)
    try:
        arrays, meta = trace_checkpoint(args.checkpoint, batch=args.batch, seed=args.seed,
                                        dtype=args.dtype, mode=args.mode,
                                        timesteps=args.timesteps, data_dir=args.data_dir,
                                        source=args.input)
        save_checkpoint(args.out, arrays, meta)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spikes = {name: int(arrays[f"trace.{name}.spikes"].sum()) for name in meta["layers"]}
    print(f"{args.out}: {meta['arch']} ({meta['stage']}), T={meta['timesteps']}, "
          f"N={args.batch}, {args.mode} mode, {args.dtype}, {args.input} input; "
          f"loss {float(arrays['loss']):.6g}; {len(arrays)} arrays")
    print("spikes per layer: " + ", ".join(f"{k} {v}" for k, v in spikes.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
