"""Gradient checkers used by the op and model tests (STYLE 2.6).

- ``adjoint_check``: one random tangent t_k per input and one random cotangent c; with central
  differences in float64, jvp = (f(x + eps t) - f(x - eps t)) / (2 eps), and require
  ``<jvp, c> == sum_k <t_k, vjp(c)_k>``. Two forward calls; catches transposed axes, wrong
  signs and missing scale factors anywhere in the backward.
- ``elementwise_fd``: CS231n-style, one entry at a time, with a random upstream gradient (never
  ones); slow, for tiny shapes; reports the worst entries, to locate a bug.

Kinks (ReLU at 0). Central differences across a kink measure the average of two slopes, not
the gradient. Two tools:
- for single ops, move inputs away from 0 first (``away_from_zero``), so no coordinate is within
  ``margin`` >> eps*|t| of the kink;
- for whole models, pass ``pattern=`` (e.g. ``ann_relu_pattern``): the checker recomputes the
  ReLU on/off pattern at x, x + eps t and x - eps t and raises ``KinkError`` if they differ.
  ``adjoint_check_avoiding_kinks`` then redraws the tangent; hypothesis tests can turn a
  ``KinkError`` into ``assume(False)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from tolerances import tol


class GradcheckError(AssertionError):
    """The backward disagrees with finite differences (the message names the op)."""


class KinkError(Exception):
    """The finite-difference segment crosses a non-differentiable point: redraw, don't judge."""


class NoKinkFreeDraw(GradcheckError):
    """adjoint_check_avoiding_kinks found no tangent clear of the kinks: the point itself sits
    (numerically) on a kink; draw another point (data, weights) instead."""


class AdjointResult(NamedTuple):
    name: str
    lhs: float  # <jvp, c> by central differences
    rhs: float  # sum_k <t_k, vjp(c)_k>
    rel_err: float
    rtol: float


def random_cotangent(shape, rng: np.random.Generator) -> np.ndarray:
    """Standard normal cotangent in float64; never constant (an all-ones c hides transposes)."""
    c = rng.standard_normal(shape)
    if c.size > 1 and np.all(c == c.flat[0]):  # astronomically unlikely; be explicit anyway
        c.flat[0] += 1.0
    return c


def fd_noise(y_plus, y_minus, c, eps, factor: float | None = None,
             f_scale: float = 0.0) -> float:
    """Absolute rounding allowance of the central difference <f(x+eps t) - f(x-eps t), c>/2eps.

    Subtracting two values of size |f| loses ~machine-eps * |f| each; summed against c and
    divided by 2 eps: factor * 2.2e-16 * (sum|f+ c| + sum|f- c|) / (2 eps), factor from
    tolerances ("fd_noise"). ``f_scale`` replaces |f| where it is larger: the size of the
    intermediates f is computed from (a cross-entropy of 1e-6 computed as logsumexp(z) - z_y
    with |z| ~ 20 carries an absolute error of ~1e-15, not 1e-22).
    """
    factor = tol(np.float64, "fd_noise")["factor"] if factor is None else factor
    c = np.abs(np.asarray(c, dtype=np.float64))
    scale = float(np.sum(np.maximum(np.abs(y_plus), f_scale) * c)
                  + np.sum(np.maximum(np.abs(y_minus), f_scale) * c))
    return factor * np.finfo(np.float64).eps * scale / (2.0 * eps)


