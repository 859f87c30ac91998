"""Attention maps and the AT loss (refsnn/ops/attention.py), SPEC 4.1.

The map A -> a is smooth wherever ||q|| != eps (it is a rational function of A), so central
differences need no kink rejection; an all-zero sample sits in the clamped region, where a is
q / eps, even in A, and its central difference is exactly 0 (as is its gradient). The AT loss is
a quadratic. References here are written from SPEC 4.1 in plain numpy/einsum (the backward from
the explicit Jacobian (I - a a^T) / r) and, behind the crosscheck marker, torch autograd of
F.normalize(A.pow(2).mean(1).flatten(1), p=2, dim=1, eps=1e-12).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradcheck import adjoint_check, elementwise_fd
from refsnn.ops import attention
from refsnn.ops.attention import (at_loss_backward, at_loss_forward, attention_map_backward,
                                  attention_map_forward)
from strategies import seeds
from tolerances import assert_close, tol

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

DTYPES = (np.float32, np.float64)
EPS = 1e-12


@st.composite
def activations(draw, max_batch=3, max_channels=4, max_side=6, dtype=np.float64):
    """(N, C, H, W) standard normal, H and W drawn independently; half the draws are ReLU'd
    (post-ReLU, as the AT points are: exact zeros, and sometimes an all-zero sample)."""
    n, c = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(seeds))
    A = rng.standard_normal((n, c, h, w))
    if draw(st.booleans()):
        A = np.maximum(A, 0.0)
    return A.astype(dtype)


# Independent references (numpy / einsum, from SPEC 4.1) -----------------------------------

def attention_map_ref(A, eps=EPS):
    n, c, h, w = A.shape
    q = np.einsum("nchw,nchw->nhw", A, A).reshape(n, h * w) / c
    r = np.sqrt(np.einsum("nk,nk->n", q, q))
    return q / np.maximum(r, eps)[:, None]


def attention_map_backward_ref(grad_a, A, eps=EPS):
    """grad_q = grad_a J with J = (I - a a^T) / r for r >= eps, I / eps below; then dq/dA."""
    n, c, h, w = A.shape
    q = np.einsum("nchw,nchw->nhw", A, A).reshape(n, h * w) / c
    r = np.sqrt(np.einsum("nk,nk->n", q, q))
    eye = np.eye(h * w)
    jac = np.empty((n, h * w, h * w))
    for i in range(n):
        if r[i] >= eps:
            a = q[i] / r[i]
            jac[i] = (eye - np.outer(a, a)) / r[i]
        else:
            jac[i] = eye / eps
    grad_q = np.einsum("nk,nkl->nl", grad_a, jac)
    return grad_q.reshape(n, 1, h, w) * 2.0 * A / c


def at_loss_ref(a_s, a_m, beta):
    return beta * sum(float(np.sum((s - m) ** 2)) / s.size for s, m in zip(a_s, a_m))


def _maps_pair(rng, shapes, dtype=np.float64):
    """Student and meta maps (each row unit-norm, as real maps are) for the given (N, K)."""
    def unit(shape):
        x = np.abs(rng.standard_normal(shape))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)
    return [unit(s) for s in shapes], [unit(s) for s in shapes]


# (a) adjoint checks -----------------------------------------------------------------------

def _map_step(A):
    """Central-difference step for the map: 1e-6 of the largest |A| when that is below 1.
    The map is scale-invariant (Q / ||Q||), so its curvature grows like 1 / |A|: with a fixed
    step a small sample's truncation error can exceed the rounding allowance, which matters
    where the exact derivative is 0 (one live position per sample: the map is constant)."""
    scale = float(np.abs(A).max())
    return 1e-6 * scale if 0.0 < scale < 1.0 else 1e-6


def _check_map_adjoint(A, seed, name):
    adjoint_check(attention_map_forward, {"A": A},
                  lambda c: {"A": attention_map_backward(c, A)}, np.random.default_rng(seed),
                  eps=_map_step(A), name=name)


@given(A=activations(), seed=seeds)
def test_attention_map_adjoint(A, seed):
    _check_map_adjoint(A, seed, f"attention_map_backward(A.shape={A.shape})")


@pytest.mark.parametrize("seed", range(40))
def test_attention_map_adjoint_one_live_position(seed):
    """A sample with one live position (the map is locally constant, J = 0) and a small value:
    the case hypothesis found, where a fixed 1e-6 step's truncation error (~eps^2 / a^3) broke
    the check for some tangents."""
    _check_map_adjoint(np.array([[[[0.03949469, 0.0]]]]), seed,
                       "attention_map_backward(one live position)")


@given(n=st.integers(1, 3), ks=st.lists(st.integers(2, 12), min_size=1, max_size=4),
       beta=st.sampled_from([1.0, 1000.0, 0.37]), seed=seeds)
def test_at_loss_adjoint(n, ks, beta, seed):
    """Scalar loss, random scalar cotangent (passed as grad_loss); only the student is
    perturbed: the meta-model maps are constants. K >= 2: two unit 1-vectors are both exactly
    1, the loss and gradient are 0, and the central difference is pure rounding of x + eps t."""
    rng = np.random.default_rng(seed)
    a_s, a_m = _maps_pair(rng, [(n, k) for k in ks])
    inputs = {f"s{j}": s for j, s in enumerate(a_s)}

    def f(**s):
        return at_loss_forward([s[f"s{j}"] for j in range(len(ks))], a_m, beta=beta)

    def vjp(c):
        g = at_loss_backward(a_s, a_m, beta=beta, grad_loss=float(c))
        return {f"s{j}": gj for j, gj in enumerate(g)}

    adjoint_check(f, inputs, vjp, rng, name=f"at_loss_backward(n={n}, ks={ks}, beta={beta})")


@given(seed=seeds, n=st.integers(1, 2), relu=st.booleans())
def test_at_loss_through_attention_maps_adjoint(seed, n, relu):
    """L_AT(maps(A_s), maps(A_m)) w.r.t. every student activation at once (two points with
    different C, H != W), i.e. the composition stage B differentiates."""
    rng = np.random.default_rng(seed)
    shapes = [(n, 3, 4, 6), (n, 2, 3, 2)]
    A_s = [rng.standard_normal(s) for s in shapes]
    if relu:
        A_s = [np.maximum(A, 0.0) for A in A_s]
    a_m = [attention_map_forward(np.maximum(rng.standard_normal(s), 0.0)) for s in shapes]

    def f(A0, A1):
        return at_loss_forward([attention_map_forward(A0), attention_map_forward(A1)], a_m)

    def vjp(c):
        a_s = [attention_map_forward(A) for A in A_s]
        g = at_loss_backward(a_s, a_m, grad_loss=float(c))
        return {"A0": attention_map_backward(g[0], A_s[0]),
                "A1": attention_map_backward(g[1], A_s[1])}

    adjoint_check(f, {"A0": A_s[0], "A1": A_s[1]}, vjp, rng, name="L_AT(attention maps)",
                  f_scale=1000.0)


# (b) element-wise finite differences ------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 2, 5, 2)])
def test_attention_map_elementwise_fd(shape):
    rng = np.random.default_rng(sum(shape))
    A = np.maximum(rng.standard_normal(shape), 0.0)
    A[0, :, 0, 0] = 0.0  # an all-zero column of positions: q = 0 there, gradient still exact
    elementwise_fd(attention_map_forward, {"A": A},
                   lambda c: {"A": attention_map_backward(c, A)}, rng,
                   name=f"attention_map_backward({shape})")


def test_at_loss_elementwise_fd():
    rng = np.random.default_rng(11)
    a_s, a_m = _maps_pair(rng, [(2, 6), (2, 3)])
    elementwise_fd(lambda s0, s1: at_loss_forward([s0, s1], a_m),
                   {"s0": a_s[0], "s1": a_s[1]},
                   lambda c: dict(zip(("s0", "s1"), at_loss_backward(a_s, a_m,
                                                                     grad_loss=float(c)))),
                   rng, name="at_loss_backward", f_scale=1000.0)


# (c) against the independent numpy references --------------------------------------------

@given(A=activations(), seed=seeds)
def test_attention_map_matches_einsum_reference(A, seed):
    what = f"attention_map(A.shape={A.shape})"
    a = attention_map_forward(A)
    assert_close(a, attention_map_ref(A), kind="forward", what=f"{what} forward")
    g = np.random.default_rng(seed).standard_normal(a.shape)
    assert_close(attention_map_backward(g, A), attention_map_backward_ref(g, A),
                 kind="backward", what=f"{what} backward", scale=True)


@given(n=st.integers(1, 3), ks=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       seed=seeds)
def test_at_loss_matches_reference(n, ks, seed):
    rng = np.random.default_rng(seed)
    a_s, a_m = _maps_pair(rng, [(n, k) for k in ks])
    loss = at_loss_forward(a_s, a_m)
    assert isinstance(loss, float)
    assert_close(np.float64(loss), np.float64(at_loss_ref(a_s, a_m, 1000.0)), kind="forward",
                 what="at_loss_forward", scale=True)
    for j, (g, s, m) in enumerate(zip(at_loss_backward(a_s, a_m), a_s, a_m)):
        assert_close(g, 2000.0 * (s - m) / s.size, kind="backward", what=f"at_loss_backward[{j}]")


def test_attention_map_layout_and_unit_norm():
    """k = h*W + w (C order, as torch.flatten(x, 1)) with H != W; each row has unit norm; a
    positive rescaling of A leaves a unchanged; a 1x1 map is exactly 1."""
    A = np.zeros((2, 3, 2, 5))
    A[0, 1, 1, 3] = 2.0  # the only active position of sample 0: k = 1*5 + 3 = 8
    A[1] = np.random.default_rng(1).random((3, 2, 5))
    a = attention_map_forward(A)
    assert a.shape == (2, 10)
    assert a[0, 8] == 1.0 and np.count_nonzero(a[0]) == 1
    assert_close(np.linalg.norm(a, axis=1), np.ones(2), kind="forward", what="||a[n]||")
    assert_close(attention_map_forward(7.5 * A), a, kind="forward", what="a(7.5 A)")
    ones = attention_map_forward(np.random.default_rng(2).random((3, 4, 1, 1)))
    assert np.array_equal(ones, np.ones((3, 1)))


# (d) zero norm: a dead layer ---------------------------------------------------------------

def test_all_zero_sample_gives_zero_map_and_zero_gradient():
    """torch's F.normalize convention: q / max(||q||, eps). An all-zero sample maps to 0 and
    gets grad_A = 0; the other sample of the batch is unaffected."""
    rng = np.random.default_rng(3)
    A = np.maximum(rng.standard_normal((2, 3, 4, 5)), 0.0)
    A[1] = 0.0
    a = attention_map_forward(A)
    assert np.all(np.isfinite(a))
    assert np.array_equal(a[1], np.zeros(20))
    assert_close(a[:1], attention_map_forward(A[:1]), kind="forward", what="sample 0")
    g = rng.standard_normal(a.shape)
    gA = attention_map_backward(g, A)
    assert np.all(np.isfinite(gA)) and np.array_equal(gA[1], np.zeros((3, 4, 5)))
    assert_close(gA[:1], attention_map_backward(g[:1], A[:1]), kind="backward",
                 what="sample 0 grad")


def test_dead_layer_in_the_loss():
    """A student point that is all zero: L_AT = beta * mean(a_m^2) there, no NaN, and the
    gradient reaching the activation is exactly zero."""
    rng = np.random.default_rng(4)
    A_s = np.zeros((2, 3, 4, 2))
    a_m = [attention_map_forward(np.maximum(rng.standard_normal(A_s.shape), 0.0))]
    a_s = [attention_map_forward(A_s)]
    loss = at_loss_forward(a_s, a_m)
    assert loss == pytest.approx(1000.0 * np.mean(a_m[0] ** 2), rel=1e-14)
    gA = attention_map_backward(at_loss_backward(a_s, a_m)[0], A_s)
    assert np.array_equal(gA, np.zeros_like(A_s))


def test_tiny_norm_below_eps_uses_the_clamped_denominator():
    """||q|| < eps (A ~ 1e-7): a = q / eps, not unit norm; grad_q = grad_a / eps (torch's
    clamp_min passes no gradient below the clamp). Both branches agree with the reference."""
    rng = np.random.default_rng(5)
    A = 1e-7 * np.abs(rng.standard_normal((2, 2, 3, 2)))
    A[1] *= 1e7  # sample 1 in the normal branch
    a = attention_map_forward(A)
    q0 = (A[0] ** 2).mean(axis=0).reshape(-1)
    assert np.linalg.norm(q0) < EPS
    assert_close(a[0], q0 / EPS, kind="forward", what="clamped sample")
    g = rng.standard_normal(a.shape)
    assert_close(attention_map_backward(g, A), attention_map_backward_ref(g, A),
                 kind="backward", what="clamped-branch backward", scale=True)


def test_eps_keyword_moves_the_clamp():
    A = np.full((1, 1, 1, 2), 1.0)  # q = (1, 1), ||q|| = sqrt(2)
    assert_close(attention_map_forward(A, eps=10.0), np.full((1, 2), 0.1), kind="forward",
                 what="eps=10")
    g = np.array([[0.3, -1.2]])
    assert_close(attention_map_backward(g, A, eps=10.0), attention_map_backward_ref(g, A, 10.0),
                 kind="backward", what="eps=10 backward")


# (e) beta ---------------------------------------------------------------------------------

def test_beta_scales_loss_and_gradient_and_defaults_to_1000():
    rng = np.random.default_rng(6)
    a_s, a_m = _maps_pair(rng, [(2, 8), (2, 3)])
    l1 = at_loss_forward(a_s, a_m, beta=1.0)
    assert at_loss_forward(a_s, a_m) == at_loss_forward(a_s, a_m, beta=1000.0) == 1000.0 * l1
    assert at_loss_forward(a_s, a_m, beta=2.5) == 2.5 * l1
    assert at_loss_forward(a_s, a_m, beta=0.0) == 0.0
    g1 = at_loss_backward(a_s, a_m, beta=1.0)
    for g, gd, gb, g0 in zip(g1, at_loss_backward(a_s, a_m),
                             at_loss_backward(a_s, a_m, beta=2.5),
                             at_loss_backward(a_s, a_m, beta=0.0)):
        assert_close(gd, 1000.0 * g, kind="backward", what="beta=1000 (default)", scale=True)
        assert_close(gb, 2.5 * g, kind="backward", what="beta=2.5", scale=True)
        assert np.array_equal(g0, np.zeros_like(g))


def test_identical_maps_give_zero_loss_and_gradient():
    rng = np.random.default_rng(7)
    a_s, _ = _maps_pair(rng, [(3, 5)])
    assert at_loss_forward(a_s, [a.copy() for a in a_s]) == 0.0
    assert not np.any(at_loss_backward(a_s, [a.copy() for a in a_s])[0])


# (f) dtypes -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_is_kept_and_float32_is_accurate(dtype):
    rng = np.random.default_rng(8)
    A64 = np.maximum(rng.standard_normal((2, 4, 3, 5)), 0.0)
    A = A64.astype(dtype)
    a = attention_map_forward(A)
    assert a.dtype == dtype and a.shape == (2, 15)
    assert_close(a, attention_map_ref(A64).astype(dtype), kind="forward",
                 what=f"attention_map_forward[{np.dtype(dtype)}]")
    g64 = rng.standard_normal(a.shape)
    gA = attention_map_backward(g64.astype(dtype), A)
    assert gA.dtype == dtype and gA.shape == A.shape
    assert_close(gA, attention_map_backward_ref(g64, A64).astype(dtype), kind="backward",
                 what=f"attention_map_backward[{np.dtype(dtype)}]", scale=True)
    a_m = attention_map_forward(np.maximum(rng.standard_normal(A.shape), 0).astype(dtype))
    grads = at_loss_backward([a], [a_m], grad_loss=0.5)
    assert grads[0].dtype == dtype and grads[0].shape == a.shape
    assert isinstance(at_loss_forward([a], [a_m]), float)


# (g) kernels: .py_func, parallel == serial, non-contiguous inputs ------------------------

def _kernel_cases(dtype):
    rng = np.random.default_rng(9)
    n, c, k = 3, 4, 7
    A = np.maximum(rng.standard_normal((n, c, k)), 0.0).astype(dtype)
    A[2] = 0.0  # the clamped branch
    g = rng.standard_normal((n, k)).astype(dtype)
    dt = np.dtype(dtype).type
    return {
        "_attention_map_forward_kernel": ((A, dt(c), dt(EPS)), [(n, k)]),
        "_attention_map_backward_kernel": ((g, A, dt(c), dt(2.0 / c), dt(EPS)),
                                           [(n, k), (n, c, k)]),
    }


KERNELS = ("_attention_map_forward_kernel", "_attention_map_backward_kernel")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_equals_py_func(name, dtype):
    """Only +, *, / and sqrt (all correctly rounded in numpy and LLVM): bit for bit."""
    args, out_shapes = _kernel_cases(dtype)[name]
    fn = getattr(attention, name)
    outs = [[np.full(s, np.nan, dtype=dtype) for s in out_shapes] for _ in range(2)]
    fn(*args, *outs[0])
    fn.py_func(*args, *outs[1])
    assert_close(outs[0][-1], outs[1][-1], kind="py_func", what=f"attention.{name}")


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_parallel_equals_serial(name, numba_threads):
    args, out_shapes = _kernel_cases(np.float64)[name]
    fn = getattr(attention, name)
    results = []
    for threads in (1, 2):
        outs = [np.full(s, np.nan) for s in out_shapes]
        numba_threads(threads, fn, *args, *outs)
        results.append(outs[-1])
    assert np.array_equal(results[0], results[1])


def test_non_contiguous_inputs():
    rng = np.random.default_rng(10)
    A = np.asfortranarray(np.maximum(rng.standard_normal((2, 3, 4, 5)), 0.0))
    g = rng.standard_normal((20, 2)).T  # (2, 20), not C-contiguous
    Ac = np.ascontiguousarray(A)
    assert np.array_equal(attention_map_forward(A), attention_map_forward(Ac))
    assert np.array_equal(attention_map_backward(g, A),
                          attention_map_backward(np.ascontiguousarray(g), Ac))


# (h) bad inputs ---------------------------------------------------------------------------

def test_attention_map_rejects_bad_inputs():
    A = np.zeros((2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"attention_map_forward: A must have 4 dimensions "
                                         r"\(N, C, H, W\), got shape \(3, 4, 5\)"):
        attention_map_forward(A[0])
    with pytest.raises(TypeError, match=r"attention_map_forward: A must have dtype"):
        attention_map_forward(A.astype(np.int64))
    with pytest.raises(TypeError, match=r"attention_map_forward: A must be a numpy.ndarray"):
        attention_map_forward(A.tolist())
    with pytest.raises(ValueError, match=r"attention_map_forward: A must have no empty"):
        attention_map_forward(np.zeros((2, 0, 4, 5)))
    with pytest.raises(ValueError, match=r"attention_map_forward: eps must be a finite number "
                                         r"> 0, got 0.0"):
        attention_map_forward(A, eps=0.0)
    with pytest.raises(ValueError, match=r"attention_map_backward: grad_a.shape=\(2, 19\), "
                                         r"expected \(2, 20\)"):
        attention_map_backward(np.zeros((2, 19)), A)
    with pytest.raises(ValueError, match=r"attention_map_backward: grad_a must have 2 dim"):
        attention_map_backward(np.zeros((2, 4, 5)), A)
    with pytest.raises(TypeError, match=r"attention_map_backward: arrays must share one dtype, "
                                        r"got grad_a=float32, A=float64"):
        attention_map_backward(np.zeros((2, 20), np.float32), A)


def test_at_loss_rejects_bad_inputs():
    a = [np.zeros((2, 6)), np.zeros((2, 3))]
    with pytest.raises(TypeError, match=r"at_loss_forward: a_s must be a list of \(N, H\*W\) "
                                        r"attention maps, got ndarray"):
        at_loss_forward(a[0], a[:1])
    with pytest.raises(TypeError, match=r"at_loss_backward: a_m must be a list"):
        at_loss_backward(a, a[0])
    with pytest.raises(ValueError, match=r"at_loss_forward: a_s has 2 maps but a_m has 1"):
        at_loss_forward(a, a[:1])
    with pytest.raises(ValueError, match=r"at_loss_forward: a_s and a_m are empty"):
        at_loss_forward([], [])
    with pytest.raises(ValueError, match=r"at_loss_forward: a_s\[1\].shape=\(2, 3\) but "
                                         r"a_m\[1\].shape=\(2, 4\)"):
        at_loss_forward(a, [a[0], np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"at_loss_forward: a_m\[0\] must have 2 dimensions"):
        at_loss_forward(a[:1], [np.zeros((2, 1, 6))])
    with pytest.raises(TypeError, match=r"at_loss_forward: arrays must share one dtype"):
        at_loss_forward(a, [a[0], a[1].astype(np.float32)])
    with pytest.raises(ValueError, match=r"at_loss_forward: beta must be a finite number >= 0, "
                                         r"got -1.0"):
        at_loss_forward(a, a, beta=-1.0)
    with pytest.raises(TypeError, match=r"at_loss_backward: beta must be a number"):
        at_loss_backward(a, a, beta=True)
    with pytest.raises(TypeError, match=r"at_loss_backward: grad_loss must be a number"):
        at_loss_backward(a, a, grad_loss=None)


# (i) torch autograd of the SPEC formula ----------------------------------------------------

def _torch_at(torch, A_s, A_m, beta, eps):
    F = torch.nn.functional
    maps = [F.normalize(A.pow(2).mean(1).flatten(1), p=2, dim=1, eps=eps) for A in A_s]
    meta = [F.normalize(A.pow(2).mean(1).flatten(1), p=2, dim=1, eps=eps) for A in A_m]
    return maps, beta * sum((s - m).pow(2).mean() for s, m in zip(maps, meta))


@pytest.mark.crosscheck
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_autograd(dtype):
    """Maps, their VJP, the loss and d loss / d A_s against torch autograd of
    F.normalize(A.pow(2).mean(1).flatten(1), p=2, dim=1, eps=1e-12), including an all-zero
    sample and a sample below the eps clamp."""
    torch = pytest.importorskip("torch")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(12)
        shapes = [(3, 4, 5, 3), (3, 2, 2, 3)]
        A_s = [np.maximum(rng.standard_normal(s), 0.0).astype(dtype) for s in shapes]
        A_s[0][1] = 0.0  # dead sample
        A_s[1][2] *= dtype(1e-7)  # ||q|| ~ 1e-14 < eps: the clamped branch
        A_m = [np.maximum(rng.standard_normal(s), 0.0).astype(dtype) for s in shapes]
        g = [rng.standard_normal((s[0], s[2] * s[3])).astype(dtype) for s in shapes]

        ts = [torch.tensor(A, requires_grad=True) for A in A_s]
        maps, loss = _torch_at(torch, ts, [torch.tensor(A) for A in A_m], 1000.0, EPS)
        t = tol(dtype, "torch")
        for j, A in enumerate(A_s):
            a = attention_map_forward(A)
            assert_close(a, maps[j].detach().numpy(), kind="torch", what=f"map[{j}] vs torch",
                         scale=True)
            (gt,) = torch.autograd.grad(maps[j], ts[j], torch.tensor(g[j]), retain_graph=True)
            assert_close(attention_map_backward(g[j], A), gt.numpy(), kind="torch",
                         what=f"attention_map_backward[{j}] vs torch", scale=True)

        a_s = [attention_map_forward(A) for A in A_s]
        a_m = [attention_map_forward(A) for A in A_m]
        ours, want = at_loss_forward(a_s, a_m), float(loss.detach())
        assert abs(ours - want) <= t["rtol"] * abs(want) + t["atol"]
        loss.backward()
        for j, (gl, A) in enumerate(zip(at_loss_backward(a_s, a_m), A_s)):
            assert_close(attention_map_backward(gl, A), ts[j].grad.numpy(), kind="torch",
                         what=f"d L_AT / d A_s[{j}] vs torch", scale=True)
    finally:
        torch.set_num_threads(saved)
