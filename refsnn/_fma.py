"""Fused multiply-add a*b + c, rounded once, for Numba kernels and plain Python alike.

torch's vectorised CPU kernels use a fused multiply-add in ``add(alpha=)``, ``lerp_`` and
``addcmul_``; refsnn's optimizer kernels call ``fma`` to round as they do. Jitted, ``fma``
is LLVM's ``llvm.fma`` intrinsic (one rounding, by hardware or libm); as plain Python
(``NUMBA_DISABLE_JIT=1`` or ``.py_func``) it rounds exactly through ``fractions.Fraction``,
so both give the same bits.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import types
from numba.extending import intrinsic, overload

def fma(a, b, c):
    """Correctly rounded ``a*b + c`` for float32 or float64 scalars (plain-Python version).

    Exact through ``fractions.Fraction``; the jitted kernels use the LLVM ``fma`` intrinsic
    instead (see the overload below), which gives the same bits.
    """
    dt = np.asarray(a).dtype.type
    fa, fb, fc = float(a), float(b), float(c)
    if not (math.isfinite(fa) and math.isfinite(fb) and math.isfinite(fc)):
        return dt(fa * fb + fc)  # inf/nan in, inf/nan out: fused and unfused agree
    if fa == 0.0 or fb == 0.0:
        return dt(dt(a) * dt(b) + dt(c))  # exact product: one rounding either way (keeps -0)
    x = Fraction(fa) * Fraction(fb) + Fraction(fc)
    if x == 0:
        return dt(0.0)  # exact cancellation gives +0 under round-to-nearest
    try:
        r64 = float(x)  # correctly rounded to float64
    except OverflowError:
        return dt(math.inf if x > 0 else -math.inf)
    if dt is np.float64:
        return np.float64(r64)
    # float32: going through float64 can round twice; pick the float32 nearest to x exactly.
    if abs(x) >= _F32_OVERFLOW:
        return np.float32(math.inf if x > 0 else -math.inf)
    best = np.float32(math.copysign(min(abs(r64), _F32_MAX), r64))
    with np.errstate(over="ignore"):  # the neighbour of float32 max is inf: skipped below
        down = np.nextafter(best, np.float32(-np.inf))
        up = np.nextafter(best, np.float32(np.inf))
    for cand in (down, up):
        if not math.isfinite(cand):
            continue
        d_best, d_cand = abs(Fraction(float(best)) - x), abs(Fraction(float(cand)) - x)
        if d_cand < d_best or (d_cand == d_best and int(cand.view(np.int32)) % 2 == 0):
            best = cand
    return best


_F32_MAX = float(np.finfo(np.float32).max)  # (2 - 2**-23) * 2**127
_F32_OVERFLOW = Fraction(2**128 - 2**103)  # float32 max + half an ulp: rounds to inf (tie -> even)


@intrinsic
def _fma_intrinsic(typingctx, a, b, c):
    if isinstance(a, types.Float) and a == b == c:

        def codegen(context, builder, signature, args):
            return builder.fma(*args)  # llvm.fma: one rounding, by hardware or libm

        return a(a, b, c), codegen
    return None


@overload(fma)
def _fma_overload(a, b, c):
    if isinstance(a, types.Float) and a == b == c:
        return lambda a, b, c: _fma_intrinsic(a, b, c)
    return None
