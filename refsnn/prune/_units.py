"""Per-layer scratch of one sparse_update call: units, scores, prune and regrow selection.

A layer's units are single weights (irregular mode, and linear layers in channel mode) or conv
output filters (channel mode). Scores are float64: |W| and |m| per weight, or the sum of
squares of W and m over a filter (the squared Frobenius norm). Selections break ties by the
lower unit index. Nothing here outlives the call that builds it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def filter_view(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1)  # (C_out, C_in*kH*kW)


class Units(NamedTuple):
    """One layer's scratch arrays inside a single sparse_update call (nothing outlives it).

    live, revived: bool per unit (flat weights, or filters), updated in place by prune_units and
    regrow_units; wscore / mscore: float64 per unit (|W| and |m|, or filter sums of squares).
    """
    name: str
    unit: int
    live: np.ndarray
    revived: np.ndarray
    wscore: np.ndarray
    mscore: np.ndarray
    mu: float
    live_before: int


def n_live(ly: Units) -> int:
    return int(ly.live.sum()) * ly.unit


def prune_units(ly: Units, k: int) -> None:
    """Kill the k live units of smallest wscore (ties: lower index first)."""
    idx = np.flatnonzero(ly.live)
    ly.live[idx[select(ly.wscore[idx], k, largest=False)]] = False


def regrow_units(ly: Units, k: int) -> None:
    """Revive the k dead units of largest mscore (ties: lower index first)."""
    idx = np.flatnonzero(~ly.live)
    chosen = idx[select(ly.mscore[idx], k, largest=True)]
    ly.live[chosen] = True
    ly.revived[chosen] = True


def write_units(ly: Units, w: np.ndarray) -> np.ndarray:
    """Zero the dead and the revived weights of w in place (+0.0); return the new mask."""
    shape = (w.shape[0], 1, 1, 1) if ly.unit > 1 else w.shape
    live = np.broadcast_to(ly.live.reshape(shape), w.shape)
    np.copyto(w, 0, where=~live | np.broadcast_to(ly.revived.reshape(shape), w.shape))
    return live.astype(w.dtype)


def layer_units(fn, name, w, m, mom, mode) -> Units:
    """The Units of one layer: live pattern, scores and mu = mean |m| over its live weights."""
    live = m != 0
    mu = float(np.abs(mom[live]).astype(np.float64).mean()) if live.any() else 0.0
    live_before = int(live.sum())
    if mode == "channel" and w.ndim == 4:
        lf = filter_view(live)
        if not np.all(lf == lf[:, :1]):
            raise ValueError(f"{fn}: mode='channel' needs conv masks constant per output filter; "
                             f"masks['mask.{name}'] is not (use init_masks / masks_from_weights "
                             f"with mode='channel')")
        sq = lambda a: np.square(filter_view(a).astype(np.float64)).sum(axis=1)  # noqa: E731
        return Units(name, lf.shape[1], lf[:, 0].copy(), np.zeros(lf.shape[0], dtype=bool),
                     sq(w), sq(mom), mu, live_before)
    return Units(name, 1, live.reshape(-1).copy(), np.zeros(live.size, dtype=bool),
                 np.abs(w).reshape(-1).astype(np.float64),
                 np.abs(mom).reshape(-1).astype(np.float64), mu, live_before)


def select(v: np.ndarray, k: int, *, largest: bool) -> np.ndarray:
    """Positions of the k smallest (largest) entries of v, ties to the lower position; sorted.

    The same set as np.argsort(v, kind="stable")[:k] (of -v for largest), in O(n): the k-th
    value t by np.partition, every entry strictly beyond t, then the first entries equal to t.
    """
    n = v.size
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.arange(n)
    key = -v if largest else v
    t = np.partition(key, k - 1)[k - 1]
    strict = np.flatnonzero(key < t)
    ties = np.flatnonzero(key == t)[:k - strict.size]
    return np.sort(np.concatenate([strict, ties]))
