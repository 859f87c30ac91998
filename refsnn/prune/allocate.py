"""Exact integer distribution of a weight count over layers (the arithmetic of SPEC 4.2.4).

Sparse learning hands a number of weights to layers in proportion to a share, with caps; this
module turns that into integer counts whose total is exact. Everything is computed in exact
rational arithmetic (``fractions.Fraction`` of the float64 inputs), so the result does not
depend on float rounding or on summation order. Ties between layers go to the layer that comes
first in the given lists; sparse.py passes layers in sorted-name order.

    a, unplaced, forced = waterfill(amount, weights, caps, rooms)     # real (rational) amounts
    counts = distribute(amount, weights, caps, rooms, units)          # whole units, exact total

Units: a layer moves in units of ``units[i]`` weights (1 for single weights, C_in*kH*kW for a
conv filter in channel mode); caps and rooms are in weights and multiples of the unit.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

__all__ = ["Distribution", "distribute", "waterfill"]


def waterfill(amount: int, weights, caps, rooms) -> tuple[list, int, bool]:
    """Split ``amount`` over layers in proportion to ``weights``, capped, in exact rationals.

    Phase 1 (shares, capped): layers with weight > 0 and cap > 0 are active;
        a_i = rem * w_i / sum_{active} w_j
    and every active layer for which that reaches its cap gets exactly cap_i and leaves; the
    residual is spread again over the rest, until nothing is capped (classic water-filling: a
    layer that overflows at one round overflows at every later one, so the order of capping
    does not matter).
    Phase 2 (only if phase 1 leaves a residual, i.e. every layer with a share is at its cap):
    the residual goes to all layers in proportion to their spare room, rooms_i - a_i, up to the
    total spare room. ``forced`` is True when phase 2 placed anything.

    amount: int >= 0; weights: floats or Fractions >= 0; caps, rooms: ints, 0 <= cap <= room.
    Returns (a: list of Fraction with a_i <= room_i, unplaced: int >= 0, forced: bool), with
    sum(a) + unplaced == amount; unplaced > 0 only when amount exceeds sum(rooms).
    """
    n = len(weights)
    w = [Fraction(x) for x in weights]
    a = [Fraction(0)] * n
    rem = Fraction(amount)
    active = [i for i in range(n) if w[i] > 0 and caps[i] > 0]
    while rem > 0 and active:
        total_w = sum(w[i] for i in active)
        # a_i = rem * w_i / total_w >= cap_i  <=>  rem * w_i >= cap_i * total_w
        over = [i for i in active if rem * w[i] >= caps[i] * total_w]
        if not over:
            for i in active:
                a[i] = rem * w[i] / total_w
            rem = Fraction(0)
            break
        for i in over:
            a[i] = Fraction(caps[i])
            rem -= caps[i]
        active = [i for i in active if i not in over]
    forced = False
    if rem > 0:  # every layer with a share is at its cap: spread by spare room
        spare = [rooms[i] - a[i] for i in range(n)]
        total_s = sum(spare)
        if total_s > 0:
            take = min(rem, total_s)
            for i in range(n):
                a[i] += take * spare[i] / total_s
            rem -= take
            forced = True
    # rem is an integer here: phase 1 ends with rem == 0 or with every a_i an integer cap
    return a, int(rem), forced


class Distribution(NamedTuple):
    counts: list  # units per layer (ints)
    unplaced: int  # weights that could not be placed in whole units (0 with unit-1 room left)
    forced: bool  # some layer got more than its cap (phase 2, or a whole unit beyond it)


def distribute(amount: int, weights, caps, rooms, units) -> Distribution:
    """Integer units per layer, counts[i] * units[i] <= rooms[i], placing ``amount`` weights.

    1. a = waterfill(amount, weights, caps, rooms)  (rationals)
    2. counts_i = floor(a_i / units_i)
    3. largest remainder over unit-1 layers: the L = amount - sum counts_i*units_i weights
       still to place go one each to the unit-1 layers in decreasing order of the fractional
       part of a_i (ties: lower index first). With only unit-1 layers this places everything
       (the fractional parts sum to L), each within its cap (a_i <= cap_i, an integer).
    4. if L > 0 is still left (coarse units rounded down): it is distributed again over the
       unit-1 layers alone, by the same steps with caps max(cap_i - placed_i, 0) and rooms
       room_i - placed_i, so the total is exact whenever they have room.
    5. if L > 0 is still left: whole coarse units, layers in decreasing order of the fractional
       part of a_i / units_i (ties: lower index first), each layer taking units while one fits
       in L and in its room. What remains is ``unplaced`` (< the unit of every coarse layer with
       room left).
    """
    n = len(weights)
    a, _, forced = waterfill(amount, weights, caps, rooms)
    counts = [math.floor(a[i] / units[i]) for i in range(n)]
    left = amount - sum(c * u for c, u in zip(counts, units))
    # 3. largest remainder over unit-1 layers
    fracs = [(a[i] - counts[i], i) for i in range(n) if units[i] == 1 and a[i] > counts[i]]
    for _, i in sorted(fracs, key=lambda t: (-t[0], t[1]))[:max(left, 0)]:
        counts[i] += 1
        left -= 1
    # 4. the remainder of coarse units, again over the unit-1 layers alone
    fine = [i for i in range(n) if units[i] == 1]
    if left > 0 and len(fine) < n and fine:
        sub = distribute(left, [weights[i] for i in fine],
                         [max(caps[i] - counts[i], 0) for i in fine],
                         [rooms[i] - counts[i] for i in fine], [1] * len(fine))
        for j, i in enumerate(fine):
            counts[i] += sub.counts[j]
        left, forced = sub.unplaced, forced or sub.forced
    # 5. whole coarse units where one still fits
    if left > 0:
        coarse = sorted((i for i in range(n) if units[i] > 1),
                        key=lambda i: (-(a[i] / units[i] - counts[i]), i))
        for i in coarse:
            while units[i] <= left and (counts[i] + 1) * units[i] <= rooms[i]:
                counts[i] += 1
                left -= units[i]
                forced = forced or counts[i] * units[i] > caps[i]
    return Distribution(counts, int(left), forced)
