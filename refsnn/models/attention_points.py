"""The attention points I of SPEC 4.1: which activations the AT loss compares, and pulling them.

    VGG:    the activation that feeds each AvgPool (the post-ReLU output of the conv right before
            the pool), plus the last conv's activation.
    ResNet: the stem output, taken *before* the stem's AvgPool (the post-ReLU output of
            stem.conv3: the activation that feeds the pool, as for VGG), and each stage's output
            (the last block of each stage, its post-sum ReLU output).

Every point is a post-ReLU activation *before dropout* (ConvRecord.a / BlockRecord.a of an
ann_forward tape). Points are named like the records: a Conv by its name ("conv3",
"stem.conv3"), a Block by its name ("layer2.1"); ann_backward(..., grad_acts={name: dL/dA})
takes extra gradients at exactly these activations. Stage B, for one batch:

    logits, tape = ann_forward(arch, params, x, masks=masks)
    acts = attention_activations(arch, tape)
    a_s = [attention_map_forward(A) for A in acts]            # a_m likewise from the meta-model
    loss = cross_entropy_forward(logits, y) + at_loss_forward(a_s, a_m, beta=beta)
    g_a = at_loss_backward(a_s, a_m, beta=beta)
    grad_acts = {name: attention_map_backward(g, A)
                 for name, g, A in zip(attention_layers(arch), g_a, acts)}
    grads = ann_backward(cross_entropy_backward(1.0, logits, y), arch, params, tape,
                         masks=masks, grad_acts=grad_acts)
"""

from __future__ import annotations

from .ann import BlockRecord, ConvRecord
from .arch import Arch, Block, Conv, Pool


def attention_layers(arch: Arch) -> list:
    """Names of the attention points of ``arch`` in network order (see the module docstring).

    vgg9 -> ["conv1", "conv3", "conv5", "conv6", "conv7"];
    resnet12 -> ["stem.conv3", "layer1.0", "layer2.0", "layer3.0", "layer4.0"].
    """
    if not isinstance(arch, Arch):
        raise TypeError(f"attention_layers: arch must be an Arch (models.arch.build_arch), got "
                        f"{type(arch).__name__}")
    layers = arch.layers
    names = []
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Conv) and isinstance(nxt, Pool):
            names.append(layer.name)  # feeds an AvgPool (VGG, and the ResNet stem)
        elif isinstance(layer, Block):
            stage = layer.name.split(".")[0]
            if not (isinstance(nxt, Block) and nxt.name.split(".")[0] == stage):
                names.append(layer.name)  # the last block of its stage
    if not any(isinstance(layer, Block) for layer in layers):
        last_conv = [layer.name for layer in layers if isinstance(layer, Conv)][-1]
        if last_conv not in names:
            names.append(last_conv)  # VGG: plus the last conv
    return names


def attention_activations(arch: Arch, tape: list) -> list:
    """The activations at attention_layers(arch), pulled from an ann_forward tape, in that order.

    Each is the post-ReLU activation before dropout, (N, C, H, W): ConvRecord.a or BlockRecord.a
    (the arrays of the tape, not copies).
    """
    names = attention_layers(arch)
    found = {}
    for rec in tape:
        if isinstance(rec, (ConvRecord, BlockRecord)) and rec.layer.name in names:
            found[rec.layer.name] = rec.a
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"attention_activations: the tape has no record for {missing} of "
                         f"{arch.name}'s attention points {names}; pass the tape of "
                         f"ann_forward(arch, ...) for this arch")
    return [found[n] for n in names]
