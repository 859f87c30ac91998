"""Stage B's loss CE + L_AT through the whole ANN: attention points, ann_backward(grad_acts=).

Setup as tests/models/test_ann_grad.py (float64, width 1/16, N=2, 3 classes, dropout masks
drawn), with input 3x16x32: non-square, and every attention point keeps >= 2 positions (vgg9's
last conv is 1x2, resnet12's last stage 1x2; a 1x1 map is the constant 1 and would test
nothing). The meta-model is the same architecture with other random weights, run without
dropout; its maps are constants. The student's loss is

    L = CE(logits, y) + 1000 * sum_j mean (a_S^j - a_M^j)^2

and its gradient is ann_backward(dCE/dlogits, ..., grad_acts={point: attention_map_backward(
at_loss_backward(...)[j], A_j)}). It must equal central differences of L in the student's
weights (adjoint check; draws whose segment crosses a ReLU kink are redrawn, as in
test_ann_grad.py). vgg9's last attention point (conv7) is followed by a dropout, so a
grad_acts added after instead of before the dropout would fail here.

Scale: with beta = 1000 the AT term dominates the conv gradients (~1e4 x CE's at this init);
the classifier's gradients come from CE alone (the AT points are all before it). CE alone is
checked in test_ann_grad.py; here the per-layer checks cover both parts.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import GradcheckError, NoKinkFreeDraw, adjoint_check_avoiding_kinks, ann_relu_pattern
from refsnn.models.ann import BlockRecord, ConvRecord, ann_backward, ann_forward
from refsnn.models.arch import Conv, build_arch, draw_dropout_masks, init_params, param_shapes
from refsnn.models.attention_points import attention_activations, attention_layers
from refsnn.ops.attention import (at_loss_backward, at_loss_forward, attention_map_backward,
                                  attention_map_forward)
from refsnn.ops.loss import cross_entropy_backward, cross_entropy_forward
from tolerances import tol

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

IN_SHAPE = (3, 16, 32)
N, CLASSES, WIDTH = 2, 3, 1 / 16
MAX_POINT_SEEDS = 6
MAX_TANGENT_DRAWS = 10


# Attention points ---------------------------------------------------------------------------

EXPECTED_POINTS = {
    # SPEC 2's conv lists, the conv right before each 'A', plus the last conv
    "vgg9": ["conv1", "conv3", "conv5", "conv6", "conv7"],
    "vgg11": ["conv1", "conv3", "conv6", "conv8"],
    "vgg16": ["conv2", "conv4", "conv7", "conv10", "conv13"],
    # the stem output before its pool, then the last block of each stage
    "resnet12": ["stem.conv3", "layer1.0", "layer2.0", "layer3.0", "layer4.0"],
    "resnet20": ["stem.conv3", "layer1.1", "layer2.1", "layer3.1", "layer4.1"],
}

SPEC_VGG = {  # SPEC 2, transcribed
    "vgg9": "64 A 128 256 A 256 512 A 512 A 512",
    "vgg11": "64 A 128 256 A 512 512 512 A 512 512",
    "vgg16": "64 64 A 128 128 A 256 256 256 A 512 512 512 A 512 512 512",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_POINTS))
def test_attention_layer_names(name):
    arch = build_arch(name, in_shape=(3, 32, 32), classes=10, width=1 / 16)
    assert attention_layers(arch) == EXPECTED_POINTS[name]


@pytest.mark.parametrize("name", sorted(SPEC_VGG))
def test_vgg_points_follow_the_spec_rule(name):
    """Derived from the SPEC string: the k-th conv is a point iff an 'A' follows it, or it is
    the last conv."""
    items = SPEC_VGG[name].split()
    expected, k = [], 0
    for i, item in enumerate(items):
        if item == "A":
            continue
        k += 1
        if i + 1 == len(items) or items[i + 1] == "A":
            expected.append(f"conv{k}")
    arch = build_arch(name, in_shape=(3, 32, 32), classes=10, width=1 / 16)
    assert attention_layers(arch) == expected


@pytest.mark.parametrize("name", ["vgg9", "resnet12", "resnet20"])
def test_attention_activations_are_the_pre_dropout_tape_arrays(name):
    arch = build_arch(name, in_shape=IN_SHAPE, classes=CLASSES, width=WIDTH)
    rng = np.random.default_rng(0)
    params = init_params(arch, rng, np.float64)
    masks = draw_dropout_masks(arch, N, rng, np.float64)
    _, tape = ann_forward(arch, params, rng.standard_normal((N,) + IN_SHAPE), masks=masks)
    acts = attention_activations(arch, tape)
    by_name = {rec.layer.name: rec for rec in tape if isinstance(rec, (ConvRecord, BlockRecord))}
    assert len(acts) == len(EXPECTED_POINTS[name])
    for pname, A in zip(EXPECTED_POINTS[name], acts):
        assert A is by_name[pname].a, pname  # ConvRecord.a / BlockRecord.a: before dropout
        assert A.ndim == 4 and A.shape[0] == N and A.shape[2] * A.shape[3] >= 2, (pname, A.shape)
    if name == "vgg9":  # conv7 has a dropout after it (fc1 follows, not a pool)
        assert by_name["conv7"].layer.dropout > 0 and "conv7" in masks
    else:  # the stem point is before the pool: full input resolution
        assert acts[0].shape[2:] == IN_SHAPE[1:]


def test_attention_activations_rejects_a_foreign_tape():
    vgg = build_arch("vgg9", in_shape=IN_SHAPE, classes=CLASSES, width=WIDTH)
    res = build_arch("resnet12", in_shape=IN_SHAPE, classes=CLASSES, width=WIDTH)
    rng = np.random.default_rng(1)
    _, tape = ann_forward(res, init_params(res, rng, np.float64),
                          rng.standard_normal((1,) + IN_SHAPE))
    with pytest.raises(ValueError, match=r"attention_activations: the tape has no record for "
                                         r"\['conv1', 'conv3'"):
        attention_activations(vgg, tape)
    with pytest.raises(TypeError, match=r"attention_layers: arch must be an Arch"):
        attention_layers("vgg9")


# CE + L_AT gradients ------------------------------------------------------------------------

class ATCase:
    """Student (masks on) and frozen meta-model of one arch at one point; memoised forward."""

    def __init__(self, name, seed, *, beta=1000.0):
        self.arch = build_arch(name, in_shape=IN_SHAPE, classes=CLASSES, width=WIDTH)
        self.names = attention_layers(self.arch)
        self.beta = beta
        rng = np.random.default_rng(seed)
        self.params = init_params(self.arch, rng, np.float64)
        meta_params = init_params(self.arch, rng, np.float64)  # same arch, other weights
        self.x = rng.standard_normal((N,) + IN_SHAPE)
        self.labels = rng.integers(0, CLASSES, N)
        self.masks = draw_dropout_masks(self.arch, N, rng, np.float64)
        _, meta_tape = ann_forward(self.arch, meta_params, self.x, masks=None)
        self.a_m = [attention_map_forward(A) for A in attention_activations(self.arch, meta_tape)]
        self.logits, self.tape = ann_forward(self.arch, self.params, self.x, masks=self.masks)
        self._memo = (None, None)

    def forward(self, params):
        key = tuple(id(params[k]) for k in sorted(params))
        if self._memo[0] != key:
            out = ann_forward(self.arch, params, self.x, masks=self.masks)
            self._memo = (key, (out, list(params.values())))
        return self._memo[1][0]

    def at(self, tape):
        return at_loss_forward([attention_map_forward(A)
                                for A in attention_activations(self.arch, tape)],
                               self.a_m, beta=self.beta)

    def f_total(self, **params):
        logits, tape = self.forward(params)
        return cross_entropy_forward(logits, self.labels) + self.at(tape)

    def grad_acts(self, c):
        acts = attention_activations(self.arch, self.tape)
        a_s = [attention_map_forward(A) for A in acts]
        g_a = at_loss_backward(a_s, self.a_m, beta=self.beta, grad_loss=float(c))
        return {n: attention_map_backward(g, A) for n, g, A in zip(self.names, g_a, acts)}

    def vjp_total(self, c, *, with_at=True):
        g = cross_entropy_backward(float(c), self.logits, self.labels)
        return ann_backward(g, self.arch, self.params, self.tape, masks=self.masks,
                            grad_acts=self.grad_acts(c) if with_at else None)

    def pattern(self, params):
        return ann_relu_pattern(self.forward(params)[1])


def _check(case, rng, *, wrt=None, name, vjp=None):
    return adjoint_check_avoiding_kinks(
        case.f_total, case.params, vjp or case.vjp_total, rng, pattern=case.pattern, wrt=wrt,
        name=name, max_draws=MAX_TANGENT_DRAWS, rtol=tol(np.float64, "model_adjoint")["rtol"],
        f_scale=1.0 + float(np.max(np.abs(case.logits))))


def _kink_free_case(name):
    for seed in range(MAX_POINT_SEEDS):
        case = ATCase(name, seed)
        try:
            res, _ = _check(case, np.random.default_rng(1000 + seed),
                            name=f"CE + L_AT [{name}, all weights, seed={seed}]")
            return case, res, seed
        except NoKinkFreeDraw:
            continue
    pytest.fail(f"{name}: every one of {MAX_POINT_SEEDS} points sits on a ReLU kink")


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_ce_plus_at_gradient_matches_finite_differences(name):
    """<J t, c> == <t, J^T c> with one tangent over every student weight at once."""
    case, res, _ = _kink_free_case(name)
    assert res.rel_err <= res.rtol
    at = case.at(case.tape)
    assert at > 1.0, f"L_AT={at}: the maps of student and meta-model should differ"


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_ce_plus_at_gradient_per_layer(name):
    """One check per weight tensor (tangent zero elsewhere)."""
    case, _, seed = _kink_free_case(name)
    rng = np.random.default_rng(2000 + seed)
    failures = []
    for pname in param_shapes(case.arch):
        try:
            _check(case, rng, wrt=[pname], name=f"CE + L_AT [{name}].{pname}")
        except NoKinkFreeDraw as err:
            failures.append(f"{pname}: {err}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", ["vgg9", "resnet12"])
def test_check_fails_without_the_at_gradient(name):
    """The check is not vacuous: dropping grad_acts (CE's gradient only) fails it as a wrong
    gradient, so the AT term carries real weight in the tests above."""
    case, _, seed = _kink_free_case(name)
    with pytest.raises(GradcheckError, match=r"adjoint check failed"):
        _check(case, np.random.default_rng(1000 + seed), name=f"CE only [{name}]",
               vjp=lambda c: case.vjp_total(c, with_at=False))


def test_check_catches_grad_acts_added_after_the_dropout():
    """vgg9's conv7 point has a dropout after it. Adding dL/dA on the dropped side (so that
    the mask multiplies it on the way back) is a realistic slip; the joint check catches it."""
    case, _, seed = _kink_free_case("vgg9")
    mask = case.masks["conv7"]

    def vjp_after_dropout(c):
        ga = case.grad_acts(c)
        ga["conv7"] = ga["conv7"] * mask
        return ann_backward(cross_entropy_backward(float(c), case.logits, case.labels),
                            case.arch, case.params, case.tape, masks=case.masks, grad_acts=ga)

    with pytest.raises(GradcheckError, match=r"adjoint check failed"):
        _check(case, np.random.default_rng(1000 + seed), name="grad_acts after dropout",
               vjp=vjp_after_dropout)


# grad_acts: default behaviour and validation --------------------------------------------

def _model(name, dtype=np.float64, seed=3):
    arch = build_arch(name, in_shape=IN_SHAPE, classes=CLASSES, width=WIDTH)
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, dtype)
    masks = draw_dropout_masks(arch, N, rng, dtype)
    logits, tape = ann_forward(arch, params, rng.standard_normal((N,) + IN_SHAPE).astype(dtype),
                               masks=masks)
    return arch, params, masks, tape, rng.standard_normal(logits.shape).astype(dtype)


@pytest.mark.parametrize("name", ["vgg9", "vgg11", "resnet12", "resnet20"])
def test_grad_acts_none_empty_or_zero_is_bit_identical(name):
    arch, params, masks, tape, g = _model(name)
    ref = ann_backward(g, arch, params, tape, masks=masks)
    acts = dict(zip(attention_layers(arch), attention_activations(arch, tape)))
    for grad_acts in (None, {}, {k: np.zeros_like(v) for k, v in acts.items()}):
        got = ann_backward(g, arch, params, tape, masks=masks, grad_acts=grad_acts)
        assert list(got) == list(ref)
        for k in ref:
            assert got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k]), k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_acts_is_linear_and_keeps_dtype(dtype):
    """backward(g, grad_acts) == backward(g) + backward(0, grad_acts) (the walk is linear in
    its cotangents), in either dtype; the extra gradient really changes the result."""
    arch, params, masks, tape, g = _model("resnet12", dtype)
    rng = np.random.default_rng(4)
    recs = {rec.layer.name: rec for rec in tape if isinstance(rec, (ConvRecord, BlockRecord))}
    assert isinstance(recs["stem.conv3"].layer, Conv)
    # a conv and a block; stem.conv2 is not an attention point: any conv record is accepted
    ga = {n: rng.standard_normal(recs[n].a.shape).astype(dtype)
          for n in ("stem.conv2", "stem.conv3", "layer3.0")}
    both = ann_backward(g, arch, params, tape, masks=masks, grad_acts=ga)
    plain = ann_backward(g, arch, params, tape, masks=masks)
    extra = ann_backward(np.zeros_like(g), arch, params, tape, masks=masks, grad_acts=ga)
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    for k in plain:
        assert both[k].dtype == dtype
        scale = np.max(np.abs(both[k]))
        assert np.max(np.abs(both[k] - plain[k] - extra[k])) <= rtol * scale, k
    assert not np.array_equal(both["stem.conv1.weight"], plain["stem.conv1.weight"])


def test_grad_acts_rejects_bad_input():
    arch, params, masks, tape, g = _model("resnet12")
    acts = dict(zip(attention_layers(arch), attention_activations(arch, tape)))
    A = acts["layer2.0"]
    with pytest.raises(ValueError, match=r"ann_backward: grad_acts\['layer2.0.conv2'\] names no "
                                         r"conv or block activation"):
        ann_backward(g, arch, params, tape, masks=masks, grad_acts={"layer2.0.conv2": A})
    with pytest.raises(ValueError, match=r"grad_acts\['layer2.0.conv1'\] names no conv or"):
        ann_backward(g, arch, params, tape, masks=masks, grad_acts={"layer2.0.conv1": A})
    with pytest.raises(ValueError, match=r"grad_acts\['fc'\] names no conv or block"):
        ann_backward(g, arch, params, tape, masks=masks, grad_acts={"fc": g})
    with pytest.raises(ValueError, match=r"ann_backward: grad_acts\['layer2.0'\].shape="
                                         r"\(1, 8, 4, 8\), expected \(2, 8, 4, 8\)"):
        ann_backward(g, arch, params, tape, masks=masks, grad_acts={"layer2.0": A[:1]})
    with pytest.raises(TypeError, match=r"ann_backward: grad_acts\['layer2.0'\] must be a numpy "
                                        r"array of dtype float64, got float32"):
        ann_backward(g, arch, params, tape, masks=masks,
                     grad_acts={"layer2.0": A.astype(np.float32)})
    with pytest.raises(TypeError, match=r"ann_backward: grad_acts must be a dict"):
        ann_backward(g, arch, params, tape, masks=masks, grad_acts=[A])
