"""2-D convolution (cross-correlation), PyTorch layout, as a forward/backward pair.

Method: im2col into a (K, N*H_out*W_out) column matrix (K = C_in*kH*kW), one large BLAS GEMM
per call, and Numba kernels for the layout work. The GEMM is numpy's ``np.matmul`` (OpenBLAS),
called from Python with preallocated outputs: calling BLAS from inside a Numba kernel measured
2-3x slower here (see docs/performance.md), and the layout kernels are where Numba earns its
place (parallel over disjoint rows or channels, bit-identical to the serial order).

Accumulation happens in the input dtype (float32 or float64); pass float64 for reference-grade
results. There is no bias: SPEC section 2 uses none.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_int, check_same_dtype


class Conv2dGrads(NamedTuple):
    x: np.ndarray | None  # (N, C_in, H, W), or None when need_x=False
    w: np.ndarray  # (C_out, C_in, kH, kW)


def conv2d_output_size(h: int, w: int, kh: int, kw: int, stride: int, padding: int):
    """H_out = (H + 2*padding - kH) // stride + 1, and the same for W."""
    return (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1


def _check_conv(fn, x, w, stride, padding):
    check_array(fn, "x", x, ndim=4, dims="(N, C_in, H, W)")
    check_array(fn, "w", w, ndim=4, dims="(C_out, C_in, kH, kW)")
    check_same_dtype(fn, x=x, w=w)
    stride = check_int(fn, "stride", stride, minimum=1)
    padding = check_int(fn, "padding", padding, minimum=0)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"{fn}: x has C_in={x.shape[1]} channels but w expects C_in={w.shape[1]} "
            f"(x.shape={x.shape}, w.shape={w.shape})"
        )
    ho, wo = conv2d_output_size(x.shape[2], x.shape[3], w.shape[2], w.shape[3], stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"{fn}: output would be empty: H_out={ho}, W_out={wo} for x.shape={x.shape}, "
            f"kernel {w.shape[2]}x{w.shape[3]}, stride={stride}, padding={padding}"
        )
    return stride, padding, ho, wo


def conv2d_forward(x: np.ndarray, w: np.ndarray, *, stride: int = 1, padding: int = 0):
    """2-D cross-correlation with zero padding, no bias.

    y[n, o, i, j] = sum_{c,p,q} w[o, c, p, q] * x_pad[n, c, i*stride + p, j*stride + q]
    H_out = (H + 2*padding - kH) // stride + 1   (same for W)
    x: (N, C_in, H, W)  w: (C_out, C_in, kH, kW)  ->  y: (N, C_out, H_out, W_out)
    Matches torch.nn.functional.conv2d(x, w, None, stride, padding) (dilation 1, groups 1).
    """
    return _forward("conv2d_forward", x, w, stride, padding).y


class ConvOut(NamedTuple):
    y: np.ndarray  # (N, C_out, H_out, W_out)
    cols: np.ndarray  # im2col(x): (C_in*kH*kW, N*H_out*W_out), for conv2d_backward(cols=)


def conv2d_forward_keep(x: np.ndarray, w: np.ndarray, *, stride: int = 1,
                        padding: int = 0) -> ConvOut:
    """conv2d_forward that also returns its im2col matrix, so the backward need not rebuild it
    (memory for time: the matrix is kH*kW times the input). y is bit-identical to
    conv2d_forward's."""
    return _forward("conv2d_forward_keep", x, w, stride, padding)


def _forward(fn, x, w, stride, padding) -> ConvOut:
    """The conv forward: im2col, one GEMM, (C_out, N*P) -> NCHW; keeps cols for the caller."""
    stride, padding, ho, wo = _check_conv(fn, x, w, stride, padding)
    n = x.shape[0]
    c_out, c_in, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride, padding, ho, wo)  # (K, N*P)
    y_cm = np.matmul(w.reshape(c_out, c_in * kh * kw), cols)  # (C_out, N*P)
    y = np.empty((n, c_out, ho, wo), dtype=x.dtype)
    _cm_to_nchw_kernel(y_cm.reshape(c_out, n, ho * wo), y.reshape(n, c_out, ho * wo))
    return ConvOut(y, cols)


