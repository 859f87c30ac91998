"""Attention maps and the attention-transfer (AT) loss of SPEC 4.1, as forward/backward pairs.

    q[n, k] = (1/C) sum_c A[n, c, k]^2             k = h*W + w   (p = 2, mean over channels)
    a[n, k] = q[n, k] / max(||q[n]||_2, eps)       eps = 1e-12
    L_AT    = beta * sum_j mean_{n,k} (a_S^j[n, k] - a_M^j[n, k])^2         beta = 1000

A is a post-ReLU activation (N, C, H, W); the maps a are (N, H*W), flattened in C order as
torch.flatten(x, 1). S is the student, M the frozen meta-model, which gets no gradient.

Zero norm (a dead layer, or a sample whose activation is all zeros). The denominator is clamped
at eps exactly as torch.nn.functional.normalize(q, p=2, dim=1, eps=1e-12) does, forward and
backward:
- ||q|| >= eps: a = q / ||q||, and the full VJP of the normalisation (torch's clamp_min passes
  the gradient at equality, so does this code);
- ||q|| <  eps: a = q / eps, with eps a constant: grad_q = grad_a / eps.
For an all-zero activation this gives a = 0 and grad_A = grad_q * 2A/C = 0 (A = 0), so a dead
layer contributes beta * mean (a_M)^2 to the loss and nothing to the gradient. A layer whose
activations are tiny but not zero (||q|| < 1e-12, i.e. A ~ 1e-6) gets the large gradients
torch gives it too.

Numerics: every sum accumulates in the input dtype (float32 or float64; pass float64 for
reference-grade results); ||q|| is sqrt(sum_k q^2) with no rescaling, so it overflows when
q ~ 1e19 in float32 (|A| ~ 3e9), far beyond trained activations. The kernels run one sample per
prange iteration (disjoint writes, bit-identical to serial); set NUMBA_DISABLE_JIT=1 to run them
as plain Python. The loss pair is two vectorised numpy lines per map: no kernel would pay there.

Use (stage B; models.attention_points names the points and pulls A from an ann_forward tape):
    a_s = [attention_map_forward(A) for A in student_acts]
    loss = ce + at_loss_forward(a_s, a_m, beta=beta)
    grad_A = [attention_map_backward(g, A) for g, A in zip(at_loss_backward(a_s, a_m, beta=beta),
                                                           student_acts)]
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .._checks import check_array, check_same_dtype

BETA = 1000.0  # SPEC 4.1
EPS = 1e-12  # torch.nn.functional.normalize's default


def _check_eps(fn, eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise TypeError(f"{fn}: eps must be a positive number, got {eps!r}")
    if not (math.isfinite(float(eps)) and float(eps) > 0.0):
        raise ValueError(f"{fn}: eps must be a finite number > 0, got {eps!r}")
    return float(eps)


def _check_beta(fn, beta):
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating, np.integer)):
        raise TypeError(f"{fn}: beta must be a number >= 0, got {beta!r}")
    if not (math.isfinite(float(beta)) and float(beta) >= 0.0):
        raise ValueError(f"{fn}: beta must be a finite number >= 0, got {beta!r}")
    return float(beta)


def _check_activation(fn, A):
    check_array(fn, "A", A, ndim=4, dims="(N, C, H, W)")
    if 0 in A.shape:
        raise ValueError(f"{fn}: A must have no empty dimension, got shape {A.shape}")


def attention_map_forward(A: np.ndarray, *, eps: float = EPS) -> np.ndarray:
    """The p = 2 attention map of each sample, L2-normalised over the spatial positions.

    q[n, k] = (1/C) sum_c A[n, c, k]^2,   k = h*W + w
    a[n, k] = q[n, k] / max(||q[n]||_2, eps)
    A: (N, C, H, W) -> a: (N, H*W), A's dtype. The channel sum runs over c = 0..C-1 in order,
    then is divided by C; ||q|| = sqrt(sum_k q^2); all in A's dtype.
    Matches torch.nn.functional.normalize(A.pow(2).mean(1).flatten(1), p=2, dim=1, eps=eps).
    """
    fn = "attention_map_forward"
    _check_activation(fn, A)
    eps = _check_eps(fn, eps)
    n, c, h, w = A.shape
    a = np.empty((n, h * w), dtype=A.dtype)
    dt = A.dtype.type
    _attention_map_forward_kernel(np.ascontiguousarray(A).reshape(n, c, h * w), dt(c), dt(eps), a)
    return a


@numba.njit(cache=True, parallel=True)
def _attention_map_forward_kernel(A, c_f, eps, a):
    # A: (N, C, K); c_f = C and eps in A's dtype (an int or float64 literal would promote
    # float32 arithmetic to float64 under numba); a: (N, K), also used for q
    n_img, n_ch, k_len = A.shape
    for n in numba.prange(n_img):
        # q[k] = (sum_c A[c, k]^2) / C, summed over c in order
        for k in range(k_len):
            a[n, k] = A[n, 0, k] * A[n, 0, k]
        for c in range(1, n_ch):
            for k in range(k_len):
                a[n, k] += A[n, c, k] * A[n, c, k]
        for k in range(k_len):
            a[n, k] = a[n, k] / c_f
        # r = ||q||_2; a = q / max(r, eps) (NaN stays NaN, as in torch's clamp_min)
        s = a[n, 0] * a[n, 0]
        for k in range(1, k_len):
            s += a[n, k] * a[n, k]
        r = np.sqrt(s)
        d = eps if r < eps else r
        for k in range(k_len):
            a[n, k] = a[n, k] / d


def attention_map_backward(grad_a: np.ndarray, A: np.ndarray, *, eps: float = EPS) -> np.ndarray:
    """Vector-Jacobian product of attention_map_forward at A with cotangent grad_a.

    With q, r = ||q[n]||_2 and a recomputed from A:
      r >= eps:  grad_q[n, k] = (grad_a[n, k] - a[n, k] * sum_k' a[n, k'] grad_a[n, k']) / r
      r <  eps:  grad_q[n, k] = grad_a[n, k] / eps        (the clamped denominator is constant)
      grad_A[n, c, k] = grad_q[n, k] * (2/C) * A[n, c, k]
    grad_a: (N, H*W), A: (N, C, H, W), one dtype -> grad_A: (N, C, H, W).
    Matches torch autograd through the expression in attention_map_forward's docstring.
    """
    fn = "attention_map_backward"
    _check_activation(fn, A)
    check_array(fn, "grad_a", grad_a, ndim=2, dims="(N, H*W)")
    check_same_dtype(fn, grad_a=grad_a, A=A)
    eps = _check_eps(fn, eps)
    n, c, h, w = A.shape
    if grad_a.shape != (n, h * w):
        raise ValueError(f"{fn}: grad_a.shape={grad_a.shape}, expected {(n, h * w)} "
                         f"for A.shape={A.shape}")
    dt = A.dtype.type
    grad_A = np.empty(A.shape, dtype=A.dtype)
    scratch = np.empty((n, h * w), dtype=A.dtype)
    _attention_map_backward_kernel(np.ascontiguousarray(grad_a),
                                   np.ascontiguousarray(A).reshape(n, c, h * w), dt(c),
                                   dt(2.0 / c), dt(eps), scratch, grad_A.reshape(n, c, h * w))
    return grad_A


@numba.njit(cache=True, parallel=True)
def _attention_map_backward_kernel(grad_a, A, c_f, two_over_c, eps, q, grad_A):
    # q: (N, K) scratch, holding q, then a, then grad_q of sample n; all writes are to row n
    n_img, n_ch, k_len = A.shape
    for n in numba.prange(n_img):
        # q[k] exactly as in the forward kernel
        for k in range(k_len):
            q[n, k] = A[n, 0, k] * A[n, 0, k]
        for c in range(1, n_ch):
            for k in range(k_len):
                q[n, k] += A[n, c, k] * A[n, c, k]
        for k in range(k_len):
            q[n, k] = q[n, k] / c_f
        s = q[n, 0] * q[n, 0]
        for k in range(1, k_len):
            s += q[n, k] * q[n, k]
        r = np.sqrt(s)
        if r < eps:
            # denominator clamped to the constant eps: grad_q = grad_a / eps
            for k in range(k_len):
                q[n, k] = grad_a[n, k] / eps
        else:
            # a = q / r; grad_q = (grad_a - a <a, grad_a>) / r
            for k in range(k_len):
                q[n, k] = q[n, k] / r
            dot = q[n, 0] * grad_a[n, 0]
            for k in range(1, k_len):
                dot += q[n, k] * grad_a[n, k]
            for k in range(k_len):
                q[n, k] = (grad_a[n, k] - q[n, k] * dot) / r
        # grad_A[c, k] = grad_q[k] * (2/C) * A[c, k]
        for c in range(n_ch):
            for k in range(k_len):
                grad_A[n, c, k] = q[n, k] * two_over_c * A[n, c, k]


def _check_map_lists(fn, a_s, a_m):
    for name, lst in (("a_s", a_s), ("a_m", a_m)):
        if not isinstance(lst, (list, tuple)):
            raise TypeError(f"{fn}: {name} must be a list of (N, H*W) attention maps, got "
                            f"{type(lst).__name__}")
    if len(a_s) != len(a_m):
        raise ValueError(f"{fn}: a_s has {len(a_s)} maps but a_m has {len(a_m)}; one pair per "
                         f"attention point is expected")
    if not a_s:
        raise ValueError(f"{fn}: a_s and a_m are empty; expected one map per attention point")
    for j, (s, m) in enumerate(zip(a_s, a_m)):
        check_array(fn, f"a_s[{j}]", s, ndim=2, dims="(N, H*W)")
        check_array(fn, f"a_m[{j}]", m, ndim=2, dims="(N, H*W)")
        if s.shape != m.shape:
            raise ValueError(f"{fn}: a_s[{j}].shape={s.shape} but a_m[{j}].shape={m.shape}; "
                             f"student and meta-model maps must have the same shape")
        if 0 in s.shape:
            raise ValueError(f"{fn}: a_s[{j}] is empty (shape {s.shape})")
    check_same_dtype(fn, **{f"a_s[{j}]": s for j, s in enumerate(a_s)},
                     **{f"a_m[{j}]": m for j, m in enumerate(a_m)})
    return a_s[0].dtype


def at_loss_forward(a_s: list, a_m: list, *, beta: float = BETA) -> float:
    """Attention-transfer loss between student and meta-model maps.

    L_AT = beta * sum_j mean_{n,k} (a_s[j][n, k] - a_m[j][n, k])^2
    a_s, a_m: lists (one entry per attention point j) of (N, H_j*W_j) maps, pairwise equal
    shapes, one dtype -> float (each mean in the maps' dtype, numpy's pairwise sum; the sum over
    j and the factor beta in float64).
    Matches beta * sum_j (a_s[j] - a_m[j]).pow(2).mean() in torch.
    """
    fn = "at_loss_forward"
    dtype = _check_map_lists(fn, a_s, a_m)
    beta = _check_beta(fn, beta)
    total = 0.0
    for s, m in zip(a_s, a_m):
        d = s - m  # (N, K_j)
        total += float(np.mean(d * d, dtype=dtype))
    return beta * total


def at_loss_backward(a_s: list, a_m: list, *, beta: float = BETA,
                     grad_loss: float = 1.0) -> list:
    """Gradients of grad_loss * L_AT with respect to the student maps (a_m gets none).

    grad_a_s[j][n, k] = grad_loss * beta * 2 * (a_s[j][n, k] - a_m[j][n, k]) / (N * H_j*W_j)
    Shapes and checks as at_loss_forward; returns a list of arrays in the maps' dtype. The
    factor grad_loss * beta * 2 / (N*H_j*W_j) is formed in float64, then cast to the dtype.
    """
    fn = "at_loss_backward"
    dtype = _check_map_lists(fn, a_s, a_m)
    beta = _check_beta(fn, beta)
    if isinstance(grad_loss, bool) or not isinstance(grad_loss, (int, float, np.floating,
                                                                 np.integer)):
        raise TypeError(f"{fn}: grad_loss must be a number, got {grad_loss!r}")
    out = []
    for s, m in zip(a_s, a_m):
        scale = dtype.type(float(grad_loss) * beta * 2.0 / s.size)
        out.append((s - m) * scale)
    return out
