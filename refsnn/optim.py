"""SGD and Adam with the exact update rules of torch.optim.SGD and torch.optim.Adam.

Parameters, gradients and optimizer state are plain dicts of numpy arrays; the step functions
update the parameters and the state in place, one fused Numba pass per tensor, and return
nothing else. No classes, no hidden state.

State layout: one flat dict whose keys are ``"<slot>.<parameter name>"``. Slot names contain no
dot, so a checkpoint stores ``state[k]`` as ``optim.<k>`` and splits back at the first dot:

    slot              optimizer   shape / dtype           meaning (torch's state[p][slot])
    momentum_buffer   SGD         like the parameter      momentum buffer
    exp_avg           Adam        like the parameter      first moment m
    exp_avg_sq        Adam        like the parameter      second moment v
    max_exp_avg_sq    Adam        like the parameter      running max of v (amsgrad only)
    step              both        () int64                see below

``step.<name>`` is per parameter, as in torch (whose ``state[p]["step"]`` is a 0-d float32
tensor). For Adam it counts the steps taken, from 0, and the bias corrections use it after the
increment, so the first step uses t = 1. For SGD it counts the steps that wrote the momentum
buffer: 0 means "no buffer yet" (torch's ``momentum_buffer is None``), and it stays 0 while
momentum == 0, exactly as torch creates no buffer then.

Which torch code path this mirrors: the default single-tensor path, ``_single_tensor_sgd`` and
``_single_tensor_adam`` (torch 2.x chooses it on CPU: ``foreach=None`` turns into False there),
with ``maximize=False``, ``differentiable=False``, ``capturable=False``, ``fused=None`` and,
for Adam, ``decoupled_weight_decay=False`` (L2 weight decay added to the gradient, not AdamW).
``no_decay`` plays the role of a second param group with ``weight_decay=0``.

Floating point. Every operation is done in the parameter dtype, in torch's order, with each
scalar hyperparameter first computed in Python (double) and then rounded to the parameter dtype,
as ATen does with a Python scalar. Where torch's vectorised CPU kernels (AVX2, AVX512)
use a fused multiply-add, so do the kernels here (``refsnn._fma.fma``, correctly rounded, also on
hardware without FMA): ``Tensor.add(other, alpha=a)`` is ``fma(other, a, self)``, ``lerp_`` is
``fma(w, end - start, start)`` for |w| < 0.5 else ``fma(w - 1, end - start, end)``, and
``addcmul_(t1, t2, value=c)`` is ``fma(c * t1, t2, self)``. ``addcdiv_(t1, t2, value=c)`` is
``self + (c * t1) / t2``. Square roots are correctly rounded; torch's CPU ``sqrt`` is not
always (1 ulp off in 16 % of float32 and 1 % of float64 elements of a 1e5 tensor). Against
torch 2.13.0 on an AVX512 CPU over 5 steps: SGD bit for bit (parameters and buffers); Adam's
moments bit for bit without weight decay, parameters within 2 ulp (relative 2.3e-16 in float64,
2.1e-7 in float32). torch's non-vectorised (DEFAULT capability) kernels may round a*b + c
twice and then differ by an ulp more. See tests/crosscheck/test_optim_torch.py.

Debugging: ``NUMBA_DISABLE_JIT=1`` runs the kernels as plain Python (``fma`` then rounds
exactly through ``fractions.Fraction``), bit for bit the same as the compiled ones.
"""

from __future__ import annotations

import numba
import numpy as np

from refsnn._checks import check_prob
from refsnn._fma import fma
from refsnn._optim_checks import (_check_grads, _check_live, _check_no_decay, _check_number,
                                  _check_params, _check_slot, _check_state, _check_step)

__all__ = [
    "adam_init",
    "adam_momentum",
    "adam_step",
    "sgd_init",
    "sgd_momentum",
    "sgd_step",
]


# ---------------------------------------------------------------------------------------------
# SGD


