"""Architectures (refsnn/models/arch.py) against SPEC sections 2 and 7: names, shapes, width
multiplier, dropout placement, initialisation and errors.

Expected values are written out from the SPEC tables here, not computed from refsnn's config.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from refsnn.models.arch import (Block, Conv, Linear, Pool, build_arch, draw_dropout_masks,
                                init_params, param_shapes, weight_layers)

CIFAR = (3, 32, 32)
TINY_IMAGENET = (3, 64, 64)


def _convs(arch):
    return [layer for layer in arch.layers if isinstance(layer, Conv)]


# VGG ----------------------------------------------------------------------------------------

def _vgg_expected(channels, fc_in, classes, hidden=4096, in_c=3):
    """param_shapes as SPEC 7 names them, from a list of conv output channels."""
    out, c = {}, in_c
    for i, c_out in enumerate(channels, start=1):
        out[f"conv{i}.weight"] = (c_out, c, 3, 3)
        c = c_out
    out["fc1.weight"] = (hidden, fc_in)
    out["fc2.weight"] = (hidden, hidden)
    out["fc3.weight"] = (classes, hidden)
    return out


def test_vgg9_cifar_names_and_shapes():
    arch = build_arch("vgg9", in_shape=CIFAR, classes=10)
    expected = _vgg_expected([64, 128, 256, 256, 512, 512, 512], fc_in=2048, classes=10)
    shapes = param_shapes(arch)
    assert list(shapes) == list(expected), "names or network order differ from SPEC 7"
    assert shapes == expected
    # layer order: 64, A, 128, 256, A, 256, 512, A, 512, A, 512, then the classifier
    kinds = ["A" if isinstance(layer, Pool) else getattr(layer, "c_out", None) or layer.name
             for layer in arch.layers]
    assert kinds == [64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512, "fc1", "fc2", "fc3"]
    assert all((c.kernel, c.stride, c.padding) == (3, 1, 1) for c in _convs(arch))


def test_vgg11_cifar_names_and_shapes():
    """SPEC's vgg11 row has three pools (64, A, 128, 256, A, 512, 512, 512, A, 512, 512), so at
    32x32 the last map is 4x4 and fc1 takes 512*4*4 = 8192 (SPEC quotes 2048 only for vgg9 and
    vgg16)."""
    arch = build_arch("vgg11", in_shape=CIFAR, classes=100)
    expected = _vgg_expected([64, 128, 256, 512, 512, 512, 512, 512], fc_in=8192, classes=100)
    assert param_shapes(arch) == expected and list(param_shapes(arch)) == list(expected)


@pytest.mark.parametrize("in_shape, fc_in", [(TINY_IMAGENET, 8192), (CIFAR, 2048)])
def test_vgg16_fc1_input_follows_resolution(in_shape, fc_in):
    arch = build_arch("vgg16", in_shape=in_shape, classes=200)
    expected = _vgg_expected([64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
                             fc_in=fc_in, classes=200)
    assert param_shapes(arch) == expected and list(param_shapes(arch)) == list(expected)
    assert sum(isinstance(layer, Pool) for layer in arch.layers) == 4


def test_vgg_non_square_input():
    """3x16x20 through vgg9's four pools: 16x20 -> 8x10 -> 4x5 -> 2x2 -> 1x1."""
    arch = build_arch("vgg9", in_shape=(3, 16, 20), classes=3)
    pools = [layer for layer in arch.layers if isinstance(layer, Pool)]
    assert [p.in_hw for p in pools] == [(16, 20), (8, 10), (4, 5), (2, 2)]
    assert [p.out_hw for p in pools] == [(8, 10), (4, 5), (2, 2), (1, 1)]
    assert param_shapes(arch)["fc1.weight"] == (4096, 512)


# ResNet -------------------------------------------------------------------------------------

def _resnet_expected(blocks, classes, fc_in=512 * 2 * 2):
    out = {"stem.conv1.weight": (64, 3, 3, 3), "stem.conv2.weight": (64, 64, 3, 3),
           "stem.conv3.weight": (64, 64, 3, 3)}
    c = 64
    for s, (n_blocks, c_out) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for b in range(n_blocks):
            out[f"layer{s}.{b}.conv1.weight"] = (c_out, c, 3, 3)
            out[f"layer{s}.{b}.conv2.weight"] = (c_out, c_out, 3, 3)
            if b == 0 and s > 1:  # stride 2 and new width: 1x1 conv shortcut
                out[f"layer{s}.{b}.shortcut.weight"] = (c_out, c, 1, 1)
            c = c_out
    out["fc.weight"] = (classes, fc_in)
    return out


@pytest.mark.parametrize("name, blocks", [("resnet12", (1, 1, 1, 1)), ("resnet20", (2, 2, 2, 2))])
def test_resnet_cifar_names_and_shapes(name, blocks):
    arch = build_arch(name, in_shape=CIFAR, classes=10)
    expected = _resnet_expected(blocks, 10)
    shapes = param_shapes(arch)
    assert list(shapes) == list(expected), (list(shapes), list(expected))
    assert shapes == expected


