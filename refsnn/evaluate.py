"""Command line: ``python -m refsnn.evaluate CHECKPOINT`` prints the test accuracy.

The checkpoint's metadata names the architecture, width and dataset; the dataset is loaded
again from the same place (override with ``--data-dir``), the weights are validated by name
and shape, and the test split is scored with dropout off and no augmentation.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .checkpoint import check_names_and_shapes, load_checkpoint
from .data.datasets import load_dataset
from .loop import evaluate, split_state
from .runtime import configure_runtime


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
    if stage == "ann":
        from .ann_stage import ann_arch, ann_predict
        from .models.arch import param_shapes

        arch = ann_arch(cfg, data)
        try:
            check_names_and_shapes(param_shapes(arch), params, what="evaluate",
                                   path=args.checkpoint)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        predict = ann_predict(arch, params)
    else:
        print(f"error: stage {stage!r} checkpoints are not supported by this version",
              file=sys.stderr)
        return 2
    dtype = np.dtype(cfg["dtype"])
    acc = evaluate(predict, data.test_x, data.test_y, data.mean, data.std,
                   batch_size=args.batch_size, dtype=dtype)
    result = {"checkpoint": args.checkpoint, "stage": stage, "arch": cfg["arch"],
              "dataset": cfg["dataset"], "epoch": meta["epoch"], "test_images": len(data.test_y),
              "test_acc": acc}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{args.checkpoint}: stage {stage}, {cfg['arch']} on {cfg['dataset']}, "
              f"epoch {meta['epoch']}: test accuracy {acc:.2f}% ({len(data.test_y)} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
