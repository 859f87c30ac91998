"""ReLU, dropout and flatten as forward/backward pairs.

Element-wise kernels run over the flattened array in fixed chunks, one chunk per prange
iteration (disjoint writes). Dropout takes its mask as an argument: drawing it is a separate,
explicit step (``dropout_mask``), so a forward pass is a pure function of its inputs and the
mask can be stored in golden traces and reused by other frameworks.
"""

from __future__ import annotations

import numba
import numpy as np

from .._checks import check_array, check_prob, check_same_dtype, check_shape

_CHUNK = 1 << 16  # elements per parallel chunk


def relu_forward(x: np.ndarray) -> np.ndarray:
    """y = max(x, 0).  Any shape.  Matches torch.relu."""
    check_array("relu_forward", "x", x)
    y = np.empty(x.shape, dtype=x.dtype)
    _relu_forward_kernel(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))
    return y


def relu_backward(grad_y: np.ndarray, y: np.ndarray, *,
                  zero_units: np.ndarray | None = None) -> np.ndarray:
    """grad_x = 0 where y <= 0 else grad_y, with y the forward output (x = 0 gets gradient 0).

    Matches torch's threshold_backward(grad_y, y, 0). zero_units: optional bool array over
    axis 1 of y (channels of (N, C, ...), features of (N, F)), True on the units of the layer
    before the ReLU whose weights are all zero: their input is 0 for every sample, and there
    the derivative at 0 is taken as 1 (the right derivative), so grad_x = grad_y on them.
    This lets a dead or just-regrown conv filter or linear row learn (refsnn.models.ann).
    """
    fn = "relu_backward"
    check_array(fn, "grad_y", grad_y)
    check_array(fn, "y", y)
    check_same_dtype(fn, grad_y=grad_y, y=y)
    check_shape(fn, "grad_y", grad_y, y.shape)
    grad_x = np.empty(y.shape, dtype=y.dtype)
    _relu_backward_kernel(np.ascontiguousarray(grad_y).reshape(-1),
                          np.ascontiguousarray(y).reshape(-1), grad_x.reshape(-1))
    if zero_units is not None:
        units = check_units(fn, zero_units, y.shape)
        grad_x[:, units] = grad_y[:, units]
    return grad_x


def check_units(fn: str, zero_units, shape: tuple) -> np.ndarray:
    """zero_units as a bool array of shape (shape[1],), else a ValueError/TypeError."""
    if not isinstance(zero_units, np.ndarray) or zero_units.dtype != np.bool_:
        got = zero_units.dtype if isinstance(zero_units, np.ndarray) else type(zero_units)
        raise TypeError(f"{fn}: zero_units must be a bool numpy array, got {got}")
    if len(shape) < 2 or zero_units.shape != (shape[1],):
        raise ValueError(f"{fn}: zero_units.shape={zero_units.shape}, expected "
                         f"({shape[1] if len(shape) > 1 else '?'},): one flag per unit (axis 1 "
                         f"of the activation, shape {shape})")
    return zero_units


def zero_units_of(w: np.ndarray) -> np.ndarray:
    """bool (out,): the output units (conv filters W[o], linear rows W[o]) whose weights are
    all zero. Their pre-activation is exactly 0 for every input (no bias, SPEC 2).

    Each row is scanned up to its first nonzero weight, so a dense layer costs one read per
    row (np.any over the weights would read them all on every backward).
    """
    check_array("zero_units_of", "w", w)
    if w.ndim < 2:
        raise ValueError(f"zero_units_of: w must be a conv (O, I, kH, kW) or linear (out, in) "
                         f"weight, got shape {w.shape}")
    out = np.empty(w.shape[0], dtype=np.bool_)
    _zero_rows_kernel(np.ascontiguousarray(w).reshape(w.shape[0], -1), out)
    return out


def dropout_mask(shape: tuple, p: float, rng: np.random.Generator, dtype) -> np.ndarray:
    """Inverted-dropout mask: each entry is 1/(1-p) with probability 1-p, else 0.

    Draw: keep = rng.random(shape) >= p  (float64 uniforms, C order), mask = keep / (1 - p).
    p = 0 gives an all-ones mask.
    """
    p = check_prob("dropout_mask", "p", p)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout_mask: rng must be a numpy.random.Generator, "
                        f"got {type(rng).__name__}")
    dtype = np.dtype(dtype)
    keep = rng.random(tuple(shape)) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def _masked(fn: str, name: str, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    check_array(fn, name, a)
    check_array(fn, "mask", mask)
    check_same_dtype(fn, **{name: a, "mask": mask})
    check_shape(fn, "mask", mask, a.shape)
    out = np.empty(a.shape, dtype=a.dtype)
    _mul_kernel(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(mask).reshape(-1),
                out.reshape(-1))
    return out


def dropout_forward(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """y = x * mask (mask values 0 or 1/(1-p), from dropout_mask).  Same shape for x and mask.

    Matches torch.nn.functional.dropout(x, p, training=True) given the same keep pattern.
    """
    return _masked("dropout_forward", "x", x, mask)


def dropout_backward(grad_y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """grad_x = grad_y * mask."""
    return _masked("dropout_backward", "grad_y", grad_y, mask)


def flatten_forward(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C*H*W) in C order (index c*H*W + h*W + w), as torch.flatten(x, 1)."""
    check_array("flatten_forward", "x", x)
    return np.ascontiguousarray(x).reshape(x.shape[0], -1)


def flatten_backward(grad_y: np.ndarray, x_shape: tuple) -> np.ndarray:
    """Reshape grad_y back to x_shape."""
    return grad_y.reshape(tuple(x_shape))


@numba.njit(cache=True, parallel=True)
def _relu_forward_kernel(x, y):
    n = x.size
    for b in numba.prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(b * _CHUNK, min(n, (b + 1) * _CHUNK)):
            # NaN passes through, as in torch.relu (NaN <= 0 is False)
            y[i] = 0.0 if x[i] <= 0 else x[i]


@numba.njit(cache=True, parallel=True)
def _relu_backward_kernel(grad_y, y, grad_x):
    n = y.size
    for b in numba.prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(b * _CHUNK, min(n, (b + 1) * _CHUNK)):
            grad_x[i] = 0.0 if y[i] <= 0 else grad_y[i]  # torch's threshold_backward


@numba.njit(cache=True)
def _zero_rows_kernel(w, out):
    # out[o] = all(w[o] == 0), stopping at the row's first nonzero (NaN counts as nonzero)
    for o in range(w.shape[0]):
        zero = True
        for j in range(w.shape[1]):
            if w[o, j] != 0:
                zero = False
                break
        out[o] = zero


@numba.njit(cache=True)
def _mul_kernel(a, b_, out):
    # one thread: a plain loop vectorises and streams at the memory's speed; as a prange over
    # chunks on the workqueue layer it took 9-11x longer (262 k float32: 321 vs 28 us)
    for i in range(a.size):
        out[i] = a[i] * b_[i]
