"""Command line: ``python -m refsnn.evaluate CHECKPOINT`` prints the test accuracy.

The checkpoint's metadata names the architecture, width and dataset; the dataset is loaded
again from the same place (override with ``--data-dir``), the weights are validated by name
and shape, and the test split is scored with dropout off and no augmentation.
"""

from __future__ import annotations

import argparse
import json
import sys

from .runtime import configure_blas_threads, configure_runtime

configure_blas_threads()  # before numpy loads OpenBLAS (the imports below): see runtime.py

import numpy as np  # noqa: E402

from .checkpoint import check_names_and_shapes, load_checkpoint  # noqa: E402
from .data.datasets import load_dataset  # noqa: E402
from .loop import evaluate, split_state  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m refsnn.evaluate",
                                description="Test accuracy of a refsnn checkpoint.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by refsnn.train")
    p.add_argument("--data-dir", default=None, help="override the dataset folder it recorded")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit-test", type=int, default=None,
                   help="score only the first N test images (default: as in training)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--engine", choices=("reference", "event"), default="reference",
                   help="SNN checkpoints: the reference forward with the whole SPEC 6 report, "
                        "or the event-driven engine (VGG only; accuracy and spike activity, "
                        "fast at low density: models/snn_event.py)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_runtime()
    try:
        arrays, meta = load_checkpoint(args.checkpoint)
        cfg = meta["config"]
        data = load_dataset(cfg["dataset"], args.data_dir or cfg["data_dir"])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_test = cfg.get("limit_test", 0) if args.limit_test is None else args.limit_test
    if n_test:
        data = data._replace(test_x=data.test_x[:n_test], test_y=data.test_y[:n_test])
    params, _ = split_state(arrays)
    stage = meta["stage"]
    ann_stages = ("ann", "compress")  # ANN checkpoints (compress: with masks)
    if stage in ann_stages:
        from .ann_stage import ann_arch, ann_predict
        from .models.arch import param_shapes

        arch = ann_arch(cfg, data)
        expected, predict = param_shapes(arch), ann_predict(arch, params)
    elif stage in ("convert", "snn"):
        from .models.snn import snn_param_shapes
        from .snn_stage import snn_arch, snn_predict

        arch = snn_arch(cfg, data)
        expected, predict = snn_param_shapes(arch), snn_predict(arch, params, cfg)
    else:
        print(f"error: stage {stage!r} checkpoints are not supported by this version",
              file=sys.stderr)
        return 2
    try:  # names and shapes against the architecture the metadata describes
        check_names_and_shapes(expected, {k: v for k, v in params.items()
                                          if not k.startswith("mask.")},
                               what="evaluate", path=args.checkpoint)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dtype = np.dtype(cfg["dtype"])
    result = {"checkpoint": args.checkpoint, "stage": stage, "arch": cfg["arch"],
              "dataset": cfg["dataset"], "epoch": meta["epoch"], "test_images": len(data.test_y)}
    if stage in ann_stages:
        result["test_acc"] = evaluate(predict, data.test_x, data.test_y, data.mean, data.std,
                                      batch_size=args.batch_size, dtype=dtype)
        if stage == "compress":
            from .metrics import compression_ratio

            result["compression_ratio"] = compression_ratio(arch, params).ratio
    elif args.engine == "event":
        try:
            result.update(snn_event_report(arch, params, cfg, data,
                                           batch_size=args.batch_size, dtype=dtype))
        except ValueError as e:  # e.g. a residual network
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        result.update(snn_report(arch, params, cfg, data, batch_size=args.batch_size,
                                 dtype=dtype))
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"{args.checkpoint}: stage {stage}, {cfg['arch']} on {cfg['dataset']}, "
          f"epoch {meta['epoch']}: test accuracy {result['test_acc']:.2f}% "
          f"({len(data.test_y)} images)")
    if stage == "compress":
        print(f"  compression ratio {result['compression_ratio']:.2f}x")
    elif args.engine == "event":
        print(f"  T = {result['timesteps']} (event engine), spike activity (spikes per neuron "
              f"over T): network {result['spike_activity_network']:.4f}")
        print("\n".join(f"    {k:18s} {v:.4f}" for k, v in result["spike_activity"].items()))
    elif stage not in ann_stages:
        print(format_snn_report(result))
    return 0


