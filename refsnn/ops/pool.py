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
    planes, ho, wo = y.shape
    for r in numba.prange(planes):
        for i in range(ho):
            for j in range(wo):
                acc = x[r, i * stride, j * stride]
                for p in range(kernel):
                    for q in range(kernel):
                        if p > 0 or q > 0:
                            acc += x[r, i * stride + p, j * stride + q]
                y[r, i, j] = acc * scale


@numba.njit(cache=True, parallel=True)
def _avg_pool_backward_kernel(grad_y, kernel, stride, scale, grad_x):
    planes, ho, wo = grad_y.shape
    for r in numba.prange(planes):
        grad_x[r] = 0.0
        for i in range(ho):
            for j in range(wo):
                g = grad_y[r, i, j] * scale
                for p in range(kernel):
                    for q in range(kernel):
                        grad_x[r, i * stride + p, j * stride + q] += g
