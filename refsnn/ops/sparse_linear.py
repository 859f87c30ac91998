"""Weight-sparse linear VJP: the gradients of y = x W^T through the live weights only.

A pruned linear layer (SPEC 4.2, density d) has d of the dense multiply-adds in its input
gradient, and its weight gradient is needed at the live weights only. With W packed by input
feature (event.py's EventWeights: group i holds the live entries (o, i), o increasing):

    grad_x[n, i] = sum over the live entries e = (o, i) of value[e] * grad_y[n, o]
    grad_w[e]    = sum over the samples n with x[n, i] != 0 of grad_y[n, o] * x[n, i]

grad_x is computed in the transposed layout, gxT = grad_x^T (C_in, N): each live weight is one
contiguous multiply-add of two rows of N (gxT[i] += value[e] * gyT[o]), d * C_in * C_out * N
multiply-adds at vector speed, summed in entry order. grad_w skips the zero inputs (spikes:
most of them), nnz(x) x (live weights per input feature) multiply-adds, summed in sample
order. Both are parallel over input features (group i writes gxT[i] and its own entries only),
so every result is bit-identical at any thread count. The forward is event.py's
linear_event_forward for sparse inputs, or the dense GEMM of the masked weight (equal to
rounding). Equal to linear_backward at the mask to rounding (tests: float64 to 1e-12).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_same_dtype
from .event import EventWeights


class SparseLinearGrads(NamedTuple):
    x: np.ndarray | None  # dL/dx (N, C_in), or None when need_x=False
    w: np.ndarray | None  # dL/dw of each packed live weight, (nnz,), in ew's entry order (None
    # when need_w=False)


def linear_sparse_backward(grad_y: np.ndarray, x: np.ndarray, ew: EventWeights, *,
                           need_x: bool = True, need_w: bool = True) -> SparseLinearGrads:
    """linear_backward(grad_y, x, w) through the live weights of w (pack_event_weights(w)).

    grad_y: (N, C_out), x: (N, C_in) (its zeros are skipped), w (C_out, C_in) -> grad_x (N,
    C_in) and grad_w per packed entry (unpack_event_grad makes it dense: zero at the pruned
    weights, where linear_backward gives the full gradient); need_x / need_w=False skip one."""
    fn = "linear_sparse_backward"
    if not isinstance(ew, EventWeights) or len(ew.shape) != 2:
        raise TypeError(f"{fn}: ew must be pack_event_weights of a linear weight (C_out, C_in), "
                        f"got {type(ew).__name__} of shape {getattr(ew, 'shape', None)}")
    check_array(fn, "x", x, ndim=2, dims="(N, C_in)")
    check_array(fn, "grad_y", grad_y, ndim=2, dims="(N, C_out)")
    check_same_dtype(fn, grad_y=grad_y, x=x, ew_value=ew.value)
    n = x.shape[0]
    if x.shape[1] != ew.shape[1] or grad_y.shape != (n, ew.shape[0]):
        raise ValueError(f"{fn}: x.shape={x.shape} and grad_y.shape={grad_y.shape} do not fit "
                         f"w.shape={ew.shape}: expected (N, {ew.shape[1]}) and "
                         f"(N, {ew.shape[0]})")
    gy = np.ascontiguousarray(grad_y)
    grad_x = grad_w = None
    if need_w:
        grad_w = np.zeros(ew.value.size, dtype=x.dtype)
        _grad_w_kernel(np.ascontiguousarray(x.T), gy, ew.ptr, ew.out, grad_w)
    if need_x:
        gxt = np.zeros((ew.shape[1], n), dtype=x.dtype)
        _grad_x_kernel(np.ascontiguousarray(gy.T), ew.ptr, ew.out, ew.value, gxt)
        grad_x = np.ascontiguousarray(gxt.T)
    return SparseLinearGrads(grad_x, grad_w)


@numba.njit(cache=True, parallel=True)
def _grad_x_kernel(gyt, ptr, out, value, gxt):
    for i in numba.prange(gxt.shape[0]):  # feature i writes gxt[i] only
        if ptr[i] < ptr[i + 1]:
            _axpy_rows(gxt[i], gyt, out, value, ptr[i], ptr[i + 1])


@numba.njit(cache=True, inline="never")  # its own function: the k loop vectorises here
def _axpy_rows(dst, src, out, value, e0, e1):
    """dst += value[e] * src[out[e]] for e in e0..e1-1, in that order."""
    for e in range(e0, e1):
        wv, row = value[e], src[np.uint32(out[e])]
        for k in range(dst.size):
            dst[k] += wv * row[k]


@numba.njit(cache=True, parallel=True)
def _grad_w_kernel(xt, gy, ptr, out, grad_w):
    for i in numba.prange(xt.shape[0]):  # feature i writes its entries ptr[i]:ptr[i+1] only
        e0, e1 = ptr[i], ptr[i + 1]
        if e0 == e1:
            continue
        xr = xt[i]
        for m in range(xr.size):
            v = xr[m]
            if v != 0:
                _gather_add(grad_w, gy[m], out, v, e0, e1)


@numba.njit(cache=True, inline="never")
def _gather_add(acc, row, out, v, e0, e1):
    """acc[e] += row[out[e]] * v for e in e0..e1-1."""
    for e in range(e0, e1):
        acc[e] += row[np.uint32(out[e])] * v
