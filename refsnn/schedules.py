"""Learning-rate and prune-rate schedules: pure functions of a step counter.

Each function maps a counter ``step`` (0, 1, 2, ...) to a value and holds no state, so the
caller decides what a step is. refsnn's train.py counts epochs for the learning rate (it calls
``cosine_lr(epoch, epochs, lr=...)`` before each epoch, the value torch's scheduler holds during
that epoch when ``scheduler.step()`` is called once per epoch), and iterations for the prune
rate (SPEC 4.2.3: annealed over all iterations of the stage, read at the end of each epoch).

The formulas are torch's closed forms (``_get_closed_form_lr``), written in the same operation
order so the floats are identical. torch's ``scheduler.step()`` uses a recursive form instead,
which agrees with the closed form to a few ulp (tests/test_schedules.py measures it).
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

__all__ = ["constant_lr", "cosine_lr", "prune_rate", "step_lr"]


def _check_counter(fn: str, name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_real(fn: str, name: str, value, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or (minimum is not None and not v >= minimum):
        bound = f" and >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{fn}: {name} must be finite{bound}, got {value!r}")
    return v


def constant_lr(step: int, *, lr: float) -> float:
    """The constant schedule: lr at every step.

    torch equivalent: no scheduler at all (not torch.optim.lr_scheduler.ConstantLR, which
    multiplies lr by a factor for its first total_iters steps).
    """
    _check_counter("constant_lr", "step", step, minimum=0)
    return _check_real("constant_lr", "lr", lr, minimum=0.0)


def cosine_lr(step: int, total_steps: int, *, lr: float, eta_min: float = 0.0) -> float:
    """Cosine annealing from lr at step 0 to eta_min at step total_steps.

        lr(t) = eta_min + (lr - eta_min) * (1 + cos(pi * t / T)) / 2,   T = total_steps

    For t > T the curve continues as torch's does (it rises again, period 2T): no clamping.
    Matches torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps,
    eta_min=eta_min)._get_closed_form_lr() with last_epoch = step, base lr = lr, bit for bit.
    """
    fn = "cosine_lr"
    t = _check_counter(fn, "step", step, minimum=0)
    total = _check_counter(fn, "total_steps", total_steps, minimum=1)
    base = _check_real(fn, "lr", lr, minimum=0.0)
    eta_min = _check_real(fn, "eta_min", eta_min, minimum=0.0)
    # torch's operation order: eta_min + ((base - eta_min) * (1 + cos(pi * t / T))) / 2
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / total)) / 2


def step_lr(step: int, *, lr: float, milestones, gamma: float = 0.1) -> float:
    """Multi-step decay: lr * gamma ** (number of milestones <= step).

        lr(t) = lr * gamma ** #{m in milestones : m <= t}      (a repeated milestone counts twice)

    Matches torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones,
    gamma=gamma)._get_closed_form_lr() with last_epoch = step, base lr = lr, bit for bit.
    """
    fn = "step_lr"
    t = _check_counter(fn, "step", step, minimum=0)
    base = _check_real(fn, "lr", lr, minimum=0.0)
    gamma = _check_real(fn, "gamma", gamma, minimum=0.0)
    if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
        raise TypeError(f"{fn}: milestones must be a sequence of ints, got {milestones!r}")
    ms = sorted(_check_counter(fn, "each milestone", m, minimum=0) for m in milestones)
    return base * gamma ** bisect_right(ms, t)


def prune_rate(step: int, total_steps: int, *, start: float = 0.5, end: float = 0.005) -> float:
    """Sparse-learning prune rate p(t): cosine annealing from start to end (SPEC 4.2.3).

        p(t) = end + (start - end) * (1 + cos(pi * t / T)) / 2,   T = total_steps, 0 <= t <= T

    The same closed form and operation order as cosine_lr (with lr=start, eta_min=end); here t
    beyond T is an error, not a rising curve.
    """
    fn = "prune_rate"
    t = _check_counter(fn, "step", step, minimum=0)
    total = _check_counter(fn, "total_steps", total_steps, minimum=1)
    if t > total:
        raise ValueError(f"{fn}: step must be <= total_steps={total}, got {t}")
    start = _check_real(fn, "start", start, minimum=0.0)
    end = _check_real(fn, "end", end, minimum=0.0)
    if not (start < 1.0 and end <= start):
        raise ValueError(f"{fn}: need 0 <= end <= start < 1, got start={start}, end={end}")
    return end + (start - end) * (1 + math.cos(math.pi * t / total)) / 2
