"""Channel-pruned networks executed physically smaller: drop the dead channels, compute, scatter.

With channel-mode masks frozen (stage D, ``--prune channel``), a dead filter's output is 0 on
every sample and step: its neuron never spikes (membrane 0 < threshold), and every gradient
term it contributes is exactly 0 (surrogate 0 at u = 0, s = 0; SPEC 5.2-5.3). So the network
with those channels removed, on both sides (the filter, and the next layer's matching input
channel), computes the same logits, spikes and gradients, in fewer operations:

    plan = channel_plan(arch, masks)            # which channels each activation keeps
    small = compact_arch(arch, plan)            # the same network with fewer channels
    p_small = gather_params(arch, plan, params) # W[kept out][:, kept in]; neurons as they are
    grads = scatter_grads(arch, plan, g_small)  # full-shape gradients, 0 on removed entries
    drop = gather_dropout(arch, plan, drop)     # full-shape dropout masks -> kept channels

Kept channels (the liveness of refsnn.prune.channel, by activation):
- the image's channels are all kept; a conv's output keeps its alive filters (any live weight);
  pooling and dropout keep the channels of their input;
- a residual stream (activations joined by identity shortcuts: a block's input and output)
  keeps one set, the union of the alive filters of every conv writing into it (a stem or
  1x1-shortcut conv starting it, and each block's conv2), so the identity sum adds matching
  channels. Kept filters that are dead (alive elsewhere in the stream) stay as zero rows;
- an activation that would keep nothing keeps its channel 0 (a zero filter): no empty arrays;
- the first linear's input features of a kept channel c are c*H*W ... c*H*W + H*W - 1; linear
  outputs are never removed (linear rows are pruned weight by weight).
Only the numbers' summation order changes (BLAS on other shapes): equal to rounding, tested
against the full network. Stage snn uses it with frozen channel masks (``--snn-channels``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..metrics import live_weights
from ..models.arch import Arch, Block, Conv, Linear, Pool, weight_layers

__all__ = ["ChannelPlan", "channel_plan", "compact_arch", "gather_dropout", "gather_params",
           "scatter_grads"]


class ChannelPlan(NamedTuple):
    """Kept indices per weight layer: ``out[name]`` its kept output channels (conv) or None
    (linear: all), ``inp[name]`` its kept input channels (conv) / features (first linear), or
    None (all). Sorted int64 arrays."""
    out: dict
    inp: dict

    def removes_anything(self, arch: Arch) -> bool:
        """True when some weight layer loses an input or output channel."""
        for layer in weight_layers(arch):
            for kept, n in ((self.out[layer.name], _n_out(layer)),
                            (self.inp[layer.name], _n_in(layer))):
                if kept is not None and kept.size < n:
                    return True
        return False


def _n_out(layer):
    return layer.c_out if isinstance(layer, Conv) else layer.n_out


def _n_in(layer):
    return layer.c_in if isinstance(layer, Conv) else layer.n_in


def channel_plan(arch: Arch, masks: dict) -> ChannelPlan:
    """The kept channels of every layer (module doc). masks: ``mask.<layer>.weight`` (or the
    weights: W != 0 decides, as metrics.live_weights)."""
    live = live_weights(arch, masks)
    # activation nodes: 0 is the image; every conv output is a node, except that a block
    # with an identity shortcut writes into its input's node (one residual stream)
    writers = [[]]  # writers[node]: the convs whose outputs land in node
    edges = {}  # conv name -> (input node, output node)
    cur = 0

    def node(*convs):
        writers.append(list(convs))
        return len(writers) - 1

    for layer in arch.layers:
        if isinstance(layer, Conv):
            edges[layer.name] = (cur, node(layer))
            cur = edges[layer.name][1]
        elif isinstance(layer, Block):
            inner = node(layer.conv1)
            if layer.shortcut is None:
                out = cur
                writers[out].append(layer.conv2)
            else:
                out = node(layer.conv2, layer.shortcut)
                edges[layer.shortcut.name] = (cur, out)
            edges[layer.conv1.name], edges[layer.conv2.name] = (cur, inner), (inner, out)
            cur = out
    keep = [np.arange(arch.in_shape[0], dtype=np.int64)]
    for convs in writers[1:]:
        alive = np.zeros(convs[0].c_out, dtype=bool)
        for conv in convs:
            alive |= live[conv.name].reshape(conv.c_out, -1).any(axis=1)
        idx = np.flatnonzero(alive).astype(np.int64)
        keep.append(idx if idx.size else np.zeros(1, dtype=np.int64))
    out, inp = {}, {}
    for name, (i, o) in edges.items():
        out[name], inp[name] = keep[o], keep[i]
    hw, first = tuple(arch.in_shape[1:]), True
    for layer in arch.layers:
        if isinstance(layer, (Conv, Pool)):
            hw = layer.out_hw
        elif isinstance(layer, Block):
            hw = layer.conv2.out_hw
        else:  # Linear: the first reads the last activation channel-major (C, H, W)
            out[layer.name], inp[layer.name] = None, None
            if first:
                per = hw[0] * hw[1]
                inp[layer.name] = (keep[cur][:, None] * per
                                   + np.arange(per)[None, :]).reshape(-1).astype(np.int64)
                first = False
    return ChannelPlan(out, inp)


def _check_plan(fn: str, arch: Arch, plan) -> None:
    """A ChannelPlan made for ``arch`` (channel_plan), else a TypeError / ValueError."""
    if not isinstance(plan, ChannelPlan):
        raise TypeError(f"{fn}: plan must be a ChannelPlan (channel_plan(arch, masks)), got "
                        f"{type(plan).__name__}")
    for layer in weight_layers(arch):
        if layer.name not in plan.out or layer.name not in plan.inp:
            raise ValueError(f"{fn}: plan has no entry for layer {layer.name!r}: it was made "
                             f"for another architecture than {arch.name}")
        for kept, n, side in ((plan.out[layer.name], _n_out(layer), "output"),
                              (plan.inp[layer.name], _n_in(layer), "input")):
            if kept is not None and (kept.size == 0 or kept[-1] >= n):
                raise ValueError(f"{fn}: plan keeps {side} indices {kept[:3]}... of layer "
                                 f"{layer.name!r}, which has {n}: made for another network")


def compact_arch(arch: Arch, plan: ChannelPlan) -> Arch:
    """The same layers with the kept channel counts (names, kernels, strides, dropout and
    spatial sizes unchanged)."""
    _check_plan("compact_arch", arch, plan)

    def conv(c):
        return c._replace(c_in=plan.inp[c.name].size, c_out=plan.out[c.name].size)

    layers = []
    for layer in arch.layers:
        if isinstance(layer, Conv):
            layers.append(conv(layer))
        elif isinstance(layer, Block):
            layers.append(layer._replace(
                conv1=conv(layer.conv1), conv2=conv(layer.conv2),
                shortcut=None if layer.shortcut is None else conv(layer.shortcut)))
        elif isinstance(layer, Linear) and plan.inp[layer.name] is not None:
            layers.append(layer._replace(n_in=plan.inp[layer.name].size))
        else:
            layers.append(layer)
    return arch._replace(layers=tuple(layers))


def _index(plan, layer):
    """The index tuple that selects a layer's kept block of its weight."""
    o, i = plan.out[layer.name], plan.inp[layer.name]
    if isinstance(layer, Conv):
        return np.ix_(o, i)  # first two axes of (O, I, kH, kW)
    return (slice(None), i) if i is not None else (slice(None), slice(None))


