"""Command line: ``python -m refsnn.train --arch vgg9 [--stages ann] [...]``.

Resolves the configuration (printed once), loads the data, runs the stages in order and writes
everything to ``--out DIR``: one checkpoint per stage (safetensors, written atomically),
``metrics.jsonl`` with one line per epoch, and ``config.json``. ``--resume`` continues a killed
run from its last checkpoint and ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .runtime import configure_blas_threads, configure_runtime

configure_blas_threads()  # before numpy loads OpenBLAS (the imports below): see runtime.py

from .data.datasets import DATASETS, load_dataset  # noqa: E402
from .models.arch import ARCHS  # noqa: E402

STAGES = ("ann", "compress", "convert", "snn", "report")  # pipeline order: A, B, C, D, E

# Per-dataset defaults for the options left unset (None): (epochs, width, batch size, lr).
# The embedded default is sized so the ANN stage runs in a few minutes on 2 cores.
_DEFAULTS = {
    "embedded": {"epochs": 20, "width": 0.25, "snn_epochs": 5, "snn_lr": 1e-3,
                 "convert_scale": 0.6, "beta": 100.0},
    "fashion-mnist": {"epochs": 10, "width": 0.5, "snn_epochs": 2, "snn_lr": 5e-4,
                      "beta": 1000.0},
    "cifar10": {"epochs": 30, "width": 1.0, "snn_epochs": 10, "snn_lr": 5e-4, "beta": 1000.0},
    "cifar100": {"epochs": 30, "width": 1.0, "snn_epochs": 10, "snn_lr": 5e-4, "beta": 1000.0},
    "tiny-imagenet": {"epochs": 30, "width": 1.0, "snn_epochs": 10, "snn_lr": 5e-4,
                      "beta": 1000.0},
    "imagefolder": {"epochs": 30, "width": 1.0, "snn_epochs": 10, "snn_lr": 5e-4,
                    "beta": 1000.0},
}
_LR = {"sgd": 0.05, "adam": 1e-3}
# L2 weight decay per optimizer. With the SPEC's small initial weights (linear N(0, 0.01)) the
# early gradients are ~1e-6; Adam's L2 term 5e-4 * w (~5e-6) would dominate them, so Adam
# defaults to none.
_WD = {"sgd": 5e-4, "adam": 0.0}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m refsnn.train",
        description="The refsnn pipeline: ANN meta-model (ann), attention-guided compressed "
                    "ANN (compress), conversion to an SNN (convert), SNN training (snn) and "
                    "the results table (report). Options left at 'None' take a per-dataset "
                    "default, printed at start.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", choices=ARCHS, default="vgg9")
    p.add_argument("--stages", default=",".join(STAGES),
                   help="comma-separated subset, run in pipeline order from the checkpoints in "
                        "--out (the whole pipeline by default)")
    p.add_argument("--dataset", choices=DATASETS, default="embedded")
    p.add_argument("--data-dir", default=None, help="the dataset's folder (see README)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate; default per optimizer {_LR}")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="adam",
                   help="stages ann and compress; Adam escapes the plateau of the SPEC init where "
                        "SGD stalls for epochs")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--amsgrad", action="store_true")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"L2 weight decay; default per optimizer {_WD}")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine",
                   help="learning-rate schedule, stepped per iteration")
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear learning-rate warm-up, in epochs (capped at half the run)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="turn off random crop (4-pixel zero padding) + horizontal flip")
    p.add_argument("--width", type=float, default=None, help="channel/hidden-size multiplier")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder; default runs/<arch>-<dataset>")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in --out")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also checkpoint every N steps within an epoch (0: epoch ends only)")
    p.add_argument("--limit-train", type=int, default=0,
                   help="use only the first N training images (0: all); for quick trials")
    p.add_argument("--limit-test", type=int, default=0, help="the same for the test split")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines on stdout")
    c = p.add_argument_group("compression (stage compress; sparse learning also in stage snn)")
    c.add_argument("--density", type=float, default=0.1,
                   help="target density d of the conv + linear weights (compression 1/d)")
    c.add_argument("--prune", choices=("irregular", "channel"), default="irregular",
                   help="sparse-learning unit: single weights, or conv output filters")
    c.add_argument("--beta", type=float, default=None,
                   help="weight of the AT loss (SPEC 4.1: 1000; embedded subset: 100)")
    c.add_argument("--sparse-init", choices=("scaled", "spec"), default="scaled",
                   help="stage compress: scale the Bernoulli-masked init by 1/sqrt(live "
                        "fraction) to keep the dense variance (scaled), or keep SPEC 2's draw")
    c.add_argument("--compress-epochs", type=int, default=None,
                   help="epochs of stage compress; default: --epochs")
    g = p.add_argument_group("SNN (stages convert and snn)")
    g.add_argument("--timesteps", type=int, default=5, help="T, time steps per image")
    g.add_argument("--surrogate", choices=("pwl", "sigmoid"), default="pwl",
                   help="surrogate gradient: pwl = gamma * max(0, 1 - |z|) (SPEC 5.2)")
    g.add_argument("--gamma", type=float, default=0.3, help="surrogate scale")
    g.add_argument("--ann-checkpoint", default=None,
                   help="the meta-model, instead of DIR/ann.safetensors: compress's teacher, the "
                        "report's reference, and convert's source when neither --stages nor "
                        "--out has a compressed ANN")
    g.add_argument("--convert-batch", type=int, default=512,
                   help="training images used to initialise the thresholds")
    g.add_argument("--convert-timesteps", type=int, default=100, help="T_init of SPEC 5.4")
    g.add_argument("--convert-percentile", type=float, default=99.7)
    g.add_argument("--convert-scale", type=float, default=None,
                   help="alpha, the threshold scaling factor; default SPEC 5.4's 0.2 for T <= 5, "
                        "else 0.3; 0.6 on the embedded subset (measured better there)")
    g.add_argument("--snn-epochs", type=int, default=None)
    g.add_argument("--snn-lr", type=float, default=None,
                   help="Adam (amsgrad) lr of stage D; SPEC 5.5's 5e-4, 1e-3 on the embedded "
                        "subset (measured better at its 5-epoch budget)")
    g.add_argument("--snn-weight-decay", type=float, default=0.0,
                   help="L2 on weights in stage D (thresholds and leaks never decay)")
    g.add_argument("--snn-schedule", choices=("cosine", "step", "constant"), default="cosine")
    g.add_argument("--mask", choices=("learn", "frozen"), default=None,
                   help="stage snn on a compressed model: keep sparse learning (default with "
                        "--prune irregular), or keep stage convert's masks fixed (default, and "
                        "the only choice, with --prune channel: a conv filter regrown at 0 "
                        "never spikes, and the surrogate is 0 at u = 0, so it could not learn)")
    g.add_argument("--snn-channels", choices=("compact", "full"), default=None,
                   help="stage snn with --prune channel (masks frozen): run the network without "
                        "its dead channels (compact; default, except with --snn-kernels "
                        "sparse), or at full size (full); the same numbers to rounding "
                        "(prune/compact.py)")
    g.add_argument("--snn-kernels", choices=("auto", "dense", "sparse"), default="auto",
                   help="stage snn: the reference GEMMs (dense), or weight-sparse convs of "
                        "density <= 0.1 and hidden linears of density <= 0.05, the rest dense "
                        "(sparse; ops/sparse_conv.py, ops/sparse_linear.py; equal to rounding; "
                        "the thresholds measured by tools/bench_sparse_layers.py). Needs "
                        "--mask frozen, since they compute no gradient for pruned weights. "
                        "auto: sparse with frozen irregular masks, else dense")
    return p


def resolve_config(args: argparse.Namespace) -> dict:
    """The full configuration: CLI values, with None replaced by the documented defaults."""
    cfg = vars(args).copy()
    stages = [s.strip() for s in cfg["stages"].split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise ValueError(f"--stages: unknown stage {bad[0] if bad else ''!r}; "
                         f"choose from {','.join(STAGES)}")
    cfg["stages"] = ",".join(s for s in STAGES if s in stages)
    for key, value in _DEFAULTS[cfg["dataset"]].items():
        if cfg[key] is None:
            cfg[key] = value
    if cfg["lr"] is None:
        cfg["lr"] = _LR[cfg["optimizer"]]
    if cfg["weight_decay"] is None:
        cfg["weight_decay"] = _WD[cfg["optimizer"]]
    if cfg["out"] is None:
        cfg["out"] = os.path.join("runs", f"{cfg['arch']}-{cfg['dataset']}")
    if cfg["compress_epochs"] is None:
        cfg["compress_epochs"] = cfg["epochs"]
    if cfg["convert_scale"] is None:
        cfg["convert_scale"] = 0.2 if cfg["timesteps"] <= 5 else 0.3
    for key in ("epochs", "compress_epochs", "batch_size", "eval_batch_size", "timesteps",
                "snn_epochs", "convert_batch", "convert_timesteps"):
        if cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    for key in ("checkpoint_every", "limit_train", "limit_test"):
        if cfg[key] < 0:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, got {cfg[key]}")
    if not cfg["width"] > 0:
        raise ValueError(f"--width must be > 0, got {cfg['width']}")
    if not 0 < cfg["density"] <= 1:
        raise ValueError(f"--density must be in (0, 1], got {cfg['density']}")
    if cfg["mask"] is None:
        cfg["mask"] = "frozen" if cfg["prune"] == "channel" else "learn"
    if cfg["prune"] == "channel" and cfg["mask"] != "frozen":
        raise ValueError("--mask learn with --prune channel: a conv filter regrown in stage snn "
                         "starts at 0, its membrane stays 0 and the surrogate gradient "
                         "(SPEC 5.2) is 0 at u = 0, so it would never learn; use --mask frozen "
                         "(the default in channel mode)")
    if cfg["snn_kernels"] == "auto":
        cfg["snn_kernels"] = ("sparse" if cfg["mask"] == "frozen" and cfg["prune"] == "irregular"
                              else "dense")
    if cfg["snn_channels"] is None:
        cfg["snn_channels"] = "full" if cfg["snn_kernels"] == "sparse" else "compact"
    if cfg["snn_channels"] == "compact" and cfg["snn_kernels"] == "sparse":
        raise ValueError("--snn-channels compact with --snn-kernels sparse: the weight-sparse "
                         "kernels run the full layout; use --snn-channels full")
    if cfg["snn_kernels"] == "sparse" and cfg["mask"] != "frozen":
        raise ValueError("--snn-kernels sparse needs --mask frozen (got --mask "
                         f"{cfg['mask']}): sparse learning's regrowth reads the pruned weights' "
                         "gradients, which the sparse kernels do not compute")
    if not cfg["beta"] >= 0:
        raise ValueError(f"--beta must be >= 0, got {cfg['beta']}")
    if not cfg["lr"] >= 0:
        raise ValueError(f"--lr must be >= 0, got {cfg['lr']}")
    return cfg


def limit(data, n_train: int, n_test: int):
    """The first n images of each split (0 = all)."""
    if n_train:
        data = data._replace(train_x=data.train_x[:n_train], train_y=data.train_y[:n_train])
    if n_test:
        data = data._replace(test_x=data.test_x[:n_test], test_y=data.test_y[:n_test])
    return data


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ValueError as e:
        parser.error(str(e))
    configure_runtime()
    log = (lambda *a, **k: None) if cfg["quiet"] else print
    log("refsnn.train configuration: " + json.dumps(cfg, sort_keys=True))
    os.makedirs(cfg["out"], exist_ok=True)
    with open(os.path.join(cfg["out"], "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
    try:
        data = load_dataset(cfg["dataset"], cfg["data_dir"])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = limit(data, cfg["limit_train"], cfg["limit_test"])
    log(f"data: {data.name}, {len(data.train_y)} train / {len(data.test_y)} test images of "
        f"shape {tuple(data.train_x.shape[1:])}, {len(data.classes)} classes")
    stages = cfg["stages"].split(",")
    # Sources: compress's meta-model is --ann-checkpoint, else DIR/ann.safetensors (or this run's
    # stage ann). convert's source is the last ANN stage in --stages (compress, else ann); with
    # neither, DIR/compress.safetensors if --out holds one, else the meta-model (a dense SNN).
    ann_path = cfg["ann_checkpoint"] or os.path.join(cfg["out"], "ann.safetensors")
    convert_path = os.path.join(cfg["out"], "convert.safetensors")
    try:
        if "ann" in stages:
            from .ann_stage import train_ann

            ann_path = train_ann(cfg, data, cfg["out"], log=log)
        compressed = os.path.join(cfg["out"], "compress.safetensors")
        source = compressed if "ann" not in stages and os.path.isfile(compressed) else ann_path
        if "compress" in stages:
            from .compress_stage import train_compressed

            source = train_compressed(cfg, data, cfg["out"], ann_path, log=log)
        if "convert" in stages:
            from .snn_stage import convert_ann

            convert_path = convert_ann(cfg, data, cfg["out"], source, log=log)
        if "snn" in stages:
            from .snn_stage import train_snn

            if not os.path.isfile(convert_path):
                raise ValueError(f"--stages snn needs {convert_path} (run --stages convert)")
            train_snn(cfg, data, cfg["out"], convert_path, log=log)
        if "report" in stages:
            from .report import checkpoint_paths, run_report

            paths = checkpoint_paths(cfg["out"])
            if "ann" not in paths and os.path.isfile(ann_path):
                paths = {"ann": ann_path, **paths}  # --ann-checkpoint: the meta-model
            run_report(cfg["out"], data, paths=paths, batch_size=cfg["eval_batch_size"],
                       log=print)
    except ValueError as e:  # bad data, checkpoint or --resume mismatch: a message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
