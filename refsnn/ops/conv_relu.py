"""Fused conv2d -> ReLU, the ANN's conv block, as a forward/backward pair.

The same numbers as ``relu_forward(conv2d_forward(x, w))`` and its VJP, bit for bit (tested),
with two memory passes fewer: the ReLU is applied while the GEMM output is transposed to NCHW,
the ReLU mask while grad_y is transposed to the GEMM layout; and the forward's im2col matrix is
returned for the backward instead of being rebuilt there.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_same_dtype
from .activation import check_units
from .conv import Conv2dGrads, _check_conv, conv2d_backward_cm, im2col
from .winograd import winograd_applies, winograd_conv_backward, winograd_conv_forward


class ConvReluOut(NamedTuple):
    y: np.ndarray  # relu(conv2d(x, w)), (N, C_out, H_out, W_out)
    cols: np.ndarray  # what the backward needs of x: im2col(x), (C_in*kH*kW, N*H_out*W_out),
    #                   or, on the Winograd path, the transformed input (P, 16, C_in)
    u: np.ndarray | None = None  # Winograd path only: the transformed filters (16, C_out, C_in)

    @property
    def winograd(self) -> bool:
        """True if the forward ran by Winograd (ops.winograd): it kept the filters' transform."""
        return self.u is not None


METHODS = ("auto", "im2col", "winograd")


def conv2d_relu_forward(x: np.ndarray, w: np.ndarray, *, stride: int = 1, padding: int = 0,
                        method: str = "auto") -> ConvReluOut:
    """y = relu(conv2d(x, w)) with y = 0 where the conv output is <= 0 (NaN passes).

    Shapes as conv2d_forward. Returns the output and what the backward needs of x.
    method: "im2col" (one GEMM over the im2col matrix: the reference), "winograd"
    (ops.winograd, F(2x2, 3x3); 3x3 filters, stride 1, padding 1 only) or "auto": Winograd
    where ops.winograd.winograd_applies says so (a shape rule), im2col elsewhere. The two
    agree to rounding (tests).
    Matches torch.relu(torch.nn.functional.conv2d(x, w, None, stride, padding)).
    """
    fn = "conv2d_relu_forward"
    stride, padding, ho, wo = _check_conv(fn, x, w, stride, padding)
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {METHODS}, got {method!r}")
    if method == "winograd" and (w.shape[2:] != (3, 3) or stride != 1 or padding != 1):
        raise ValueError(f"{fn}: method='winograd' needs 3x3 filters, stride 1 and padding 1, "
                         f"got w.shape={w.shape}, stride={stride}, padding={padding}")
    if method == "winograd" or (method == "auto"
                                and winograd_applies(x.shape, w.shape, stride, padding)):
        y, v, u = winograd_conv_forward(x, w, relu=True)
        return ConvReluOut(y, v, u)
    n = x.shape[0]
    c_out, c_in, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride, padding, ho, wo)
    z_cm = np.matmul(w.reshape(c_out, c_in * kh * kw), cols)  # (C_out, N*P)
    y = np.empty((n, c_out, ho, wo), dtype=x.dtype)
    _cm_to_nchw_relu_kernel(z_cm.reshape(c_out, n, ho * wo), y.reshape(n, c_out, ho * wo))
    return ConvReluOut(y, cols)


def conv2d_relu_backward(grad_y: np.ndarray, out: ConvReluOut, x_shape: tuple, w: np.ndarray, *,
                         stride: int = 1, padding: int = 0, need_x: bool = True,
                         zero_units: np.ndarray | None = None) -> Conv2dGrads:
    """VJP of conv2d_relu_forward: g = grad_y where y > 0 else 0, then conv2d's VJP with g.

    out: the forward's ConvReluOut; x_shape: the forward input's shape. out.cols is left intact.
    zero_units: optional bool (C_out,), True on all-zero filters (zero_units_of(w)): there the
    conv output is 0 everywhere and g = grad_y (ReLU's right derivative at 0, see relu_backward).
    """
    fn = "conv2d_relu_backward"
    check_array(fn, "grad_y", grad_y, ndim=4, dims="(N, C_out, H_out, W_out)")
    check_same_dtype(fn, grad_y=grad_y, y=out.y, w=w)
    if grad_y.shape != out.y.shape:
        raise ValueError(f"{fn}: grad_y.shape={grad_y.shape}, expected {out.y.shape} (y's shape)")
    n, c_out, ho, wo = grad_y.shape
    if out.winograd:
        units = None if zero_units is None else check_units(fn, zero_units, grad_y.shape)
        return winograd_conv_backward(grad_y, out.cols, w, tuple(x_shape), need_x=need_x,
                                      y_relu=out.y, pass_units=units, u=out.u)
    g_cm = np.empty((c_out, n, ho * wo), dtype=grad_y.dtype)
    _nchw_to_cm_relu_kernel(np.ascontiguousarray(grad_y).reshape(n, c_out, ho * wo),
                            out.y.reshape(n, c_out, ho * wo), g_cm)
    if zero_units is not None:
        units = check_units(fn, zero_units, grad_y.shape)
        g_cm[units] = np.ascontiguousarray(grad_y).reshape(n, c_out, ho * wo)[:, units] \
            .transpose(1, 0, 2)
    return conv2d_backward_cm(g_cm.reshape(c_out, n * ho * wo), out.cols, w, tuple(x_shape),
                              stride=stride, padding=padding, need_x=need_x)


@numba.njit(cache=True, parallel=True)
def _cm_to_nchw_relu_kernel(z_cm, y):
    # y[n, o, :] = relu(z_cm[o, n, :]); one image per iteration (disjoint writes)
    c_out, n_img, p = z_cm.shape
    for n in numba.prange(n_img):
        for o in range(c_out):
            for k in range(p):
                z = z_cm[o, n, k]
                y[n, o, k] = 0.0 if z <= 0 else z


@numba.njit(cache=True, parallel=True)
def _nchw_to_cm_relu_kernel(grad_y, y, g_cm):
    # g_cm[o, n, :] = grad_y[n, o, :] where y[n, o, :] > 0 else 0; one channel per iteration
    n_img, c_out, p = grad_y.shape
    for o in numba.prange(c_out):
        for n in range(n_img):
            for k in range(p):
                g_cm[o, n, k] = 0.0 if y[n, o, k] <= 0 else grad_y[n, o, k]
