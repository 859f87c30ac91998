"""Benchmark: refsnn against PyTorch on the same networks, in one run, on this machine.

    python tools/bench.py                      # vgg9 and resnet12, ANN and SNN (T=5), batch 32
    python tools/bench.py --arch vgg9 --models snn --json bench.json --repeats 10

Measures, per architecture (SPEC shapes: 3x32x32 inputs, 10 classes, width 1):
- ANN training ms/image: forward + cross-entropy + backward + SGD(momentum) step, dropout on;
- ANN inference images/s: forward with dropout off;
- SNN training ms/image at T steps: forward over T + cross-entropy of the summed output +
  BPTT + Adam(amsgrad) step on weights, thresholds and leaks, dropout 0.2 on; torch runs the
  same network written from the SPEC with autograd (tools/torch_reference.py);
- SNN inference images/s: T steps, dropout off;
- the SNN at the operating point (row snn-op): weight density 0.05 (every layer but the
  first, irregular), thresholds set so each layer fires ~0.1 spikes per neuron over T;
  training with the masks re-applied after each step, by the weight-sparse convs (and, for
  comparison, the dense path); inference by the fused event engine
  (snn_event_infer; VGG) and by snn_infer's per-layer "auto" paths; ratios against torch's
  dense SNN of the same run.
Each library runs in its own subprocess with the same environment, as a warm-up-then-measure
block (thread pools of different libraries fight when interleaved: PERF-NOTES). Reported:
the median over ``--repeats`` timed training steps (``--snn-repeats`` for the SNN) and over
``--infer-repeats`` inference calls (cheap, and with the odd slow call on these shared
machines: more calls keep the median off it), the min and max, and refsnn / torch ratios.

Environment, set for both libraries alike by re-executing this script once:
- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed (this machine sets them for old OpenBLAS
  builds; they force numpy's OpenBLAS onto its slower Haswell kernels). ``--keep-env`` keeps
  them.
- MALLOC_MMAP_MAX_=0 / MALLOC_TRIM_THRESHOLD_=2^31-1 keep freed buffers in the heap (no page
  faults on re-allocation; refsnn.runtime sets the same), the same for torch and refsnn.
- OPENBLAS_THREAD_TIMEOUT=4: numpy's OpenBLAS threads sleep right after a GEMM instead of
  spinning ~0.1 s on the cores the Numba kernels need (refsnn's entry points set the same:
  refsnn.runtime.configure_blas_threads). torch's CPU wheel does its GEMMs and convolutions
  with MKL / oneDNN, not OpenBLAS, so this touches refsnn only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

_ENV_FLAG = "REFSNN_BENCH_CHILD_ENV"


def _clean_env(keep: bool) -> dict:
    from refsnn.runtime import BLAS_THREAD_TIMEOUT  # imports no numpy

    env = dict(os.environ)
    if not keep:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    env.setdefault("MALLOC_MMAP_MAX_", "0")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(2**31 - 1))
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT)
    env[_ENV_FLAG] = "1"
    return env


def _timeit(fn, warmup: int, repeats: int) -> list:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _summary(times: list, batch: int, kind: str) -> dict:
    import numpy as np

    t = np.array(times)
    if kind == "train":
        per = t / batch * 1e3  # ms/image
        return {"ms_per_image": float(np.median(per)), "min": float(per.min()),
                "max": float(per.max())}
    ips = batch / t
    return {"images_per_s": float(np.median(ips)), "min": float(ips.min()),
            "max": float(ips.max())}


# ------------------------------------------------------------------------------ refsnn child
def run_refsnn(arch_name: str, batch: int, warmup: int, repeats: int, threads: int, *,
               infer_repeats: int) -> dict:
    import numba
    import numpy as np

    from refsnn.models.ann import ann_backward, ann_forward
    from refsnn.models.arch import build_arch, draw_dropout_masks, init_params
    from refsnn.ops.loss import cross_entropy_backward, cross_entropy_forward
    from refsnn.optim import sgd_init, sgd_step
    from refsnn.runtime import configure_runtime

    configure_runtime()  # what `python -m refsnn.train` uses
    numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    arch = build_arch(arch_name, in_shape=(3, 32, 32), classes=10, width=1.0)
    params = init_params(arch, rng, np.float32)
    state = sgd_init(params)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def train_step():
        masks = draw_dropout_masks(arch, batch, rng, np.float32)
        logits, tape = ann_forward(arch, params, x, masks=masks)
        cross_entropy_forward(logits, y)
        grads = ann_backward(cross_entropy_backward(1.0, logits, y), arch, params, tape,
                             masks=masks)
        sgd_step(params, grads, state, lr=1e-6, momentum=0.9, weight_decay=5e-4)

    train = _timeit(train_step, warmup, repeats)
    infer = _timeit(lambda: ann_forward(arch, params, x, masks=None), warmup, infer_repeats)
    return {"train": _summary(train, batch, "train"), "infer": _summary(infer, batch, "infer")}


def _snn_setup(arch_name: str, batch: int, threads: int, timesteps: int):
    """The refsnn SNN children's common setup: runtime, threads, vgg-style network (SPEC init,
    thresholds 0.5), one batch of inputs and labels, and a training-step closure
    ``train_step(weight_masks=None, packs=None, live=None)`` (dropout masks drawn per step, CE,
    BPTT, Adam amsgrad; with weight masks the pruned weights are zeroed again after the step,
    as sparse learning does; packs: the weight-sparse layers' packings, whose weights Adam
    updates at live only, as stage D with --snn-kernels sparse)."""
    import numba
    import numpy as np

    from refsnn.models.arch import build_arch, draw_dropout_masks, init_params
    from refsnn.models.snn import snn_backward, snn_forward, snn_init_neurons, snn_param_shapes
    from refsnn.ops.event import refresh_event_weights
    from refsnn.ops.loss import cross_entropy_backward, cross_entropy_forward
    from refsnn.optim import adam_init, adam_step
    from refsnn.runtime import configure_runtime

    configure_runtime()
    numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    arch = build_arch(arch_name, in_shape=(3, 32, 32), classes=10, width=1.0,
                      dropout_conv=0.2, dropout_fc=0.2)
    params = init_params(arch, rng, np.float32)
    params.update(snn_init_neurons(arch, np.float32, threshold=0.5))
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    no_decay = tuple(k for k in snn_param_shapes(arch) if not k.endswith(".weight"))
    state = adam_init(params, amsgrad=True)

    def train_step(weight_masks=None, packs=None, live=None):
        masks = draw_dropout_masks(arch, batch, rng, np.float32)
        sparse = None
        if packs:  # the live weights' current values, one gather per conv
            sparse = {k: refresh_event_weights(ew, params[f"{k}.weight"])
                      for k, ew in packs.items()}
        U, tape = snn_forward(arch, params, x, timesteps=timesteps, masks=masks, sparse=sparse)
        cross_entropy_forward(U, y)
        grads = snn_backward(cross_entropy_backward(1.0, U, y), arch, params, tape, masks=masks,
                             sparse=sparse, consume_tape=True,
                             packed_grads=bool(live))  # as stage D does
        adam_step(params, grads, state, lr=1e-9, amsgrad=True, no_decay=no_decay, live=live)
        for name, m in (weight_masks or {}).items():
            if f"{name}.weight" not in (live or {}):  # live-only updates leave pruned 0s
                params[f"{name}.weight"] *= m

    return arch, params, x, rng, train_step


def run_refsnn_snn(arch_name: str, batch: int, warmup: int, repeats: int, threads: int,
                   timesteps: int, *, infer_repeats: int) -> dict:
    from refsnn.models.snn import snn_forward

    arch, params, x, _, train_step = _snn_setup(arch_name, batch, threads, timesteps)
    train = _timeit(train_step, warmup, repeats)
    infer = _timeit(lambda: snn_forward(arch, params, x, timesteps=timesteps, masks=None),
                    warmup, infer_repeats)
    return {"train": _summary(train, batch, "train"), "infer": _summary(infer, batch, "infer")}


def _operating_point(arch, params, x, timesteps, weight_density, activity, rng):
    """Prune every weight layer but the first to weight_density (irregular, in place), then
    set each threshold, in network order, by bisection (in log v, 12 steps) so that its layer
    fires ``activity`` spikes per neuron over T on x. Returns the masks {name: 0/1 array} and
    the measured activity over all spiking layers (spikes per neuron over T)."""
    import numpy as np

    from refsnn.models.arch import Conv, weight_layers
    from refsnn.models.snn import spiking_layers
    from refsnn.models.snn_infer import pack_snn_weights, snn_infer

    masks = {}
    for layer in weight_layers(arch)[1:]:
        w = params[f"{layer.name}.weight"]
        masks[layer.name] = (rng.random(w.shape) < weight_density).astype(w.dtype)
        w *= masks[layer.name]
    packed, n = pack_snn_weights(arch, params), x.shape[0]
    neurons = {layer.name: (layer.c_out * layer.out_hw[0] * layer.out_hw[1]
                            if isinstance(layer, Conv) else layer.n_out)
               for layer in spiking_layers(arch)}

    def rate(name):
        counts = snn_infer(arch, params, x, timesteps=timesteps, packed=packed).spikes
        return counts[name] / (n * neurons[name])

    for layer in spiking_layers(arch):
        key = f"{layer.name}.threshold"
        lo, hi = np.log(1e-3), np.log(1e3)
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            params[key] = np.asarray(np.exp(mid), dtype=x.dtype)
            lo, hi = (mid, hi) if rate(layer.name) > activity else (lo, mid)
        params[key] = np.asarray(np.exp(0.5 * (lo + hi)), dtype=x.dtype)
    counts = snn_infer(arch, params, x, timesteps=timesteps, packed=packed).spikes
    return masks, sum(counts.values()) / (n * sum(neurons.values()))


def run_refsnn_snn_op(arch_name: str, batch: int, warmup: int, repeats: int, threads: int,
                      timesteps: int, *, infer_repeats: int, weight_density: float = 0.05,
                      activity: float = 0.1) -> dict:
    """The SNN at the operating point (weight density 0.05, ~0.1 spikes per neuron over T):
    training with the masks re-applied after every step; inference by the fused event engine
    (snn_event_infer, VGG) and by snn_infer's per-layer "auto" paths."""
    import numpy as np

    from refsnn.models.arch import Block
    from refsnn.models.snn import live_indices, sparse_layer_names
    from refsnn.models.snn_event import pack_event_network, snn_event_infer
    from refsnn.ops.event import pack_event_weights
    from refsnn.models.snn_infer import pack_snn_weights, snn_infer

    arch, params, x, rng, train_step = _snn_setup(arch_name, batch, threads, timesteps)
    wmasks, measured = _operating_point(arch, params, x, timesteps, weight_density, activity,
                                        rng)
    train_dense = _timeit(lambda: train_step(wmasks), warmup, repeats)
    packs = {name: pack_event_weights(params[f"{name}.weight"])
             for name in sparse_layer_names(arch)}  # once per mask change
    live = live_indices(packs)  # Adam's live elements, as stage D
    train = _timeit(lambda: train_step(wmasks, packs, live), warmup, repeats)
    packed = pack_snn_weights(arch, params)
    paths = snn_infer(arch, params, x, timesteps=timesteps, packed=packed).paths
    per_layer = _timeit(lambda: snn_infer(arch, params, x, timesteps=timesteps, packed=packed),
                        warmup, infer_repeats)
    engine = "snn_event_infer" if not any(isinstance(L, Block) for L in arch.layers) else None
    if engine:
        net = pack_event_network(arch, params)
        infer = _timeit(lambda: snn_event_infer(arch, params, x, timesteps=timesteps,
                                                packed=net), warmup, infer_repeats)
    else:  # residual networks: the per-layer paths are the sparse inference
        engine, infer = "snn_infer", per_layer
    live = sum(int(np.count_nonzero(params[f"{k}.weight"])) for k in wmasks)
    total = sum(params[f"{k}.weight"].size for k in wmasks)
    return {"train": _summary(train, batch, "train"), "infer": _summary(infer, batch, "infer"),
            "train_engine": "weight-sparse convs and hidden linears (snn_forward/backward "
                            "sparse=)",
            "train_dense_path": _summary(train_dense, batch, "train"), "infer_engine": engine,
            "infer_per_layer_paths": _summary(per_layer, batch, "infer"), "paths": paths,
            "weight_density": live / total, "spike_activity": measured}


