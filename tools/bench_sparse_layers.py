"""Per layer: stage D's weight-sparse kernels against the dense ones, forward + backward.

    python tools/bench_sparse_layers.py [--widths 0.25,0.5,1] [--densities 0.05,0.1,0.2]
                                        [--activity 0.15] [--repeats 5] [--json out.json]

For every layer that snn_forward / snn_backward can run weight-sparse (vgg9's conv2..conv7,
fc1, fc2; 3x32x32 inputs, T = 5, batch 32, float32) at each width and weight density
(irregular, random), times the layer's training work both ways, exactly as the model runs it:
- dense: the im2col GEMM forward keeping its columns, then conv2d_backward (weight and input
  gradients); linears: linear_forward, linear_backward;
- sparse: the event forward if the input is at most EVENT_MAX_DENSITY nonzero, else the
  shifted-plane forward keeping its planes, then the weight-sparse backward (models.snn's own
  _conv_back); linears: linear_event_forward / linear_forward, linear_sparse_backward.
Inputs are binary spikes at --activity (the fraction of nonzero inputs), grad_y Gaussian.
Prints the sparse / dense time ratio per layer; medians of --repeats after one warm-up. Run it
with the machine's background jobs paused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from refsnn.models import snn as snn_model  # noqa: E402
from refsnn.models.arch import Conv, build_arch, weight_layers, weight_shape  # noqa: E402
from refsnn.models.snn import sparse_layer_names  # noqa: E402
from refsnn.ops.event import (conv2d_event_forward, linear_event_forward,  # noqa: E402
                              pack_event_weights)
from refsnn.ops.sparse_conv import conv2d_sparse_forward_keep  # noqa: E402
from refsnn.ops.linear import linear_backward, linear_forward  # noqa: E402
from refsnn.ops.sparse_linear import linear_sparse_backward  # noqa: E402
from refsnn.runtime import configure_runtime  # noqa: E402

from bench_event import _median_ms  # noqa: E402  (tools/: one warm-up, then the median)

T, N = 5, 32


def _layer_fns(layer, w, ew, x, g):
    """(dense, sparse) closures of one layer's forward + backward over the T*N batch."""
    params = {f"{layer.name}.weight": w}
    if isinstance(layer, Conv):
        x5, g5 = x.reshape((T, N) + x.shape[1:]), g.reshape((T, N) + g.shape[1:])

        def dense():
            _, cols = snn_model._conv_keep(layer, params, x5)
            snn_model._conv_back(g5, layer, params, x5, {}, cols=cols, overwrite=True)

        def sparse():
            if np.count_nonzero(x) <= snn_model.EVENT_MAX_DENSITY * x.size:
                conv2d_event_forward(x, ew, padding=layer.padding)
                cols = None
            else:
                _, cols = conv2d_sparse_forward_keep(x, ew, padding=layer.padding)
            snn_model._conv_back(g5, layer, params, x5, {}, cols=cols, ew=ew, overwrite=True)
        return dense, sparse

    def dense():
        linear_forward(x, w)
        linear_backward(g, x, w)

    def sparse():
        if np.count_nonzero(x) <= snn_model.EVENT_MAX_DENSITY * x.size:
            linear_event_forward(x, ew)
        else:
            linear_forward(x, w)
        linear_sparse_backward(g, x, ew)
    return dense, sparse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="0.25,0.5,1")
    p.add_argument("--densities", default="0.05,0.1,0.2")
    p.add_argument("--activity", type=float, default=0.15)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    configure_runtime()
    rng = np.random.default_rng(0)
    rows = []
    for width in (float(s) for s in args.widths.split(",")):
        arch = build_arch("vgg9", in_shape=(3, 32, 32), classes=10, width=width)
        layers = {layer.name: layer for layer in weight_layers(arch)}
        for name in sparse_layer_names(arch):
            layer = layers[name]
            if isinstance(layer, Conv):
                x = (rng.random((T * N, layer.c_in) + layer.in_hw) < args.activity)
                g_shape = (T * N, layer.c_out) + layer.out_hw
            else:
                x = rng.random((T * N, layer.n_in)) < args.activity
                g_shape = (T * N, layer.n_out)
            x = x.astype(np.float32)
            g = rng.standard_normal(g_shape).astype(np.float32)
            for d in (float(s) for s in args.densities.split(",")):
                w = rng.standard_normal(weight_shape(layer)).astype(np.float32)
                w *= rng.random(w.shape) < d
                dense, sparse = _layer_fns(layer, w, pack_event_weights(w), x, g)
                td, ts = _median_ms(dense, args.repeats), _median_ms(sparse, args.repeats)
                macs = int(np.prod(weight_shape(layer))) * (
                    layer.out_hw[0] * layer.out_hw[1] if isinstance(layer, Conv) else 1)
                rows.append({"width": width, "layer": name, "density": d, "dense_ms": td,
                             "sparse_ms": ts, "ratio": ts / td, "macs_per_sample": macs})
                print(f"width {width:<5} {name:6s} d {d:<5} dense {td:8.2f} ms  sparse "
                      f"{ts:8.2f} ms  sparse/dense {ts / td:5.2f}  ({macs:,} MACs/sample)",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"activity": args.activity, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