@pytest.mark.parametrize("name", ["resnet12", "resnet20"])
def test_resnet_strides_and_spatial_sizes(name):
    """Stem at 32x32, pool to 16x16, stages at strides 1/2/2/2: 16, 8, 4, 2."""
    arch = build_arch(name, in_shape=CIFAR, classes=10)
    stem = [layer for layer in arch.layers if isinstance(layer, Conv)]
    assert [c.name for c in stem] == ["stem.conv1", "stem.conv2", "stem.conv3"]
    assert all(c.in_hw == (32, 32) and c.stride == 1 for c in stem)
    blocks = [layer for layer in arch.layers if isinstance(layer, Block)]
    for blk in blocks:
        s = int(blk.name[len("layer")])
        first = blk.name.endswith(".0")
        assert blk.conv1.stride == (2 if first and s > 1 else 1), blk.name
        assert blk.conv2.stride == 1 and blk.conv1.kernel == blk.conv2.kernel == 3
        assert blk.conv1.out_hw == (32 >> s, 32 >> s), (blk.name, blk.conv1.out_hw)
        if blk.shortcut is not None:
            assert (blk.shortcut.kernel, blk.shortcut.stride, blk.shortcut.padding) == (1, 2, 0)
            assert blk.shortcut.out_hw == blk.conv1.out_hw
    assert isinstance(arch.layers[-1], Linear) and arch.layers[-1].n_in == 512 * 2 * 2
    assert not arch.layers[-1].act


# Width multiplier ---------------------------------------------------------------------------

@pytest.mark.parametrize("width", [0.5, 0.25, 1 / 16])
def test_width_scales_every_channel_and_hidden_size(width):
    vgg = param_shapes(build_arch("vgg9", in_shape=CIFAR, classes=10, width=width))
    full = param_shapes(build_arch("vgg9", in_shape=CIFAR, classes=10))
    for k, shape in full.items():
        got = vgg[k]
        if k.startswith("conv"):
            c_in = 3 if k == "conv1.weight" else round(shape[1] * width)
            assert got == (round(shape[0] * width), c_in, 3, 3), (k, got)
    hidden = round(4096 * width)
    assert vgg["fc1.weight"] == (hidden, round(512 * width) * 4)
    assert vgg["fc2.weight"] == (hidden, hidden) and vgg["fc3.weight"] == (10, hidden)
    res = param_shapes(build_arch("resnet12", in_shape=CIFAR, classes=10, width=width))
    assert res["stem.conv1.weight"] == (round(64 * width), 3, 3, 3)
    assert res["layer4.0.shortcut.weight"] == (round(512 * width), round(256 * width), 1, 1)
    assert res["fc.weight"] == (10, round(512 * width) * 4)


def test_width_never_drops_below_one_channel():
    shapes = param_shapes(build_arch("vgg9", in_shape=CIFAR, classes=10, width=1 / 128))
    assert shapes["conv1.weight"] == (1, 3, 3, 3)
    assert all(min(s) >= 1 for s in shapes.values())


# Dropout placement --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vgg9", "vgg11", "vgg16"])
def test_vgg_dropout_placement(name):
    """Conv blocks carry dropout_conv, except right before a pool; fc1, fc2 carry dropout_fc;
    fc3 (the output) none."""
    arch = build_arch(name, in_shape=CIFAR, classes=10, dropout_conv=0.2, dropout_fc=0.5)
    layers = arch.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv):
            before_pool = isinstance(layers[i + 1], Pool)
            assert layer.dropout == (0.0 if before_pool else 0.2), (layer.name, layer.dropout)
    fcs = {layer.name: layer for layer in layers if isinstance(layer, Linear)}
    assert (fcs["fc1"].dropout, fcs["fc2"].dropout, fcs["fc3"].dropout) == (0.5, 0.5, 0.0)
    assert fcs["fc1"].act and fcs["fc2"].act and not fcs["fc3"].act


def test_resnet_dropout_placement():
    arch = build_arch("resnet20", in_shape=CIFAR, classes=10, dropout_conv=0.3)
    layers = arch.layers
    stem = {layer.name: layer.dropout for layer in layers if isinstance(layer, Conv)}
    assert stem == {"stem.conv1": 0.3, "stem.conv2": 0.3, "stem.conv3": 0.0}  # conv3: pool next
    assert isinstance(layers[3], Pool)
    for blk in (layer for layer in layers if isinstance(layer, Block)):
        assert blk.conv1.dropout == 0.3  # conv1 -> act -> dropout -> conv2
        assert blk.conv2.dropout == 0.0
        assert blk.shortcut is None or blk.shortcut.dropout == 0.0
    assert layers[-1].dropout == 0.0


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_no_dropout_directly_before_a_pool(name):
    arch = build_arch(name, in_shape=CIFAR, classes=10, dropout_conv=0.4, dropout_fc=0.4)
    for a, b in zip(arch.layers, arch.layers[1:]):
        if isinstance(b, Pool):
            last = a.conv2 if isinstance(a, Block) else a
            assert last.dropout == 0.0, f"dropout {last.dropout} on {last.name} before a pool"


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_draw_dropout_masks_shapes_and_values(name):
    arch = build_arch(name, in_shape=(3, 16, 20), classes=3, width=1 / 16,
                      dropout_conv=0.2, dropout_fc=0.5)
    masks = draw_dropout_masks(arch, 2, np.random.default_rng(0), np.float64)
    by_name = {layer.name: layer for layer in weight_layers(arch)}
    expected_names = [layer.name for layer in weight_layers(arch) if layer.dropout > 0]
    assert list(masks) == expected_names
    for k, m in masks.items():
        layer = by_name[k]
        shape = ((2, layer.c_out) + tuple(layer.out_hw) if isinstance(layer, Conv)
                 else (2, layer.n_out))
        assert m.shape == shape and m.dtype == np.float64, (k, m.shape)
        assert set(np.unique(m).tolist()) <= {0.0, 1.0 / (1.0 - layer.dropout)}, k
    again = draw_dropout_masks(arch, 2, np.random.default_rng(0), np.float64)
    assert all(np.array_equal(masks[k], again[k]) for k in masks)