def sgd_init(params: dict) -> dict:
    """SGD state for ``params``: a zero momentum buffer and a step count 0 per parameter.

    Returns {"momentum_buffer.<name>": zeros like params[name], "step.<name>": int64 0-d 0}.
    A step count of 0 stands for torch's "no buffer yet": the first momentum step copies the
    gradient into the buffer instead of reading the zeros.
    """
    _check_params("sgd_init", params)
    state = {}
    for name, p in params.items():
        state[f"momentum_buffer.{name}"] = np.zeros_like(p)
        state[f"step.{name}"] = np.zeros((), dtype=np.int64)
    return state


def sgd_step(
    params: dict,
    grads: dict,
    state: dict,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    no_decay=(),
) -> None:
    """One step of torch.optim.SGD, in place on ``params`` and ``state``.

    For each parameter p with gradient g (wd = 0 for names in ``no_decay``), step count k:
        g = g + wd * p                                  if wd != 0
        b = g                          if k == 0        if momentum != 0 (k counts buffer writes)
        b = momentum * b + (1 - dampening) * g   else
        g = g + momentum * b  if nesterov  else  g = b
        p = p - lr * g
    Shapes: every array keeps its shape; grads and state match params in keys, shape, dtype.
    ``grads`` is not modified. Operation order and rounding: see the module docstring.

    Matches torch.optim.SGD([p], lr=lr, momentum=momentum, dampening=dampening,
    nesterov=nesterov, weight_decay=weight_decay).step() (param groups with weight_decay=0 for
    ``no_decay``). As in torch: lr, momentum, weight_decay >= 0; nesterov needs momentum > 0 and
    dampening == 0.
    """
    fn = "sgd_step"
    _check_params(fn, params)
    _check_grads(fn, params, grads)
    _check_state(fn, state)
    lr = _check_number(fn, "lr", lr, minimum=0.0)
    momentum = _check_number(fn, "momentum", momentum, minimum=0.0)
    dampening = _check_number(fn, "dampening", dampening)
    weight_decay = _check_number(fn, "weight_decay", weight_decay, minimum=0.0)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(
            f"{fn}: nesterov must be a bool, got {type(nesterov).__name__} {nesterov!r}"
        )
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError(
            f"{fn}: nesterov=True requires momentum > 0 and dampening == 0 (torch's rule), "
            f"got momentum={momentum}, dampening={dampening}"
        )
    exempt = _check_no_decay(fn, params, no_decay)
    bufs = {n: _check_slot(fn, state, "momentum_buffer", n, p) for n, p in params.items()}
    steps = {n: _check_step(fn, state, n) for n in params}

    use_momentum = momentum != 0.0
    for name, p in params.items():
        dt = p.dtype.type
        wd = 0.0 if name in exempt else weight_decay
        _sgd_kernel(
            p.reshape(-1),
            grads[name].reshape(-1),  # a copy only if grads[name] is not contiguous
            bufs[name].reshape(-1),
            dt(-lr),
            dt(wd),
            wd != 0.0,
            dt(momentum),
            dt(1.0 - dampening),
            use_momentum,
            int(steps[name]) == 0,
            bool(nesterov),
        )
        if use_momentum:
            steps[name][...] += 1


@numba.njit(cache=True)
def _sgd_kernel(p, g_in, buf, neg_lr, wd, use_wd, momentum, one_minus_dampening, use_momentum,
                first, nesterov):
    # all arrays flat (n,), one dtype; scalars already rounded to that dtype. One thread: it
    # streams 5 arrays at the memory's speed already (37 M weights in 12 ms here; 2 threads
    # in chunks took 15 ms)
    for i in range(p.size):
        g = g_in[i]
        if use_wd:
            g = fma(p[i], wd, g)  # grad.add(param, alpha=wd)
        if use_momentum:
            if first:
                b = g  # buf = grad.clone(): no dampening on the first step
            else:
                b = fma(g, one_minus_dampening, buf[i] * momentum)  # buf.mul_(m).add_(g, 1-d)
            buf[i] = b
            if nesterov:
                g = fma(b, momentum, g)  # grad.add(buf, alpha=momentum)
            else:
                g = b
        p[i] = fma(g, neg_lr, p[i])  # param.add_(grad, alpha=-lr)


