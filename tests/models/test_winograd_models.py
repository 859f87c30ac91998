"""The ANN and SNN with their convs on the Winograd path (refsnn/ops/winograd.py).

The automatic rule takes Winograd only for >= 128 channels, which the small test networks never
have; here the rule's channel floor is lowered to 1 (monkeypatch), so that the width-1/16
networks of tests/models/test_ann_grad.py and test_snn_grad.py compute every 3x3 conv on an
even map of >= 4x4 by Winograd (vgg9: conv2-conv5 on 16x16 input; resnet12's blocks: forward
by Winograd, backward by the im2col VJP). Then:

- the whole-model gradient checks hold as on the im2col path (the plain convs' backward is the
  exact adjoint of the Winograd forward);
- the outputs equal the im2col path's to rounding (float64, 1e-12 of the largest logit), and
  the SNN's inference path (snn_infer, dense) equals its training forward bit for bit, since
  both go through conv2d_forward_auto.
"""

from __future__ import annotations

import numpy as np
import pytest

import test_ann_grad as ann_tests
import test_snn_grad as snn_tests
from gradcheck import adjoint_check
from refsnn.models.ann import ann_forward
from refsnn.models.snn import ConvRecord, snn_forward
from refsnn.models.snn_infer import snn_infer
from refsnn.ops import winograd
from refsnn.ops.winograd import WinogradOut
from tolerances import tol

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py


@pytest.fixture
def winograd_everywhere(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", ann_tests.ARCHS)
def test_ann_adjoint_on_the_winograd_path(name, winograd_everywhere):
    case, res, _ = ann_tests._kink_free_case(name)
    assert any(rec.out.winograd for rec in case.tape if hasattr(rec, "out"))
    assert res.rel_err <= res.rtol


@pytest.mark.parametrize("name", ann_tests.ARCHS)
def test_ann_logits_equal_the_im2col_path(name, monkeypatch):
    case = ann_tests.Case(name, 0, dropout=True, width=ann_tests.WIDTH)
    ref, _ = ann_forward(case.arch, case.params, case.x, masks=case.masks)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    got, _ = ann_forward(case.arch, case.params, case.x, masks=case.masks)
    assert _rel(got, ref) < 1e-12


@pytest.mark.parametrize("name", snn_tests.ARCHS)
def test_snn_adjoint_on_the_winograd_path(name, winograd_everywhere):
    """snn_tests' all-jointly check (sigmoid smooth mode) with Winograd convs."""
    case = snn_tests.Case(name)
    if name == "vgg9":
        assert any(isinstance(rec, ConvRecord) and isinstance(rec.cols, WinogradOut)
                   for rec in case.tape)
    res = adjoint_check(case.f, case.q(), case.vjp, np.random.default_rng(1),
                        rtol=tol(np.float64, "model_adjoint")["rtol"],
                        name=f"snn_backward[{name}, winograd]")
    assert res.rel_err <= res.rtol and res.lhs != 0.0


@pytest.mark.parametrize("name", snn_tests.ARCHS)
def test_snn_output_equals_im2col_path_and_inference(name, monkeypatch):
    """Smooth mode (no thresholds to flip): U within 1e-12 of the im2col path; hard spikes:
    snn_infer's dense path equals snn_forward bit for bit, both on the Winograd path."""
    case = snn_tests.Case(name)
    ref = case.forward(case.params)[0]
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    assert _rel(case.forward(case.params)[0], ref) < 1e-12
    hard = snn_forward(case.arch, case.params, case.x, timesteps=case.timesteps, masks=None)[0]
    inf = snn_infer(case.arch, case.params, case.x, timesteps=case.timesteps, path="dense")
    np.testing.assert_array_equal(inf.logits, hard)
