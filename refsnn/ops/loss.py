"""Softmax cross-entropy (batch mean) as a forward/backward pair."""

from __future__ import annotations

import numba
import numpy as np

from .._checks import check_array


def _check_ce(fn, logits, labels):
    check_array(fn, "logits", logits, ndim=2, dims="(N, K)")
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels must be an integer numpy array, got "
                        f"{type(labels).__name__} {getattr(labels, 'dtype', '')}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"{fn}: logits must have at least one row and one class, "
                         f"got shape {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"{fn}: labels.shape={labels.shape}, expected ({logits.shape[0]},)")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"{fn}: labels must be in [0, {logits.shape[1] - 1}], got range "
                         f"[{labels.min()}, {labels.max()}]")


def cross_entropy_forward(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy.

    loss = (1/N) sum_n [ logsumexp(logits[n]) - logits[n, labels[n]] ]
    logsumexp(z) = m + log(sum_k exp(z_k - m)),  m = max_k z_k   (stable)
    logits: (N, K) float, labels: (N,) int -> float (computed in logits' dtype, returned as a
    Python float).  Matches torch.nn.functional.cross_entropy(logits, labels) (mean reduction).
    """
    _check_ce("cross_entropy_forward", logits, labels)
    per = np.empty(logits.shape[0], dtype=logits.dtype)
    _ce_forward_kernel(np.ascontiguousarray(logits), labels.astype(np.int64), per)
    # the mean in logits' dtype (numpy's pairwise sum)
    return float(per.mean(dtype=logits.dtype))


def cross_entropy_backward(grad_loss: float, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """grad_logits[n, k] = grad_loss * (softmax(logits[n])_k - [k == labels[n]]) / N."""
    _check_ce("cross_entropy_backward", logits, labels)
    grad = np.empty_like(logits)
    _ce_backward_kernel(np.ascontiguousarray(logits), labels.astype(np.int64),
                        logits.dtype.type(grad_loss / logits.shape[0]), grad)
    return grad


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, exp(z - max z) / sum exp(z - max z)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@numba.njit(cache=True)
def _ce_forward_kernel(logits, labels, per):
    n, k = logits.shape
    for r in range(n):
        m = logits[r, 0]
        for c in range(1, k):
            if logits[r, c] > m:
                m = logits[r, c]
        s = np.exp(logits[r, 0] - m)  # exp(0) = 1, in logits' dtype
        for c in range(1, k):
            s += np.exp(logits[r, c] - m)
        per[r] = m + np.log(s) - logits[r, labels[r]]


@numba.njit(cache=True)
def _ce_backward_kernel(logits, labels, scale, grad):
    n, k = logits.shape
    for r in range(n):
        m = logits[r, 0]
        for c in range(1, k):
            if logits[r, c] > m:
                m = logits[r, c]
        grad[r, 0] = np.exp(logits[r, 0] - m)
        s = grad[r, 0]  # accumulates in logits' dtype
        for c in range(1, k):
            grad[r, c] = np.exp(logits[r, c] - m)
            s += grad[r, c]
        for c in range(k):
            grad[r, c] = grad[r, c] / s * scale
        grad[r, labels[r]] -= scale
