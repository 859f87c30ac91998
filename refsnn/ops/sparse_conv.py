"""Weight-sparse conv2d forward and VJP: each live weight times whole input planes.

A pruned conv (SPEC 4.2, density d) needs only d of the dense multiply-adds. The event ops
(event.py) also skip zero inputs but scatter one product at a time; the ops here keep the
inputs dense and make each live weight w[o, c, p, q] one shifted multiply-add of whole
planes. Each input plane is zero-padded to Hp x Wp (Hp = H + 2 padding, Wp = W + 2 padding,
Lp = Hp*Wp) and the output kept at the same row pitch Wp and plane stride Lp (the columns past
W_out and the rows past H_out are scratch), so that the tap (p, q) is one constant offset
p*Wp + q between flat indices. The samples go in blocks of B: block k holds, per channel, its
B padded planes back to back, so one multiply-add covers B planes (small planes would otherwise
leave the loop overhead per weight and sample visible: 8x8 planes are 80 elements):

    forward:  Y[k, o, j]  += w * Xp[k, c, j + p*Wp + q]       j < (B-1)*Lp + H_out*Wp
    grad_x:   GXp[k, c, j + p*Wp + q] += w * GY[k, o, j]       (GY zero in the scratch)
    grad_w:   gw[e] = sum_k <GY[k, o, :], Xp[k, c, p*Wp + q : ...]>

each one contiguous loop (SIMD). Only scratch outputs read past their own plane (into the
next one), and GY is zero there, so no result mixes two samples. B is chosen so one block's
input and output planes take about _BLOCK_BYTES (measured, see there), and the samples are
spread over equal blocks (the last block's missing samples are zero planes). Stride 1 only
(VGG, and every ResNet conv but the downsampling ones). Work: d times the dense GEMM's
multiply-adds, at vector speed. y and grad_x sum each output over the live weights in entry
order whatever B is (tested bit for bit); grad_w's sums depend on B. Equal to conv2d_forward /
conv2d_backward at the mask to rounding (tests: float64 to 1e-12).

Parallel structure: forward and grad_x are parallel over blocks (each writes its own block);
grad_w sums per-chunk partial gradients (fixed chunks of _CHUNK blocks, then the chunks in
order), so every result is bit-identical at any thread count (B depends on the shapes only).
grad_w's dot products are compiled with reassociation allowed (fastmath "reassoc"), so they
vectorise: the compiled order is fixed for a build, not the left-to-right order.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_int, check_same_dtype
from .conv import conv2d_output_size
from .event import EventWeights

_CHUNK = 2  # blocks per partial weight gradient (fixed: it, not the thread count, sets order)
# One block's input + output planes, bytes. Measured on the vgg9 step at the operating point
# (tools/bench.py's snn-op row, 2 threads): 26.7 ms/image at 4 MiB, 26.5-27.7 at 2-8 MiB, 28.2
# at 0.5 MiB, 36.2 at 32 MiB, 32.4 without blocks: a block streaming from a share of L3 wins.
_BLOCK_BYTES = 1 << 22


class SparseConvGrads(NamedTuple):
    x: np.ndarray | None  # dL/dx (N, C_in, H, W), or None when need_x=False
    w: np.ndarray | None  # dL/dw of each packed live weight, (nnz,), in ew's entry order (None
    # when need_w=False)


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


def _layout(n, c_in, c_out, hp, wp, dtype, block):
    """Samples per block B and blocks nb: B from the cache budget unless given; the n samples
    spread over nb = ceil(n / B) equal blocks."""
    if block is None:
        per_sample = (c_in + c_out) * hp * wp * np.dtype(dtype).itemsize
        block = max(1, _BLOCK_BYTES // per_sample)
    nb = -(-n // min(block, n))
    return -(-n // nb), nb


def _padded(x, padding, kh, kw, block):
    """x zero-padded into blocks: (nb, C, B*Lp + kw) (the tail keeps every tap's shifted read
    in bounds); sample i is plane i % B of block i // B. block: the layout (B, nb)."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    b, nb = block
    xp = np.zeros((nb, c, b * hp * wp + kw), dtype=x.dtype)
    _to_blocks(x, xp, b, hp * wp, wp, padding)
    return xp


