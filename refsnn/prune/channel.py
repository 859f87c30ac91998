"""Channel mode (SPEC 4.2.5): a dead conv filter is a dead input channel of the next layer.

Liveness follows refsnn.metrics (module doc, "Channel mode"), which defines it for the
channel FLOP count; this module lists the indices instead of counting them:
- a conv filter (output channel) is alive iff any of its weights is live
  (metrics.live_weights: the mask if given, else W != 0);
- the image channels are alive; pooling and dropout keep a channel's liveness;
- a Block's output channel is alive iff conv2's filter or the shortcut's channel is: the 1x1
  shortcut conv's filter, or for the identity shortcut the block input's channel. So it is dead
  only if both paths are dead (conv2's filter and the shortcut's path);
- the first Linear after the convs reads the last activation flattened channel-major
  (C, H, W): channel c owns input features c*H*W ... (c+1)*H*W - 1. Later linears have no dead
  inputs (linear rows are pruned weight by weight, never as units).
"""

from __future__ import annotations

import numpy as np

from ..metrics import live_weights
from ..models.arch import Arch, Block, Conv, Linear, Pool

__all__ = ["dead_input_channels"]


def dead_input_channels(arch: Arch, masks: dict) -> dict:
    """{layer: int64 array of its dead input indices, ascending} for every conv and linear.

    Conv: input channels c in [0, C_in) whose channel is dead (see the module doc). First
    Linear after the convs: input features c*H*W + j (0 <= j < H*W) of every dead channel c,
    H, W the spatial size after the last pool. Other linears, and the first conv: empty.
    masks: "mask.<layer>.weight" for every layer (or "<layer>.weight": then W != 0 decides,
    as in metrics.live_weights). Keys in network order (weight_layers(arch)).
    """
    live = live_weights(arch, masks)

    def filters(conv):  # alive per output channel
        return live[conv.name].reshape(conv.c_out, -1).any(axis=1)

    out = {}
    alive = np.ones(arch.in_shape[0], dtype=bool)  # channels of the current activation
    hw = arch.in_shape[1:]
    for layer in arch.layers:
        if isinstance(layer, Conv):
            out[layer.name] = np.flatnonzero(~alive)
            alive, hw = filters(layer), layer.out_hw
        elif isinstance(layer, Pool):
            hw = layer.out_hw
        elif isinstance(layer, Block):
            out[layer.conv1.name] = np.flatnonzero(~alive)
            a1 = filters(layer.conv1)
            out[layer.conv2.name] = np.flatnonzero(~a1)
            if layer.shortcut:
                out[layer.shortcut.name] = np.flatnonzero(~alive)
                a_s = filters(layer.shortcut)
            else:
                a_s = alive
            # dead only if conv2's filter and the shortcut path are both dead
            alive, hw = filters(layer.conv2) | a_s, layer.conv2.out_hw
        elif isinstance(layer, Linear):
            if alive is not None:  # the first linear: channel-major C*H*W features
                per = hw[0] * hw[1]
                dead = np.flatnonzero(~alive)
                out[layer.name] = (dead[:, None] * per + np.arange(per)[None, :]).reshape(-1)
                alive = None
            else:
                out[layer.name] = np.zeros(0, dtype=np.int64)
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
