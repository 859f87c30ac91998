"""Where the event-driven conv beats the dense one: the crossover behind snn_infer's "auto".

    python tools/bench_event.py [--repeats 5] [--json out.json]

For three vgg9 (width 1, 32x32 input) conv shapes over a T*N = 5*32 batch, times
conv2d_forward (im2col + GEMM) against conv2d_event_forward on binary inputs with spike
density rho_x and irregular weights at density rho_w, and prints the time ratio event/dense
per product rho_x * rho_w. Medians of --repeats runs after one warm-up. The crossover is the
largest product at which the event path is still faster in every shape.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from refsnn.ops.conv import conv2d_forward  # noqa: E402
from refsnn.ops.event import conv2d_event_forward, pack_event_weights  # noqa: E402

SHAPES = {"conv2 64x64@32": (64, 64, 32), "conv4 128x128@16": (128, 128, 16),
          "conv6 256x256@8": (256, 256, 8)}
RHO_X = (0.01, 0.02, 0.05, 0.1, 0.2)
RHO_W = (0.05, 0.1, 0.2, 0.5)


def _median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=160, help="T*N samples per call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for label, (c_in, c_out, side) in SHAPES.items():
        w_full = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.05).astype(np.float32)
        for rho_x in RHO_X:
            x = (rng.random((args.batch, c_in, side, side)) < rho_x).astype(np.float32)
            dense = _median_ms(lambda: conv2d_forward(x, w_full, stride=1, padding=1),
                               args.repeats)
            for rho_w in RHO_W:
                w = w_full * (rng.random(w_full.shape) < rho_w)
                ew = pack_event_weights(w)
                event = _median_ms(lambda: conv2d_event_forward(x, ew, stride=1, padding=1),
                                   args.repeats)
                rows.append(dict(shape=label, rho_x=rho_x, rho_w=rho_w,
                                 product=round(rho_x * rho_w, 6),  # 0.2*0.05 == 0.02*0.5
                                 dense_ms=dense, event_ms=event, ratio=event / dense))
                print(f"{label:18s} rho_x {rho_x:5.2f} rho_w {rho_w:4.2f} product "
                      f"{rho_x * rho_w:7.4f}  dense {dense:8.2f} ms  event {event:8.2f} ms  "
                      f"event/dense {event / dense:6.3f}", flush=True)
    print(f"largest product with the event path faster in every shape (and every smaller "
          f"product): {_crossover(rows):g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, crossover=_crossover(rows), threads=os.environ.get(
                "NUMBA_NUM_THREADS")), f, indent=1)
    return 0


def _crossover(rows) -> float:
    """The largest product rho_x * rho_w at which, and at every smaller product, the event
    path was faster than the dense one in every measured shape (0 if none)."""
    wins = {}
    for r in rows:
        wins.setdefault(r["product"], []).append(r["ratio"] < 1.0)
    ok = [prod for prod, w in sorted(wins.items()) if all(w)]
    return max((prod for prod in ok if all(p2 in ok for p2 in wins if p2 <= prod)), default=0.0)


if __name__ == "__main__":
    raise SystemExit(main())
