"""Tolerances for every numerical comparison in the tests: one table, one reason per entry.

Keyed by (dtype, check kind). ``tol(dtype, kind)`` returns the dict to pass on, and
``assert_close`` compares shape and dtype before values (STYLE 2.6) and names what it checked.

Scales the reasoning assumes: test inputs are standard normal, shapes are tiny (a reduction sums
at most a few hundred products), so an absolute rounding error is about n * eps * |x| * |w|.
"""

from __future__ import annotations

import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)

TOLERANCES = {
    # refsnn vs a naive / einsum reference (same maths, different summation order). Float64
    # rounding over <= a few hundred O(1) terms is ~1e-14 absolute; 1e-12 leaves 100x margin and
    # still catches any indexing slip (those give O(1) errors).
    (F64, "forward"): dict(rtol=1e-12, atol=1e-12),
    # Same in float32: eps = 1.2e-7, a sum of ~100 O(1) terms can be off by ~1e-5 in the worst
    # case; typical errors are ~1e-6.
    (F32, "forward"): dict(rtol=1e-5, atol=1e-5),
    # Backward vs the loop reference: the same sums as forward, reordered; same reasoning.
    (F64, "backward"): dict(rtol=1e-12, atol=1e-12),
    (F32, "backward"): dict(rtol=1e-5, atol=1e-5),
    # Adjoint check <J t, c> vs <t, J^T c> with central differences, eps = 1e-6: truncation is
    # O(eps^2 * f''') (zero for the linear and bilinear ops, ~1e-12 for the smooth loss) and
    # cancellation adds ~1e-16 / eps = 1e-10 relative; 1e-6 is STYLE's figure with 1e4 margin,
    # while a wrong gradient gives O(1) relative error.
    (F64, "adjoint"): dict(rtol=1e-6),
    # Whole model (all weights jointly, up to 15 layers, CE on top), kink-free draws only: the
    # function is smooth along the segment, so the same 1e-6; with a ReLU kink crossed the error
    # is ~1e-3 (observed), which is why draws crossing kinks are rejected rather than tolerated.
    (F64, "model_adjoint"): dict(rtol=1e-6),
    # Element-wise central differences, CS231n relative error |a - n| / max(|a| + |n|, floor).
    # Per entry the cancellation error is ~1e-16 * |f| / eps ~ 1e-10 absolute; floor 1e-8 keeps
    # entries whose true gradient is ~0 from dividing noise by noise.
    (F64, "elementwise_fd"): dict(rtol=1e-6, floor=1e-8),
    # Rounding allowance of a central difference: f(x+h) - f(x-h) loses ~2.2e-16 * |f| per
    # evaluation, divided by 2h. Factor 100 covers the accumulated rounding of |f| itself (sums
    # over a few hundred terms, a loss through a network) and keeps entries whose gradient is
    # tiny next to |f| (a saturated softmax: grad 6e-8 beside a loss of 10) from failing on
    # noise; a wrong gradient is O(|grad|) off and is still caught wherever |grad| >> 1e-8.
    (F64, "fd_noise"): dict(factor=100.0),
    # Numba kernel vs its .py_func on loop-only kernels (copies, adds, multiplies in the same
    # order): IEEE arithmetic is deterministic, so bit-for-bit.
    (F64, "py_func"): dict(rtol=0.0, atol=0.0),
    (F32, "py_func"): dict(rtol=0.0, atol=0.0),
    # Kernels calling exp/log: numba calls LLVM/libm, .py_func calls numpy's scalar exp, and the
    # two differ in the last bit for ~5% of arguments (measured: max 4e-16 relative). 8 ulp.
    (F64, "py_func_transcendental"): dict(rtol=8 * 2.2e-16, atol=0.0),
    (F32, "py_func_transcendental"): dict(rtol=8 * 1.2e-7, atol=0.0),
    # refsnn vs torch autograd in float64: different GEMM blocking (MKL-DNN vs OpenBLAS) and
    # summation order through up to 15 layers; observed ~1e-15..1e-14, bound 1e-10 (the brief).
    # atol is relative to the largest entry of the array compared (see assert_close(scale=)).
    (F64, "torch"): dict(rtol=1e-10, atol=1e-10),
    # torch in float32 (STYLE 2.6): accumulation order differs in float32 through the network.
    (F32, "torch"): dict(rtol=1e-4, atol=1e-5),
}


def tol(dtype, kind: str) -> dict:
    """The tolerance dict for ``dtype`` and ``kind`` (KeyError names what is missing)."""
    key = (np.dtype(dtype), kind)
    if key not in TOLERANCES:
        raise KeyError(f"no tolerance for {key}; have {sorted((str(d), k) for d, k in TOLERANCES)}")
    return dict(TOLERANCES[key])


def assert_close(actual, expected, *, kind: str, what: str, dtype=None, scale: bool = False):
    """Shape, then dtype, then values within tol(dtype, kind).

    ``what`` names the call, e.g. ``"conv2d_backward(stride=2, padding=1).w"``; it is in every
    message. ``scale=True`` multiplies atol by max(1, max|expected|) (for arrays whose magnitude
    is not O(1), such as whole-model gradients).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape={actual.shape}, expected {expected.shape}")
    dtype = np.dtype(dtype) if dtype is not None else expected.dtype
    if actual.dtype != dtype:
        raise AssertionError(f"{what}: dtype={actual.dtype}, expected {dtype}")
    t = tol(dtype, kind)
    rtol, atol = t.get("rtol", 0.0), t.get("atol", 0.0)
    if scale and expected.size:
        atol = atol * max(1.0, float(np.max(np.abs(expected))))
    if rtol == 0.0 and atol == 0.0:
        if not np.array_equal(actual, expected):
            bad = np.argwhere(actual != expected)
            first = tuple(int(i) for i in bad[0]) if bad.ndim == 2 and len(bad) else ()
            raise AssertionError(
                f"{what}: not bit-identical ({len(bad)} of {expected.size} entries differ; first "
                f"at {first}: {actual[first]!r} vs {expected[first]!r})"
            )
        return
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = atol + rtol * np.abs(expected.astype(np.float64))
    if not np.all(err <= bound):
        idx = np.unravel_index(np.argmax(err - bound), err.shape) if err.ndim else ()
        raise AssertionError(
            f"{what}: values differ beyond rtol={rtol:g}, atol={atol:g} [{kind}, {dtype}]: "
            f"{int(np.sum(err > bound))} of {expected.size} entries; worst at "
            f"{tuple(map(int, idx))}: "
            f"got {actual[idx]!r}, expected {expected[idx]!r}, max abs err {err.max():.3g}"
        )
