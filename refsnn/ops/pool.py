"""Average pooling, PyTorch layout, as a forward/backward pair (no padding, floor mode)."""

from __future__ import annotations

import numba
import numpy as np

from .._checks import check_array, check_int


def _check_pool(fn, shape, kernel, stride):
    """Validate kernel/stride against an (N, C, H, W) shape; return kernel, stride, H_out, W_out."""
    kernel = check_int(fn, "kernel", kernel, minimum=1)
    stride = kernel if stride is None else check_int(fn, "stride", stride, minimum=1)
    if shape[2] < kernel or shape[3] < kernel:
        raise ValueError(
            f"{fn}: input {shape[2]}x{shape[3]} is smaller than the {kernel}x{kernel} "
            f"pooling window (shape={tuple(shape)})"
        )
    return kernel, stride, (shape[2] - kernel) // stride + 1, (shape[3] - kernel) // stride + 1


def avg_pool2d_forward(x: np.ndarray, *, kernel: int = 2, stride: int | None = None):
    """Average over kernel x kernel windows.

    y[n, c, i, j] = (1 / kernel^2) * sum_{p,q < kernel} x[n, c, i*stride + p, j*stride + q]
    The sum runs in x's dtype, in row-major (p, q) order, then is multiplied by 1/kernel^2.
    H_out = (H - kernel) // stride + 1 (floor: trailing rows/columns are dropped); stride
    defaults to kernel.  x: (N, C, H, W) -> y: (N, C, H_out, W_out)
    Matches torch.nn.functional.avg_pool2d(x, kernel, stride) (ceil_mode=False, no padding).
    """
    check_array("avg_pool2d_forward", "x", x, ndim=4, dims="(N, C, H, W)")
    kernel, stride, ho, wo = _check_pool("avg_pool2d_forward", x.shape, kernel, stride)
    n, c = x.shape[:2]
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    _avg_pool_forward_kernel(np.ascontiguousarray(x).reshape(n * c, *x.shape[2:]), kernel,
                             stride, x.dtype.type(1.0 / (kernel * kernel)),
                             y.reshape(n * c, ho, wo))
    return y


def avg_pool2d_backward(grad_y: np.ndarray, x_shape: tuple, *, kernel: int = 2,
                        stride: int | None = None):
    """Vector-Jacobian product of avg_pool2d_forward.

    grad_x[n, c, i*stride + p, j*stride + q] += grad_y[n, c, i, j] / kernel^2; zero in the
    rows/columns the floor mode dropped.  grad_y: (N, C, H_out, W_out) -> grad_x: x_shape
    """
    fn = "avg_pool2d_backward"
    check_array(fn, "grad_y", grad_y, ndim=4, dims="(N, C, H_out, W_out)")
    x_shape = tuple(int(d) for d in x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"{fn}: x_shape must be (N, C, H, W), got {x_shape}")
    kernel, stride, ho, wo = _check_pool(fn, x_shape, kernel, stride)
    if grad_y.shape != (x_shape[0], x_shape[1], ho, wo):
        raise ValueError(f"{fn}: grad_y.shape={grad_y.shape}, expected "
                         f"{(x_shape[0], x_shape[1], ho, wo)} for x_shape={tuple(x_shape)}")
    n, c, h, w = x_shape
    grad_x = np.empty((n, c, h, w), dtype=grad_y.dtype)
    _avg_pool_backward_kernel(np.ascontiguousarray(grad_y).reshape(n * c, ho, wo), kernel, stride,
                              grad_y.dtype.type(1.0 / (kernel * kernel)),
                              grad_x.reshape(n * c, h, w))
    return grad_x


@numba.njit(cache=True, parallel=True)
def _avg_pool_forward_kernel(x, kernel, stride, scale, y):
    # one (n, c) plane per prange iteration: disjoint writes. scale = 1/kernel^2 in x's dtype,
    # so the sum accumulates in x's dtype (a float64 literal would promote it under numba)
    for r in numba.prange(y.shape[0]):
        _avg_pool_plane(x[r], kernel, stride, scale, y[r])


@numba.njit(cache=True, inline="never")  # a function of its own: its loops vectorise
def _avg_pool_plane(x, kernel, stride, scale, y):
    ho, wo = y.shape
    for i in range(ho):
        yr = y[i]
        if kernel == 2 and stride == 2:  # vgg's pools: the same sum, in the same order
            r0, r1 = x[2 * i], x[2 * i + 1]
            for j in range(wo):
                yr[j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) * scale
            continue
        for j in range(wo):
            acc = x[i * stride, j * stride]
            for p in range(kernel):
                for q in range(kernel):
                    if p > 0 or q > 0:
                        acc += x[i * stride + p, j * stride + q]
            yr[j] = acc * scale


@numba.njit(cache=True, parallel=True)
def _avg_pool_backward_kernel(grad_y, kernel, stride, scale, grad_x):
    for r in numba.prange(grad_y.shape[0]):  # plane r writes grad_x[r] only
        _avg_pool_plane_backward(grad_y[r], kernel, stride, scale, grad_x[r])


@numba.njit(cache=True, inline="never")
def _avg_pool_plane_backward(grad_y, kernel, stride, scale, grad_x):
    ho, wo = grad_y.shape
    if kernel == 2 and stride == 2:  # every input gets one g: no zeroing, no accumulation
        zero = scale * 0  # + 0 as the general path's 0 + g does: a -0.0 becomes +0.0
        for i in range(ho):
            gr, r0, r1 = grad_y[i], grad_x[2 * i], grad_x[2 * i + 1]
            for j in range(wo):
                g = gr[j] * scale + zero
                r0[2 * j] = g
                r0[2 * j + 1] = g
                r1[2 * j] = g
                r1[2 * j + 1] = g
        for a in range(2 * ho, grad_x.shape[0]):  # rows / columns the floor mode dropped
            grad_x[a] = 0.0
        if grad_x.shape[1] > 2 * wo:
            for a in range(2 * ho):
                grad_x[a, 2 * wo:] = 0.0
        return
    grad_x[:] = 0.0
    for i in range(ho):
        for j in range(wo):
            g = grad_y[i, j] * scale
            for p in range(kernel):
                for q in range(kernel):
                    grad_x[i * stride + p, j * stride + q] += g
