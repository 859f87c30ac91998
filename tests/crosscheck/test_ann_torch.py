"""refsnn's ANN against the same network written in torch.nn.functional from SPEC section 2.

The torch side is written here from the SPEC text (its own layer tables, dropout rule and
shortcut rule), and shares only the parameter names of SPEC 7 and the dropout masks with
refsnn: dropout is ``h * mask`` with refsnn's inverted-dropout mask (equal to F.dropout given
the same keep pattern). Logits, loss and every weight gradient (torch autograd vs ann_backward)
must agree to rtol 1e-10 in float64; float32 to torch's float32 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from refsnn.models.ann import ann_backward, ann_forward
from refsnn.models.arch import build_arch, draw_dropout_masks, init_params
from refsnn.ops import winograd
from refsnn.ops.loss import cross_entropy_backward, cross_entropy_forward
from tolerances import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = [pytest.mark.crosscheck, pytest.mark.usefixtures("numba_one_thread")]

IN_SHAPE = (3, 16, 20)  # non-square; vgg9's four pools take it to 1x1
N, CLASSES, WIDTH = 2, 3, 1 / 16

# SPEC 2, transcribed: conv widths and 'A' = AvgPool2d(2, 2)
SPEC_VGG = {"vgg9": (64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512)}
SPEC_RESNET_BLOCKS = {"resnet12": (1, 1, 1, 1), "resnet20": (2, 2, 2, 2)}


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """One torch thread: tiny shapes, and the 2 shared cores are busy (see conftest.py)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


class _Dropout:
    """Apply masks by layer name, recording which names the SPEC rules asked for."""

    def __init__(self, masks):
        self.masks, self.used = masks, []

    def __call__(self, h, name):
        if self.masks is None:
            return h
        self.used.append(name)
        return h * self.masks[name]


def torch_vgg(cfg, w, x, drop):
    """conv3x3(pad 1, no bias) -> relu -> dropout (unless a pool is next); classifier
    Linear -> relu -> dropout -> Linear -> relu -> dropout -> Linear."""
    h, k = x, 0
    for i, item in enumerate(cfg):
        if item == "A":
            h = F.avg_pool2d(h, 2, 2)
            continue
        k += 1
        h = F.relu(F.conv2d(h, w[f"conv{k}.weight"], None, 1, 1))
        if not (i + 1 < len(cfg) and cfg[i + 1] == "A"):
            h = drop(h, f"conv{k}")
    h = torch.flatten(h, 1)
    h = drop(F.relu(F.linear(h, w["fc1.weight"])), "fc1")
    h = drop(F.relu(F.linear(h, w["fc2.weight"])), "fc2")
    return F.linear(h, w["fc3.weight"])


def torch_resnet(blocks, w, x, drop):
    """Stem conv, conv, conv (relu each; dropout unless the pool is next), AvgPool2d(2, 2);
    BasicBlocks at strides 1/2/2/2: relu(conv2(drop(relu(conv1(h)))) + shortcut(h)), the
    shortcut a 1x1 conv with stride s exactly when the shape changes; Linear."""
    h = x
    for i in (1, 2, 3):
        h = F.relu(F.conv2d(h, w[f"stem.conv{i}.weight"], None, 1, 1))
        if i < 3:
            h = drop(h, f"stem.conv{i}")
    h = F.avg_pool2d(h, 2, 2)
    for s, n_blocks in enumerate(blocks, start=1):
        for b in range(n_blocks):
            p = f"layer{s}.{b}"
            stride = 2 if (s > 1 and b == 0) else 1
            c_out = w[f"{p}.conv1.weight"].shape[0]
            changes = stride != 1 or h.shape[1] != c_out
            assert (f"{p}.shortcut.weight" in w) == changes, f"{p}: shortcut presence vs SPEC"
            o = drop(F.relu(F.conv2d(h, w[f"{p}.conv1.weight"], None, stride, 1)), f"{p}.conv1")
            o = F.conv2d(o, w[f"{p}.conv2.weight"], None, 1, 1)
            sc = F.conv2d(h, w[f"{p}.shortcut.weight"], None, stride, 0) if changes else h
            h = F.relu(o + sc)
    return F.linear(torch.flatten(h, 1), w["fc.weight"])


def _torch_model(name):
    if name in SPEC_VGG:
        return lambda w, x, drop: torch_vgg(SPEC_VGG[name], w, x, drop)
    return lambda w, x, drop: torch_resnet(SPEC_RESNET_BLOCKS[name], w, x, drop)


