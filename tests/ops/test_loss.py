"""Softmax cross-entropy (refsnn/ops/loss.py): forward, backward, softmax and their kernels.

The two kernels are serial (no prange), so check (g) parallel == serial does not apply.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import naive
from gradcheck import adjoint_check, elementwise_fd
from refsnn.ops import loss
from refsnn.ops.loss import cross_entropy_backward, cross_entropy_forward, softmax
from strategies import ce_configs, seeds
from tolerances import assert_close, tol

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

DTYPES = (np.float32, np.float64)


def _what(fn, case):
    return f"{fn}(logits.shape={case.logits.shape}, labels={case.labels.tolist()})"


# (a) adjoint: scalar output, random scalar cotangent (not 1) -------------------------------

def _ce_scale(logits):
    """Size of the intermediates of the loss (logsumexp and the picked logit): its absolute
    rounding error is ~eps * this, however small the loss itself (see gradcheck.fd_noise)."""
    return 1.0 + float(np.max(np.abs(logits)))


@given(case=ce_configs(), seed=seeds)
def test_cross_entropy_adjoint(case, seed):
    logits, labels = case
    adjoint_check(lambda logits: cross_entropy_forward(logits, labels), {"logits": logits},
                  lambda c: {"logits": cross_entropy_backward(float(c), logits, labels)},
                  np.random.default_rng(seed), name=_what("cross_entropy_backward", case),
                  f_scale=_ce_scale(logits))


# (b) element-wise FD ----------------------------------------------------------------------

@pytest.mark.parametrize("n, k, scale", [(3, 4, 1.0), (2, 5, 5.0), (4, 2, 0.3)])
def test_cross_entropy_elementwise_fd(n, k, scale):
    rng = np.random.default_rng(n * 10 + k)
    logits = scale * rng.standard_normal((n, k))
    labels = rng.integers(0, k, n)
    elementwise_fd(lambda logits: cross_entropy_forward(logits, labels), {"logits": logits},
                   lambda c: {"logits": cross_entropy_backward(float(c), logits, labels)}, rng,
                   name=f"cross_entropy_backward(({n}, {k}), scale={scale})",
                   f_scale=_ce_scale(logits))


# (c) against plain numpy ------------------------------------------------------------------

@given(case=ce_configs(), seed=seeds)
def test_cross_entropy_matches_naive(case, seed):
    logits, labels = case
    got = cross_entropy_forward(logits, labels)
    assert isinstance(got, float)
    assert_close(np.float64(got), np.float64(naive.cross_entropy_naive(logits, labels)),
                 kind="forward", what=_what("cross_entropy_forward", case))
    g = float(np.random.default_rng(seed).standard_normal())
    assert_close(cross_entropy_backward(g, logits, labels),
                 naive.cross_entropy_backward_naive(g, logits, labels), kind="backward",
                 what=_what("cross_entropy_backward", case))
    assert_close(softmax(logits), naive.softmax_naive(logits), kind="forward",
                 what=_what("softmax", case))


def test_cross_entropy_known_value():
    """Uniform logits: loss = log K exactly; grad = (1/K - onehot) / N."""
    logits = np.zeros((2, 4))
    labels = np.array([1, 3])
    assert abs(cross_entropy_forward(logits, labels) - np.log(4)) < 1e-15
    expected = np.full((2, 4), 0.25 / 2)
    expected[[0, 1], labels] -= 0.5
    assert_close(cross_entropy_backward(1.0, logits, labels), expected, kind="backward",
                 what="cross_entropy_backward(uniform)")


def test_cross_entropy_stable_for_large_logits():
    """logsumexp subtracts the max: logits of 1000 neither overflow nor lose the answer."""
    logits = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 1000.0]])
    labels = np.array([1, 2])
    expected = (1000.0 + np.log(3.0) - 1000.0 + 1000.0) / 2  # row0: lse~1000, row1: 1000+log 3
    got = cross_entropy_forward(logits, labels)
    assert np.isfinite(got) and abs(got - expected) < 1e-12 * expected, (got, expected)
    g = cross_entropy_backward(1.0, logits, labels)
    assert np.all(np.isfinite(g))
    assert np.allclose(g.sum(axis=1), 0.0, atol=1e-15)
    assert np.all(np.isfinite(softmax(logits))) and np.allclose(softmax(logits).sum(1), 1.0)


@given(case=ce_configs())
def test_softmax_properties(case):
    p = softmax(case.logits)
    assert np.all(p >= 0)
    assert_close(p.sum(axis=1), np.ones(len(p)), kind="forward", what="softmax row sums")
    assert_close(softmax(case.logits + 7.5), p, kind="forward", what="softmax(z + 7.5)")


# (d) dtypes -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_dtypes(dtype):
    rng = np.random.default_rng(3)
    logits64 = 2 * rng.standard_normal((4, 5))
    labels = rng.integers(0, 5, 4).astype(np.int32)  # any integer dtype is accepted
    logits = logits64.astype(dtype)
    got = cross_entropy_forward(logits, labels)
    assert isinstance(got, float)
    ref = naive.cross_entropy_naive(logits64, labels)
    rt = tol(dtype, "forward")["rtol"]
    assert abs(got - ref) <= rt * abs(ref) + tol(dtype, "forward")["atol"], (got, ref, dtype)
    g = cross_entropy_backward(0.7, logits, labels)
    assert g.dtype == dtype and g.shape == logits.shape
    assert_close(g, naive.cross_entropy_backward_naive(0.7, logits64, labels).astype(dtype),
                 kind="backward", what=f"cross_entropy_backward[{np.dtype(dtype)}]")
    assert softmax(logits).dtype == dtype


# (e) bad inputs ---------------------------------------------------------------------------

def test_cross_entropy_rejects_bad_inputs():
    logits = np.zeros((3, 4))
    for fn, call in (("cross_entropy_forward", lambda lg, lb: cross_entropy_forward(lg, lb)),
                     ("cross_entropy_backward",
                      lambda lg, lb: cross_entropy_backward(1.0, lg, lb))):
        with pytest.raises(ValueError, match=fn + r": labels must be in \[0, 3\], got range "
                                                  r"\[0, 4\]"):
            call(logits, np.array([0, 4, 1]))
        with pytest.raises(ValueError, match=fn + r": labels must be in \[0, 3\], got range "
                                                  r"\[-1, 1\]"):
            call(logits, np.array([0, -1, 1]))
        with pytest.raises(TypeError, match=fn + r": labels must be an integer numpy array"):
            call(logits, np.array([0.0, 1.0, 2.0]))
        with pytest.raises(TypeError, match=fn + r": labels must be an integer numpy array"):
            call(logits, [0, 1, 2])
        with pytest.raises(ValueError, match=fn + r": labels.shape=\(2,\), expected \(3,\)"):
            call(logits, np.array([0, 1]))
        with pytest.raises(ValueError, match=fn + r": logits must have 2 dimensions"):
            call(logits[None], np.array([0, 1, 2]))
        with pytest.raises(TypeError, match=fn + r": logits must have dtype float32 or float64"):
            call(logits.astype(np.int64), np.array([0, 1, 2]))


def test_cross_entropy_rejects_empty_batch():
    """An empty batch has no mean: a ValueError naming logits, as for other empty outputs.
    """
    logits, labels = np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError, match=r"cross_entropy_forward: .*logits"):
        cross_entropy_forward(logits, labels)
    with pytest.raises(ValueError, match=r"cross_entropy_backward: .*logits"):
        cross_entropy_backward(1.0, logits, labels)


# (f) kernels equal their .py_func ---------------------------------------------------------

def _kernel_outputs(dtype, fn_name, use_py_func, seed=4):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((6, 5))).astype(dtype)
    labels = rng.integers(0, 5, 6).astype(np.int64)
    fn = getattr(loss, fn_name)
    fn = getattr(fn, "py_func", fn) if use_py_func else fn  # no py_func: JIT disabled
    if fn_name == "_ce_forward_kernel":
        out = np.full(6, np.nan, dtype)
        fn(logits, labels, out)
    else:
        out = np.full((6, 5), np.nan, dtype)
        fn(logits, labels, np.dtype(dtype).type(0.37), out)
    return out


KERNELS = ("_ce_forward_kernel", "_ce_backward_kernel")


@pytest.mark.parametrize("name", KERNELS)
def test_loss_kernel_equals_py_func_float64(name):
    """Within 8 ulp, not bitwise: numba's exp/log (libm) and NumPy's scalar exp differ in the
    last bit for a few percent of arguments (see tolerances.py)."""
    jit, py = (_kernel_outputs(np.float64, name, u) for u in (False, True))
    assert not np.isnan(jit).any()
    assert_close(jit, py, kind="py_func_transcendental", what=f"loss.{name} jit vs py_func")


@pytest.mark.parametrize("name", KERNELS)
def test_loss_kernel_equals_py_func_float32(name):
    """Float32: the compiled kernel agrees with its plain-Python twin to a few float32 ulp
    (guards against float64 literals that would make numba accumulate in float64)."""
    jit, py = (_kernel_outputs(np.float32, name, u, seed=5) for u in (False, True))
    assert_close(jit, py, kind="py_func_transcendental",
                 what=f"loss.{name} float32 jit vs py_func")