def conv2d_sparse_forward(x: np.ndarray, ew: EventWeights, *, padding: int = 0,
                          block: int | None = None) -> np.ndarray:
    """conv2d_forward(x, w, stride=1, padding=) from the live weights of w (pack_event_weights).

    x: (N, C_in, H, W)  ->  y: (N, C_out, H_out, W_out), x's dtype. block: samples per block
    (default from the cache budget); y is the same, bit for bit, for every block."""
    return conv2d_sparse_forward_keep(x, ew, padding=padding, block=block)[0]


def conv2d_sparse_forward_keep(x: np.ndarray, ew: EventWeights, *, padding: int = 0,
                               block: int | None = None):
    """conv2d_sparse_forward that also returns the padded input blocks, for
    conv2d_sparse_backward(xp=) (so the backward does not pad x again): (y, xp)."""
    fn = "conv2d_sparse_forward"
    padding, ho, wo = _check(fn, x, ew, padding)
    n, c_in, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    b, nb = _layout(n, c_in, ew.shape[0], hp, wp, x.dtype, _block_arg(fn, block))
    c, offset = _entries(ew, wp)
    xp = _padded(x, padding, ew.shape[2], ew.shape[3], (b, nb))
    size = (b - 1) * hp * wp + ho * wp
    yb = np.zeros((nb, ew.shape[0], size), dtype=x.dtype)
    _plane_axpy_kernel(yb, ew.out, np.zeros_like(offset), xp, c, offset, ew.value, size)
    y = np.empty((n, ew.shape[0], ho, wo), dtype=x.dtype)
    _from_blocks(yb, y, b, hp * wp, wp, 0)
    return y, xp