def run_torch_snn(arch_name: str, batch: int, warmup: int, repeats: int, threads: int,
                  timesteps: int, *, infer_repeats: int) -> dict:
    """torch autograd BPTT of the same SNN (tools/torch_reference.py, written from the SPEC)."""
    import numpy as np
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_reference import build_torch_snn

    from refsnn.models.arch import build_arch, draw_dropout_masks, init_params
    from refsnn.models.snn import snn_init_neurons

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    arch = build_arch(arch_name, in_shape=(3, 32, 32), classes=10, width=1.0,
                      dropout_conv=0.2, dropout_fc=0.2)
    params = init_params(arch, rng, np.float32)
    params.update(snn_init_neurons(arch, np.float32, threshold=0.5))
    net = build_torch_snn(arch, params, timesteps=timesteps, dtype=torch.float32)
    opt = torch.optim.Adam(list(net.params.values()), lr=1e-9, amsgrad=True)
    x = torch.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, batch))

    def train_step():
        masks = {k: torch.from_numpy(v)
                 for k, v in draw_dropout_masks(arch, batch, rng, np.float32).items()}
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net.forward(x, masks=masks), y).backward()
        opt.step()

    def infer_step():
        with torch.no_grad():
            net.forward(x, masks=None)

    train = _timeit(train_step, warmup, repeats)
    infer = _timeit(infer_step, warmup, infer_repeats)
    return {"train": _summary(train, batch, "train"), "infer": _summary(infer, batch, "infer"),
            "version": torch.__version__}