def _setup(name, dtype, seed, dropout):
    arch = build_arch(name, in_shape=IN_SHAPE, classes=CLASSES, width=WIDTH)
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, dtype)
    # larger linear weights than SPEC's N(0, 0.01), so that fc gradients are not tiny
    params = {k: (v * 10 if v.ndim == 2 else v).astype(dtype) for k, v in params.items()}
    x = rng.standard_normal((N,) + IN_SHAPE).astype(dtype)
    labels = rng.integers(0, CLASSES, N)
    masks = draw_dropout_masks(arch, N, rng, dtype) if dropout else None
    return arch, params, x, labels, masks


def _run_torch(name, params, x, labels, masks, cotangent=None):
    w = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tmasks = None if masks is None else {k: torch.tensor(v) for k, v in masks.items()}
    drop = _Dropout(tmasks)
    logits = _torch_model(name)(w, torch.tensor(x), drop)
    if cotangent is None:
        out = F.cross_entropy(logits, torch.tensor(labels))
        out.backward()
        loss = float(out.detach())
    else:
        logits.backward(torch.tensor(cotangent))
        loss = None
    grads = {k: v.grad.numpy() for k, v in w.items()}
    return logits.detach().numpy(), loss, grads, drop.used


@pytest.mark.parametrize("conv", ["im2col", "winograd"])
@pytest.mark.parametrize("dropout", [True, False], ids=["train-masks", "eval-no-masks"])
@pytest.mark.parametrize("name", ["vgg9", "resnet12", "resnet20"])
def test_ann_matches_torch_float64(name, dropout, conv, monkeypatch):
    """conv="winograd": the Winograd rule's channel floor lowered to 1 (every 3x3 conv-ReLU on
    an even map of >= 4x4 by F(2x2, 3x3), refsnn/ops/winograd.py)."""
    if conv == "winograd":
        monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    arch, params, x, labels, masks = _setup(name, np.float64, 0, dropout)
    logits, tape = ann_forward(arch, params, x, masks=masks)
    took = [rec.out.winograd for rec in tape if hasattr(rec, "out")]
    assert any(took) == (conv == "winograd"), took
    loss = cross_entropy_forward(logits, labels)
    grads = ann_backward(cross_entropy_backward(1.0, logits, labels), arch, params, tape,
                         masks=masks)
    t_logits, t_loss, t_grads, used = _run_torch(name, params, x, labels, masks)
    if masks is not None:
        assert used == list(masks), f"dropout placement: SPEC {used}, refsnn {list(masks)}"
    assert_close(logits, t_logits, kind="torch", what=f"{name} logits vs torch", scale=True)
    assert_close(np.float64(loss), np.float64(t_loss), kind="torch", what=f"{name} loss")
    assert set(grads) == set(t_grads), set(grads) ^ set(t_grads)
    for k in t_grads:
        assert_close(grads[k], t_grads[k], kind="torch", what=f"{name} grad {k} vs torch",
                     scale=True)


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_ann_vjp_matches_torch_random_cotangent(name):
    """A random cotangent on the logits (not the CE gradient): exercises every output column."""
    arch, params, x, labels, masks = _setup(name, np.float64, 1, True)
    logits, tape = ann_forward(arch, params, x, masks=masks)
    c = np.random.default_rng(2).standard_normal(logits.shape)
    grads = ann_backward(c, arch, params, tape, masks=masks)
    _, _, t_grads, _ = _run_torch(name, params, x, labels, masks, cotangent=c)
    for k in t_grads:
        assert_close(grads[k], t_grads[k], kind="torch", what=f"{name} vjp {k} vs torch",
                     scale=True)


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_ann_matches_torch_float32(name):
    arch, params, x, labels, masks = _setup(name, np.float32, 3, True)
    logits, tape = ann_forward(arch, params, x, masks=masks)
    grads = ann_backward(cross_entropy_backward(1.0, logits, labels), arch, params, tape,
                         masks=masks)
    t_logits, _, t_grads, _ = _run_torch(name, params, x, labels, masks)
    assert_close(logits, t_logits, kind="torch", what=f"{name} float32 logits", scale=True)
    for k in t_grads:
        assert_close(grads[k], t_grads[k], kind="torch", what=f"{name} float32 grad {k}",
                     scale=True)