def conv2d_backward(
    grad_y: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    *,
    stride: int = 1,
    padding: int = 0,
    need_x: bool = True,
    cols: np.ndarray | None = None,
    overwrite_cols: bool = False,
) -> Conv2dGrads:
    """Vector-Jacobian product of conv2d_forward at (x, w) with cotangent grad_y.

    grad_w[o, c, p, q] = sum_{n,i,j} grad_y[n, o, i, j] * x_pad[n, c, i*stride + p, j*stride + q]
    grad_x[n, c, h, v] = sum_{o,p,q,i,j: i*stride+p-padding = h, j*stride+q-padding = v}
                         grad_y[n, o, i, j] * w[o, c, p, q]
    grad_y: (N, C_out, H_out, W_out); returns Conv2dGrads(x=(N, C_in, H, W) or None, w=w.shape).
    need_x=False skips grad_x (the first layer of a network needs none). cols: the forward's
    im2col matrix (conv2d_forward_keep), reused instead of rebuilt, read only unless
    overwrite_cols=True, which lets the backward write its grad-of-cols matrix over it (one
    matrix less in memory; the caller must not use cols again); the result is bit-identical
    either way.
    Matches torch.nn.grad.conv2d_input / conv2d_weight.
    """
    fn = "conv2d_backward"
    stride, padding, ho, wo = _check_conv(fn, x, w, stride, padding)
    check_array(fn, "grad_y", grad_y, ndim=4, dims="(N, C_out, H_out, W_out)")
    check_same_dtype(fn, grad_y=grad_y, x=x)
    n = x.shape[0]
    c_out, c_in, kh, kw = w.shape
    if grad_y.shape != (n, c_out, ho, wo):
        raise ValueError(
            f"{fn}: grad_y.shape={grad_y.shape}, expected {(n, c_out, ho, wo)} "
            f"[conv2d(x.shape={x.shape}, w.shape={w.shape}, stride={stride}, padding={padding})]"
        )
    gy_cm = np.empty((c_out, n, ho * wo), dtype=x.dtype)  # grad_y as (C_out, N*P)
    _nchw_to_cm_kernel(np.ascontiguousarray(grad_y).reshape(n, c_out, ho * wo), gy_cm)
    if not isinstance(overwrite_cols, bool):
        raise TypeError(f"{fn}: overwrite_cols must be a bool, got {overwrite_cols!r}")
    scratch = cols is None or overwrite_cols
    if cols is None:
        cols = im2col(x, kh, kw, stride, padding, ho, wo)
    else:
        k = (c_in * kh * kw, n * ho * wo)
        if not isinstance(cols, np.ndarray) or cols.shape != k or cols.dtype != x.dtype:
            raise ValueError(f"{fn}: cols must be the forward's {x.dtype} im2col matrix of shape "
                             f"{k}, got {getattr(cols, 'dtype', type(cols).__name__)} "
                             f"{getattr(cols, 'shape', '')}")
    return conv2d_backward_cm(gy_cm.reshape(c_out, n * ho * wo), cols, w, x.shape,
                              stride=stride, padding=padding, need_x=need_x,
                              cols_scratch=scratch)


def conv2d_backward_cm(gy_cm, cols, w, x_shape, *, stride, padding, need_x, cols_scratch=False):
    """The GEMM half of the conv VJP, from grad_y in (C_out, N*P) layout and im2col(x).

    grad_w = gy_cm @ cols^T  (C_out, K);   dcols = w^T @ gy_cm  (K, N*P), then col2im -> grad_x.
    cols_scratch=True lets dcols overwrite cols (the caller no longer needs it).
    Shared by conv2d_backward and the fused conv2d_relu_backward; trusts its callers' checks.
    """
    c_out, c_in, kh, kw = w.shape
    grad_w = np.matmul(gy_cm, cols.T).reshape(w.shape)  # (C_out, K) -> OIHW
    grad_x = None
    if need_x:
        wm = w.reshape(c_out, c_in * kh * kw).T
        dcols = np.matmul(wm, gy_cm, out=cols) if cols_scratch else np.matmul(wm, gy_cm)
        grad_x = np.empty(x_shape, dtype=gy_cm.dtype)
        ho, wo = conv2d_output_size(x_shape[2], x_shape[3], kh, kw, stride, padding)
        _col2im_kernel(dcols, kh, kw, stride, padding, ho, wo, grad_x)
    return Conv2dGrads(x=grad_x, w=grad_w)


