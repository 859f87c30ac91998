"""Channel-pruned SNN training executed physically smaller: compact against full, one process.

    python tools/bench_channel.py [--keep 0.5] [--width 1] [--repeats 8] [--json out.json]

vgg9 (3x32x32 inputs, 10 classes), T = 5, batch 32, float32, dropout 0.2, thresholds 0.5. In
every conv but the first, a fraction 1 - keep of the filters is dead (random, seed 0; the
first conv stays whole, as stage B leaves it), the linear layers dense. Times stage D's step
both ways, alternating one compact and one full step after warm-up:
- full: snn_forward / snn_backward on the full network, Adam(amsgrad) on the full arrays,
  masks re-applied;
- compact: gather the kept weights (prune/compact.py), forward and backward on the network
  without the dead channels, scatter the gradients to full shape, the same Adam and masks.
and the same for inference (forward, dropout off). Prints medians and min-max in ms/image
(training) and images/s (inference), the compact / full ratios, and the MACs per step of
both networks. Run it with the machine's background jobs paused; it re-runs itself in
tools/bench.py's environment (OPENBLAS_CORETYPE removed, heap and BLAS-thread settings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import bench  # noqa: E402  (tools/bench.py: the benchmark environment, shared)


def _reexec_clean():
    """Re-run this script once in tools/bench.py's environment (bench._clean_env)."""
    if not os.environ.get(bench._ENV_FLAG):
        os.execve(sys.executable, [sys.executable] + sys.argv, bench._clean_env(False))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", type=float, default=0.5, help="fraction of live filters per conv")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if not 0 < args.keep <= 1:
        raise SystemExit(f"--keep must be in (0, 1], got {args.keep}")
    _reexec_clean()
    import numpy as np

    from refsnn.metrics import compression_ratio
    from refsnn.models.arch import Conv, build_arch, draw_dropout_masks, init_params
    from refsnn.models.snn import snn_backward, snn_forward, snn_init_neurons, snn_param_shapes
    from refsnn.ops.loss import cross_entropy_backward
    from refsnn.optim import adam_init, adam_step
    from refsnn.prune.compact import (channel_plan, compact_arch, gather_dropout, gather_params,
                                      scatter_grads)
    from refsnn.runtime import configure_runtime

    configure_runtime()
    rng = np.random.default_rng(0)
    arch = build_arch("vgg9", in_shape=(3, 32, 32), classes=10, width=args.width,
                      dropout_conv=0.2, dropout_fc=0.2)
    params = init_params(arch, rng, np.float32)
    params.update(snn_init_neurons(arch, np.float32, threshold=0.5))
    masks = {}
    for layer in [c for c in arch.layers if isinstance(c, Conv)][1:]:
        alive = rng.random(layer.c_out) < args.keep
        alive[rng.integers(layer.c_out)] = True
        m = np.broadcast_to(alive.reshape(-1, 1, 1, 1), params[f"{layer.name}.weight"].shape)
        masks[f"mask.{layer.name}.weight"] = m.astype(np.float32)
        params[f"{layer.name}.weight"] *= masks[f"mask.{layer.name}.weight"]
    plan = channel_plan(arch, {**{k: v for k, v in params.items() if k.endswith(".weight")},
                               **masks})
    small = compact_arch(arch, plan)
    comp = compression_ratio(arch, params)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    no_decay = tuple(k for k in snn_param_shapes(arch) if not k.endswith(".weight"))
    state = adam_init(params, amsgrad=True)
    shapes = {k: v.shape for k, v in params.items()}
    T = args.timesteps

    def step(compact):
        drop = draw_dropout_masks(arch, args.batch, rng, np.float32)
        a, pr, dr = ((small, gather_params(arch, plan, params), gather_dropout(arch, plan, drop))
                     if compact else (arch, params, drop))
        U, tape = snn_forward(a, pr, x, timesteps=T, masks=dr)
        g = snn_backward(cross_entropy_backward(1.0, U, y), a, pr, tape, masks=dr,
                         consume_tape=True)
        if compact:
            g = scatter_grads(arch, plan, g, shapes)
        adam_step(params, g, state, lr=1e-9, amsgrad=True, no_decay=no_decay)
        for key, m in masks.items():
            params[key[len("mask."):]] *= m

    def infer(compact):
        a, pr = (small, gather_params(arch, plan, params)) if compact else (arch, params)
        snn_forward(a, pr, x, timesteps=T, masks=None)

    times = {}
    for name, fn in (("train", step), ("infer", infer)):
        for _ in range(args.warmup):
            fn(True), fn(False)
        t = {True: [], False: []}
        for _ in range(args.repeats):
            for compact in (True, False):
                t0 = time.perf_counter()
                fn(compact)
                t[compact].append(time.perf_counter() - t0)
        times[name] = {("compact" if k else "full"): np.array(v) for k, v in t.items()}
    out = {"keep": args.keep, "width": args.width, "batch": args.batch, "timesteps": T,
           "macs_full": comp.dense_flops, "macs_compact": comp.channel_flops}
    print(f"vgg9 width {args.width}, T = {T}, batch {args.batch}, {args.keep:.0%} of the "
          f"filters alive in conv2..conv7: MACs per step {comp.dense_flops:,} -> "
          f"{comp.channel_flops:,} ({comp.dense_flops / comp.channel_flops:.2f}x fewer)")
    for name, unit in (("train", "ms/image"), ("infer", "images/s")):
        row = {}
        for mode, t in times[name].items():
            v = t / args.batch * 1e3 if name == "train" else args.batch / t
            row[mode] = {"median": float(np.median(v)), "min": float(v.min()),
                         "max": float(v.max())}
        ratio = row["compact"]["median"] / row["full"]["median"]
        row["ratio_compact_over_full"] = ratio
        out[name] = row
        print(f"{name:5s} compact {row['compact']['median']:8.2f} "
              f"[{row['compact']['min']:.2f}-{row['compact']['max']:.2f}]  full "
              f"{row['full']['median']:8.2f} [{row['full']['min']:.2f}-{row['full']['max']:.2f}]"
              f" {unit}  compact/full = {ratio:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
