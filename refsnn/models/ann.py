"""The ANN form of every architecture: forward records a tape, backward walks it in reverse.

    logits, tape = ann_forward(arch, params, x, masks=masks)
    grads = ann_backward(grad_logits, arch, params, tape, masks=masks)

``params`` maps "<layer>.weight" to its array (SPEC section 7 names); ``masks`` maps a layer
name to its dropout mask (models.arch.draw_dropout_masks), or is None for evaluation. The tape
is a list of per-layer NamedTuples holding what the backward needs (each layer's input, or
for a conv its im2col matrix, and its post-ReLU activation); nothing is stored elsewhere.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..ops.activation import (dropout_backward, dropout_forward, flatten_forward, relu_backward,
                              relu_forward, zero_units_of)
from ..ops.conv import conv2d_backward, conv2d_forward
from ..ops.conv_relu import ConvReluOut, conv2d_relu_backward, conv2d_relu_forward
from ..ops.linear import linear_backward, linear_forward
from ..ops.pool import avg_pool2d_backward, avg_pool2d_forward
from .arch import POOL_KERNEL, Arch, Block, Conv, Linear, Pool


class ConvRecord(NamedTuple):
    layer: Conv
    x_shape: tuple  # conv input shape (N, C_in, H, W)
    out: ConvReluOut  # a = relu(conv(x)) before dropout, and im2col(x) for the backward

    @property
    def a(self):
        return self.out.y


class PoolRecord(NamedTuple):
    layer: Pool
    x_shape: tuple


class LinearRecord(NamedTuple):
    layer: Linear
    x: np.ndarray  # input, flattened to (N, n_in)
    x_shape: tuple  # shape before flattening
    a: np.ndarray  # relu(x W^T), or the logits for the output layer


class BlockRecord(NamedTuple):
    layer: Block
    x: np.ndarray  # block input
    hid: ConvReluOut  # h = relu(conv1(x)) before dropout, and im2col(x)
    h_in: np.ndarray  # conv2's input: dropout(h)
    a: np.ndarray  # relu(conv2(h_in) + shortcut(x)): the block output

    @property
    def h(self):
        return self.hid.y


def _conv(layer: Conv, params, x):
    return conv2d_forward(x, params[f"{layer.name}.weight"], stride=layer.stride,
                          padding=layer.padding)


def _conv_relu(layer: Conv, params, x) -> ConvReluOut:
    return conv2d_relu_forward(x, params[f"{layer.name}.weight"], stride=layer.stride,
                               padding=layer.padding)


def _drop(a, masks, name):
    if masks is None or name not in masks:
        return a
    return dropout_forward(a, masks[name])


def ann_forward(arch: Arch, params: dict, x: np.ndarray, *, masks: dict | None = None):
    """Logits of the ANN and the tape for ann_backward.

    x: (N, C, H, W) normalised images in the parameters' dtype -> logits (N, classes).
    Every Conv/Linear but the last is followed by ReLU, then dropout with masks[name]. A Conv
    followed by its ReLU runs as the fused conv2d_relu op (same numbers as the two ops).
    """
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(arch.in_shape):
        raise ValueError(f"ann_forward: x.shape={x.shape}, expected (N,) + {arch.in_shape} "
                         f"for {arch.name}")
    tape, h = [], x
    for layer in arch.layers:
        if isinstance(layer, Conv):
            out = _conv_relu(layer, params, h)  # relu(conv(h)), fused
            tape.append(ConvRecord(layer, h.shape, out))
            h = _drop(out.y, masks, layer.name)
        elif isinstance(layer, Pool):
            tape.append(PoolRecord(layer, h.shape))
            h = avg_pool2d_forward(h, kernel=POOL_KERNEL)
        elif isinstance(layer, Linear):
            x_shape = h.shape
            h2 = flatten_forward(h) if h.ndim > 2 else h
            z = linear_forward(h2, params[f"{layer.name}.weight"])
            a = relu_forward(z) if layer.act else z
            tape.append(LinearRecord(layer, h2, x_shape, a))
            h = _drop(a, masks, layer.name)
        else:  # Block
            hid = _conv_relu(layer.conv1, params, h)
            h_in = _drop(hid.y, masks, layer.conv1.name)
            s = _conv(layer.shortcut, params, h) if layer.shortcut else h
            a = relu_forward(_conv(layer.conv2, params, h_in) + s)
            tape.append(BlockRecord(layer, h, hid, h_in, a))
            h = a
    return h, tape


def ann_backward(grad_logits: np.ndarray, arch: Arch, params: dict, tape: list, *,
                 masks: dict | None = None, grad_acts: dict | None = None,
                 zero_units: bool = True) -> dict:
    """Gradients {"<layer>.weight": array} of a scalar loss, given dL/dlogits.

    Walks the tape in reverse: dropout (x mask), ReLU (x [a > 0]), then the conv/linear VJP;
    a Block sums the gradients of its two paths at its input. The first layer gets no input
    gradient (the images need none).

    ReLU at 0: torch's derivative 0, except on the units of a conv or linear layer whose weights
    are all zero (a filter or row that sparse learning has pruned, or just regrown at 0): their
    pre-activation is exactly 0 for every sample, and the derivative there is taken as 1, the
    right derivative. With torch's 0 such a unit gets gradient 0 for ever: channel-mode sparse
    learning (SPEC 4.2.5) could neither rank dead filters by momentum nor train a regrown one.
    A network without all-zero units gets torch's gradients, bit for bit. The ReLU after a
    Block's sum keeps torch's derivative (the shortcut makes its input nonzero).
    zero_units=False: torch's derivative 0 everywhere (for cross-checks against torch).

    grad_acts: optional {name: dL/dA} for losses on hidden activations (the AT loss of SPEC
    4.1, see models.attention_points). ``name`` is a Conv record's name ("conv3") or a Block's
    ("layer2.1"); dL/dA, shaped and typed like ConvRecord.a / BlockRecord.a, is added to the
    gradient at that post-ReLU activation *before dropout*, i.e. after undoing the dropout and
    before the ReLU mask. None (default) or {} leaves the walk unchanged, bit for bit.
    """
    if not isinstance(zero_units, (bool, np.bool_)):
        raise TypeError(f"ann_backward: zero_units must be a bool, got "
                        f"{type(zero_units).__name__} {zero_units!r}")
    if grad_acts is not None:
        _check_grad_acts(grad_acts, tape)
    grads, g = {}, grad_logits
    for i in range(len(tape) - 1, -1, -1):
        rec, first = tape[i], i == 0
        if isinstance(rec, ConvRecord):
            g = _undrop(g, masks, rec.layer.name)
            if grad_acts and rec.layer.name in grad_acts:
                g = g + grad_acts[rec.layer.name]  # dL/dA from a loss on A itself
            g = _conv_relu_back(g, rec.layer, params, rec.out, rec.x_shape, grads,
                                need_x=not first, zero_units=zero_units)
        elif isinstance(rec, PoolRecord):
            g = avg_pool2d_backward(g, rec.x_shape, kernel=POOL_KERNEL)
        elif isinstance(rec, LinearRecord):
            layer = rec.layer
            g = _undrop(g, masks, layer.name)
            if layer.act:
                g = relu_backward(g, rec.a, zero_units=_zero_units(params, layer.name,
                                                                   zero_units))
            lg = linear_backward(g, rec.x, params[f"{layer.name}.weight"], need_x=not first)
            grads[f"{layer.name}.weight"] = lg.w
            g = None if first else lg.x.reshape(rec.x_shape)
        else:
            blk = rec.layer
            if grad_acts and blk.name in grad_acts:
                g = g + grad_acts[blk.name]  # dL/dA at the block output
            g = relu_backward(g, rec.a)  # through the activation after the sum
            g_h = _conv_back(g, blk.conv2, params, rec.h_in, grads, need_x=True)
            g_h = _undrop(g_h, masks, blk.conv1.name)
            g_x = _conv_relu_back(g_h, blk.conv1, params, rec.hid, rec.x.shape, grads,
                                  need_x=not first, zero_units=zero_units)
            if blk.shortcut is not None:
                g_s = _conv_back(g, blk.shortcut, params, rec.x, grads, need_x=not first)
            else:
                g_s = g
            g = None if first else g_x + g_s
    return grads


def _check_grad_acts(grad_acts, tape):
    """Every key names a Conv/Block record of the tape; every value matches its activation."""
    if not isinstance(grad_acts, dict):
        raise TypeError(f"ann_backward: grad_acts must be a dict {{layer name: dL/dA}} or None, "
                        f"got {type(grad_acts).__name__}")
    acts = {rec.layer.name: rec.a for rec in tape if isinstance(rec, (ConvRecord, BlockRecord))}
    for name, ga in grad_acts.items():
        if name not in acts:
            raise ValueError(f"ann_backward: grad_acts[{name!r}] names no conv or block "
                             f"activation of the tape; names are {list(acts)}")
        if not isinstance(ga, np.ndarray) or ga.dtype != acts[name].dtype:
            raise TypeError(f"ann_backward: grad_acts[{name!r}] must be a numpy array of dtype "
                            f"{acts[name].dtype}, got {getattr(ga, 'dtype', type(ga).__name__)}")
        if ga.shape != acts[name].shape:
            raise ValueError(f"ann_backward: grad_acts[{name!r}].shape={ga.shape}, expected "
                             f"{acts[name].shape} (the activation's shape)")


def _undrop(g, masks, name):
    if masks is None or name not in masks:
        return g
    return dropout_backward(g, masks[name])


def _zero_units(params, name, enabled):
    """The all-zero units of a layer (see ann_backward), or None when there are none."""
    if not enabled:
        return None
    zero = zero_units_of(params[f"{name}.weight"])
    return zero if zero.any() else None


def _conv_relu_back(g, layer: Conv, params, out, x_shape, grads, *, need_x, zero_units):
    cg = conv2d_relu_backward(g, out, x_shape, params[f"{layer.name}.weight"],
                              stride=layer.stride, padding=layer.padding, need_x=need_x,
                              zero_units=_zero_units(params, layer.name, zero_units))
    grads[f"{layer.name}.weight"] = cg.w
    return cg.x


def _conv_back(g, layer: Conv, params, x, grads, *, need_x):
    cg = conv2d_backward(g, x, params[f"{layer.name}.weight"], stride=layer.stride,
                         padding=layer.padding, need_x=need_x)
    grads[f"{layer.name}.weight"] = cg.w
    return cg.x