def sgd_momentum(state: dict, name: str) -> np.ndarray:
    """SGD's momentum of parameter ``name`` for sparse learning (SPEC 4.2.4): its buffer.

    Returns a read-only view of ``state["momentum_buffer.<name>"]`` (no copy), shape of the
    parameter. It is all zeros before the first momentum step.
    """
    fn = "sgd_momentum"
    _check_state(fn, state)
    key = f"momentum_buffer.{name}"
    if key not in state:
        raise ValueError(f"{fn}: state has no {key!r}; is it an SGD state from sgd_init?")
    view = state[key].view()
    view.flags.writeable = False
    return view


# ---------------------------------------------------------------------------------------------
# Adam


def adam_init(params: dict, *, amsgrad: bool) -> dict:
    """Adam state for ``params``: zero moments and a step count 0 per parameter.

    Returns {"exp_avg.<name>", "exp_avg_sq.<name>": zeros like params[name],
    "max_exp_avg_sq.<name>": zeros (only if amsgrad), "step.<name>": int64 0-d 0}.
    """
    fn = "adam_init"
    _check_params(fn, params)
    if not isinstance(amsgrad, (bool, np.bool_)):
        raise TypeError(f"{fn}: amsgrad must be a bool, got {type(amsgrad).__name__} {amsgrad!r}")
    slots = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
    state = {}
    for name, p in params.items():
        for slot in slots:
            state[f"{slot}.{name}"] = np.zeros_like(p)
        state[f"step.{name}"] = np.zeros((), dtype=np.int64)
    return state