# ------------------------------------------------------------------------------- torch child
def run_torch(arch_name: str, batch: int, warmup: int, repeats: int, threads: int, *,
              infer_repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from refsnn.models.arch import Block, Conv, Linear, Pool, build_arch, init_params

    import numpy as np

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    arch = build_arch(arch_name, in_shape=(3, 32, 32), classes=10, width=1.0)
    params = {k: torch.tensor(v, requires_grad=True)
              for k, v in init_params(arch, rng, np.float32).items()}
    opt = torch.optim.SGD(params.values(), lr=1e-6, momentum=0.9, weight_decay=5e-4)
    x = torch.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, batch))

    def conv(layer, h):
        return F.conv2d(h, params[f"{layer.name}.weight"], stride=layer.stride,
                        padding=layer.padding)

    def forward(h, train):
        for layer in arch.layers:
            if isinstance(layer, Conv):
                h = F.dropout(F.relu(conv(layer, h)), layer.dropout, train)
            elif isinstance(layer, Pool):
                h = F.avg_pool2d(h, 2)
            elif isinstance(layer, Linear):
                h = F.linear(h.flatten(1), params[f"{layer.name}.weight"])
                if layer.act:
                    h = F.dropout(F.relu(h), layer.dropout, train)
            elif isinstance(layer, Block):
                a = F.dropout(F.relu(conv(layer.conv1, h)), layer.conv1.dropout, train)
                s = conv(layer.shortcut, h) if layer.shortcut else h
                h = F.relu(conv(layer.conv2, a) + s)
        return h

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x, True), y).backward()
        opt.step()

    def infer_step():
        with torch.no_grad():
            forward(x, False)

    train = _timeit(train_step, warmup, repeats)
    infer = _timeit(infer_step, warmup, infer_repeats)
    return {"train": _summary(train, batch, "train"), "infer": _summary(infer, batch, "infer"),
            "version": torch.__version__}


