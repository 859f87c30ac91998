"""Event-driven (sparse) forward of conv2d and linear: work only for nonzero inputs x live weights.

An SNN's inputs to every layer but the first are spikes, mostly zero, and a compressed SNN's
weights are mostly zero too. The dense ops (conv.py, linear.py) multiply every weight with
every input; the event ops here scatter each nonzero input through the live weights of its
input channel only:

    conv:   y[m, o, i, j] += w[o, c, p, q] * x[m, c, h, k]  for every x[m, c, h, k] != 0 and
            every live w[o, c, p, q] with h = i*stride + p - padding, k = j*stride + q - padding
    linear: y[m, o] += w[o, i] * x[m, i]                     for every x[m, i] != 0, live w[o, i]

Work: nnz(x) * (live weights per input channel), against N*C_out*K*P for the dense GEMM
(K = C_in*kH*kW, P = H_out*W_out). The two agree in exact arithmetic; in floating point they
add the same products in a different order (here: input channel, row, column, then the packed
weights of that channel), so they agree to rounding (tests: float64 to 1e-12 relative).

The live weights are packed once per mask change (``pack_event_weights``), grouped by
(input channel c, kernel row p, kernel column q): group g = (c*kH + p)*kW + q holds the entries
ptr[g]:ptr[g+1] of (output channel, value), so one input event and one kernel offset find the
output position once and then add into that position of a run of output channels. The conv
accumulates straight into its NCHW output, one sample's planes at a time (a vgg9 sample's
output fits the L2 cache; a channels-last scratch and its transpose took longer: 58.8 -> 38.0
ms for conv2-conv7's forward on random inputs of the operating point's densities). The
samples are dealt round-robin to the threads (the late steps of an SNN layer hold most
spikes), each one writing only its own slice: the result does not depend on the thread
count, bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_int, check_same_dtype
from .conv import conv2d_output_size


class EventWeights(NamedTuple):
    """The live (nonzero) weights of one conv (C_out, C_in, kH, kW) or linear (C_out, C_in)
    weight, grouped by (c, p, q): entries ptr[g]:ptr[g+1], g = (c*kH + p)*kW + q (linear:
    g = c), in increasing output channel."""
    ptr: np.ndarray  # (C_in*kH*kW + 1,) int64
    out: np.ndarray  # (nnz,) int32 output channel o
    value: np.ndarray  # (nnz,) weight value, the weight's dtype
    shape: tuple  # the dense weight's shape
    index: np.ndarray  # (nnz,) int64 flat (C order) index of each entry in the dense weight
    order: np.ndarray  # (nnz,) int64 entries by increasing flat index: index[order] is sorted

    @property
    def density(self) -> float:
        """live weights / all weights."""
        return self.value.size / max(1, int(np.prod(self.shape)))


def pack_event_weights(w: np.ndarray) -> EventWeights:
    """Pack the nonzero entries of a conv (C_out, C_in, kH, kW) or linear (C_out, C_in) weight
    by (c, p, q) group. Pruned weights are exactly zero (masks, SPEC 4.2), so the packing is
    the mask's live set (plus any live weight that happens to be exactly 0.0, which contributes
    nothing either way)."""
    fn = "pack_event_weights"
    check_array(fn, "w", w)
    if w.ndim not in (2, 4):
        raise ValueError(f"{fn}: w must be (C_out, C_in, kH, kW) or (C_out, C_in), got shape "
                         f"{w.shape}")
    w4 = w.reshape(w.shape + (1, 1)) if w.ndim == 2 else w
    wt = np.ascontiguousarray(w4.transpose(1, 2, 3, 0))  # (C_in, kH, kW, C_out)
    c, p, q, o = np.nonzero(wt)
    groups = wt.shape[0] * wt.shape[1] * wt.shape[2]
    counts = np.bincount((c * wt.shape[1] + p) * wt.shape[2] + q, minlength=groups)
    ptr = np.zeros(groups + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    index = ((o.astype(np.int64) * wt.shape[0] + c) * wt.shape[1] + p) * wt.shape[2] + q
    return EventWeights(ptr, o.astype(np.int32), np.ascontiguousarray(wt[c, p, q, o]),
                        tuple(w.shape), index, np.argsort(index, kind="stable"))


def refresh_event_weights(ew: EventWeights, w: np.ndarray) -> EventWeights:
    """ew with its values re-read from w (same shape, same live set): after an optimiser
    step, where the mask and so the packing are unchanged, one gather instead of a re-pack."""
    if not isinstance(w, np.ndarray) or tuple(w.shape) != ew.shape:
        raise ValueError(f"refresh_event_weights: w must be an array of shape {ew.shape}, got "
                         f"{getattr(w, 'shape', type(w).__name__)}")
    value = np.empty(ew.index.size, dtype=w.dtype)  # w's values, w's dtype
    _gather_kernel(np.ascontiguousarray(w).reshape(-1), ew.index, value)
    return ew._replace(value=value)


_GATHER_CHUNK = 1 << 15  # entries per parallel chunk (a gather: any split, the same values)


@numba.njit(cache=True, parallel=True)
def _gather_kernel(w, index, value):
    """value[e] = w[index[e]] (numpy's fancy indexing on one thread took ~2x as long)."""
    n = index.size
    for b in numba.prange((n + _GATHER_CHUNK - 1) // _GATHER_CHUNK):
        for e in range(b * _GATHER_CHUNK, min(n, (b + 1) * _GATHER_CHUNK)):
            value[e] = w[index[e]]


def _check_event(fn, x, ew, ndim):
    if not isinstance(ew, EventWeights):
        raise TypeError(f"{fn}: ew must be an EventWeights from pack_event_weights, got "
                        f"{type(ew).__name__}")
    check_array(fn, "x", x, ndim=ndim)
    if len(ew.shape) != ndim:
        raise ValueError(f"{fn}: ew packs a weight of shape {ew.shape}, expected a "
                         f"{ndim}-D weight for this op")
    check_same_dtype(fn, x=x, ew_value=ew.value)
    if x.shape[1] != ew.shape[1]:
        raise ValueError(f"{fn}: x has C_in={x.shape[1]} but the packed weight expects "
                         f"C_in={ew.shape[1]} (x.shape={x.shape}, w.shape={ew.shape})")


def conv2d_event_forward(x: np.ndarray, ew: EventWeights, *, stride: int = 1,
                         padding: int = 0) -> np.ndarray:
    """conv2d_forward(x, w) computed from the nonzero inputs and the packed live weights.

    x: (N, C_in, H, W), any values (zeros are skipped)  ew: pack_event_weights(w), w (C_out,
    C_in, kH, kW)  ->  y: (N, C_out, H_out, W_out), x's dtype, equal to conv2d_forward(x, w,
    stride=, padding=) to rounding."""
    fn = "conv2d_event_forward"
    _check_event(fn, x, ew, 4)
    stride = check_int(fn, "stride", stride, minimum=1)
    padding = check_int(fn, "padding", padding, minimum=0)
    c_out, _, kh, kw = ew.shape
    ho, wo = conv2d_output_size(x.shape[2], x.shape[3], kh, kw, stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"{fn}: output would be empty: H_out={ho}, W_out={wo} for "
                         f"x.shape={x.shape}, kernel {kh}x{kw}, stride={stride}, "
                         f"padding={padding}")
    y = np.empty((x.shape[0], c_out, ho, wo), dtype=x.dtype)
    _conv_event_kernel(np.ascontiguousarray(x), ew.ptr, ew.out, ew.value, kh, kw, stride,
                       padding, y, _lanes(x.shape[0]))
    return y


def _lanes(n):
    """Parallel iterations for n samples dealt round-robin: one per thread (at least 1)."""
    return max(1, min(n, numba.get_num_threads()))


@numba.njit(cache=True, parallel=True)
def _conv_event_kernel(x, ptr, out, value, kh, kw, stride, padding, y, lanes):
    # samples dealt round-robin to `lanes` (the thread count) parallel iterations: an SNN
    # layer's T*N samples come step by step and the late steps hold most spikes (at the
    # operating point: none at t = 1, 0.1-0.4 of inputs nonzero at t = 5), so the contiguous
    # halves of a plain prange left one thread idle (1.7-2.2x slower)
    for j in numba.prange(lanes):
        for m in range(j, x.shape[0], lanes):  # sample m writes y[m] only
            _conv_event_sample(x, ptr, out, value, kh, kw, stride, padding, y, m)


@numba.njit(cache=True, inline="never")
def _conv_event_sample(x, ptr, out, value, kh, kw, stride, padding, y, m):
    n, c_in, h, w = x.shape
    acc = y[m]  # (C_out, H_out, W_out)
    acc[:] = 0
    for c in range(c_in):
        g0 = c * kh * kw
        if ptr[g0] == ptr[g0 + kh * kw]:
            continue  # no live weight reads channel c
        for r in range(h):
            for s in range(w):
                v = x[m, c, r, s]
                if v == 0:
                    continue
                _scatter_conv(acc, v, r, s, g0, ptr, out, value, kh, kw, stride, padding)


@numba.njit(cache=True, inline="always")
def _scatter_conv(acc, v, r, s, g0, ptr, out, value, kh, kw, stride, padding):
    """acc[o, i, j] += w[o, c, p, q] * v for every live weight of input channel c (group base
    g0 = c*kH*kW) whose window puts input (r, s) at output (i, j) = ((r + padding - p) / stride,
    (s + padding - q) / stride), integers in range."""
    ho, wo = acc.shape[1], acc.shape[2]
    for p in range(kh):
        a = r + padding - p
        if a < 0 or a % stride != 0 or a // stride >= ho:
            continue
        a //= stride
        for q in range(kw):
            b = s + padding - q
            if b < 0 or b % stride != 0 or b // stride >= wo:
                continue
            b //= stride
            g = g0 + p * kw + q
            for e in range(ptr[g], ptr[g + 1]):
                acc[np.uint32(out[e]), a, b] += value[e] * v  # unsigned: no wraparound test


def linear_event_forward(x: np.ndarray, ew: EventWeights) -> np.ndarray:
    """linear_forward(x, w) = x @ w.T from the nonzero inputs and the packed live weights.

    x: (N, C_in)  ew: pack_event_weights(w), w (C_out, C_in)  ->  y: (N, C_out), equal to
    x @ w.T to rounding."""
    fn = "linear_event_forward"
    _check_event(fn, x, ew, 2)
    y = np.zeros((x.shape[0], ew.shape[0]), dtype=x.dtype)
    _linear_event_kernel(np.ascontiguousarray(x), ew.ptr, ew.out, ew.value, y,
                         _lanes(x.shape[0]))
    return y


@numba.njit(cache=True, parallel=True)
def _linear_event_kernel(x, ptr, out, value, y, lanes):
    for j in numba.prange(lanes):  # round-robin, as _conv_event_kernel
        for m in range(j, x.shape[0], lanes):  # sample m writes y[m] only
            _linear_event_sample(x[m], ptr, out, value, y[m])


@numba.njit(cache=True, inline="never")
def _linear_event_sample(xm, ptr, out, value, row):
    for i in range(xm.size):
        v = xm[i]
        if v == 0:
            continue
        for e in range(ptr[i], ptr[i + 1]):
            row[np.uint32(out[e])] += value[e] * v  # unsigned: no wraparound test


class EventConvGrads(NamedTuple):
    x: np.ndarray | None  # dL/dx (N, C_in, H, W), or None when need_x=False
    w: np.ndarray  # dL/dw of each packed live weight, (nnz,), in ew's entry order


def conv2d_event_backward(grad_y: np.ndarray, x: np.ndarray, ew: EventWeights, *,
                          stride: int = 1, padding: int = 0,
                          need_x: bool = True) -> EventConvGrads:
    """The conv VJP through the live weights only (conv2d_backward restricted to the mask).

        grad_w[e] = sum over x[n, c, h, k] != 0 of grad_y[n, o, i, j] * x[n, c, h, k]
                    for packed entry e = (o, c, p, q), (h, k) = (i*stride + p - padding, ...)
        grad_x[n, c, h, k] = sum over the live entries (o, c, p, q) of channel c of
                    w[o, c, p, q] * grad_y[n, o, i, j]      (zero-weight terms skipped)

    grad_y: (N, C_out, H_out, W_out), x: (N, C_in, H, W) (zeros skipped), ew:
    pack_event_weights(w). Work: nnz(x) x (live weights per input channel and offset) for
    grad_w, N*C_in*H*W x the same for grad_x. grad_w is parallel over input channels (each
    channel's entries are its own), grad_x over samples: disjoint writes, bit-identical at
    any thread count. Equal to conv2d_backward(grad_y, x, w) at the live weights and in
    grad_x, to rounding. ``unpack_event_grad`` gives grad_w as a dense (zero elsewhere) array.
    """
    fn = "conv2d_event_backward"
    _check_event(fn, x, ew, 4)
    stride = check_int(fn, "stride", stride, minimum=1)
    padding = check_int(fn, "padding", padding, minimum=0)
    check_array(fn, "grad_y", grad_y, ndim=4, dims="(N, C_out, H_out, W_out)")
    check_same_dtype(fn, grad_y=grad_y, x=x)
    c_out, _, kh, kw = ew.shape
    ho, wo = conv2d_output_size(x.shape[2], x.shape[3], kh, kw, stride, padding)
    if grad_y.shape != (x.shape[0], c_out, ho, wo):
        raise ValueError(f"{fn}: grad_y.shape={grad_y.shape}, expected "
                         f"{(x.shape[0], c_out, ho, wo)} for x.shape={x.shape}, "
                         f"w.shape={ew.shape}, stride={stride}, padding={padding}")
    gy = np.ascontiguousarray(grad_y.transpose(0, 2, 3, 1))  # channels-last: a gather's run
    xc = np.ascontiguousarray(x)
    grad_w = np.zeros(ew.value.size, dtype=x.dtype)
    _conv_event_grad_w_kernel(gy, xc, ew.ptr, ew.out, kh, kw, stride, padding, grad_w)
    grad_x = None
    if need_x:
        grad_x = np.zeros(x.shape, dtype=x.dtype)  # accumulated in place, in x's dtype
        _conv_event_grad_x_kernel(gy, ew.ptr, ew.out, ew.value, kh, kw, stride, padding,
                                  grad_x)
    return EventConvGrads(grad_x, grad_w)


def flat_order_grad(ew: EventWeights, g: np.ndarray) -> np.ndarray:
    """A per-entry array (nnz,) of ew in increasing flat (C order) index of the dense weight,
    i.e. at positions ew.index[ew.order] (for adam_step(live=), which wants them sorted)."""
    return g[ew.order]


def unpack_event_grad(ew: EventWeights, g: np.ndarray) -> np.ndarray:
    """A per-entry array (nnz,) of ew (e.g. conv2d_event_backward's grad_w) as a dense array of
    the weight's shape, zero at the pruned weights."""
    c_out, c_in = ew.shape[:2]
    kh, kw = (ew.shape[2], ew.shape[3]) if len(ew.shape) == 4 else (1, 1)
    groups = np.repeat(np.arange(c_in * kh * kw), np.diff(ew.ptr))
    dense = np.zeros((c_out, c_in, kh, kw), dtype=g.dtype)
    dense[ew.out, groups // (kh * kw), (groups // kw) % kh, groups % kw] = g
    return dense.reshape(ew.shape)


@numba.njit(cache=True, inline="always")
def _target(r, s, p, q, stride, padding, ho, wo):
    """Output position (i, j) whose window puts input (r, s) under kernel tap (p, q), or
    (-1, -1) if none: i = (r + padding - p) / stride, an integer in [0, H_out)."""
    a, b = r + padding - p, s + padding - q
    if a < 0 or b < 0 or a % stride != 0 or b % stride != 0:
        return -1, -1
    a //= stride
    b //= stride
    if a >= ho or b >= wo:
        return -1, -1
    return a, b


@numba.njit(cache=True, parallel=True)
def _conv_event_grad_w_kernel(gy, x, ptr, out, kh, kw, stride, padding, grad_w):
    n, c_in, h, w = x.shape
    ho, wo = gy.shape[1], gy.shape[2]
    for c in numba.prange(c_in):  # channel c's entries ptr[c*kh*kw]:ptr[(c+1)*kh*kw]
        g0 = c * kh * kw
        if ptr[g0] == ptr[g0 + kh * kw]:
            continue
        for m in range(n):
            for r in range(h):
                for s in range(w):
                    v = x[m, c, r, s]
                    if v == 0:
                        continue
                    for p in range(kh):
                        for q in range(kw):
                            a, b = _target(r, s, p, q, stride, padding, ho, wo)
                            if a < 0:
                                continue
                            row = gy[m, a, b]
                            g = g0 + p * kw + q
                            for e in range(ptr[g], ptr[g + 1]):
                                grad_w[e] += row[np.uint32(out[e])] * v


@numba.njit(cache=True, parallel=True)
def _conv_event_grad_x_kernel(gy, ptr, out, value, kh, kw, stride, padding, grad_x):
    n, c_in, h, w = grad_x.shape
    ho, wo = gy.shape[1], gy.shape[2]
    for m in numba.prange(n):
        for c in range(c_in):
            g0 = c * kh * kw
            if ptr[g0] == ptr[g0 + kh * kw]:
                continue  # no live weight reads channel c: its gradient stays 0
            for r in range(h):
                for s in range(w):
                    for p in range(kh):
                        for q in range(kw):
                            a, b = _target(r, s, p, q, stride, padding, ho, wo)
                            if a < 0:
                                continue
                            row = gy[m, a, b]
                            g = g0 + p * kw + q
                            for e in range(ptr[g], ptr[g + 1]):
                                grad_x[m, c, r, s] += value[e] * row[np.uint32(out[e])]