def adam_step(
    params: dict,
    grads: dict,
    state: dict,
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    no_decay=(),
    live: dict | None = None,
) -> None:
    """One step of torch.optim.Adam, in place on ``params`` and ``state``.

    For each parameter p with gradient g (wd = 0 for names in ``no_decay``):
        t = t + 1                                       (step count; the first step has t = 1)
        g = g + wd * p                                  if wd != 0   (L2, not AdamW)
        m = lerp(m, g, 1 - beta1)   = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v); use vmax for v below       if amsgrad
        step_size = lr / (1 - beta1**t);  c2 = sqrt(1 - beta2**t)     (in double)
        p = p - step_size * m / (sqrt(v) / c2 + eps)
    Shapes: every array keeps its shape; grads and state match params in keys, shape, dtype.
    ``grads`` is not modified. ``amsgrad`` must agree with the state (``adam_init(amsgrad=)``).

    ``live``: {name: flat (C order) indices, int64 (nnz,), strictly increasing} of the only
    elements of that parameter to update, e.g. ``ew.index[ew.order]`` of a frozen mask's
    packing ew (refsnn.ops.event; sorted, so the moments are read in memory order); its
    ``grads[name]`` is then the (nnz,) gradient of those elements, in the same order (the
    weight-sparse backward's packed gradient). Those elements get the update above bit for bit;
    every other element and its moments are left as they are, the step count advances as usual.
    Under a frozen mask this is the dense step followed by W <- W * M, with the pruned weights
    untouched (still exactly zero) instead of re-masked; their moments then lag the dense
    step's, so do not use it where the moments of pruned weights are read (sparse learning's
    momentum regrowth, SPEC 4.2.4).
    Operation order and rounding: see the module docstring.

    Matches torch.optim.Adam([p], lr=lr, betas=(beta1, beta2), eps=eps,
    weight_decay=weight_decay, amsgrad=amsgrad).step() (param groups with weight_decay=0 for
    ``no_decay``). As in torch: lr, eps, weight_decay >= 0; betas in [0, 1).
    """
    fn = "adam_step"
    _check_params(fn, params)
    live = _check_live(fn, params, live)
    _check_grads(fn, params, grads, live)
    _check_state(fn, state)
    lr = _check_number(fn, "lr", lr, minimum=0.0)
    beta1 = check_prob(fn, "beta1", beta1)
    beta2 = check_prob(fn, "beta2", beta2)
    eps = _check_number(fn, "eps", eps, minimum=0.0)
    weight_decay = _check_number(fn, "weight_decay", weight_decay, minimum=0.0)
    if not isinstance(amsgrad, (bool, np.bool_)):
        raise TypeError(f"{fn}: amsgrad must be a bool, got {type(amsgrad).__name__} {amsgrad!r}")
    exempt = _check_no_decay(fn, params, no_decay)
    has_max = [f"max_exp_avg_sq.{n}" in state for n in params]
    if params and (any(has_max) != bool(amsgrad) or (amsgrad and not all(has_max))):
        raise ValueError(
            f"{fn}: amsgrad={amsgrad} but the state {'lacks' if amsgrad else 'has'} "
            f"'max_exp_avg_sq' slots; create it with adam_init(params, amsgrad={amsgrad})"
        )
    slots = {}
    for n, p in params.items():
        m = _check_slot(fn, state, "exp_avg", n, p)
        v = _check_slot(fn, state, "exp_avg_sq", n, p)
        vmax = _check_slot(fn, state, "max_exp_avg_sq", n, p) if amsgrad else v
        slots[n] = (m, v, vmax, _check_step(fn, state, n))

    for name, p in params.items():
        m, v, vmax, step = slots[name]
        dt = p.dtype.type
        step[...] += 1
        t = float(step)  # torch: step_t += 1; step = step_t.item()
        # scalars in double, in torch's order, then rounded to the parameter dtype
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        weight = dt(1 - beta1)  # lerp weight, as ATen rounds it
        wd = 0.0 if name in exempt else weight_decay
        kernel, head = _adam_kernel, (p.reshape(-1),)
        if name in live:
            kernel, head = _adam_live_kernel, (p.reshape(-1), live[name])
        kernel(
            *head,
            grads[name].reshape(-1),  # a copy only if grads[name] is not contiguous
            m.reshape(-1),
            v.reshape(-1),
            vmax.reshape(-1),
            dt(wd),
            wd != 0.0,
            weight,
            weight - dt(1),
            bool(abs(weight) < dt(0.5)),
            dt(beta2),
            dt(1 - beta2),
            bool(amsgrad),
            dt(bias_correction2_sqrt),
            dt(eps),
            dt(-step_size),
        )


_CHUNK = 1 << 16  # elements per parallel chunk of the Adam kernel (element-wise: any split
# gives the same bits)


