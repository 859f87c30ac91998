"""Tests of refsnn.schedules: hand values, properties, and torch's schedulers when present."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.schedules import constant_lr, cosine_lr, prune_rate, step_lr

# ---------------------------------------------------------------------------------------------
# Hand values


def test_cosine_lr_hand_values():
    # lr(t) = eta_min + (lr - eta_min) * (1 + cos(pi t / T)) / 2, T = 6, lr = 0.1, eta_min = 0.01
    # t = 0: cos 0 = 1 -> 0.1;  t = 2: cos(pi/3) = 0.5 -> 0.01 + 0.09 * 0.75 = 0.0775
    # t = 3: cos(pi/2) = 0 -> 0.055;  t = 4: cos(2pi/3) = -0.5 -> 0.01 + 0.09 * 0.25 = 0.0325
    # t = 6: cos(pi) = -1 -> 0.01 (exactly: math.cos(math.pi) == -1.0)
    # t = 9: cos(3pi/2) = 0 -> 0.055 again (periodic beyond T, as torch's CosineAnnealingLR)
    kw = dict(lr=0.1, eta_min=0.01)
    assert cosine_lr(0, 6, **kw) == 0.1
    assert cosine_lr(2, 6, **kw) == pytest.approx(0.0775, rel=1e-15)
    assert cosine_lr(3, 6, **kw) == pytest.approx(0.055, rel=1e-15)
    assert cosine_lr(4, 6, **kw) == pytest.approx(0.0325, rel=1e-15)
    assert cosine_lr(6, 6, **kw) == 0.01
    assert cosine_lr(9, 6, **kw) == pytest.approx(0.055, rel=1e-15)
    assert cosine_lr(12, 6, **kw) == pytest.approx(0.1, rel=1e-15)
    assert cosine_lr(3, 6, lr=0.2) == pytest.approx(0.1, rel=1e-15)  # eta_min defaults to 0


def test_step_lr_hand_values():
    # lr * gamma ** #{milestones <= t}: milestones [6, 3] (order does not matter), lr = 2
    expected = [2.0, 2.0, 2.0, 0.2, 0.2, 0.2, 2.0 * 0.1**2, 2.0 * 0.1**2]
    assert [step_lr(t, lr=2.0, milestones=[6, 3]) for t in range(8)] == expected
    # a repeated milestone counts twice (torch's Counter): t = 3 -> 2 * 0.5**2
    assert step_lr(3, lr=2.0, milestones=[3, 3], gamma=0.5) == 0.5
    assert step_lr(100, lr=2.0, milestones=[]) == 2.0


def test_constant_lr_and_prune_rate_hand_values():
    assert constant_lr(0, lr=5e-4) == constant_lr(10**6, lr=5e-4) == 5e-4
    # p(t) = 0.005 + 0.495 * (1 + cos(pi t / T)) / 2: 0.5 at 0, 0.2525 at T/2, 0.005 at T
    assert prune_rate(0, 100) == 0.5
    assert prune_rate(50, 100) == pytest.approx(0.2525, rel=1e-15)
    assert prune_rate(100, 100) == 0.005
    assert prune_rate(1, 2, start=0.4, end=0.0) == pytest.approx(0.2, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# Properties


@settings(deadline=None)
@given(total=st.integers(1, 10_000), data=st.data())
def test_prune_rate_decreases_from_start_to_end(total, data):
    t = data.draw(st.integers(0, total - 1))
    a, b = prune_rate(t, total), prune_rate(t + 1, total)
    assert 0.005 <= b <= a <= 0.5


@settings(deadline=None)
@given(total=st.integers(1, 1000), lr=st.floats(1e-8, 10.0), frac=st.floats(0.0, 1.0),
       data=st.data())
def test_cosine_lr_is_symmetric_about_total_steps(total, lr, frac, data):
    eta_min = lr * frac
    k = data.draw(st.integers(0, total))
    a = cosine_lr(total - k, total, lr=lr, eta_min=eta_min)
    b = cosine_lr(total + k, total, lr=lr, eta_min=eta_min)
    assert eta_min - 1e-15 * lr <= a <= lr + 1e-15 * lr
    assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12 * lr)


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("call, exc, match", [
    (lambda: cosine_lr(-1, 10, lr=0.1), ValueError, "cosine_lr: step must be >= 0, got -1"),
    (lambda: cosine_lr(1.0, 10, lr=0.1), TypeError, "cosine_lr: step must be an int"),
    (lambda: cosine_lr(1, 0, lr=0.1), ValueError, "total_steps must be >= 1"),
    (lambda: cosine_lr(1, 10, lr=-0.1), ValueError, "lr must be finite and >= 0.0"),
    (lambda: step_lr(1, lr=0.1, milestones=5), TypeError, "milestones must be a sequence"),
    (lambda: step_lr(1, lr=0.1, milestones=[2.5]), TypeError, "each milestone must be an int"),
    (lambda: constant_lr(True, lr=0.1), TypeError, "constant_lr: step must be an int"),
    (lambda: prune_rate(11, 10), ValueError, "prune_rate: step must be <= total_steps=10"),
    (lambda: prune_rate(1, 10, start=0.1, end=0.2), ValueError, "need 0 <= end <= start < 1"),
])
def test_schedules_reject_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# torch's schedulers (skipped without torch)


def _torch_schedule(make_scheduler, base_lr, steps):
    """(get_last_lr, closed form) of a torch scheduler at last_epoch = 0 .. steps - 1."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    out = []
    for _ in range(steps):
        out.append((scheduler.get_last_lr()[0], scheduler._get_closed_form_lr()[0]))
        optimizer.step()
        scheduler.step()  # once per epoch: last_epoch counts epochs
    return out