# ------------------------------------------------------------------------------------ parent
def _child(lib: str, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", lib, "--arch", args.child_arch,
           "--batch", str(args.batch), "--warmup", str(args.warmup), "--repeats",
           str(args.repeats), "--threads", str(args.threads), "--timesteps", str(args.timesteps),
           "--infer-repeats", str(args.infer_repeats)]
    r = subprocess.run(cmd, env=_clean_env(args.keep_env), capture_output=True, text=True)
    if r.returncode != 0:
        if lib == "torch" and "No module named 'torch'" in r.stderr:
            return None
        raise RuntimeError(f"bench child {lib} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _blas_info() -> list:
    try:
        from threadpoolctl import threadpool_info

        return [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for i in threadpool_info()]
    except ImportError:
        return []


def _operating_point_row(args, results, arch, tor):
    """refsnn at weight density 0.05 / ~0.1 spikes per neuron, against torch's dense SNN of
    the same run (torch has no sparse path: its time does not depend on the zeros)."""
    saved = args.repeats
    args.repeats = args.snn_repeats or max(3, args.repeats // 2)
    op = _child("refsnn-snn-op", args)
    args.repeats = saved
    row = {"refsnn": op, "torch_dense": tor}
    line = (f"snn-op/{arch}/T{args.timesteps} (weight density {op['weight_density']:.3f}, "
            f"spike activity {op['spike_activity']:.3f}): train (sparse convs) "
            f"{op['train']['ms_per_image']:.2f} ms/image [{op['train']['min']:.2f}-"
            f"{op['train']['max']:.2f}] (dense path "
            f"{op['train_dense_path']['ms_per_image']:.2f}), infer ({op['infer_engine']}) "
            f"{op['infer']['images_per_s']:.1f} img/s [{op['infer']['min']:.1f}-"
            f"{op['infer']['max']:.1f}] (snn_infer per-layer paths "
            f"{op['infer_per_layer_paths']['images_per_s']:.1f}), peak RSS "
            f"{op['peak_rss_mb']:.0f} MB")
    if tor:
        row["ratio_train_time_vs_torch_dense"] = (op["train"]["ms_per_image"]
                                                  / tor["train"]["ms_per_image"])
        row["ratio_infer_throughput_vs_torch_dense"] = (op["infer"]["images_per_s"]
                                                        / tor["infer"]["images_per_s"])
        line += (f" | vs torch dense: train time {row['ratio_train_time_vs_torch_dense']:.2f}x,"
                 f" inference throughput {row['ratio_infer_throughput_vs_torch_dense']:.2f}x")
    results["results"][f"snn-op/{arch}/T{args.timesteps}"] = row
    print(line, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="vgg9,resnet12", help="comma-separated architectures")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--keep-env", action="store_true", help="keep OPENBLAS_CORETYPE etc.")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--models", default="ann,snn", help="ann, snn or both")
    p.add_argument("--timesteps", type=int, default=5, help="T of the SNN")
    p.add_argument("--snn-repeats", type=int, default=None,
                   help="timed SNN steps (default: max(3, repeats // 2))")
    p.add_argument("--infer-repeats", type=int, default=24,
                   help="timed inference calls, every row and both libraries")
    p.add_argument("--no-operating-point", action="store_true",
                   help="skip the SNN at weight density 0.05 / spike activity ~0.1")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        fn = {"refsnn": run_refsnn, "torch": run_torch}.get(args.child)
        if fn is not None:
            res = fn(args.arch, args.batch, args.warmup, args.repeats, args.threads,
                     infer_repeats=args.infer_repeats)
        else:
            fn = {"refsnn-snn": run_refsnn_snn, "refsnn-snn-op": run_refsnn_snn_op,
                  "torch-snn": run_torch_snn}[args.child]
            res = fn(args.arch, args.batch, args.warmup, args.repeats, args.threads,
                     args.timesteps, infer_repeats=args.infer_repeats)
        import numpy as np  # noqa: F401  (threadpoolctl needs it loaded)

        res["blas"] = _blas_info()
        # peak resident set of the whole child (import, warm-up, training and inference), MB
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return 0

    results = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "settings": {"batch": args.batch, "repeats": args.repeats,
                            "warmup": args.warmup, "threads": args.threads,
                            "env_removed": [] if args.keep_env else
                            ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]},
               "results": {}}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        for arch in [a.strip() for a in args.arch.split(",") if a.strip()]:
            args.child_arch = arch
            suffix = "" if model == "ann" else "-snn"
            saved = args.repeats
            if model == "snn":
                args.repeats = args.snn_repeats or max(3, args.repeats // 2)
            ref = _child("refsnn" + suffix, args)
            tor = None if args.no_torch else _child("torch" + suffix, args)
            args.repeats = saved
            row = {"refsnn": ref, "torch": tor}
            if tor:
                row["ratio_train_time"] = (ref["train"]["ms_per_image"]
                                           / tor["train"]["ms_per_image"])
                row["ratio_infer_throughput"] = (ref["infer"]["images_per_s"]
                                                 / tor["infer"]["images_per_s"])
            key = f"{model}/{arch}" + (f"/T{args.timesteps}" if model == "snn" else "")
            results["results"][key] = row
            line = (f"{key:14s} train {ref['train']['ms_per_image']:.2f} ms/image "
                    f"[{ref['train']['min']:.2f}-{ref['train']['max']:.2f}]  "
                    f"infer {ref['infer']['images_per_s']:.1f} img/s  "
                    f"peak RSS {ref['peak_rss_mb']:.0f} MB")
            if tor:
                line += (f" | torch {tor['version']}: train {tor['train']['ms_per_image']:.2f} "
                         f"ms/image [{tor['train']['min']:.2f}-{tor['train']['max']:.2f}], "
                         f"infer {tor['infer']['images_per_s']:.1f} img/s, "
                         f"peak RSS {tor['peak_rss_mb']:.0f} MB | "
                         f"train time ratio {row['ratio_train_time']:.2f}x, "
                         f"inference throughput ratio {row['ratio_infer_throughput']:.2f}x")
            print(line, flush=True)
            if model == "snn" and not args.no_operating_point:
                _operating_point_row(args, results, arch, tor)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