@numba.njit(cache=True, parallel=True)
def _adam_kernel(p, g_in, exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd, weight,
                 weight_minus_one, weight_small, beta2, one_minus_beta2, amsgrad,
                 bias_correction2_sqrt, eps, neg_step_size):
    # all arrays flat (n,), one dtype; scalars already rounded to that dtype;
    # max_exp_avg_sq is exp_avg_sq itself when not amsgrad (then never written). Chunk b
    # updates elements [i0, i1) only: disjoint writes. (Adam does a square root and a division
    # per element: 2 threads take 39 ms for 37 M weights here, 1 thread 77 ms.)
    for b in numba.prange((p.size + _CHUNK - 1) // _CHUNK):
        _adam_chunk(p, g_in, exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd, weight,
                    weight_minus_one, weight_small, beta2, one_minus_beta2, amsgrad,
                    bias_correction2_sqrt, eps, neg_step_size, b * _CHUNK,
                    min(p.size, (b + 1) * _CHUNK))


@numba.njit(cache=True)
def _adam_chunk(p, g_in, exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd, weight,
                weight_minus_one, weight_small, beta2, one_minus_beta2, amsgrad,
                bias_correction2_sqrt, eps, neg_step_size, i0, i1):
    for i in range(i0, i1):
        _adam_element(p, i, g_in[i], exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd, weight,
                      weight_minus_one, weight_small, beta2, one_minus_beta2, amsgrad,
                      bias_correction2_sqrt, eps, neg_step_size)


@numba.njit(cache=True, parallel=True)
def _adam_live_kernel(p, index, g_in, exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd, weight,
                      weight_minus_one, weight_small, beta2, one_minus_beta2, amsgrad,
                      bias_correction2_sqrt, eps, neg_step_size):
    # element index[e] with gradient g_in[e]; the indices are distinct (strictly increasing),
    # so chunks of entries write disjoint elements
    for b in numba.prange((index.size + _CHUNK - 1) // _CHUNK):
        _adam_live_chunk(p, index, g_in, exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd,
                         weight, weight_minus_one, weight_small, beta2, one_minus_beta2,
                         amsgrad, bias_correction2_sqrt, eps, neg_step_size, b * _CHUNK,
                         min(index.size, (b + 1) * _CHUNK))


@numba.njit(cache=True)
def _adam_live_chunk(p, index, g_in, exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd, weight,
                     weight_minus_one, weight_small, beta2, one_minus_beta2, amsgrad,
                     bias_correction2_sqrt, eps, neg_step_size, e0, e1):
    for e in range(e0, e1):
        _adam_element(p, index[e], g_in[e], exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd,
                      weight, weight_minus_one, weight_small, beta2, one_minus_beta2, amsgrad,
                      bias_correction2_sqrt, eps, neg_step_size)


@numba.njit(cache=True, inline="always")
def _adam_element(p, i, g, exp_avg, exp_avg_sq, max_exp_avg_sq, wd, use_wd, weight,
                  weight_minus_one, weight_small, beta2, one_minus_beta2, amsgrad,
                  bias_correction2_sqrt, eps, neg_step_size):
    """Element i's update from its gradient g (arrays flat, scalars in their dtype)."""
    if use_wd:
        g = fma(p[i], wd, g)  # grad.add(param, alpha=wd)
    # exp_avg.lerp_(grad, 1 - beta1), ATen's two-sided lerp
    m = exp_avg[i]
    d = g - m
    if weight_small:
        m = fma(weight, d, m)
    else:
        m = fma(weight_minus_one, d, g)
    exp_avg[i] = m
    # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    v = fma(one_minus_beta2 * g, g, exp_avg_sq[i] * beta2)
    exp_avg_sq[i] = v
    if amsgrad:
        # torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq): NaN propagates
        vm = max_exp_avg_sq[i]
        if v > vm or v != v:  # a NaN in vm stays, a NaN in v is taken
            vm = v
        max_exp_avg_sq[i] = vm
        v = vm
    # denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
    denom = np.sqrt(v) / bias_correction2_sqrt + eps
    # param.addcdiv_(exp_avg, denom, value=-step_size)
    p[i] = p[i] + (neg_step_size * m) / denom


def adam_momentum(state: dict, name: str) -> np.ndarray:
    """Adam's momentum of parameter ``name`` for sparse learning (SPEC 4.2.4).

        m_hat = exp_avg / (sqrt(exp_avg_sq) + 1e-8)

    No bias correction and no amsgrad max (exactly SPEC 4.2.4); computed in the parameter dtype
    (1e-8 rounded to it). Returns a new array shaped like the parameter.
    """
    fn = "adam_momentum"
    _check_state(fn, state)
    for slot in ("exp_avg", "exp_avg_sq"):
        if f"{slot}.{name}" not in state:
            raise ValueError(
                f"{fn}: state has no '{slot}.{name}'; is it an Adam state from adam_init?"
            )
    m, v = state[f"exp_avg.{name}"], state[f"exp_avg_sq.{name}"]
    return m / (np.sqrt(v) + m.dtype.type(1e-8))