@pytest.mark.crosscheck
@pytest.mark.parametrize("total, lr, eta_min", [(10, 0.1, 0.0), (7, 5e-4, 1e-6), (200, 0.05, 0.0)])
def test_cosine_lr_matches_torch(total, lr, eta_min):
    got = _torch_schedule(
        lambda s, o: s.CosineAnnealingLR(o, T_max=total, eta_min=eta_min), lr, 2 * total + 3)
    for t, (recursive, closed) in enumerate(got):
        ours = cosine_lr(t, total, lr=lr, eta_min=eta_min)
        assert ours == closed, (t, ours, closed)  # same formula, same order: bit for bit
        # torch's step() uses a recursive form: measured within 1.3e-14 * lr over 600 steps
        assert abs(ours - recursive) <= 1e-13 * lr, (t, ours, recursive)


@pytest.mark.crosscheck
def test_prune_rate_is_torch_cosine_from_half_to_end():
    total = 37
    got = _torch_schedule(
        lambda s, o: s.CosineAnnealingLR(o, T_max=total, eta_min=0.005), 0.5, total + 1)
    for t, (recursive, closed) in enumerate(got):
        assert prune_rate(t, total) == closed
        assert abs(prune_rate(t, total) - recursive) <= 1e-13


@pytest.mark.crosscheck
@pytest.mark.parametrize("milestones, gamma", [([3, 6], 0.1), ([2, 5, 5, 9], 0.5), ([4, 1], 0.2)])
def test_step_lr_matches_torch(milestones, gamma):
    got = _torch_schedule(
        lambda s, o: s.MultiStepLR(o, milestones=milestones, gamma=gamma), 0.3, 12)
    for t, (recursive, closed) in enumerate(got):
        ours = step_lr(t, lr=0.3, milestones=milestones, gamma=gamma)
        assert ours == closed, (t, ours, closed)
        # torch's step() multiplies by gamma at each milestone: a few ulp from lr * gamma**k
        assert math.isclose(ours, recursive, rel_tol=1e-14), (t, ours, recursive)
