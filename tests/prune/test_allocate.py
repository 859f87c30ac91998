"""Sparse learning's allocation arithmetic (refsnn/prune/allocate.py, _units.select): the
water-filling of a regrowth budget over layers against hand-worked numbers, exact totals and
caps over random cases, and the unit selection against a stable np.argsort."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from refsnn.prune._units import select
from refsnn.prune.allocate import distribute, waterfill


def test_waterfill_and_distribute_by_hand():
    # shares 1:1:2 of 100, caps 10, 60, 60: layer 0 capped at 10, the 90 left split 1:2 -> 30, 60
    a, unplaced, forced = waterfill(100, [1.0, 1.0, 2.0], [10, 60, 60], [20, 70, 70])
    assert a == [10, 30, 60] and unplaced == 0 and not forced
    # every share capped: residual 10 spread by spare room (20-10, 70-60, 0) -> 5, 5
    a, unplaced, forced = waterfill(140, [1.0, 1.0, 2.0], [10, 60, 60], [20, 70, 60])
    assert a == [15, 65, 60] and unplaced == 0 and forced
    # largest remainder: 10 in thirds -> 3.33 each: the remainder goes to the first index
    assert distribute(10, [1.0, 1.0, 1.0], [9, 9, 9], [10, 10, 10], [1, 1, 1]).counts == [4, 3, 3]
    # a coarse unit (a filter of 4) rounds down; the linear layer absorbs the rest
    dist = distribute(10, [1.0, 1.0], [20, 20], [20, 20], [4, 1])
    assert dist.counts == [1, 6] and dist.unplaced == 0
    # no unit-1 room: whole filters where one fits, then the rest stays unplaced (< 4)
    dist = distribute(10, [1.0, 1.0], [20, 0], [20, 0], [4, 1])
    assert dist.counts == [2, 0] and dist.unplaced == 2


@given(data=st.data())
def test_distribute_exact_total_and_caps(data):
    n = data.draw(st.integers(1, 5))
    rooms = [data.draw(st.integers(0, 40)) for _ in range(n)]
    caps = [99 * r // 100 for r in rooms]
    weights = [data.draw(st.sampled_from([0.0, 0.1, 1.0, 1 / 3, 2.5])) for _ in range(n)]
    amount = data.draw(st.integers(0, sum(rooms)))
    dist = distribute(amount, weights, caps, rooms, [1] * n)
    assert sum(dist.counts) == amount and dist.unplaced == 0
    assert all(0 <= c <= r for c, r in zip(dist.counts, rooms))
    if not dist.forced:
        assert all(c <= cap for c, cap in zip(dist.counts, caps))
    if sum(c for c, w in zip(caps, weights) if w > 0) >= amount:
        assert not dist.forced  # the caps of the layers with a share had room: never forced


@given(v=st.lists(st.sampled_from([0.0, 1.0, 2.0, -1.0, 0.5]), min_size=0, max_size=12),
       k=st.integers(0, 13), largest=st.booleans())
def test_select_equals_stable_argsort(v, k, largest):
    v = np.array(v, dtype=np.float64)
    ref = np.sort(np.argsort(-v if largest else v, kind="stable")[:k])
    np.testing.assert_array_equal(select(v, k, largest=largest), ref)
