"""The LIF layer over T steps (refsnn/neurons/lif.py): trajectories, BPTT, kernels.

- hand-derived single-neuron trajectory and BPTT gradients (heaviside, both reset modes);
- invariants: spikes in {0, 1}, strict tie, unreachable threshold, lam = 0 memoryless, the
  reset identity, detach_reset=True vs False differing only by the documented terms;
- an independent numpy reference of the forward and of the SPEC 5.3 backward (loop over t,
  vectorised over neurons, written from the docstring equations);
- smooth mode + detach_reset=False: adjoint and element-wise finite differences in float64
  (the exact gradient of the forward; STYLE 2.6 (c));
- repeat=T (direct input) against an explicit per-step current;
- both kernels against their .py_func, and parallel against serial, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gradcheck import adjoint_check, elementwise_fd
from refsnn.neurons import lif
from refsnn.neurons.lif import LIFTrace, lif_backward, lif_forward, lif_membrane
from refsnn.neurons.surrogate import SURROGATES
from strategies import seeds
from tolerances import assert_close

pytestmark = pytest.mark.usefixtures("numba_one_thread")  # see conftest.py

GAMMA, ALPHA = 0.3, 4.0
PWL_KINKS = (-1.0, 0.0, 1.0)


# --- independent reference (numpy, from the docstring equations) -------------------------------

def _sg(name, z):
    pair = SURROGATES[name]
    args = {"gamma": GAMMA, "alpha": ALPHA}
    return np.array([pair.grad.py_func(float(zi), *(args[p] for p in pair.params))
                     for zi in z.ravel()]).reshape(z.shape)


def _prim(name, z):
    pair = SURROGATES[name]
    args = {"gamma": GAMMA, "alpha": ALPHA}
    return np.array([pair.primitive.py_func(float(zi), *(args[p] for p in pair.params))
                     for zi in z.ravel()]).reshape(z.shape)


def lif_forward_reference(current, v, lam, *, smooth=False, surrogate="pwl"):
    """u-[t] = lam u[t-1] + I[t]; z = u-/v - 1; s = [z > 0] or P(z); u[t] = u-[t] - v s[t]."""
    u = np.zeros(current.shape[1:])
    um_all, s_all = [], []
    for t in range(current.shape[0]):
        um = current[t] if t == 0 else lam * u + current[t]
        z = um / v - 1.0
        s = _prim(surrogate, z) if smooth else (z > 0).astype(np.float64)
        u = um - v * s
        um_all.append(um)
        s_all.append(s)
    return np.array(s_all), np.array(um_all)


def lif_backward_reference(ds, spikes, um, v, lam, *, surrogate="pwl", detach=True):
    """SPEC 5.3 (plus the non-detached terms), t = T..1, du[T] = 0; returns (dI, dv, dlam)."""
    t_steps = ds.shape[0]
    du = np.zeros(ds.shape[1:])
    d_i = np.zeros_like(ds)
    dv = dlam = 0.0
    for t in range(t_steps - 1, -1, -1):
        sg = _sg(surrogate, um[t] / v - 1.0)
        keep = 1.0 if detach else 1.0 - sg
        dum = ds[t] * sg / v + du * keep
        dv += np.sum(ds[t] * sg * (-um[t] / v**2) - du * spikes[t]
                     + (0.0 if detach else du * sg * um[t] / v))
        u_prev = um[t - 1] - v * spikes[t - 1] if t > 0 else 0.0
        dlam += np.sum(dum * u_prev)
        d_i[t] = dum
        du = lam * dum
    return d_i, dv, dlam


@st.composite
def lif_cases(draw, max_t=6, max_n=3, max_side=4):
    """(current (T, N, ...), v, lam): T, N and 0-2 feature axes drawn independently; currents
    standard normal times a drawn scale, relative to v, so that some neurons spike."""
    t_steps, n = draw(st.integers(1, max_t)), draw(st.integers(1, max_n))
    feat = tuple(draw(st.lists(st.integers(1, max_side), min_size=0, max_size=2)))
    rng = np.random.default_rng(draw(seeds))
    v = float(rng.uniform(0.4, 1.6))
    lam = float(rng.uniform(0.2, 1.0))
    scale = draw(st.sampled_from([0.3, 0.8, 1.5]))
    current = scale * v * rng.standard_normal((t_steps, n) + feat)
    return current, v, lam


# --- hand-derived trajectory -------------------------------------------------------------------

# One neuron, v = 1, lam = 0.5, I = [0.6, 0.7, 1.2, 0.1], pwl surrogate, gamma = 0.3:
#   t=1: u- = 0.5*0   + 0.6 = 0.6    z = -0.4  s = 0  u = 0.6
#   t=2: u- = 0.5*0.6 + 0.7 = 1.0    z =  0    s = 0  u = 1.0   (the tie: 0.3 + 0.7 rounds to
#                                                                exactly 1.0 in float64, and
#                                                                z = 0 does not spike)
#   t=3: u- = 0.5*1.0 + 1.2 = 1.7    z =  0.7  s = 1  u = 0.7   (soft reset: 1.7 - 1)
#   t=4: u- = 0.5*0.7 + 0.1 = 0.45   z = -0.55 s = 0  u = 0.45
# sg = 0.3 * max(0, 1 - |z|) = [0.18, 0.3, 0.09, 0.135]. Upstream ds = [1, -2, 0.5, 3].
#
# BPTT, detach_reset=True (SPEC 5.3): du-[t] = ds sg / v + du[t];  du[t-1] = lam du-[t]
#   t=4: du = 0        du- = 3*0.135           = 0.405     du[3] = 0.2025
#   t=3: du = 0.2025   du- = 0.5*0.09 + 0.2025 = 0.2475    du[2] = 0.12375
#   t=2: du = 0.12375  du- = -2*0.3 + 0.12375  = -0.47625  du[1] = -0.238125
#   t=1: du = -0.238125 du- = 1*0.18 - 0.238125 = -0.058125
#   dI = [-0.058125, -0.47625, 0.2475, 0.405]
#   dv = sum_t ds sg (-u-/v^2) - du s:
#        t=4: 3*0.135*(-0.45) - 0         = -0.18225
#        t=3: 0.5*0.09*(-1.7) - 0.2025*1  = -0.0765 - 0.2025 = -0.279
#        t=2: -2*0.3*(-1.0)   - 0         =  0.6
#        t=1: 0.18*(-0.6)     - 0         = -0.108
#        dv = -0.18225 - 0.279 + 0.6 - 0.108 = 0.03075
#   dlam = sum_t du-[t] u[t-1] = 0.405*0.7 + 0.2475*1.0 + (-0.47625)*0.6 + (-0.058125)*0
#        = 0.2835 + 0.2475 - 0.28575 = 0.24525
#
# detach_reset=False: du-[t] = ds sg / v + du[t] (1 - sg), dv gains du sg u- / v
#   t=4: du = 0            du- = 0.405                                   du[3] = 0.2025
#   t=3: du = 0.2025       du- = 0.045 + 0.2025*0.91    = 0.229275       du[2] = 0.1146375
#   t=2: du = 0.1146375    du- = -0.6 + 0.1146375*0.7   = -0.51975375    du[1] = -0.259876875
#   t=1: du = -0.259876875 du- = 0.18 - 0.259876875*0.82 = -0.0330990375
#   dv: t=4: -0.18225
#       t=3: -0.279 + 0.2025*0.09*1.7           = -0.279 + 0.0309825 = -0.2480175
#       t=2:  0.6   + 0.1146375*0.3*1.0         =  0.63439125
#       t=1: -0.108 + (-0.259876875)*0.18*0.6   = -0.108 - 0.0280667025 = -0.1360667025
#       dv = 0.0680570475
#   dlam = 0.405*0.7 + 0.229275*1.0 - 0.51975375*0.6 = 0.2835 + 0.229275 - 0.31185225
#        = 0.20092275
HAND_I = np.array([0.6, 0.7, 1.2, 0.1]).reshape(4, 1)
HAND_DS = np.array([1.0, -2.0, 0.5, 3.0]).reshape(4, 1)


def test_hand_trajectory():
    tr = lif_forward(HAND_I, threshold=1.0, leak=0.5)
    np.testing.assert_allclose(tr.membrane_pre.ravel(), [0.6, 1.0, 1.7, 0.45], rtol=1e-15)
    assert tr.membrane_pre[1, 0] == 1.0  # the exact tie
    assert np.array_equal(tr.spikes.ravel(), [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(lif_membrane(tr, threshold=1.0).ravel(), [0.6, 1.0, 0.7, 0.45],
                               rtol=1e-15)


@pytest.mark.parametrize("detach,d_i,dv,dlam", [
    (True, [-0.058125, -0.47625, 0.2475, 0.405], 0.03075, 0.24525),
    (False, [-0.0330990375, -0.51975375, 0.229275, 0.405], 0.0680570475, 0.20092275),
], ids=["detach_reset", "attached_reset"])
def test_hand_bptt(detach, d_i, dv, dlam):
    tr = lif_forward(HAND_I, threshold=1.0, leak=0.5)
    g = lif_backward(HAND_DS, HAND_I, tr, threshold=1.0, leak=0.5, detach_reset=detach)
    np.testing.assert_allclose(g.current.ravel(), d_i, rtol=1e-14)
    assert g.threshold.shape == () and g.leak.shape == ()
    assert g.threshold == pytest.approx(dv, rel=1e-13)
    assert g.leak == pytest.approx(dlam, rel=1e-13)


# --- invariants ----------------------------------------------------------------------------------

@given(case=lif_cases())
def test_heaviside_spikes_are_exactly_0_or_1(case):
    current, v, lam = case
    tr = lif_forward(current, threshold=v, leak=lam)
    assert np.all((tr.spikes == 0.0) | (tr.spikes == 1.0))
    # and they are exactly the strict comparison u- / v - 1 > 0
    assert np.array_equal(tr.spikes, (tr.membrane_pre / v - 1.0 > 0).astype(np.float64))


@pytest.mark.parametrize("v", [1.0, 0.75, 0.3])
def test_membrane_equal_to_threshold_does_not_spike(v):
    """Strict: u- == v gives z == 0 and no spike; the next float up spikes."""
    tr = lif_forward(np.array([[v], [np.nextafter(v, 2.0) - 0.0]]), threshold=v, leak=0.0)
    assert tr.spikes[0, 0] == 0.0 and tr.membrane_pre[0, 0] == v
    assert tr.spikes[1, 0] == 1.0
    tr32 = lif_forward(np.array([[v]], dtype=np.float32), threshold=v, leak=0.0)
    assert tr32.spikes[0, 0] == 0.0


@given(case=lif_cases())
def test_unreachable_threshold_gives_no_spikes(case):
    """|u-[t]| <= sum_k |I[k]| when |lam| <= 1 and nothing resets; v above that never fires,
    and the membrane is the plain leaky integral u-[t] = sum_{k<=t} lam^(t-k) I[k]."""
    current, _, lam = case
    v = 1.0 + float(np.max(np.sum(np.abs(current), axis=0)))
    tr = lif_forward(current, threshold=v, leak=lam)
    assert not tr.spikes.any()
    expect = np.zeros_like(current)
    acc = np.zeros(current.shape[1:])
    for t in range(current.shape[0]):
        acc = lam * acc + current[t]
        expect[t] = acc
    assert_close(tr.membrane_pre, expect, kind="forward", what="leaky integral")


@given(case=lif_cases(), spike=st.sampled_from(["heaviside", "smooth"]))
def test_zero_leak_is_memoryless(case, spike):
    """lam = 0: u-[t] = 0 * u[t-1] + I[t] = I[t] exactly, spiking or not."""
    current, v, _ = case
    tr = lif_forward(current, threshold=v, leak=0.0, spike=spike)
    assert np.array_equal(tr.membrane_pre, current)


@given(case=lif_cases(), spike=st.sampled_from(["heaviside", "smooth"]),
       surrogate=st.sampled_from(sorted(SURROGATES)))
def test_forward_matches_reference_and_reset_identity(case, spike, surrogate):
    """u-, s equal the step-by-step numpy reference bit for bit (same operations per neuron:
    IEEE), and u-[t] == lam * (u-[t-1] - v s[t-1]) + I[t] exactly (soft reset, same step)."""
    current, v, lam = case
    tr = lif_forward(current, threshold=v, leak=lam, spike=spike, surrogate=surrogate)
    s_ref, um_ref = lif_forward_reference(current, v, lam, smooth=spike == "smooth",
                                          surrogate=surrogate)
    assert np.array_equal(tr.membrane_pre, um_ref)
    kind = "py_func_transcendental" if (spike == "smooth" and surrogate == "sigmoid") else "py_func"
    assert_close(tr.spikes, s_ref, kind=kind, what=f"lif_forward(spike={spike!r}).spikes")
    u = lif_membrane(tr, threshold=v)
    assert np.array_equal(u, tr.membrane_pre - v * tr.spikes)
    assert np.array_equal(tr.membrane_pre[1:], lam * u[:-1] + current[1:])


@given(case=lif_cases(), surrogate=st.sampled_from(sorted(SURROGATES)),
       detach=st.booleans(), seed=seeds)
def test_backward_matches_spec_reference(case, surrogate, detach, seed):
    """lif_backward == the SPEC 5.3 formulas written out in numpy (heaviside forward)."""
    current, v, lam = case
    tr = lif_forward(current, threshold=v, leak=lam)
    ds = np.random.default_rng(seed).standard_normal(current.shape)
    g = lif_backward(ds, current, tr, threshold=v, leak=lam, surrogate=surrogate,
                     detach_reset=detach)
    d_i, dv, dlam = lif_backward_reference(ds, tr.spikes, tr.membrane_pre, v, lam,
                                           surrogate=surrogate, detach=detach)
    what = f"lif_backward(surrogate={surrogate!r}, detach_reset={detach})"
    assert_close(g.current, d_i, kind="backward", what=what + ".current")
    # dv, dlam: the same terms summed in another order
    assert_close(g.threshold, np.asarray(dv), kind="backward", what=what + ".threshold",
                 scale=True)
    assert_close(g.leak, np.asarray(dlam), kind="backward", what=what + ".leak", scale=True)


@given(case=lif_cases(), seed=seeds)
def test_detach_reset_differs_only_by_documented_terms(case, seed):
    """detach_reset=False adds -du sg to du- and +du sg u-/v to dv, both carrying du[t], the
    gradient arriving from step t+1. So: with T = 1 (du = 0) the two modes agree exactly; with
    sg = 0 everywhere (pwl, every |z| >= 1) they agree exactly; in general dI[T] (the last step,
    du = 0) agrees exactly."""
    current, v, lam = case
    rng = np.random.default_rng(seed)
    ds = rng.standard_normal(current.shape)
    tr = lif_forward(current, threshold=v, leak=lam)

    def both(tr, ds, current):
        return [lif_backward(ds, current, tr, threshold=v, leak=lam, detach_reset=d)
                for d in (True, False)]

    g_d, g_a = both(tr, ds, current)
    assert np.array_equal(g_d.current[-1], g_a.current[-1])
    g_d, g_a = both(LIFTrace(tr.spikes[:1], tr.membrane_pre[:1]), ds[:1], current[:1])
    assert all(np.array_equal(a, b) for a, b in zip(g_d, g_a))
    # every |z| >= 1: currents of +-(2.5 .. 3.5) v with lam = 0 keep z = I/v - 1 outside (-1, 1)
    far = v * np.where(rng.random(current.shape) < 0.5, -1.0, 1.0) * (2.5 + rng.random(
        current.shape))
    tr_far = lif_forward(far, threshold=v, leak=0.0)
    assert np.all(np.abs(tr_far.membrane_pre / v - 1.0) >= 1.0)
    g_d, g_a = [lif_backward(ds, far, tr_far, threshold=v, leak=0.0, detach_reset=d)
                for d in (True, False)]
    assert all(np.array_equal(a, b) for a, b in zip(g_d, g_a))


# --- gradients in smooth mode --------------------------------------------------------------------

def _smooth_problem(current, v, lam, surrogate, repeat=None):
    kw = dict(spike="smooth", surrogate=surrogate, repeat=repeat)

    def f(current, threshold, leak):
        return lif_forward(current, threshold=threshold, leak=leak, **kw).spikes

    tr = lif_forward(current, threshold=v, leak=lam, **kw)

    def vjp(c):
        g = lif_backward(c, current, tr, threshold=v, leak=lam, surrogate=surrogate,
                         detach_reset=False)
        return g._asdict()

    return f, vjp, tr


def _z_margin(tr, v):
    z = tr.membrane_pre / v - 1.0
    return min(float(np.min(np.abs(z - k))) for k in PWL_KINKS)


@given(case=lif_cases(), surrogate=st.sampled_from(sorted(SURROGATES)), seed=seeds,
       repeat=st.booleans())
def test_smooth_adjoint(case, surrogate, seed, repeat):
    """<J t, c> == <t, J^T c> for (current, threshold, leak) jointly, detach_reset=False.

    pwl: its primitive is only C^1 (P'' jumps at z = -1, 0, 1), so points with any z within
    1e-4 of a kink are rejected (the eps = 1e-6 segment moves z by ~1e-5 at most); sigmoid is
    smooth everywhere. repeat: the same current at every step (direct input), gradient summed.
    """
    current, v, lam = case
    if repeat:
        current = current[0]
        t_steps = case[0].shape[0]
    f, vjp, tr = _smooth_problem(current, v, lam, surrogate, t_steps if repeat else None)
    if surrogate == "pwl":
        assume(_z_margin(tr, v) > 1e-4)
    inputs = {"current": current, "threshold": np.asarray(v), "leak": np.asarray(lam)}
    adjoint_check(f, inputs, vjp, np.random.default_rng(seed),
                  name=f"lif_backward(smooth {surrogate}, repeat={repeat}, shape={current.shape})")


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_smooth_elementwise_fd(surrogate):
    """CS231n-style: every entry of current, and threshold and leak, one at a time."""
    rng = np.random.default_rng(11)
    v, lam = 0.8, 0.7
    current = 0.9 * rng.standard_normal((5, 2, 3))
    f, vjp, tr = _smooth_problem(current, v, lam, surrogate)
    assert _z_margin(tr, v) > 1e-4
    elementwise_fd(f, {"current": current, "threshold": np.asarray(v), "leak": np.asarray(lam)},
                   vjp, rng, name=f"lif_backward(smooth {surrogate})")


# --- direct input: repeat=T ----------------------------------------------------------------------

@given(case=lif_cases(), seed=seeds, spike=st.sampled_from(["heaviside", "smooth"]))
def test_repeat_equals_explicit_broadcast(case, seed, spike):
    """repeat=T on an (N, ...) current == the same current stacked T times (bitwise); its
    gradient == sum_t of the per-step gradient (summed t = T..1, as documented)."""
    current, v, lam = case
    t_steps, static = current.shape[0], current[0]
    stacked = np.repeat(static[None], t_steps, axis=0)
    tr_r = lif_forward(static, threshold=v, leak=lam, spike=spike, repeat=t_steps)
    tr_s = lif_forward(stacked, threshold=v, leak=lam, spike=spike)
    assert np.array_equal(tr_r.spikes, tr_s.spikes)
    assert np.array_equal(tr_r.membrane_pre, tr_s.membrane_pre)
    ds = np.random.default_rng(seed).standard_normal(stacked.shape)
    g_r = lif_backward(ds, static, tr_r, threshold=v, leak=lam)
    g_s = lif_backward(ds, stacked, tr_s, threshold=v, leak=lam)
    assert g_r.current.shape == static.shape
    expect = np.zeros_like(static)
    for t in range(t_steps - 1, -1, -1):
        expect = expect + g_s.current[t]
    assert np.array_equal(g_r.current, expect)
    assert g_r.threshold == g_s.threshold and g_r.leak == g_s.leak


# --- kernels -------------------------------------------------------------------------------------

def _kernel_inputs(m, t_steps=3, seed=0):
    rng = np.random.default_rng(seed)
    v, lam = 0.9, 0.8
    current = 1.2 * rng.standard_normal((t_steps, m))
    return rng, current, v, lam


def _run_forward(kernel, current, v, lam, smooth, code):
    spikes = np.empty_like(current)
    um = np.empty_like(current)
    kernel(current, v, lam, smooth, code, GAMMA, ALPHA, spikes, um)
    return spikes, um


def _run_backward(kernel, ds, um, spikes, v, lam, code, detach, repeat):
    t_steps, m = ds.shape
    n_chunks = (m + lif._CHUNK - 1) // lif._CHUNK
    gc = np.zeros((1 if repeat else t_steps, m))
    pv, pl = np.zeros(n_chunks), np.zeros(n_chunks)
    kernel(ds, um, spikes, v, lam, code, GAMMA, ALPHA, detach, repeat, gc, np.empty((2, m)), pv,
           pl)
    return gc, pv, pl


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("smooth", [False, True], ids=["heaviside", "smooth"])
def test_kernels_equal_py_func(surrogate, smooth):
    """Jitted == plain Python on more than one chunk of neurons (M = 2 * _CHUNK + 3)."""
    rng, current, v, lam = _kernel_inputs(2 * lif._CHUNK + 3)
    code = SURROGATES[surrogate].code
    kind = "py_func_transcendental" if surrogate == "sigmoid" else "py_func"
    fwd = _run_forward(lif._lif_forward_kernel, current, v, lam, smooth, code)
    fwd_py = _run_forward(lif._lif_forward_kernel.py_func, current, v, lam, smooth, code)
    for a, b, k in zip(fwd, fwd_py, ("spikes", "membrane_pre")):
        assert_close(a, b, kind=kind if smooth else "py_func", what=f"_lif_forward_kernel.{k}")
    spikes, um = fwd
    ds = rng.standard_normal(current.shape)
    for detach, repeat in ((True, False), (False, True)):
        got = _run_backward(lif._lif_backward_kernel, ds, um, spikes, v, lam, code, detach,
                            repeat)
        ref = _run_backward(lif._lif_backward_kernel.py_func, ds, um, spikes, v, lam, code,
                            detach, repeat)
        for a, b, k in zip(got, ref, ("grad_current", "part_v", "part_lam")):
            if kind == "py_func":
                assert_close(a, b, kind=kind, what=f"_lif_backward_kernel.{k}")
            else:  # sums of exp-based terms: relative to the largest entry
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13 * np.abs(b).max())


def test_parallel_equals_serial(numba_threads):
    """2 threads vs 1, bit for bit, over 3 chunks (dv and dlam: fixed per-chunk partial sums)."""
    rng, current, v, lam = _kernel_inputs(3 * lif._CHUNK - 7, t_steps=4, seed=3)
    ds = rng.standard_normal(current.shape)
    for surrogate in sorted(SURROGATES):
        def run():
            tr = lif_forward(current, threshold=v, leak=lam, surrogate=surrogate,
                             spike="smooth" if surrogate == "sigmoid" else "heaviside")
            g = lif_backward(ds, current, tr, threshold=v, leak=lam, surrogate=surrogate,
                             detach_reset=False)
            return tr + tuple(g)
        one, two = numba_threads(1, run), numba_threads(2, run)
        for a, b in zip(one, two):
            assert_close(b, a, kind="py_func", what=f"lif, 2 threads vs 1 ({surrogate})")


# --- dtypes, layouts and errors ------------------------------------------------------------------

def test_float32_keeps_dtype_and_is_close_to_float64():
    rng = np.random.default_rng(4)
    current = rng.standard_normal((4, 3, 5))
    tr64 = lif_forward(current, threshold=0.7, leak=0.9, spike="smooth", surrogate="sigmoid")
    tr32 = lif_forward(current.astype(np.float32), threshold=0.7, leak=0.9, spike="smooth",
                       surrogate="sigmoid")
    assert tr32.spikes.dtype == tr32.membrane_pre.dtype == np.float32
    np.testing.assert_allclose(tr32.spikes, tr64.spikes, atol=1e-5)
    ds = rng.standard_normal(current.shape)
    g64 = lif_backward(ds, current, tr64, threshold=0.7, leak=0.9, surrogate="sigmoid")
    g32 = lif_backward(ds.astype(np.float32), current.astype(np.float32), tr32, threshold=0.7,
                       leak=0.9, surrogate="sigmoid")
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_non_contiguous_current():
    base = np.random.default_rng(5).standard_normal((3, 4, 5))
    cur = np.transpose(base, (0, 2, 1))  # (T, N, F) view, not C-contiguous
    tr = lif_forward(cur, threshold=0.5, leak=0.8)
    ref = lif_forward(np.ascontiguousarray(cur), threshold=0.5, leak=0.8)
    assert np.array_equal(tr.spikes, ref.spikes) and np.array_equal(tr.membrane_pre,
                                                                    ref.membrane_pre)


def test_rejects_bad_arguments():
    cur = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"lif_forward: threshold must be a finite number > 0"):
        lif_forward(cur, threshold=0.0, leak=1.0)
    with pytest.raises(ValueError, match=r"spike must be one of \('heaviside', 'smooth'\)"):
        lif_forward(cur, threshold=1.0, leak=1.0, spike="soft")
    with pytest.raises(ValueError, match=r"surrogate must be one of"):
        lif_forward(cur, threshold=1.0, leak=1.0, surrogate="atan")
    with pytest.raises(TypeError, match=r"lif_forward: leak must be a real scalar"):
        lif_forward(cur, threshold=1.0, leak=np.ones(2))
    with pytest.raises(ValueError, match=r"current must be \(T, N, \.\.\.\)"):
        lif_forward(np.zeros(3), threshold=1.0, leak=1.0)
    with pytest.raises(TypeError, match=r"dtype float32 or float64"):
        lif_forward(np.zeros((2, 3), dtype=np.int64), threshold=1.0, leak=1.0)
    tr = lif_forward(cur, threshold=1.0, leak=1.0)
    with pytest.raises(ValueError, match=r"lif_backward: current.shape=\(4,\), expected"):
        lif_backward(cur, np.zeros(4), tr, threshold=1.0, leak=1.0)
    with pytest.raises(ValueError, match=r"grad_spikes.shape=\(3, 3\)"):
        lif_backward(np.zeros((3, 3)), cur, tr, threshold=1.0, leak=1.0)
