"""Fully connected layer (no bias), PyTorch layout, as a forward/backward pair.

A linear layer is one GEMM; it calls BLAS through ``np.matmul`` directly (a Numba wrapper
around a single GEMM adds nothing but a slower call path). Accumulates in the input dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import check_array, check_same_dtype


class LinearGrads(NamedTuple):
    x: np.ndarray | None  # (N, n_in), or None when need_x=False
    w: np.ndarray  # (n_out, n_in)


def _check_linear(fn, x, w):
    check_array(fn, "x", x, ndim=2, dims="(N, n_in)")
    check_array(fn, "w", w, ndim=2, dims="(n_out, n_in)")
    check_same_dtype(fn, x=x, w=w)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{fn}: x has n_in={x.shape[1]} features but w expects n_in={w.shape[1]} "
                         f"(x.shape={x.shape}, w.shape={w.shape})")


# Batches up to this size compute the forward as (w @ x^T)^T: OpenBLAS streams a large w faster
# in that orientation when x has few rows (vgg9's fc1 + fc2 + fc3, 2 threads: 7.1 instead of
# 10.5 ms at 32 rows, 10.0 / 13.5 at 64, 17.4 / 19.9 at 128; 23.5 / 22.6 at 160, 67 / 59 at
# 512). The two round differently (BLAS blocking), so the forward's last bits depend on it.
SMALL_BATCH = 128


def linear_forward(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y[n, o] = sum_i x[n, i] * w[o, i].  x: (N, n_in)  w: (n_out, n_in) -> y: (N, n_out)

    Matches torch.nn.functional.linear(x, w) (no bias).
    """
    _check_linear("linear_forward", x, w)
    if x.shape[0] <= SMALL_BATCH:  # (w @ x^T)^T: the same sums, OpenBLAS's other kernel
        return np.ascontiguousarray(np.matmul(w, x.T).T)
    return np.matmul(x, w.T)


def linear_backward(grad_y: np.ndarray, x: np.ndarray, w: np.ndarray, *,
                    need_x: bool = True) -> LinearGrads:
    """Vector-Jacobian product of linear_forward.

    grad_x = grad_y @ w   (N, n_in);   grad_w = grad_y^T @ x   (n_out, n_in)
    """
    fn = "linear_backward"
    _check_linear(fn, x, w)
    check_array(fn, "grad_y", grad_y, ndim=2, dims="(N, n_out)")
    check_same_dtype(fn, grad_y=grad_y, x=x)
    if grad_y.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"{fn}: grad_y.shape={grad_y.shape}, expected {(x.shape[0], w.shape[0])}")
    grad_w = np.matmul(grad_y.T, x)
    grad_x = np.matmul(grad_y, w) if need_x else None
    return LinearGrads(x=grad_x, w=grad_w)