def snn_report(arch, params, cfg, data, *, batch_size: int, dtype) -> dict:
    """Test accuracy and the SPEC 6 metrics of an SNN over the test split (eval mode)."""
    from .data.transforms import iterate_batches, make_batch
    from .metrics import (add_counts, compression_ratio, fanout_maps, live_weights,
                          spike_counts, summarise, synop_counts)
    from .models.snn import snn_forward

    fan = fanout_maps(arch, live_weights(arch, params))
    spikes, synops, correct = {}, {}, 0
    for idx in iterate_batches(len(data.test_y), batch_size, shuffle=False):
        x = make_batch(data.test_x[idx], data.mean, data.std, augment=False, dtype=dtype)
        U, tape = snn_forward(arch, params, x, timesteps=cfg["timesteps"], masks=None,
                              surrogate=cfg["surrogate"], gamma=cfg["gamma"])
        correct += int((U.argmax(axis=1) == data.test_y[idx]).sum())
        spikes = add_counts(spikes, spike_counts(tape))
        synops = add_counts(synops, synop_counts(arch, fan, tape))
    n = len(data.test_y)
    rep = summarise(arch, fan, spikes, synops, n_images=n, timesteps=cfg["timesteps"])
    comp = compression_ratio(arch, params)
    rep.update({"test_acc": 100.0 * correct / max(1, n), "timesteps": cfg["timesteps"],
                "compression_ratio": comp.ratio, "live_weights": comp.live,
                "total_weights": comp.total})
    return rep


def snn_event_report(arch, params, cfg, data, *, batch_size: int, dtype) -> dict:
    """Test accuracy and spike activity of a VGG SNN by the event-driven engine (the same
    spikes as the reference forward, to rounding); no SynOps or energy."""
    from .data.transforms import iterate_batches, make_batch
    from .metrics import add_counts, spike_activity
    from .models.snn_event import pack_event_network, snn_event_infer

    packed = pack_event_network(arch, params)
    spikes, correct = {}, 0
    for idx in iterate_batches(len(data.test_y), batch_size, shuffle=False):
        x = make_batch(data.test_x[idx], data.mean, data.std, augment=False, dtype=dtype)
        out = snn_event_infer(arch, params, x, timesteps=cfg["timesteps"], packed=packed)
        correct += int((out.logits.argmax(axis=1) == data.test_y[idx]).sum())
        spikes = add_counts(spikes, out.spikes)
    n = len(data.test_y)
    act = spike_activity(arch, spikes, n_images=n)
    return {"test_acc": 100.0 * correct / max(1, n), "timesteps": cfg["timesteps"],
            "engine": "event", "spike_activity": act.per_layer,
            "spike_activity_network": act.network}


def format_snn_report(r: dict) -> str:
    """The SPEC 6 metrics as terminal lines (per image)."""
    lines = [f"  T = {r['timesteps']}, compression ratio {r['compression_ratio']:.2f}x "
             f"({r['live_weights']} of {r['total_weights']} weights live)",
             f"  spike activity (spikes per neuron over T): network "
             f"{r['spike_activity_network']:.4f}"]
    lines += [f"    {k:18s} {v:.4f}   SynOps {r['synops'].get(k, 0):.4g}"
              for k, v in r["spike_activity"].items()]
    lines += [f"    {k:18s} {'':6s}   SynOps {v:.4g}" for k, v in r["synops"].items()
              if k not in r["spike_activity"]]
    lines.append(f"  SynOps {r['synops_total']:.4g}, layer-1 MACs {r['macs']:.4g}, ANN nonzero "
                 f"MACs {r['ann_nonzero_flops']:.4g} (dense {r['dense_flops']:.4g} per step)")
    lines.append(f"  compute energy: SNN {r['energy_snn_pj'] / 1e6:.4g} uJ, ANN "
                 f"{r['energy_ann_pj'] / 1e6:.4g} uJ, ratio SNN/ANN {r['energy_ratio']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
