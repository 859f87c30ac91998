"""SNN inference without a tape, each layer's current computed dense or event-driven.

    packed = pack_snn_weights(arch, params)          # once per weight / mask change
    out = snn_infer(arch, params, x, timesteps=5, packed=packed)   # out.logits, out.paths

The same network and equations as ``snn_forward`` (models/snn.py, SPEC 5.1) in evaluation mode
(no dropout); nothing is recorded for a backward. Per layer and call the current I_l = W_l x_l
over the (T*N) batch is computed by one of two paths:

    "dense": the reference ops (im2col + GEMM, linear GEMM), over the live input and output
             channels only: channels whose weights are all zero (channel pruning, SPEC 4.2)
             are dropped from the GEMM and their outputs are exactly 0;
    "event": ops/event.py, work only for nonzero inputs x live weights.

``path="auto"`` measures the layer's input density rho_x (nonzero fraction) and its weight
density rho_w and takes "event" when rho_x * rho_w <= EVENT_CROSSOVER: the event kernel does
about rho_x * rho_w of the GEMM's multiply-adds, at a lower rate per multiply-add
(tools/bench_event.py measured the crossover). The first layer sees the analog image and
always runs dense, once (its current is the same at every step). The two paths agree to
rounding (they add the same products in another order); spikes can differ only where a
membrane lies within rounding of its threshold (tests: equal spikes and logits to 1e-12
relative in float64 on random networks).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import check_choice
from ..neurons.lif import lif_forward
from ..ops.winograd import conv2d_forward_auto
from ..ops.event import EventWeights, conv2d_event_forward, linear_event_forward, \
    pack_event_weights
from ..ops.linear import linear_forward
from ..ops.pool import avg_pool2d_forward
from .arch import POOL_KERNEL, Arch, Conv, Linear, Pool, weight_layers
from .snn import _check_forward, _merge, _split

PATHS = ("auto", "dense", "event")
# "auto" takes the event path when (input density) * (weight density) <= this: the largest
# product at which conv2d_event_forward beat the GEMM in every vgg9 shape tried
# (tools/bench_event.py, one thread, 2026-11-24; docs/performance.md).
EVENT_CROSSOVER = 0.005


class SNNInference(NamedTuple):
    logits: np.ndarray  # U = sum_t W_L x_L[t], (N, classes)
    paths: dict  # {layer name: "dense" | "event"} as taken by this call
    spikes: dict  # {spiking layer name: total spike count of this call} (int)


def pack_snn_weights(arch: Arch, params: dict) -> dict:
    """{layer name: EventWeights} of every Conv and Linear, from params["<layer>.weight"]."""
    return {layer.name: pack_event_weights(params[f"{layer.name}.weight"])
            for layer in weight_layers(arch)}


def _dense_current(x, w, conv: Conv | None):
    """W x through the dense ops over the live channels only (x: (M, C_in, ...))."""
    axes = tuple(range(1, w.ndim))
    live_out = np.flatnonzero(np.any(w != 0, axis=axes))
    live_in = np.flatnonzero(np.any(w != 0, axis=(0,) + axes[1:]))
    if live_out.size == w.shape[0] and live_in.size == w.shape[1]:
        w_run, x_run = w, x
    else:
        w_run = np.ascontiguousarray(w[live_out][:, live_in])
        x_run = np.ascontiguousarray(x[:, live_in])
    if conv is not None:
        y_run = conv2d_forward_auto(x_run, w_run, stride=conv.stride, padding=conv.padding)
    else:
        y_run = linear_forward(x_run, w_run)
    if y_run.shape[1] == w.shape[0]:
        return y_run
    y = np.zeros((y_run.shape[0], w.shape[0]) + y_run.shape[2:], dtype=y_run.dtype)
    y[:, live_out] = y_run
    return y


def _current(layer, params, packed, x, path, taken):
    """The current of a Conv/Linear layer over the (M, ...) batch x, by the chosen path."""
    w = params[f"{layer.name}.weight"]
    ew: EventWeights = packed[layer.name]
    if ew.shape != w.shape:
        raise ValueError(f"snn_infer: packed[{layer.name!r}] packs shape {ew.shape}, but the "
                         f"weight is {w.shape}; re-run pack_snn_weights after changing params")
    if path == "auto":
        rho_x = np.count_nonzero(x) / max(1, x.size)
        path = "event" if rho_x * ew.density <= EVENT_CROSSOVER else "dense"
    taken[layer.name] = path
    conv = layer if isinstance(layer, Conv) else None
    if path == "dense":
        return _dense_current(x, w, conv)
    if conv is not None:
        return conv2d_event_forward(x, ew, stride=conv.stride, padding=conv.padding)
    return linear_event_forward(x, ew)


def snn_infer(arch: Arch, params: dict, x: np.ndarray, *, timesteps: int, path: str = "auto",
              packed: dict | None = None) -> SNNInference:
    """The SNN's logits U for images x (N, C, H, W) in evaluation mode (no dropout), without
    a tape. params as snn_forward's (weights with pruned entries exactly zero, thresholds,
    leaks); packed: pack_snn_weights(arch, params), built here when None (build it once and
    pass it when calling repeatedly). path: "auto" (per layer by measured density), "dense"
    or "event" (forced for every layer but the first). Returns SNNInference(logits, paths,
    spikes)."""
    fn = "snn_infer"
    check_choice(fn, "path", path, PATHS)
    _check_forward(fn, arch, params, x, timesteps, "heaviside", "pwl")
    if packed is None:
        packed = pack_snn_weights(arch, params)
    taken, counts = {}, {}

    def neuron(layer, current, repeat=None):
        s = lif_forward(current, threshold=params[f"{layer.name}.threshold"],
                        leak=params[f"{layer.name}.leak"], repeat=repeat).spikes
        counts[layer.name] = int(np.count_nonzero(s))
        return s

    h = x
    for layer in arch.layers:
        if isinstance(layer, Conv) and h.ndim == 4:  # the image: dense, once for every step
            taken[layer.name] = "dense"
            h = neuron(layer, _dense_current(h, params[f"{layer.name}.weight"], layer),
                       repeat=timesteps)
        elif isinstance(layer, Conv):
            h = neuron(layer, _split(_current(layer, params, packed, _merge(h), path, taken),
                                     timesteps))
        elif isinstance(layer, Pool):
            h = _split(avg_pool2d_forward(_merge(h), kernel=POOL_KERNEL), timesteps)
        elif isinstance(layer, Linear) and layer.act:
            x2 = h.reshape(h.shape[0] * h.shape[1], -1)
            h = neuron(layer, _split(_current(layer, params, packed, x2, path, taken),
                                     timesteps))
        elif isinstance(layer, Linear):  # output: U = W_L (sum_t x_L[t])
            x_sum = np.ascontiguousarray(h.sum(axis=0).reshape(h.shape[1], -1))
            h = _current(layer, params, packed, x_sum, path, taken)
        else:  # Block
            hm = _merge(h)
            s1 = neuron(layer.conv1, _split(_current(layer.conv1, params, packed, hm, path,
                                                     taken), timesteps))
            short = (_current(layer.shortcut, params, packed, hm, path, taken)
                     if layer.shortcut else hm)
            cur2 = _current(layer.conv2, params, packed, _merge(s1), path, taken) + short
            h = neuron(layer.conv2, _split(cur2, timesteps))
    return SNNInference(h, taken, counts)