def away_from_zero(x: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """x shifted so that |x| >= margin everywhere (keeps sign; 0 goes to +margin)."""
    s = np.where(x < 0, -1.0, 1.0).astype(x.dtype)
    return (x + s * margin).astype(x.dtype)


def ann_relu_pattern(tape) -> tuple:
    """The ReLU on/off pattern (a > 0) of every activation recorded in an ann_forward tape.

    ConvRecord.a, LinearRecord.a of hidden layers (act=True), BlockRecord.h (after conv1) and
    BlockRecord.a (after the sum). The output Linear has no ReLU and is skipped.
    """
    from refsnn.models.ann import BlockRecord, ConvRecord, LinearRecord

    out = []
    for rec in tape:
        if isinstance(rec, ConvRecord):
            out.append(rec.a > 0)
        elif isinstance(rec, LinearRecord) and rec.layer.act:
            out.append(rec.a > 0)
        elif isinstance(rec, BlockRecord):
            out += [rec.h > 0, rec.a > 0]
    return tuple(out)


def _grads_as_dict(g, keys, name) -> dict:
    if hasattr(g, "_asdict"):
        g = g._asdict()
    if isinstance(g, np.ndarray) and len(keys) == 1:
        g = {keys[0]: g}
    if not isinstance(g, dict):
        raise TypeError(f"{name}: vjp must return a dict or NamedTuple of gradients, got "
                        f"{type(g).__name__}")
    missing = [k for k in keys if g.get(k) is None]
    if missing:
        raise GradcheckError(f"{name}: vjp returned no gradient for {missing}")
    return g


def _check_inputs(inputs: dict, keys, name):
    for k in keys:
        a = inputs[k]
        if not isinstance(a, np.ndarray) or a.dtype != np.float64:
            raise TypeError(f"{name}: finite differences need float64 inputs; {k} is "
                            f"{getattr(a, 'dtype', type(a).__name__)}")


def _shifted(inputs: dict, tangents: dict, h: float) -> dict:
    return {k: (v + h * tangents[k] if k in tangents else v) for k, v in inputs.items()}


def _patterns_equal(p0, p1) -> int:
    """Number of pattern entries that differ (0 = same linear piece)."""
    if len(p0) != len(p1):
        return -1
    return int(sum(np.count_nonzero(a != b) for a, b in zip(p0, p1)))


def adjoint_check(f: Callable, inputs: dict, vjp: Callable, rng: np.random.Generator,
                  eps: float = 1e-6, *, name: str | None = None, wrt=None,
                  rtol: float | None = None, pattern: Callable | None = None,
                  f_scale: float = 0.0) -> AdjointResult:
    """Check that ``vjp`` is the adjoint of the derivative of ``f`` at ``inputs``.

    f(**inputs) -> array or float (float64); vjp(c) -> {name: grad} (a dict or NamedTuple; c has
    f's output shape) evaluated at ``inputs``. ``wrt`` (default: every key) are perturbed, each
    by its own standard normal tangent. Raises GradcheckError naming ``name`` if
    |lhs - rhs| / max(|lhs|, |rhs|) > rtol (default tolerances.tol(float64, "adjoint")), and
    KinkError if ``pattern(inputs)`` differs between x, x + eps t and x - eps t. A rounding
    allowance fd_noise(..., f_scale) is added to rtol * max(|lhs|, |rhs|).
    """
    name = name or getattr(f, "__name__", "f")
    keys = list(inputs) if wrt is None else list(wrt)
    _check_inputs(inputs, keys, name)
    rtol = tol(np.float64, "adjoint")["rtol"] if rtol is None else rtol

    tangents = {k: rng.standard_normal(inputs[k].shape) for k in keys}
    plus, minus = _shifted(inputs, tangents, eps), _shifted(inputs, tangents, -eps)
    if pattern is not None:
        p0, pp, pm = pattern(inputs), pattern(plus), pattern(minus)
        changed = max(_patterns_equal(p0, pp), _patterns_equal(p0, pm))
        if changed != 0:
            raise KinkError(f"{name}: {changed} activation(s) change sign between x and "
                            f"x +/- {eps:g} t; the central difference would straddle a kink")
    y_plus = np.asarray(f(**plus), dtype=np.float64)
    y_minus = np.asarray(f(**minus), dtype=np.float64)
    jvp = (y_plus - y_minus) / (2.0 * eps)
    c = random_cotangent(jvp.shape, rng)
    lhs = float(np.sum(jvp * c))

    grads = _grads_as_dict(vjp(c), keys, name)
    rhs = 0.0
    for k in keys:
        g = np.asarray(grads[k])
        if g.shape != inputs[k].shape:
            raise GradcheckError(f"{name}: grad_{k}.shape={g.shape}, expected {inputs[k].shape}")
        rhs += float(np.sum(tangents[k] * g))
    denom = max(abs(lhs), abs(rhs))
    rel = 0.0 if denom == 0.0 else abs(lhs - rhs) / denom
    # cancellation in f(x + eps t) - f(x - eps t): ~machine eps * sum|f c| / eps in lhs
    noise = fd_noise(y_plus, y_minus, c, eps, f_scale=f_scale)
    if not abs(lhs - rhs) <= rtol * denom + noise:  # also catches NaN
        raise GradcheckError(
            f"{name}: adjoint check failed: <J t, c> = {lhs:.12g} (central differences, "
            f"eps={eps:g}) but <t, J^T c> = {rhs:.12g}; relative error {rel:.3g} > {rtol:g} "
            f"(rounding allowance {noise:.2g}; perturbed: {keys})"
        )
    return AdjointResult(name, lhs, rhs, rel, rtol)


def adjoint_check_avoiding_kinks(f, inputs, vjp, rng, eps=1e-6, *, pattern, max_draws=30,
                                 **kwargs) -> tuple[AdjointResult, int]:
    """adjoint_check, redrawing the tangent (and cotangent) while the draw crosses a kink.

    Returns (result, number of rejected draws); NoKinkFreeDraw (a GradcheckError) after
    ``max_draws`` rejections.
    """
    for rejected in range(max_draws):
        try:
            return adjoint_check(f, inputs, vjp, rng, eps, pattern=pattern, **kwargs), rejected
        except KinkError as err:
            last = err
    raise NoKinkFreeDraw(f"no kink-free tangent in {max_draws} draws; last: {last}")


def elementwise_fd(f: Callable, inputs: dict, vjp: Callable, rng: np.random.Generator,
                   eps: float = 1e-6, *, name: str | None = None, wrt=None,
                   max_entries: int = 60, rtol: float | None = None,
                   floor: float | None = None, pattern: Callable | None = None,
                   n_report: int = 5, f_scale: float = 0.0) -> list:
    """CS231n-style numerical gradient, one entry at a time, with a random upstream gradient c.

    For each input k and entry i (all entries if the input has <= max_entries, else a random
    sample of max_entries): numeric = (<f(x + eps e_i), c> - <f(x - eps e_i), c>) / (2 eps),
    analytic = vjp(c)[k][i]; relative error |a - n| / max(|a| + |n|, floor). Entries whose
    perturbation changes ``pattern`` (a kink) are skipped. An entry fails if
    |a - n| > rtol * (|a| + |n|) + rtol * floor + fd_noise (rounding of the difference of two
    losses, which matters for entries whose gradient is ~1e-8 next to a loss of ~10). Raises
    GradcheckError listing the ``n_report`` worst entries; returns rows (score, key, index,
    analytic, numeric, rel) worst first, score > 1 meaning failure.
    """
    name = name or getattr(f, "__name__", "f")
    keys = list(inputs) if wrt is None else list(wrt)
    _check_inputs(inputs, keys, name)
    t = tol(np.float64, "elementwise_fd")
    rtol = t["rtol"] if rtol is None else rtol
    floor = t["floor"] if floor is None else floor

    y0 = np.asarray(f(**inputs), dtype=np.float64)
    c = random_cotangent(y0.shape, rng)
    grads = _grads_as_dict(vjp(c), keys, name)
    p0 = pattern(inputs) if pattern is not None else None
    rows = []
    for k in keys:
        x = inputs[k]
        g = np.asarray(grads[k])
        if g.shape != x.shape:
            raise GradcheckError(f"{name}: grad_{k}.shape={g.shape}, expected {x.shape}")
        flat_idx = np.arange(x.size)
        if x.size > max_entries:
            flat_idx = np.sort(rng.choice(x.size, size=max_entries, replace=False))
        for fi in flat_idx:
            idx = np.unravel_index(int(fi), x.shape)
            vals = []
            skip = False
            for h in (eps, -eps):
                xp = x.copy()
                xp[idx] += h
                shifted = dict(inputs, **{k: xp})
                if p0 is not None and _patterns_equal(p0, pattern(shifted)) != 0:
                    skip = True
                    break
                vals.append(float(np.sum(np.asarray(f(**shifted), dtype=np.float64) * c)))
            if skip:
                continue
            num = (vals[0] - vals[1]) / (2.0 * eps)
            ana = float(g[idx])
            rel = abs(ana - num) / max(abs(ana) + abs(num), floor)
            noise = fd_noise(np.asarray(vals[0]), np.asarray(vals[1]), 1.0, eps,
                             f_scale=f_scale * float(np.sum(np.abs(c))))
            # score > 1 fails: |a - n| > rtol * (|a| + |n|) + rounding allowance
            score = abs(ana - num) / (rtol * (abs(ana) + abs(num)) + noise + floor * rtol)
            rows.append((score, k, tuple(int(i) for i in idx), ana, num, rel))
    rows.sort(key=lambda r: -r[0])
    if rows and not rows[0][0] <= 1.0:
        worst = "\n".join(f"  grad_{k}{list(i)}: analytic {a:.10g}, numeric {n:.10g}, rel {r:.3g}"
                          for _, k, i, a, n, r in rows[:n_report])
        n_bad = sum(1 for r in rows if not r[0] <= 1.0)
        raise GradcheckError(f"{name}: {n_bad} of {len(rows)} entries disagree with central "
                             f"differences (rtol={rtol:g}); worst:\n{worst}")
    return rows
