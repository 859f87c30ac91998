"""Architectures of SPEC section 2 as plain data: a tuple of layer records, built once.

A model is an ``Arch``: its input shape, class count and a tuple of layers, each one of

- ``Conv``:   conv (no bias) -> activation -> dropout(p)   (p = 0 when a pool follows)
- ``Pool``:   AvgPool2d(2, 2)
- ``Linear``: linear (no bias) -> activation -> dropout(p), or the output layer (act=False)
- ``Block``:  BasicBlock: conv1 -> act -> dropout -> conv2, plus shortcut (identity or a 1x1
  conv), then the activation after the sum

The ANN (models/ann.py) and the SNN walk the same records; the activation is ReLU in one and
a LIF neuron in the other. Parameter names follow SPEC section 7.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import check_choice, check_int

ARCHS = ("vgg9", "vgg11", "vgg16", "resnet12", "resnet20")

_VGG_CFG = {
    "vgg9": (64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512),
    "vgg11": (64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512),
    "vgg16": (64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512),
}
_RESNET_BLOCKS = {"resnet12": (1, 1, 1, 1), "resnet20": (2, 2, 2, 2)}


class Conv(NamedTuple):
    name: str  # parameter prefix, e.g. "conv3" or "layer2.0.conv1"
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    dropout: float  # dropout after the activation (0.0 = none)
    in_hw: tuple  # (H, W) of the input
    out_hw: tuple  # (H_out, W_out)


POOL_KERNEL = 2  # every Pool is avg_pool2d with kernel = stride = 2 (SPEC section 2)


class Pool(NamedTuple):
    in_hw: tuple
    out_hw: tuple  # (H // POOL_KERNEL, W // POOL_KERNEL): a last odd row / column is cropped


class Linear(NamedTuple):
    name: str
    n_in: int
    n_out: int
    act: bool  # False only for the output layer
    dropout: float


class Block(NamedTuple):
    name: str  # "layer{s}.{b}"
    conv1: Conv  # carries the dropout after its activation
    conv2: Conv  # its neuron is the one after the sum
    shortcut: Conv | None  # 1x1 conv with stride, or None for identity


class Arch(NamedTuple):
    name: str
    in_shape: tuple  # (C, H, W)
    classes: int
    width: float
    layers: tuple


def scaled(channels: int, width: float) -> int:
    """Channel count under the width multiplier: max(1, round(channels * width))."""
    return max(1, int(round(channels * width)))


def _conv(name, c_in, c_out, hw, *, kernel=3, stride=1, dropout=0.0):
    padding = kernel // 2
    out = ((hw[0] + 2 * padding - kernel) // stride + 1,
           (hw[1] + 2 * padding - kernel) // stride + 1)
    return Conv(name, c_in, c_out, kernel, stride, padding, dropout, hw, out)


def _pool(hw, arch_name, in_shape):
    if hw[0] < POOL_KERNEL or hw[1] < POOL_KERNEL:
        raise ValueError(
            f"build_arch: input shape {in_shape} is too small for {arch_name}: a 2x2 AvgPool "
            f"meets a {hw[0]}x{hw[1]} feature map"
        )
    return Pool(hw, (hw[0] // POOL_KERNEL, hw[1] // POOL_KERNEL))


def build_arch(name: str, *, in_shape: tuple, classes: int, width: float = 1.0,
               dropout_conv: float = 0.2, dropout_fc: float = 0.5) -> Arch:
    """The layer records of one SPEC architecture.

    in_shape = (C, H, W) of the input images; any size for which every pool sees >= 2x2.
    width scales every channel count and hidden size (scaled()). dropout_conv / dropout_fc are
    the rates after conv blocks / classifier hidden layers (SPEC: ANN 0.2 / 0.5, SNN 0.2 / 0.2).
    """
    fn = "build_arch"
    check_choice(fn, "name", name, ARCHS)
    if len(in_shape) != 3:
        raise ValueError(f"{fn}: in_shape must be (C, H, W), got {in_shape!r}")
    for d in in_shape:
        check_int(fn, "in_shape entries", d, minimum=1)
    check_int(fn, "classes", classes, minimum=2)
    if not (isinstance(width, (int, float)) and 0 < width <= 64):
        raise ValueError(f"{fn}: width must be a number in (0, 64], got {width!r}")
    in_shape = tuple(int(d) for d in in_shape)
    if name.startswith("vgg"):
        layers = _vgg_layers(name, in_shape, classes, width, dropout_conv, dropout_fc)
    else:
        layers = _resnet_layers(name, in_shape, classes, width, dropout_conv)
    return Arch(name, in_shape, int(classes), float(width), tuple(layers))


def _vgg_layers(name, in_shape, classes, width, p_conv, p_fc):
    cfg = _VGG_CFG[name]
    layers, c, hw, k = [], in_shape[0], in_shape[1:], 0
    for i, item in enumerate(cfg):
        if item == "A":
            layers.append(_pool(hw, name, in_shape))
            hw = layers[-1].out_hw
            continue
        k += 1
        next_is_pool = i + 1 < len(cfg) and cfg[i + 1] == "A"
        c_out = scaled(item, width)
        layers.append(_conv(f"conv{k}", c, c_out, hw, dropout=0.0 if next_is_pool else p_conv))
        c = c_out
    hidden = scaled(4096, width)
    n_in = c * hw[0] * hw[1]
    layers += [
        Linear("fc1", n_in, hidden, True, p_fc),
        Linear("fc2", hidden, hidden, True, p_fc),
        Linear("fc3", hidden, classes, False, 0.0),
    ]
    return layers


def _resnet_layers(name, in_shape, classes, width, p_conv):
    c64 = scaled(64, width)
    hw = in_shape[1:]
    layers = [
        _conv("stem.conv1", in_shape[0], c64, hw, dropout=p_conv),
        _conv("stem.conv2", c64, c64, hw, dropout=p_conv),
        _conv("stem.conv3", c64, c64, hw, dropout=0.0),  # a pool follows
    ]
    layers.append(_pool(hw, name, in_shape))
    hw, c = layers[-1].out_hw, c64
    for s, (blocks, base, stride0) in enumerate(zip(_RESNET_BLOCKS[name], (64, 128, 256, 512),
                                                   (1, 2, 2, 2)), start=1):
        c_out = scaled(base, width)
        for b in range(blocks):
            stride = stride0 if b == 0 else 1
            prefix = f"layer{s}.{b}"
            conv1 = _conv(f"{prefix}.conv1", c, c_out, hw, stride=stride, dropout=p_conv)
            conv2 = _conv(f"{prefix}.conv2", c_out, c_out, conv1.out_hw)
            shortcut = None
            if stride != 1 or c != c_out:
                shortcut = _conv(f"{prefix}.shortcut", c, c_out, hw, kernel=1, stride=stride)
            layers.append(Block(prefix, conv1, conv2, shortcut))
            hw, c = conv1.out_hw, c_out
    layers.append(Linear("fc", c * hw[0] * hw[1], classes, False, 0.0))
    return layers


def weight_layers(arch: Arch) -> list:
    """Every Conv and Linear record in network order (a Block gives conv1, conv2, shortcut)."""
    out = []
    for layer in arch.layers:
        if isinstance(layer, Block):
            out += [layer.conv1, layer.conv2] + ([layer.shortcut] if layer.shortcut else [])
        elif isinstance(layer, (Conv, Linear)):
            out.append(layer)
    return out


def weight_shape(layer) -> tuple:
    """OIHW for a Conv, (out, in) for a Linear."""
    if isinstance(layer, Conv):
        return (layer.c_out, layer.c_in, layer.kernel, layer.kernel)
    return (layer.n_out, layer.n_in)


def param_shapes(arch: Arch) -> dict:
    """{"<layer>.weight": shape} for every weight layer, in network order."""
    return {f"{layer.name}.weight": weight_shape(layer) for layer in weight_layers(arch)}


def init_params(arch: Arch, rng: np.random.Generator, dtype=np.float32) -> dict:
    """SPEC weight init: conv N(0, sqrt(2 / (k*k*C_out))), linear N(0, 0.01).

    Draws in network order, one rng.standard_normal(shape) (float64) per layer, then scales and
    casts; so the same seed gives the same weights in float32 and float64 (up to rounding).
    """
    params = {}
    for layer in weight_layers(arch):
        z = rng.standard_normal(weight_shape(layer))
        if isinstance(layer, Conv):
            std = np.sqrt(2.0 / (layer.kernel * layer.kernel * layer.c_out))
        else:
            std = 0.01
        params[f"{layer.name}.weight"] = (z * std).astype(dtype)
    return params


def dropout_layers(arch: Arch) -> list:
    """(name, p) of every dropout in network order; the mask shape is that layer's output."""
    out = []
    for layer in arch.layers:
        conv = layer.conv1 if isinstance(layer, Block) else layer
        if isinstance(conv, (Conv, Linear)) and conv.dropout > 0:
            out.append((conv.name, conv.dropout))
    return out


def output_shape(layer, n: int) -> tuple:
    """The activation shape (N, ...) after a Conv or Linear record."""
    if isinstance(layer, Conv):
        return (n, layer.c_out) + tuple(layer.out_hw)
    return (n, layer.n_out)


def find_layer(arch: Arch, name: str):
    """The Conv/Linear record called ``name`` (ValueError listing the names if absent)."""
    for layer in weight_layers(arch):
        if layer.name == name:
            return layer
    names = [layer.name for layer in weight_layers(arch)]
    raise ValueError(f"find_layer: no layer {name!r} in {arch.name}; layers are {names}")


def draw_dropout_masks(arch: Arch, n: int, rng: np.random.Generator, dtype) -> dict:
    """One inverted-dropout mask per dropout layer, drawn in network order (ops.dropout_mask)."""
    from ..ops.activation import dropout_mask

    return {name: dropout_mask(output_shape(find_layer(arch, name), n), p, rng, dtype)
            for name, p in dropout_layers(arch)}
