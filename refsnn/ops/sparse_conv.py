"""Weight-sparse conv2d forward and VJP: each live weight times whole input planes.

A pruned conv (SPEC 4.2, density d) needs only d of the dense multiply-adds. The event ops
(event.py) also skip zero inputs but scatter one product at a time; the ops here keep the
inputs dense and make each live weight w[o, c, p, q] one shifted multiply-add of whole
planes. The input plane is zero-padded to (H + 2 padding) x Wp, Wp = W + 2 padding, and the
output kept at the same row pitch Wp (its last Wp - W_out columns are scratch), so that the
tap (p, q) is one constant offset p*Wp + q between flat indices:

    forward:  Y[n, o, k]  += w * Xp[n, c, k + p*Wp + q]       k < H_out*Wp
    grad_x:   GXp[n, c, k + p*Wp + q] += w * GY[n, o, k]       (GY zero in the scratch columns)
    grad_w:   gw[e] = sum_n <GY[n, o, :], Xp[n, c, p*Wp + q : p*Wp + q + H_out*Wp]>

each one contiguous loop over H_out*Wp elements (SIMD). Stride 1 only (VGG, and every ResNet
conv but the downsampling ones). Work: d times the dense GEMM's multiply-adds, at vector
speed. Summation order differs from the GEMM's: equal to
conv2d_forward / conv2d_backward at the mask to rounding (tests: float64 to 1e-12).

Parallel structure: forward and grad_x are parallel over samples (each writes its own y[n] /
gx[n]); grad_w sums per-chunk partial gradients (fixed chunks of _CHUNK samples, then the
chunks in order), so every result is bit-identical at any thread count. grad_w's dot
products are compiled with reassociation allowed (fastmath "reassoc"), so they vectorise:
the compiled order is fixed for a build, not the left-to-right order.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_int, check_same_dtype
from .conv import conv2d_output_size
from .event import EventWeights

_CHUNK = 8  # samples per partial weight gradient (fixed: it, not the thread count, sets order)


class SparseConvGrads(NamedTuple):
    x: np.ndarray | None  # dL/dx (N, C_in, H, W), or None when need_x=False
    w: np.ndarray  # dL/dw of each packed live weight, (nnz,), in ew's entry order


def _check(fn, x, ew, padding):
    if not isinstance(ew, EventWeights) or len(ew.shape) != 4:
        raise TypeError(f"{fn}: ew must be pack_event_weights of a conv weight (C_out, C_in, "
                        f"kH, kW), got {type(ew).__name__}")
    check_array(fn, "x", x, ndim=4, dims="(N, C_in, H, W)")
    check_same_dtype(fn, x=x, ew_value=ew.value)
    if x.shape[1] != ew.shape[1]:
        raise ValueError(f"{fn}: x has C_in={x.shape[1]} but the packed weight expects "
                         f"C_in={ew.shape[1]} (x.shape={x.shape}, w.shape={ew.shape})")
    padding = check_int(fn, "padding", padding, minimum=0)
    ho, wo = conv2d_output_size(x.shape[2], x.shape[3], ew.shape[2], ew.shape[3], 1, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"{fn}: output would be empty: H_out={ho}, W_out={wo} for "
                         f"x.shape={x.shape}, kernel {ew.shape[2]}x{ew.shape[3]}, "
                         f"padding={padding}")
    return padding, ho, wo


def _padded(x, padding, kh, kw):
    """x zero-padded to (N, C, (H + 2 padding) * Wp + kw) flat planes, Wp = W + 2 padding (the
    tail keeps every tap's shifted read in bounds)."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    xp = np.zeros((n, c, hp * wp + kw), dtype=x.dtype)
    xp[:, :, :hp * wp].reshape(n, c, hp, wp)[:, :, padding:padding + h, padding:padding + w] = x
    return xp, wp


def conv2d_sparse_forward(x: np.ndarray, ew: EventWeights, *, padding: int = 0) -> np.ndarray:
    """conv2d_forward(x, w, stride=1, padding=) from the live weights of w (pack_event_weights).

    x: (N, C_in, H, W)  ->  y: (N, C_out, H_out, W_out), x's dtype."""
    return conv2d_sparse_forward_keep(x, ew, padding=padding)[0]


def conv2d_sparse_forward_keep(x: np.ndarray, ew: EventWeights, *, padding: int = 0):
    """conv2d_sparse_forward that also returns the padded input planes, for
    conv2d_sparse_backward(xp=) (so the backward does not pad x again): (y, xp)."""
    padding, ho, wo = _check("conv2d_sparse_forward", x, ew, padding)
    c, offset = _entries(ew, x.shape[3] + 2 * padding)
    xp, wp = _padded(x, padding, ew.shape[2], ew.shape[3])
    y = np.zeros((x.shape[0], ew.shape[0], ho * wp), dtype=x.dtype)
    _plane_axpy_kernel(y, ew.out, np.zeros_like(offset), xp, c, offset, ew.value, ho * wp)
    return np.ascontiguousarray(y.reshape(x.shape[0], ew.shape[0], ho, wp)[:, :, :, :wo]), xp


def conv2d_sparse_backward(grad_y: np.ndarray, x: np.ndarray, ew: EventWeights, *,
                           padding: int = 0, need_x: bool = True,
                           xp: np.ndarray | None = None) -> SparseConvGrads:
    """conv2d_backward(grad_y, x, w, stride=1, padding=) through the live weights only: grad_w
    per packed entry (unpack_event_grad makes it dense), grad_x through live weights. xp: the
    forward's padded planes (conv2d_sparse_forward_keep), read only; the same result."""
    fn = "conv2d_sparse_backward"
    padding, ho, wo = _check(fn, x, ew, padding)
    check_array(fn, "grad_y", grad_y, ndim=4, dims="(N, C_out, H_out, W_out)")
    check_same_dtype(fn, grad_y=grad_y, x=x)
    n, c_in, h, w = x.shape
    if grad_y.shape != (n, ew.shape[0], ho, wo):
        raise ValueError(f"{fn}: grad_y.shape={grad_y.shape}, expected "
                         f"{(n, ew.shape[0], ho, wo)} for x.shape={x.shape}, "
                         f"w.shape={ew.shape}, padding={padding}")
    c, offset = _entries(ew, w + 2 * padding)
    wp = w + 2 * padding
    shape = (n, c_in, (h + 2 * padding) * wp + ew.shape[3])
    if xp is None:
        xp = _padded(x, padding, ew.shape[2], ew.shape[3])[0]
    elif not isinstance(xp, np.ndarray) or xp.shape != shape or xp.dtype != x.dtype:
        raise ValueError(f"{fn}: xp must be the forward's {x.dtype} padded planes of shape "
                         f"{shape}, got {getattr(xp, 'dtype', type(xp).__name__)} "
                         f"{getattr(xp, 'shape', '')}")
    gy = np.zeros((n, ew.shape[0], ho * wp), dtype=x.dtype)  # scratch columns stay zero
    gy.reshape(n, ew.shape[0], ho, wp)[:, :, :, :wo] = grad_y
    n_chunks = -(-n // _CHUNK)
    partial = np.zeros((n_chunks, ew.value.size), dtype=x.dtype)
    _grad_w_kernel(gy, xp, c, offset, ew.out, partial)
    grad_w = np.zeros(ew.value.size, dtype=x.dtype)
    for k in range(n_chunks):  # chunk order, whatever the threads
        grad_w += partial[k]
    grad_x = None
    if need_x:
        gxp = np.zeros_like(xp)
        _plane_axpy_kernel(gxp, c, offset, gy, ew.out, np.zeros_like(offset), ew.value,
                           ho * wp)
        hp = h + 2 * padding
        grad_x = np.ascontiguousarray(gxp[:, :, :hp * wp].reshape(n, c_in, hp, wp)[
            :, :, padding:padding + h, padding:padding + w])
    return SparseConvGrads(grad_x, grad_w)


def _entries(ew, wp):
    """Input channel c and flat tap offset p*Wp + q of every packed entry."""
    c_in, kh, kw = ew.shape[1:]
    g = np.repeat(np.arange(c_in * kh * kw), np.diff(ew.ptr))
    offset = ((g // kw) % kh) * wp + g % kw
    return (g // (kh * kw)).astype(np.int32), offset.astype(np.int64)


@numba.njit(cache=True, parallel=True)
def _plane_axpy_kernel(dst, dst_ch, dst_off, src, src_ch, src_off, value, size):
    """dst[m, dst_ch[e], dst_off[e] + k] += value[e] * src[m, src_ch[e], src_off[e] + k] for
    every entry e and k < size: the forward (dst = Y, src = Xp, shifted source) and grad_x
    (dst = GXp, src = GY, shifted destination) are this one loop with the roles swapped."""
    for m in numba.prange(dst.shape[0]):  # sample m writes dst[m] only
        for e in range(value.size):
            wv = value[e]
            dr = dst[m, dst_ch[e], dst_off[e]:dst_off[e] + size]
            sr = src[m, src_ch[e], src_off[e]:src_off[e] + size]
            for k in range(size):
                dr[k] += wv * sr[k]


@numba.njit(cache=True, parallel=True, fastmath={"reassoc"})
def _grad_w_kernel(gy, xp, c, offset, out, partial):
    n, size = gy.shape[0], gy.shape[2]
    for b in numba.prange(partial.shape[0]):  # chunk b writes partial[b] only
        acc = partial[b]
        for m in range(b * _CHUNK, min(n, (b + 1) * _CHUNK)):
            for e in range(acc.size):
                gr = gy[m, out[e]]
                xr = xp[m, c[e], offset[e]:offset[e] + size]
                s = acc[e] * 0  # the layer's dtype
                for k in range(size):
                    s += gr[k] * xr[k]
                acc[e] += s