def im2col(x, kh, kw, stride, padding, ho, wo):
    """Column matrix of conv patches.

    cols[(c*kH + p)*kW + q, (n*H_out + i)*W_out + j] = x_pad[n, c, i*stride + p, j*stride + q]
    x: (N, C_in, H, W) -> cols: (C_in*kH*kW, N*H_out*W_out), zero where the patch is in padding.
    """
    n, c_in = x.shape[:2]
    cols = np.empty((c_in * kh * kw, n * ho * wo), dtype=x.dtype)
    _im2col_kernel(np.ascontiguousarray(x), kh, kw, stride, padding, ho, wo, cols)
    return cols


@numba.njit(cache=True, parallel=True)
def _im2col_kernel(x, kh, kw, stride, padding, ho, wo, cols):
    # one prange iteration per row (c, p, q) of cols: disjoint writes
    n_img, c_in, h, w = x.shape
    for r in numba.prange(c_in * kh * kw):
        c = r // (kh * kw)
        p = (r // kw) % kh
        q = r % kw
        # output columns j whose input column j*stride + q - padding lies inside [0, w)
        j0 = min(wo, max(0, (padding - q + stride - 1) // stride))
        j1 = max(j0, min(wo, (w - 1 + padding - q) // stride + 1))
        col = 0
        for n in range(n_img):
            for i in range(ho):
                hi = i * stride + p - padding
                if hi < 0 or hi >= h:
                    for j in range(wo):
                        cols[r, col + j] = 0.0
                else:
                    for j in range(j0):
                        cols[r, col + j] = 0.0
                    off = q - padding
                    if stride == 1:  # contiguous copy: lets LLVM vectorise
                        cols[r, col + j0:col + j1] = x[n, c, hi, j0 + off:j1 + off]
                    else:
                        for j in range(j0, j1):
                            cols[r, col + j] = x[n, c, hi, j * stride + off]
                    for j in range(j1, wo):
                        cols[r, col + j] = 0.0
                col += wo


@numba.njit(cache=True, parallel=True)
def _col2im_kernel(dcols, kh, kw, stride, padding, ho, wo, grad_x):
    # grad_x[n, c, i*s+p-pad, j*s+q-pad] += dcols[(c, p, q), (n, i, j)]
    # one prange iteration per input channel c: it owns grad_x[:, c], so writes are disjoint
    # and the summation order (p, q, n, i, j) is fixed: parallel equals serial bit for bit.
    n_img, c_in, h, w = grad_x.shape
    for c in numba.prange(c_in):
        for n in range(n_img):
            for a in range(h):
                for b in range(w):
                    grad_x[n, c, a, b] = 0.0
        for p in range(kh):
            for q in range(kw):
                r = (c * kh + p) * kw + q
                j0 = min(wo, max(0, (padding - q + stride - 1) // stride))
                j1 = max(j0, min(wo, (w - 1 + padding - q) // stride + 1))
                off = q - padding
                for n in range(n_img):
                    for i in range(ho):
                        hi = i * stride + p - padding
                        if hi < 0 or hi >= h:
                            continue
                        base = (n * ho + i) * wo
                        if stride == 1:  # unit stride: a vectorisable loop
                            for j in range(j0, j1):
                                grad_x[n, c, hi, j + off] += dcols[r, base + j]
                        else:
                            for j in range(j0, j1):
                                grad_x[n, c, hi, j * stride + off] += dcols[r, base + j]


@numba.njit(cache=True, parallel=True)
def _cm_to_nchw_kernel(y_cm, y):
    # y[n, o, :] = y_cm[o, n, :]   ((C_out, N, P) -> (N, C_out, P)); one image per iteration
    c_out, n_img, p = y_cm.shape
    for n in numba.prange(n_img):
        for o in range(c_out):
            for k in range(p):
                y[n, o, k] = y_cm[o, n, k]


@numba.njit(cache=True, parallel=True)
def _nchw_to_cm_kernel(y, y_cm):
    # y_cm[o, n, :] = y[n, o, :]   ((N, C_out, P) -> (C_out, N, P)); one channel per iteration
    n_img, c_out, p = y.shape
    for o in numba.prange(c_out):
        for n in range(n_img):
            for k in range(p):
                y_cm[o, n, k] = y[n, o, k]