def conv2d_sparse_backward(grad_y: np.ndarray, x: np.ndarray, ew: EventWeights, *,
                           padding: int = 0, need_x: bool = True, need_w: bool = True,
                           xp: np.ndarray | None = None,
                           block: int | None = None) -> SparseConvGrads:
    """conv2d_backward(grad_y, x, w, stride=1, padding=) through the live weights only: grad_w
    per packed entry (unpack_event_grad makes it dense), grad_x through live weights; need_x /
    need_w=False skip one (grad_x does not read x, so it needs no padded blocks). xp: the
    forward's padded blocks (conv2d_sparse_forward_keep), read only; the same result. block:
    as the forward's (the forward's, when xp is given)."""
    fn = "conv2d_sparse_backward"
    padding, ho, wo = _check(fn, x, ew, padding)
    check_array(fn, "grad_y", grad_y, ndim=4, dims="(N, C_out, H_out, W_out)")
    check_same_dtype(fn, grad_y=grad_y, x=x)
    n, c_in, h, w = x.shape
    if grad_y.shape != (n, ew.shape[0], ho, wo):
        raise ValueError(f"{fn}: grad_y.shape={grad_y.shape}, expected "
                         f"{(n, ew.shape[0], ho, wo)} for x.shape={x.shape}, "
                         f"w.shape={ew.shape}, padding={padding}")
    hp, wp = h + 2 * padding, w + 2 * padding
    lp = hp * wp
    block = _block_arg(fn, block)
    if block is None and isinstance(xp, np.ndarray) and xp.ndim == 3:
        block = max(1, (xp.shape[2] - ew.shape[3]) // lp)  # the forward's, read off xp
    b, nb = _layout(n, c_in, ew.shape[0], hp, wp, x.dtype, block)
    shape = (nb, c_in, b * lp + ew.shape[3])
    if xp is None and not need_w:
        xp = np.empty((0, 0, 0), dtype=x.dtype)  # not read
    elif xp is None:
        xp = _padded(x, padding, ew.shape[2], ew.shape[3], (b, nb))
    elif not isinstance(xp, np.ndarray) or xp.shape != shape or xp.dtype != x.dtype:
        raise ValueError(f"{fn}: xp must be the forward's {x.dtype} padded blocks of shape "
                         f"{shape}, got {getattr(xp, 'dtype', type(xp).__name__)} "
                         f"{getattr(xp, 'shape', '')} (same block as the forward?)")
    size = (b - 1) * lp + ho * wp
    gy = np.zeros((nb, ew.shape[0], size), dtype=x.dtype)  # scratch stays zero
    _to_blocks(grad_y, gy, b, lp, wp, 0)
    grad_w = grad_x = None
    if need_w:
        n_chunks = -(-nb // _CHUNK)
        partial = np.zeros((n_chunks, ew.value.size), dtype=x.dtype)
        _grad_w_kernel(gy, xp, ew.ptr, ew.out, ew.shape[2], ew.shape[3], wp, partial)
        grad_w = np.zeros(ew.value.size, dtype=x.dtype)
        for k in range(n_chunks):  # chunk order, whatever the threads
            grad_w += partial[k]
    if need_x:
        gxp = np.zeros(shape, dtype=x.dtype)
        _grad_x_kernel(gxp, gy, ew.ptr, ew.out, ew.value, ew.shape[2], ew.shape[3], wp)
        grad_x = np.empty_like(x)
        _from_blocks(gxp, grad_x, b, lp, wp, padding)
    return SparseConvGrads(grad_x, grad_w)


def _block_arg(fn, block):
    return None if block is None else check_int(fn, "block", block, minimum=1)


def _entries(ew, wp):
    """Input channel c and flat tap offset p*Wp + q of every packed entry."""
    c_in, kh, kw = ew.shape[1:]
    g = np.repeat(np.arange(c_in * kh * kw), np.diff(ew.ptr))
    offset = ((g // kw) % kh) * wp + g % kw
    return (g // (kh * kw)).astype(np.int32), offset.astype(np.int64)


@numba.njit(cache=True, parallel=True)
def _plane_axpy_kernel(dst, dst_ch, dst_off, src, src_ch, src_off, value, size):
    """The forward: dst[m, dst_ch[e], dst_off[e] + k] += value[e] * src[m, src_ch[e],
    src_off[e] + k] for every entry e and k < size (dst = Y, src = Xp, shifted source)."""
    for m in numba.prange(dst.shape[0]):  # block m writes dst[m] only
        for e in range(value.size):
            _axpy(dst[m, dst_ch[e], dst_off[e]:dst_off[e] + size], value[e],
                  src[m, src_ch[e], src_off[e]:src_off[e] + size])


@numba.njit(cache=True, parallel=True)
def _grad_x_kernel(gxp, gy, ptr, out, value, kh, kw, wp):
    """grad_x: GXp[m, c, p*Wp + q + k] += value[e] * GY[m, out[e], k] for the entries e of each
    group g = (c, p, q), in entry order, four entries per pass over the row (one load and
    store of the destination per four multiply-adds; the same sums, in the same order)."""
    size = gy.shape[2]
    for m in numba.prange(gxp.shape[0]):  # block m writes gxp[m] only
        src = gy[m]
        for g in range(ptr.size - 1):
            e, e1 = ptr[g], ptr[g + 1]
            if e == e1:
                continue
            dst = _tap_row(gxp[m], g, kh, kw, wp, size)
            while e + 4 <= e1:
                _axpy4(dst, src, out, value, e)
                e += 4
            while e < e1:
                _axpy(dst, value[e], src[np.uint32(out[e])])
                e += 1


@numba.njit(cache=True, inline="always")
def _tap_row(planes, g, kh, kw, wp, size):
    """planes[c, p*Wp + q : p*Wp + q + size]: input channel c's padded planes (one block's)
    read at the tap (p, q) of group g = (c*kH + p)*kW + q."""
    t = g % (kh * kw)
    off = (t // kw) * wp + t % kw
    return planes[g // (kh * kw), off:off + size]


@numba.njit(cache=True, inline="never")  # a function of its own: its loop vectorises
def _axpy(dst, a, x):
    for k in range(dst.size):
        dst[k] += a * x[k]


@numba.njit(cache=True, inline="never")
def _axpy4(dst, src, out, value, e):
    """dst += value[e+i] * src[out[e+i]] for i = 0..3, added in that order."""
    w0, w1, w2, w3 = value[e], value[e + 1], value[e + 2], value[e + 3]
    s0, s1 = src[np.uint32(out[e])], src[np.uint32(out[e + 1])]
    s2, s3 = src[np.uint32(out[e + 2])], src[np.uint32(out[e + 3])]
    for k in range(dst.size):
        dst[k] = dst[k] + w0 * s0[k] + w1 * s1[k] + w2 * s2[k] + w3 * s3[k]


@numba.njit(cache=True, parallel=True)
def _grad_w_kernel(gy, xp, ptr, out, kh, kw, wp, partial):
    """partial[chunk, e] = sum over the chunk's blocks m of <GY[m, out[e]], Xp[m, c, p*Wp + q
    : ...]> for the entries e of each group g = (c, p, q): four entries per pass over the
    shared input row."""
    n, size = gy.shape[0], gy.shape[2]
    for b in numba.prange(partial.shape[0]):  # chunk b writes partial[b] only
        acc = partial[b]
        for m in range(b * _CHUNK, min(n, (b + 1) * _CHUNK)):
            for g in range(ptr.size - 1):
                e, e1 = ptr[g], ptr[g + 1]
                if e == e1:
                    continue
                xr = _tap_row(xp[m], g, kh, kw, wp, size)
                while e + 4 <= e1:
                    _dot4(acc, gy[m], out, xr, e)
                    e += 4
                while e < e1:
                    acc[e] += _dot(gy[m, np.uint32(out[e])], xr)
                    e += 1


@numba.njit(cache=True, inline="never", fastmath={"reassoc"})  # reassociated: vectorises
def _dot(a, b):
    s = a[0] * 0  # the layer's dtype
    for k in range(a.size):
        s += a[k] * b[k]
    return s


@numba.njit(cache=True, inline="never", fastmath={"reassoc"})
def _dot4(acc, src, out, xr, e):
    """acc[e+i] += <src[out[e+i]], xr> for i = 0..3."""
    s0, s1 = src[np.uint32(out[e])], src[np.uint32(out[e + 1])]
    s2, s3 = src[np.uint32(out[e + 2])], src[np.uint32(out[e + 3])]
    a0 = a1 = a2 = a3 = xr[0] * 0
    for k in range(xr.size):
        x = xr[k]
        a0 += s0[k] * x
        a1 += s1[k] * x
        a2 += s2[k] * x
        a3 += s3[k] * x
    acc[e] += a0
    acc[e + 1] += a1
    acc[e + 2] += a2
    acc[e + 3] += a3


@numba.njit(cache=True, parallel=True)
def _to_blocks(src, dst, b, lp, wp, r0):
    """dst[i // b, c, (i % b)*lp + (r0 + r)*wp + r0 + q] = src[i, c, r, q] (dst zeroed)."""
    n, c_n, h, w = src.shape
    for i in numba.prange(n):  # sample i writes its own plane only
        k, base = i // b, (i % b) * lp + r0 * wp + r0
        for c in range(c_n):
            for r in range(h):
                dst[k, c, base + r * wp:base + r * wp + w] = src[i, c, r]


@numba.njit(cache=True, parallel=True)
def _from_blocks(src, dst, b, lp, wp, r0):
    """dst[i, c, r, q] = src[i // b, c, (i % b)*lp + (r0 + r)*wp + r0 + q]."""
    n, c_n, h, w = dst.shape
    for i in numba.prange(n):
        k, base = i // b, (i % b) * lp + r0 * wp + r0
        for c in range(c_n):
            for r in range(h):
                dst[i, c, r] = src[k, c, base + r * wp:base + r * wp + w]
