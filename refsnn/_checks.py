"""Validators shared by the public functions: they raise ValueError/TypeError with context.

Every message names the function, the argument, what was given and what was expected, e.g.
``conv2d_forward: x must have 4 dimensions (N, C_in, H, W), got shape (3, 8, 8)``.
Kernels trust their wrappers; validation happens here, once, at the public boundary.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(fn: str, name: str, a, *, ndim: int | None = None, dims: str = "") -> np.ndarray:
    """Require a float32/float64 ndarray, optionally with ``ndim`` dimensions (named ``dims``)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        what = f" {dims}" if dims else ""
        raise ValueError(
            f"{fn}: {name} must have {ndim} dimensions{what}, got shape {tuple(a.shape)}"
        )
    return a


def check_same_dtype(fn: str, **arrays: np.ndarray) -> np.dtype:
    """Require every array to share one dtype (no silent promotion); return it."""
    dtypes = {k: v.dtype for k, v in arrays.items()}
    if len(set(dtypes.values())) != 1:
        got = ", ".join(f"{k}={d}" for k, d in dtypes.items())
        raise TypeError(f"{fn}: arrays must share one dtype, got {got}")
    return next(iter(dtypes.values()))


def check_shape(fn: str, name: str, a: np.ndarray, expected: tuple, context: str = "") -> None:
    """Require ``a.shape == expected``."""
    if tuple(a.shape) != tuple(expected):
        ctx = f" ({context})" if context else ""
        raise ValueError(f"{fn}: {name}.shape={tuple(a.shape)}, expected {tuple(expected)}{ctx}")


def check_int(fn: str, name: str, value, *, minimum: int) -> int:
    """Require an int (not bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_prob(fn: str, name: str, value) -> float:
    """Require a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{fn}: {name} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{fn}: {name} must be in [0, 1), got {value}")
    return float(value)


def check_choice(fn: str, name: str, value, allowed: tuple) -> None:
    """Require ``value in allowed``."""
    if value not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {allowed}, got {value!r}")
