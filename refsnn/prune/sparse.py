"""Sparse learning with sparse momentum (SPEC 4.2), as plain functions on dicts of arrays.

    masks = init_masks(arch, params, density=d, rng=rng)      # stage B: Bernoulli(d) per layer
    masks = masks_from_weights(params)                        # stage D resume: W != 0
    apply_masks(params, masks)                                # after every optimizer step
    mom = momenta("adam", state, masks)                       # {"<layer>.weight": m_l}
    masks, info = sparse_update(params, masks, mom, prune_rate=p, target_density=d)  # epoch end

Conventions (where SPEC 4.2 leaves a choice):
- Masks are ``{"mask.<layer>.weight": array}`` with the weight's shape and float dtype, values
  exactly 0.0 and 1.0: W * M needs no cast in any framework, and live = (M != 0), exactly as
  refsnn.metrics.live_weights counts (a just-regrown weight is live and 0). Every conv and
  linear weight (``<layer>.weight``) has one; thresholds and leaks never do.
- Masked weights are +0.0 (apply_masks writes 0 where M == 0, so -0.0, NaN and inf there become
  +0.0 too; live weights are not touched).
- Units: irregular mode prunes single weights; channel mode prunes conv output filters (a
  filter = W[o], C_in*kH*kW weights; conv masks are then constant per filter) and single
  weights of linear layers. Conv / linear are told apart by the weight's rank (4 / 2).
- Scores: prune the smallest |W| (a filter: the smallest sum of W^2 in float64, the squared
  Frobenius norm), regrow the largest |m| (a filter: sum of m^2). Ties: the lower flat index
  (filter index) goes first, in both directions.
- Layer order: layers are processed in sorted name order, which only decides ties between
  layers (allocate.py); the result does not depend on the order of the dicts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .._checks import FLOAT_DTYPES, check_choice
from ..models.arch import Arch, Conv, weight_layers, weight_shape
from ..optim import adam_momentum, sgd_momentum
from ._units import (filter_view, layer_units, n_live, prune_units, regrow_units,
                     write_units)
from .allocate import distribute

__all__ = ["LayerUpdate", "SparseUpdate", "apply_masks", "init_masks", "masks_from_weights",
           "momenta", "momentum_of", "sparse_update"]

MODES = ("irregular", "channel")
OPTIMIZERS = ("sgd", "adam")


# --- validation ---------------------------------------------------------------------------------

def _check_density(fn: str, name: str, d) -> float:
    if isinstance(d, bool) or not isinstance(d, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a number in (0, 1], got {type(d).__name__} {d!r}")
    if not 0.0 < float(d) <= 1.0:
        raise ValueError(f"{fn}: {name} must be in (0, 1], got {d!r}")
    return float(d)


def _check_weight(fn: str, name: str, w) -> np.ndarray:
    if not isinstance(w, np.ndarray) or w.dtype not in FLOAT_DTYPES:
        got = w.dtype if isinstance(w, np.ndarray) else type(w).__name__
        raise TypeError(f"{fn}: params[{name!r}] must be a float32/float64 array, got {got}")
    if w.ndim not in (2, 4):
        raise ValueError(f"{fn}: params[{name!r}] must be a linear (out, in) or conv (O, I, kH, "
                         f"kW) weight, got shape {w.shape}")
    return w


def _check_masks(fn: str, params, masks, *, complete: bool) -> list:
    """Validate masks against params; return the parameter names, sorted. complete=True also
    requires a mask for every "<layer>.weight" in params."""
    for arg, d in (("params", params), ("masks", masks)):
        if not isinstance(d, dict):
            raise TypeError(f"{fn}: {arg} must be a dict of arrays, got {type(d).__name__}")
    names = []
    for key, m in masks.items():
        if not (isinstance(key, str) and key.startswith("mask.") and key.endswith(".weight")):
            raise ValueError(f"{fn}: masks keys must be 'mask.<layer>.weight' (only conv and "
                             f"linear weights are prunable, never thresholds or leaks), got "
                             f"{key!r}")
        name = key[len("mask."):]
        if name not in params:
            raise ValueError(f"{fn}: masks[{key!r}] has no parameter {name!r} in params")
        w = _check_weight(fn, name, params[name])
        if not isinstance(m, np.ndarray) or m.shape != w.shape or m.dtype != w.dtype:
            got = f"{m.shape} {m.dtype}" if isinstance(m, np.ndarray) else type(m).__name__
            raise ValueError(f"{fn}: masks[{key!r}] must be an array of the weight's shape and "
                             f"dtype {w.shape} {w.dtype}, got {got}")
        if not np.all((m == 0) | (m == 1)):
            raise ValueError(f"{fn}: masks[{key!r}] must hold only 0 and 1")
        names.append(name)
    if complete:
        missing = sorted(k for k in params if k.endswith(".weight") and f"mask.{k}" not in masks)
        if missing:
            raise ValueError(f"{fn}: masks lacks {['mask.' + k for k in missing]} (every conv "
                             f"and linear weight is prunable)")
    return sorted(names)


# --- masks --------------------------------------------------------------------------------------

def init_masks(arch: Arch, params: dict, *, density: float, rng: np.random.Generator,
               mode: str = "irregular") -> dict:
    """Bernoulli(density) masks for every conv and linear weight (SPEC 4.2.1, stage B).

        irregular: M[i] = 1 iff u[i] < density,  u = rng.random(weight shape)
        channel:   conv M[o, :, :, :] = 1 iff u[o] < density,  u = rng.random(C_out);
                   linear layers as irregular
    Draw order: one rng.random call per layer, layers in network order (weight_layers(arch));
    every layer draws even at density 1, so the stream does not depend on density. The live
    count is random (about density * total); the first sparse_update brings it to the target.
    params: "<layer>.weight" of every layer (shape checked), which gives the masks' dtype.
    Returns {"mask.<layer>.weight": 0.0/1.0 array in the weight's dtype}, network order. The
    weights are not changed: call apply_masks next.
    """
    fn = "init_masks"
    density = _check_density(fn, "density", density)
    check_choice(fn, "mode", mode, MODES)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{fn}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"{fn}: params must be a dict of arrays, got {type(params).__name__}")
    masks = {}
    for layer in weight_layers(arch):
        name = f"{layer.name}.weight"
        if name not in params:
            raise ValueError(f"{fn}: params lacks {name!r}")
        w = _check_weight(fn, name, params[name])
        if w.shape != weight_shape(layer):
            raise ValueError(f"{fn}: params[{name!r}].shape={w.shape}, expected "
                             f"{weight_shape(layer)}")
        if mode == "channel" and isinstance(layer, Conv):
            live = rng.random(layer.c_out) < density  # one draw per output filter
            m = np.broadcast_to(live[:, None, None, None], w.shape)
        else:
            m = rng.random(w.shape) < density  # one draw per weight, C order
        masks[f"mask.{name}"] = m.astype(w.dtype)
    return masks


def masks_from_weights(params: dict, *, mode: str = "irregular") -> dict:
    """Masks from the weights' nonzero pattern (SPEC 4.2.1, resuming sparse learning in stage D).

        irregular: M = (W != 0)     channel: conv M[o] = any(W[o] != 0), linear M = (W != 0)
    for every key "<layer>.weight" of params (thresholds and leaks are skipped). -0.0 counts as
    dead. Returns {"mask.<layer>.weight": 0.0/1.0 in the weight's dtype}, in params' order.
    """
    fn = "masks_from_weights"
    check_choice(fn, "mode", mode, MODES)
    if not isinstance(params, dict):
        raise TypeError(f"{fn}: params must be a dict of arrays, got {type(params).__name__}")
    masks = {}
    for name, w in params.items():
        if not name.endswith(".weight") or name.startswith("mask."):
            continue
        w = _check_weight(fn, name, w)
        live = w != 0
        if mode == "channel" and w.ndim == 4:
            live = np.broadcast_to(filter_view(live).any(axis=1)[:, None, None, None], w.shape)
        masks[f"mask.{name}"] = live.astype(w.dtype)
    return masks


def apply_masks(params: dict, masks: dict) -> None:
    """W <- W * M in place for every mask (SPEC 4.2.2), written as W[M == 0] = +0.0.

    Masked entries become exactly +0.0 (also where W was -0.0, NaN or inf, which W * M would
    keep as -0.0 or NaN); live entries are untouched. Parameters without a mask (thresholds,
    leaks) are not touched; masks may cover a subset of the weights.
    """
    fn = "apply_masks"
    names = _check_masks(fn, params, masks, complete=False)
    for name in names:
        w = params[name]
        if not w.flags.writeable:
            raise ValueError(f"{fn}: params[{name!r}] must be writeable (updated in place)")
        np.copyto(w, 0, where=masks[f"mask.{name}"] == 0)


# --- momentum -----------------------------------------------------------------------------------

def momentum_of(optimizer_name: str, state: dict, name: str) -> np.ndarray:
    """The momentum m of parameter ``name`` (SPEC 4.2.4): SGD's momentum buffer
    (optim.sgd_momentum), or Adam's exp_avg / (sqrt(exp_avg_sq) + 1e-8) (optim.adam_momentum).
    optimizer_name: "sgd" or "adam"."""
    check_choice("momentum_of", "optimizer_name", optimizer_name, OPTIMIZERS)
    if optimizer_name == "sgd":
        return sgd_momentum(state, name)
    return adam_momentum(state, name)


def momenta(optimizer_name: str, state: dict, masks: dict) -> dict:
    """{"<layer>.weight": momentum_of(optimizer_name, state, "<layer>.weight")} for every mask."""
    return {k[len("mask."):]: momentum_of(optimizer_name, state, k[len("mask."):]) for k in masks}


# --- the end-of-epoch update ----------------------------------------------------------------------

class LayerUpdate(NamedTuple):
    unit: int  # weights per unit: 1, or C_in*kH*kW for a conv filter in channel mode
    live_before: int  # live weights before the update
    pruned: int  # weights removed by the prune rate: unit * ceil(p * live units)
    drift_pruned: int  # weights removed because the count was above the target (usually 0)
    regrown: int  # weights revived (at 0), including just-pruned ones picked again
    cap: int  # unit * floor(0.99 * free units after pruning): the regrowth limit
    share: float  # mu_l / sum mu: this layer's share of the regrowth
    live: int  # live weights after the update
    density: float  # live / size


class SparseUpdate(NamedTuple):
    layers: dict  # {"<layer>.weight": LayerUpdate}, sorted by name
    target: int  # round(target_density * total)
    live: int  # global live count after the update
    total: int  # global weight count
    forced: bool  # a layer regrew beyond its cap: only where the residual left no other room


def sparse_update(params: dict, masks: dict, momentum: dict, *, prune_rate: float,
                  target_density: float, mode: str = "irregular") -> tuple[dict, SparseUpdate]:
    """One end-of-epoch sparse-momentum update (SPEC 4.2.4): prune, redistribute, regrow.

    Per layer l (units: module doc), with live units U_l before the update and N* =
    round(target_density * total) (Python round, half to even, of the float64 product):
      1. share     mu_l = mean |m_l| over the live weights before pruning (float64; 0 if none),
                   normalised to sum 1. If every mu_l is 0 (no momentum yet), the shares are the
                   weights each layer prunes in step 2, and if those are 0 too, its free weights.
      2. prune     k_l = ceil(p * U_l) units (math.ceil of the float64 product p * U_l) of
                   smallest score.
      3. drift     B = N* - (live weights after step 2): the regrowth budget, i.e. the removed
                   count R = sum k_l*unit_l plus the drift N* - live_before. If B < 0 (the count
                   was above target by more than R), -B more weights are pruned (smallest
                   scores), split over layers in proportion to their live weights, and B = 0.
      4. allocate  B over layers by shares (allocate.distribute): capped at
                   cap_l = unit_l * floor(0.99 * free units_l) (free = dead after pruning); the
                   residual is spread again over uncapped layers, and only when every layer with
                   a share is at its cap does it go beyond, in proportion to spare room
                   (info.forced). Exact integers: largest remainder over single-weight layers;
                   in channel mode filters are rounded down and the remainder goes to the linear
                   layers.
      5. regrow    in each layer the allocated number of dead units of largest |m| score; their
                   weights are set to 0 (so are all newly dead weights: W = W * M, +0.0).
    The global live count is then exactly N* in irregular mode. In channel mode conv layers
    move whole filters and the linear layers absorb the remainder, so the count is exactly N*
    unless the linear layers run out of room (or live weights); even then it is off by less
    than the largest conv filter (C_in*kH*kW weights).
    target_density == 1 is a no-op: nothing pruned, every position live (dead weights, already
    0, are revived at 0).
    Just-pruned positions are dead and may be regrown in the same update (at 0; RigL does the
    same, Dettmers' code would keep their old value). Optimizer state is not touched (SPEC 4.2.2).

    params: "<layer>.weight" arrays (others, e.g. thresholds, are ignored), updated in place.
    masks: "mask.<layer>.weight" for every weight, 0/1 in the weight's dtype, not modified;
    channel mode requires conv masks constant per filter. momentum: {"<layer>.weight": m_l},
    the weight's shape (momentum_of / momenta). prune_rate: 0 <= p < 1 (schedules.prune_rate).
    Returns (new masks, SparseUpdate info). Deterministic: no randomness.
    """
    fn = "sparse_update"
    check_choice(fn, "mode", mode, MODES)
    if isinstance(prune_rate, bool) or not isinstance(prune_rate, (int, float, np.integer,
                                                                   np.floating)):
        raise TypeError(f"{fn}: prune_rate must be a number in [0, 1), got {prune_rate!r}")
    p = float(prune_rate)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{fn}: prune_rate must be in [0, 1), got {prune_rate!r}")
    d = _check_density(fn, "target_density", target_density)
    names = _check_masks(fn, params, masks, complete=True)
    if not names:
        raise ValueError(f"{fn}: masks is empty; nothing to update")
    if not isinstance(momentum, dict):
        raise TypeError(f"{fn}: momentum must be a dict of arrays, got {type(momentum).__name__}")
    for name in names:
        m, w = momentum.get(name), params[name]
        if not isinstance(m, np.ndarray) or m.dtype not in FLOAT_DTYPES or m.shape != w.shape:
            got = f"{m.shape} {m.dtype}" if isinstance(m, np.ndarray) else type(m).__name__
            raise ValueError(f"{fn}: momentum[{name!r}] must be a float array of shape "
                             f"{w.shape}, got {got}")
        for arg, a in (("params", w), ("momentum", m)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{fn}: {arg}[{name!r}] has non-finite entries")
    total = sum(params[n].size for n in names)
    target = round(d * total)
    if target < 1:
        raise ValueError(f"{fn}: target_density={target_density!r} leaves no live weight of "
                         f"{total} (round(d * total) = 0)")

    layers = [layer_units(fn, n, params[n], masks[f"mask.{n}"], momentum[n], mode)
              for n in names]
    if d == 1.0:
        return _densify(params, layers, total)

    # 1. shares (before pruning) and 2. prune ceil(p * U_l) units per layer
    mu = [ly.mu for ly in layers]
    pruned = [math.ceil(p * int(ly.live.sum())) for ly in layers]
    for ly, k in zip(layers, pruned):
        prune_units(ly, k)
    live_w = [n_live(ly) for ly in layers]
    budget = target - sum(live_w)
    # 3. drift above target: prune -B more, in proportion to live weights
    drift = [0] * len(layers)
    if budget < 0:
        units = [ly.unit for ly in layers]
        dist = distribute(-budget, live_w, live_w, live_w, units)
        for i, ly in enumerate(layers):
            prune_units(ly, dist.counts[i])
            drift[i] = dist.counts[i]
        budget = 0
    # 4. allocate the regrowth budget by shares, capped
    units = [ly.unit for ly in layers]
    free_u = [ly.live.size - int(ly.live.sum()) for ly in layers]
    caps = [u * (99 * f // 100) for u, f in zip(units, free_u)]  # floor(0.99 * free), exact
    rooms = [u * f for u, f in zip(units, free_u)]
    shares = mu if sum(mu) > 0 else ([k * u for k, u in zip(pruned, units)]
                                     if sum(pruned) > 0 else rooms)
    dist = distribute(budget, shares, caps, rooms, units)
    # 5. regrow: dead units of largest momentum score, revived at 0
    out, info = {}, {}
    s = float(sum(shares))
    for i, ly in enumerate(layers):
        regrow_units(ly, dist.counts[i])
        out[f"mask.{ly.name}"] = write_units(ly, params[ly.name])
        live_now = n_live(ly)
        info[ly.name] = LayerUpdate(
            unit=ly.unit, live_before=ly.live_before, pruned=pruned[i] * ly.unit,
            drift_pruned=drift[i] * ly.unit, regrown=dist.counts[i] * ly.unit, cap=caps[i],
            share=float(shares[i]) / s if s > 0 else 0.0, live=live_now,
            density=live_now / params[ly.name].size)
    live = sum(v.live for v in info.values())
    return out, SparseUpdate(info, target, live, total, dist.forced)


def _densify(params, layers, total):
    """target_density == 1: every position live; dead weights revived at 0."""
    out, info = {}, {}
    for ly in layers:
        ly.revived[:] = ~ly.live
        ly.live[:] = True
        out[f"mask.{ly.name}"] = write_units(ly, params[ly.name])
        info[ly.name] = LayerUpdate(ly.unit, ly.live_before, 0, 0, ly.live.size * ly.unit
                                    - ly.live_before, 0, 0.0, ly.live.size * ly.unit, 1.0)
    return out, SparseUpdate(info, total, total, total, False)