def gather_params(arch: Arch, plan: ChannelPlan, params: dict) -> dict:
    """{name: array} for compact_arch(arch, plan): each weight's kept block (a new contiguous
    array), every other entry (thresholds, leaks) the same object. Keys not of a weight layer
    (e.g. masks) are left out."""
    _check_plan("gather_params", arch, plan)
    out = {}
    layers = {f"{layer.name}.weight": layer for layer in weight_layers(arch)}
    for key, value in params.items():
        if key in layers:
            out[key] = np.ascontiguousarray(value[_index(plan, layers[key])])
        elif key.endswith((".threshold", ".leak")):
            out[key] = value
    return out


def scatter_grads(arch: Arch, plan: ChannelPlan, grads: dict, shapes: dict) -> dict:
    """Full-shape gradients from the compact network's: each weight's kept block written into
    zeros of ``shapes[key]`` (the removed entries' true gradient is 0), others passed on."""
    _check_plan("scatter_grads", arch, plan)
    out = {}
    layers = {f"{layer.name}.weight": layer for layer in weight_layers(arch)}
    for key, g in grads.items():
        if key in layers:
            full = np.zeros(shapes[key], dtype=g.dtype)
            full[_index(plan, layers[key])] = g
            out[key] = full
        else:
            out[key] = g
    return out


def gather_dropout(arch: Arch, plan: ChannelPlan, masks: dict | None) -> dict | None:
    """Dropout masks drawn for the full network (models.arch.draw_dropout_masks), cut to the
    kept channels of conv outputs, so the compact network sees the same random stream."""
    if masks is None:
        return None
    convs = {c.name: c for c in weight_layers(arch) if isinstance(c, Conv)}
    return {name: (np.ascontiguousarray(m[:, plan.out[name]]) if name in convs else m)
            for name, m in masks.items()}