def test_zero_dropout_rates_give_no_masks():
    arch = build_arch("vgg9", in_shape=CIFAR, classes=10, width=1 / 16, dropout_conv=0.0,
                      dropout_fc=0.0)
    assert draw_dropout_masks(arch, 2, np.random.default_rng(0), np.float32) == {}


# Initialisation -----------------------------------------------------------------------------

def test_init_std_matches_spec():
    """conv ~ N(0, sqrt(2 / (k*k*C_out))), linear ~ N(0, 0.01).

    Tolerance: the sample std of n normal draws has relative standard error ~1/sqrt(2n); allow
    5 of those (and 5 standard errors of the mean, std/sqrt(n), for the mean). Width 0.25 keeps
    it fast (conv1 has 432 weights: +-17 %; fc2 1M weights: +-0.35 %). Fixed seed: no flakes.
    """
    arch = build_arch("resnet12", in_shape=CIFAR, classes=10, width=0.25)
    vgg = build_arch("vgg9", in_shape=CIFAR, classes=10, width=0.25)
    for a in (arch, vgg):
        params = init_params(a, np.random.default_rng(0), np.float64)
        for layer in weight_layers(a):
            w = params[f"{layer.name}.weight"]
            if isinstance(layer, Conv):
                std = math.sqrt(2.0 / (layer.kernel * layer.kernel * layer.c_out))
            else:
                std = 0.01
            n = w.size
            assert abs(w.std() / std - 1) <= 5 / math.sqrt(2 * n), (layer.name, w.std(), std)
            assert abs(w.mean()) <= 5 * std / math.sqrt(n), (layer.name, w.mean())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_params_dtype_and_seed(dtype):
    arch = build_arch("vgg9", in_shape=CIFAR, classes=10, width=1 / 16)
    a = init_params(arch, np.random.default_rng(3), dtype)
    b = init_params(arch, np.random.default_rng(3), dtype)
    assert list(a) == list(param_shapes(arch))
    for k, shape in param_shapes(arch).items():
        assert a[k].shape == shape and a[k].dtype == dtype
        assert np.array_equal(a[k], b[k])
    # the docstring's promise: same seed -> same weights in float32 and float64 up to rounding
    c = init_params(arch, np.random.default_rng(3), np.float64)
    assert all(np.array_equal(a[k], c[k].astype(dtype)) for k in a)


# Errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, in_shape", [
    ("vgg9", (3, 8, 8)),  # 4 pools need >= 16x16
    ("vgg9", (3, 32, 15)),  # the short side decides
    ("vgg16", (3, 15, 15)),
    ("resnet12", (3, 1, 1)),  # the stem pool needs >= 2x2
])
def test_too_small_inputs_are_rejected(name, in_shape):
    with pytest.raises(ValueError, match=rf"build_arch: input shape {re.escape(str(in_shape))} "
                                         rf"is too small for {name}"):
        build_arch(name, in_shape=in_shape, classes=10)


def test_unknown_arch_and_bad_arguments():
    with pytest.raises(ValueError, match=r"build_arch: name must be one of \('vgg9', 'vgg11', "
                                         r"'vgg16', 'resnet12', 'resnet20'\), got 'vgg13'"):
        build_arch("vgg13", in_shape=CIFAR, classes=10)
    with pytest.raises(ValueError, match=r"build_arch: in_shape must be \(C, H, W\)"):
        build_arch("vgg9", in_shape=(32, 32), classes=10)
    with pytest.raises(ValueError, match=r"build_arch: classes must be >= 2, got 1"):
        build_arch("vgg9", in_shape=CIFAR, classes=1)
    with pytest.raises(ValueError, match=r"build_arch: width must be a number in \(0, 64\]"):
        build_arch("vgg9", in_shape=CIFAR, classes=10, width=0)
    with pytest.raises(TypeError, match=r"build_arch: in_shape entries must be an int"):
        build_arch("vgg9", in_shape=(3, 32.0, 32), classes=10)
