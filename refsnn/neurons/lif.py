"""Leaky integrate-and-fire layer over all T time steps, as a forward/backward (BPTT) pair.

One call runs the whole time loop of one layer (SPEC 5.1). The network is feed-forward in
space, so running layer l for t = 1..T and then layer l+1 performs exactly the operations of
the SPEC's step-by-step order (t outer, layers inner), in the same order per neuron.

    u[0] = 0
    u-[t] = lam * u[t-1] + I[t]        leaky integration
    z[t]  = u-[t] / v - 1               surrogate input (DIET-SNN's; snnTorch/norse use u - v)
    s[t]  = 1 if z[t] > 0 else 0        strict: u- == v does not spike (snnTorch, norse agree;
                                        spikingjelly uses >=)
    u[t]  = u-[t] - v * s[t]            soft reset by subtraction, in the same step

Conventions (STYLE 2.10): spike tie u- == v -> no spike; reset in the same step (norse,
spikingjelly, DIET-SNN; snnTorch's default resets with the previous step's spike); the reset
carries no gradient through s by default (``detach_reset=True``, SPEC 5.3). v (threshold) and
lam (leak) are one scalar per layer.

Arithmetic: float64 inputs compute in float64 throughout (reference grade). With float32
inputs the membrane recurrence runs in float32; z and the surrogate are evaluated with float64
constants (numba types Python literals as float64) and stored in float32. The threshold and
leak gradients accumulate in float64 (per chunk of neurons, then over chunks in chunk order,
so the result does not depend on the thread count) and are returned in the layer dtype.

Debugging: ``NUMBA_DISABLE_JIT=1`` runs both kernels as plain Python.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .._checks import check_array, check_choice, check_int, check_same_dtype
from .surrogate import (DEFAULT_ALPHA, DEFAULT_GAMMA, SURROGATES, surrogate_grad,
                        surrogate_primitive)

SPIKE_MODES = ("heaviside", "smooth")
_CHUNK = 2048  # neurons per prange iteration (fixed: chunking, not threads, sets sum order)


class LIFTrace(NamedTuple):
    spikes: np.ndarray  # s[t], (T, N, ...): exactly 0/1 (heaviside) or P(z[t]) (smooth)
    membrane_pre: np.ndarray  # u-[t], (T, N, ...): after integration, before the reset


class LIFGrads(NamedTuple):
    current: np.ndarray  # dL/dI[t] (T, N, ...); (N, ...) = sum_t dL/dI[t] if forward used repeat
    threshold: np.ndarray  # dL/dv, 0-d array in the layer dtype
    leak: np.ndarray  # dL/dlam, 0-d array in the layer dtype


def _check_scalar(fn, name, value, dtype, *, positive=False):
    """A real scalar (Python number, numpy scalar or 0-d array), finite; cast to ``dtype``."""
    if isinstance(value, bool) or np.ndim(value) != 0:
        raise TypeError(f"{fn}: {name} must be a real scalar (float or 0-d array), got "
                        f"{type(value).__name__} with shape {np.shape(value)}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be a real scalar, got {value!r}") from None
    if not np.isfinite(x) or (positive and not x > 0.0):
        want = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{fn}: {name} must be {want}, got {x!r}")
    return np.dtype(dtype).type(x)


def _check_neuron_args(fn, dtype, threshold, leak, surrogate, gamma, alpha):
    check_choice(fn, "surrogate", surrogate, tuple(SURROGATES))
    return (_check_scalar(fn, "threshold", threshold, dtype, positive=True),
            _check_scalar(fn, "leak", leak, dtype),
            SURROGATES[surrogate].code,
            _check_scalar(fn, "gamma", gamma, dtype, positive=True),
            _check_scalar(fn, "alpha", alpha, dtype, positive=True))


def lif_forward(current: np.ndarray, *, threshold, leak, spike: str = "heaviside",
                surrogate: str = "pwl", gamma: float = DEFAULT_GAMMA,
                alpha: float = DEFAULT_ALPHA, repeat: int | None = None) -> LIFTrace:
    """Spikes and pre-reset membranes of a LIF layer over T steps (equations in the module doc).

    current: (T, N, ...) input current I[t]; or, with ``repeat=T``, an (N, ...) current that is
    the same at every step (direct input: the first layer's I is computed once, SPEC 5.1).
    threshold v > 0 and leak lam: scalars (float, numpy scalar or 0-d array), cast to
    current's dtype.  -> LIFTrace(spikes, membrane_pre), each (T, N, ...), current's dtype.

    spike="heaviside": s[t] = 1 if z[t] > 0 else 0 (SPEC).  spike="smooth": s[t] = P(z[t]),
    the surrogate's primitive (surrogate.py), real-valued, so that the whole forward is
    differentiable and lif_backward(detach_reset=False) is its exact gradient (a test mode).
    surrogate, gamma, alpha select P ("pwl": gamma; "sigmoid": gamma, alpha) and only matter
    in smooth mode here. The post-reset membrane is lif_membrane(trace, threshold=v).
    No single torch call computes this; it equals a Python loop over t of the equations above
    (tests/neurons/test_lif.py: lif_forward_reference, bit for bit). Libraries that fire on
    u - v > 0 agree with u/v - 1 > 0 in exact arithmetic (v > 0); in floating point the two
    can differ for u within an ulp of v.
    """
    fn = "lif_forward"
    check_choice(fn, "spike", spike, SPIKE_MODES)
    if repeat is None:
        check_array(fn, "current", current)
        if current.ndim < 2:
            raise ValueError(f"{fn}: current must be (T, N, ...), got shape {current.shape} "
                             f"(pass repeat=T for an (N, ...) current used at every step)")
        t_steps, neuron_shape = current.shape[0], current.shape[1:]
    else:
        t_steps = check_int(fn, "repeat", repeat, minimum=1)
        check_array(fn, "current", current)
        if current.ndim < 1:
            raise ValueError(f"{fn}: with repeat, current must be (N, ...), got a 0-d array")
        neuron_shape = current.shape
    dtype = current.dtype
    v, lam, code, gamma_, alpha_ = _check_neuron_args(fn, dtype, threshold, leak, surrogate,
                                                      gamma, alpha)
    m = int(np.prod(neuron_shape))
    cur = np.ascontiguousarray(current).reshape(-1, m)  # (T, M) or (1, M)
    if repeat is not None:
        cur = np.broadcast_to(cur, (t_steps, m))  # stride 0 over t: I[t] = I for every t
    spikes = np.empty((t_steps, m), dtype=dtype)
    membrane_pre = np.empty((t_steps, m), dtype=dtype)
    _lif_forward_kernel(cur, v, lam, spike == "smooth", code, gamma_, alpha_, spikes,
                        membrane_pre)
    shape = (t_steps,) + tuple(neuron_shape)
    return LIFTrace(spikes.reshape(shape), membrane_pre.reshape(shape))


@numba.njit(cache=True, parallel=True)
def _lif_forward_kernel(current, v, lam, smooth, code, gamma, alpha, spikes, membrane_pre):
    # current, spikes, membrane_pre: (T, M). One chunk of neurons per prange iteration (disjoint
    # columns); inside a chunk, t outer and neurons inner (contiguous rows).
    t_steps, m = spikes.shape
    for b in numba.prange((m + _CHUNK - 1) // _CHUNK):
        i0, i1 = b * _CHUNK, min(m, (b + 1) * _CHUNK)
        for t in range(t_steps):
            if smooth:
                _lif_forward_step_smooth(current, v, lam, code, gamma, alpha, spikes,
                                         membrane_pre, t, i0, i1)
            else:
                _lif_forward_step(current, v, lam, spikes, membrane_pre, t, i0, i1)


@numba.njit(cache=True, inline="never")  # a call, not inlined: its loop vectorises
def _lif_forward_step(current, v, lam, spikes, membrane_pre, t, i0, i1):
    """Step t over neurons [i0, i1), Heaviside spikes."""
    for i in range(i0, i1):
        um = _membrane_pre(current, v, lam, spikes, membrane_pre, t, i)
        z = um / v - 1.0  # z[t] = u-[t] / v - 1
        membrane_pre[t, i] = um
        spikes[t, i] = 1.0 if z > 0.0 else 0.0  # strict: z == 0 does not spike


@numba.njit(cache=True, inline="never")
def _lif_forward_step_smooth(current, v, lam, code, gamma, alpha, spikes, membrane_pre, t, i0,
                             i1):
    """Step t over neurons [i0, i1), spikes replaced by the surrogate's primitive."""
    for i in range(i0, i1):
        um = _membrane_pre(current, v, lam, spikes, membrane_pre, t, i)
        z = um / v - 1.0
        membrane_pre[t, i] = um
        spikes[t, i] = surrogate_primitive(code, z, gamma, alpha)  # s = P(z)


@numba.njit(cache=True, inline="always")
def _membrane_pre(current, v, lam, spikes, membrane_pre, t, i):
    if t == 0:
        return current[0, i]  # u-[1] = lam * 0 + I[1]
    # u-[t] = lam * u[t-1] + I[t],  u[t-1] = u-[t-1] - v * s[t-1]
    return lam * (membrane_pre[t - 1, i] - v * spikes[t - 1, i]) + current[t, i]


def lif_membrane(trace: LIFTrace, *, threshold) -> np.ndarray:
    """Post-reset membrane u[t] = u-[t] - v * s[t], (T, N, ...) (the golden trace's
    ``trace.<layer>.membrane``); the same expression, in the same dtype, as both kernels use."""
    v = _check_scalar("lif_membrane", "threshold", threshold, trace.membrane_pre.dtype,
                      positive=True)
    return trace.membrane_pre - v * trace.spikes


def lif_backward(grad_spikes: np.ndarray, current: np.ndarray, trace: LIFTrace, *, threshold,
                 leak, surrogate: str = "pwl", gamma: float = DEFAULT_GAMMA,
                 alpha: float = DEFAULT_ALPHA, detach_reset: bool = True) -> LIFGrads:
    """BPTT through lif_forward (SPEC 5.3), given dL/ds[t] for every t.

    With sg[t] = g(z[t]) the surrogate ds/dz (surrogate.py; in smooth mode the exact P'),
    du[T] = 0 and, for t = T..1:
        du-[t]   = ds[t] * sg[t] / v + du[t] * (1 - (0 if detach_reset else sg[t]))
        du[t-1]  = lam * du-[t]
        dI[t]    = du-[t]
        dv      += sum_i ds[t] sg[t] (-u-[t] / v^2) - du[t] s[t]
                         + (0 if detach_reset else du[t] sg[t] u-[t] / v)
        dlam    += sum_i du-[t] * u[t-1]          (u[0] = 0, u[t] = u-[t] - v s[t])
    du[t] is the gradient reaching the post-reset membrane u[t] from step t+1.

    detach_reset=True (default, SPEC 5.3): s is a constant in the reset term u- - v s, but v
    still gets the -du s term from it. detach_reset=False: the exact derivative of the forward
    (the reset also passes gradient through s), which finite differences check in smooth mode.
    grad_spikes: (T, N, ...); current: the forward's current, (T, N, ...) or the (N, ...) array
    passed with repeat=T (then grad current = sum_t dI[t], summed from t = T down to 1);
    trace: lif_forward's output. threshold, leak, surrogate, gamma, alpha: as in the forward.
    By construction this is what torch autograd computes through the forward written with a
    custom autograd.Function s = heaviside(z) whose backward returns grad * sg, and
    ``u = u_pre - v * s.detach()`` when detach_reset=True (not cross-checked against torch
    here; the smooth-mode finite-difference tests check detach_reset=False exactly).
    """
    fn = "lif_backward"
    check_array(fn, "grad_spikes", grad_spikes)
    check_array(fn, "current", current)
    if not isinstance(trace, LIFTrace):
        raise TypeError(f"{fn}: trace must be the LIFTrace returned by lif_forward, got "
                        f"{type(trace).__name__}")
    check_same_dtype(fn, grad_spikes=grad_spikes, current=current, spikes=trace.spikes,
                     membrane_pre=trace.membrane_pre)
    shape = trace.spikes.shape
    if trace.membrane_pre.shape != shape or grad_spikes.shape != shape:
        raise ValueError(f"{fn}: grad_spikes.shape={grad_spikes.shape}, trace.spikes.shape="
                         f"{shape}, trace.membrane_pre.shape={trace.membrane_pre.shape}; "
                         f"all must be equal (T, N, ...)")
    if current.shape == shape:
        repeat = False
    elif current.shape == shape[1:]:
        repeat = True
    else:
        raise ValueError(f"{fn}: current.shape={current.shape}, expected {shape} (per step) or "
                         f"{shape[1:]} (the same current at every step, forward repeat=T)")
    if not isinstance(detach_reset, bool):
        raise TypeError(f"{fn}: detach_reset must be a bool, got {detach_reset!r}")
    dtype = current.dtype
    v, lam, code, gamma_, alpha_ = _check_neuron_args(fn, dtype, threshold, leak, surrogate,
                                                      gamma, alpha)
    t_steps = shape[0]
    m = int(np.prod(shape[1:]))
    n_chunks = (m + _CHUNK - 1) // _CHUNK
    grad_current = np.zeros((1 if repeat else t_steps, m), dtype=dtype)
    du = np.empty((2, m), dtype=dtype)  # work: du[t] per neuron, from t+1 to t (two rows)
    part_v = np.zeros(n_chunks, dtype=np.float64)  # per-chunk partial sums of dv, dlam
    part_lam = np.zeros(n_chunks, dtype=np.float64)
    _lif_backward_kernel(np.ascontiguousarray(grad_spikes).reshape(t_steps, m),
                         np.ascontiguousarray(trace.membrane_pre).reshape(t_steps, m),
                         np.ascontiguousarray(trace.spikes).reshape(t_steps, m),
                         v, lam, code, gamma_, alpha_, detach_reset, repeat,
                         grad_current, du, part_v, part_lam)
    # sum the chunks in chunk order: deterministic, independent of the thread count
    grad_v = np.asarray(sum(part_v.tolist(), 0.0), dtype=dtype)
    grad_lam = np.asarray(sum(part_lam.tolist(), 0.0), dtype=dtype)
    return LIFGrads(grad_current.reshape(current.shape), grad_v, grad_lam)


@numba.njit(cache=True, parallel=True)
def _lif_backward_kernel(grad_spikes, membrane_pre, spikes, v, lam, code, gamma, alpha, detach,
                         repeat, grad_current, du, part_v, part_lam):
    # (T, M) arrays; grad_current (T, M), or (1, M) zeros when the forward used repeat. Chunk b
    # owns columns [i0, i1) of every array and part_v[b], part_lam[b]: disjoint writes.
    t_steps, m = spikes.shape
    for b in numba.prange((m + _CHUNK - 1) // _CHUNK):
        i0, i1 = b * _CHUNK, min(m, (b + 1) * _CHUNK)
        part_v[b], part_lam[b] = _lif_backward_chunk(
            grad_spikes, membrane_pre, spikes, v, lam, code, gamma, alpha, detach, repeat,
            grad_current, du[0], du[1], i0, i1)


@numba.njit(cache=True)  # a call, not inlined: Numba's own inlining into prange stops SIMD
def _lif_backward_chunk(grad_spikes, membrane_pre, spikes, v, lam, code, gamma, alpha, detach,
                        repeat, grad_current, du_in, du_out, i0, i1):
    """BPTT over neurons [i0, i1): returns their (dv, dlam) sums. du[t] alternates between
    du_in and du_out (read one, write the other), and dv, dlam gather per neuron over t before
    the neurons are summed in order: no value is read after it is written in the same loop and
    no sum runs across neurons there, so the loop over neurons vectorises. The steps multiply
    by 1/v (one float64 division per step) instead of dividing by v: a vector division costs
    ~10x a multiplication, and the whole backward ran 1.35x faster without them (96 -> 71 ms
    over a vgg9 batch; rounding differs from a division by up to an ulp of the float64
    intermediates)."""
    lane_v = np.zeros(i1 - i0)  # float64 per-neuron sums over t
    lane_lam = np.zeros(i1 - i0)
    lane_dum = np.empty(i1 - i0)
    for i in range(i0, i1):
        du_in[i] = 0.0  # du[T] = 0: nothing after the last step
    for t in range(spikes.shape[0] - 1, -1, -1):
        if detach:  # SPEC 5.3's case: a loop without flags, which vectorises
            _lif_backward_step_detached(grad_spikes, membrane_pre, spikes, v, lam, code, gamma,
                                        alpha, du_in, du_out, t, i0, i1, lane_v, lane_dum)
        else:
            _lif_backward_step(grad_spikes, membrane_pre, spikes, v, lam, code, gamma, alpha,
                               du_in, du_out, t, i0, i1, lane_v, lane_dum)
        if repeat:  # dI[t] = du-[t], left in lane_dum by either step
            for i in range(i0, i1):
                grad_current[0, i] += lane_dum[i - i0]  # sum_t dI[t], t = T..1
        else:
            for i in range(i0, i1):
                grad_current[t, i] = lane_dum[i - i0]
        if t > 0:  # dlam += du-[t] u[t-1]   (u[0] = 0)
            for i in range(i0, i1):
                lane_lam[i - i0] += lane_dum[i - i0] * (membrane_pre[t - 1, i]
                                                        - v * spikes[t - 1, i])
        du_in, du_out = du_out, du_in
    acc_v = 0.0
    acc_lam = 0.0
    for j in range(i1 - i0):
        acc_v += lane_v[j]
        acc_lam += lane_lam[j]
    return acc_v, acc_lam


@numba.njit(cache=True)
def _lif_backward_step(grad_spikes, membrane_pre, spikes, v, lam, code, gamma, alpha, du_in,
                       du_out, t, i0, i1, lane_v, lane_dum):
    """Step t of the backward over neurons [i0, i1) with the reset not detached: du_in holds
    du[t], du_out gets du[t-1], lane_dum du-[t] in float64 (dI[t], and for dlam), lane_v the
    per-neuron sums of dv."""
    inv_v = 1.0 / v  # float64; the loop multiplies (no division: see _lif_backward_chunk)
    for i in range(i0, i1):
        um = membrane_pre[t, i]
        sg = surrogate_grad(code, um * inv_v - 1.0, gamma, alpha)  # ds/dz at z[t]
        gs = grad_spikes[t, i] * sg  # ds[t] * sg[t]
        d_u = du_in[i]  # du[t]
        dum = gs * inv_v + d_u * (1.0 - sg)  # du-[t] = ds sg / v + du[t] (1 - sg)
        # dv: through z (ds sg (-u-/v^2)) and through the reset (-du s + du sg u-/v)
        lane_v[i - i0] += (-gs * um * (inv_v * inv_v) - d_u * spikes[t, i]
                           + d_u * sg * um * inv_v)
        lane_dum[i - i0] = dum
        du_out[i] = lam * dum  # du[t-1] = lam du-[t]


@numba.njit(cache=True)
def _lif_backward_step_detached(grad_spikes, membrane_pre, spikes, v, lam, code, gamma, alpha,
                                du_in, du_out, t, i0, i1, lane_v, lane_dum):
    """_lif_backward_step with the reset detached (SPEC 5.3): s[t] is a constant in the reset,
    so du-[t] = ds sg / v + du[t] and dv loses the du sg u-/v term. Its own function (not a
    flag of the other) so that the loop has no branch and LLVM vectorises it."""
    inv_v = 1.0 / v
    for i in range(i0, i1):
        um = membrane_pre[t, i]
        sg = surrogate_grad(code, um * inv_v - 1.0, gamma, alpha)
        gs = grad_spikes[t, i] * sg
        d_u = du_in[i]
        dum = gs * inv_v + d_u
        lane_v[i - i0] += -gs * um * (inv_v * inv_v) - d_u * spikes[t, i]
        lane_dum[i - i0] = dum
        du_out[i] = lam * dum
