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

The live weights are packed once per mask change (``pack_event_weights``), grouped by input
channel: for channel c the entries ptr[c]:ptr[c+1] of (out, ky, kx, value). Each sample m is
one prange iteration writing only y[m]: disjoint slices, so the result does not depend on the
thread count, bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_int, check_same_dtype
from .conv import conv2d_output_size


class EventWeights(NamedTuple):
    """The live (nonzero) weights of one conv (C_out, C_in, kH, kW) or linear (C_out, C_in)
    weight, grouped by input channel: entries ptr[c]:ptr[c+1] belong to input channel c."""
    ptr: np.ndarray  # (C_in + 1,) int64
    out: np.ndarray  # (nnz,) int32 output channel o
    ky: np.ndarray  # (nnz,) int32 kernel row p (0 for linear)
    kx: np.ndarray  # (nnz,) int32 kernel column q (0 for linear)
    value: np.ndarray  # (nnz,) weight value, the weight's dtype
    shape: tuple  # the dense weight's shape

    @property
    def density(self) -> float:
        """live weights / all weights."""
        return self.value.size / max(1, int(np.prod(self.shape)))


def pack_event_weights(w: np.ndarray) -> EventWeights:
    """Pack the nonzero entries of a conv (C_out, C_in, kH, kW) or linear (C_out, C_in) weight,
    grouped by input channel, in (o, p, q) order inside a channel. Pruned weights are exactly
    zero (masks, SPEC 4.2), so the packing is the mask's live set (plus any live weight that
    happens to be exactly 0.0, which contributes nothing either way)."""
    fn = "pack_event_weights"
    check_array(fn, "w", w)
    if w.ndim not in (2, 4):
        raise ValueError(f"{fn}: w must be (C_out, C_in, kH, kW) or (C_out, C_in), got shape "
                         f"{w.shape}")
    w4 = w.reshape(w.shape + (1, 1)) if w.ndim == 2 else w
    wt = np.ascontiguousarray(w4.transpose(1, 0, 2, 3))  # (C_in, C_out, kH, kW): c-major order
    c, o, p, q = np.nonzero(wt)
    counts = np.bincount(c, minlength=wt.shape[0])
    ptr = np.zeros(wt.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return EventWeights(ptr, o.astype(np.int32), p.astype(np.int32), q.astype(np.int32),
                        np.ascontiguousarray(wt[c, o, p, q]), tuple(w.shape))


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
    y = np.zeros((x.shape[0], c_out, ho, wo), dtype=x.dtype)
    _conv_event_kernel(np.ascontiguousarray(x), ew.ptr, ew.out, ew.ky, ew.kx, ew.value,
                       stride, padding, y)
    return y


@numba.njit(cache=True, parallel=True)
def _conv_event_kernel(x, ptr, out, ky, kx, value, stride, padding, y):
    n, c_in, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for m in numba.prange(n):  # sample m writes y[m] only
        for c in range(c_in):
            lo, hi = ptr[c], ptr[c + 1]
            if lo == hi:
                continue
            for r in range(h):
                for s in range(w):
                    v = x[m, c, r, s]
                    if v == 0:
                        continue
                    for e in range(lo, hi):
                        # r = i*stride + p - padding  ->  i = (r + padding - p) / stride
                        a = r + padding - ky[e]
                        b = s + padding - kx[e]
                        if a < 0 or b < 0:
                            continue
                        if stride != 1:
                            if a % stride != 0 or b % stride != 0:
                                continue
                            a //= stride
                            b //= stride
                        if a < ho and b < wo:
                            y[m, out[e], a, b] += value[e] * v


def linear_event_forward(x: np.ndarray, ew: EventWeights) -> np.ndarray:
    """linear_forward(x, w) = x @ w.T from the nonzero inputs and the packed live weights.

    x: (N, C_in)  ew: pack_event_weights(w), w (C_out, C_in)  ->  y: (N, C_out), equal to
    x @ w.T to rounding."""
    fn = "linear_event_forward"
    _check_event(fn, x, ew, 2)
    y = np.zeros((x.shape[0], ew.shape[0]), dtype=x.dtype)
    _linear_event_kernel(np.ascontiguousarray(x), ew.ptr, ew.out, ew.value, y)
    return y


@numba.njit(cache=True, parallel=True)
def _linear_event_kernel(x, ptr, out, value, y):
    n, c_in = x.shape
    for m in numba.prange(n):
        for i in range(c_in):
            v = x[m, i]
            if v == 0:
                continue
            for e in range(ptr[i], ptr[i + 1]):
                y[m, out[e]] += value[e] * v
