"""Compare two golden traces (SPEC 7) and say where they first diverge.

    python -m refsnn.compare refsnn_trace.safetensors my_torch_trace.safetensors
    python -m refsnn.compare A B --rtol 1e-4 --atol 1e-5        # float32 traces

For every array present in both files: shapes and dtypes, its scale, the max absolute and max
relative difference, and how many entries lie beyond the tolerance. Entry-wise, a and b agree
when

    |a - b| <= atol * scale + rtol * max(|a|, |b|)
    scale = the array's largest magnitude, max over all entries of max(|a|, |b|)
    relative difference = |a - b| / max(|a|, |b|)   (0 where a == b)

The test is symmetric (neither file is privileged); equal infinities and NaN vs NaN agree.
The absolute floor is in units of the array's own scale, unlike numpy's atol: gradients of
one network span 1e-9 (early layers) to 1 (the output layer), and a fixed absolute floor loose
enough for O(1) currents would hide a 1e-3 relative error in a 1e-9 gradient. Scaled, the
verdict does not depend on the units of any array.

Then, in the ``trace.<layer>.*`` arrays, the **first divergence in network order**: the first
spiking layer (order: the trace's "layers" metadata) with any entry beyond tolerance, within it
the first time step t, within that step the first quantity in causal order current ->
membrane_pre -> spikes -> membrane. Every layer before it agrees at every step, so the reported
layer received the same inputs in both runs: the difference is made in that layer (its weights,
its neuron, its tie/reset/leak convention), at that step. The other layers' first diverging
step is listed too. For ``grad.<name>`` the diverging parameters are named, in network order.

Exit code: 0 when every common array agrees (and shapes match), 1 when any diverges or has a
different shape, 2 for a usage or file error. Arrays present on one side only are listed but do
not fail the comparison unless ``--strict`` (then dtype mismatches fail too): an implementation
may leave out what it does not compute (pruning masks, say).

Default tolerances, for float64 traces: rtol 1e-9, atol 1e-12. Two correct float64
implementations of the SPEC differ only in summation order (GEMM blocking, conv algorithm):
about 1e-16 per operation, ~1e-15 of an array's scale after 15 layers and T steps, up to ~2e-13
on scalar threshold gradients, which sum over every neuron and step with cancellation (refsnn vs
torch autograd, tests/crosscheck/test_snn_torch.py). rtol 1e-9 leaves a margin of 1e4 and more
above that, and is far below what any convention difference produces (a surrogate on u - v instead
of u/v - 1, the reset not detached, the mean instead of the sum over t, the leak applied after
the reset: all change values by 1e-3 relative or more, or flip spikes). atol 1e-12 (times the
array's scale) is the floor for entries that cancel to ~0: a current whose terms cancel, the
gradient of a weight that sees almost no input, where one side has exactly 0 and the other a
rounding residue of ~1e-16 times the terms summed. For float32 traces use about rtol 1e-4,
atol 1e-5; a spike may then legitimately flip where u- is within float32 rounding of v, and
the report shows where.

A trace need not come from refsnn: any safetensors file with these names works. Layer order
comes from the JSON metadata (key "refsnn", field "layers") of either file; without it, from
the names (stem, conv, layer, fc prefixes; numbers compared as numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import NamedTuple

import numpy as np

QUANTITIES = ("current", "membrane_pre", "spikes", "membrane")  # causal order within a step
DEFAULT_RTOL = 1e-9
DEFAULT_ATOL = 1e-12


class ArrayDiff(NamedTuple):
    """One array present in both traces."""

    name: str
    shape_a: tuple
    shape_b: tuple
    dtype_a: str
    dtype_b: str
    scale: float  # max over entries of max(|a|, |b|), finite values (nan: shapes differ)
    max_abs: float  # max |a - b| (nan when the shapes differ)
    max_rel: float  # max |a - b| / max(|a|, |b|)
    n_bad: int  # entries beyond tolerance (-1 when the shapes differ)
    first_bad: tuple | None  # index of the first entry beyond tolerance, C order
    ok: bool  # shapes equal and every entry within tolerance


class Divergence(NamedTuple):
    """Where one layer's trace first leaves the tolerance."""

    layer: str
    t: int | None  # SPEC time step, 1-based (t = index + 1); None when the shapes differ
    quantity: str  # one of QUANTITIES
    index: tuple | None  # numpy index into trace.<layer>.<quantity>, (t - 1, n, ...)
    a: float | None  # the two values there
    b: float | None


class Report(NamedTuple):
    rows: tuple  # ArrayDiff for every common array, in report order (see _order)
    only_in_a: tuple  # names present only in A
    only_in_b: tuple
    first_divergence: Divergence | None  # in the trace.* arrays, network order
    layer_divergences: tuple  # first Divergence of every diverging layer, network order
    grad_divergences: tuple  # parameter names whose grad.* diverges, network order
    rtol: float
    atol: float
    ok: bool  # every common array within tolerance with equal shapes (see compare_traces)


# --- elementwise comparison --------------------------------------------------------------------

def _bad_mask(a: np.ndarray, b: np.ndarray, rtol: float, atol: float):
    """(beyond-tolerance mask, |a - b|, relative difference, scale), in float64.

    bound = atol * scale + rtol * max(|a|, |b|),  scale = the largest finite |value| of a or b
    """
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))  # equal infinities, NaN vs NaN agree
        diff = np.where(same, 0.0, np.abs(a - b))  # inf or nan where one side is inf/nan
        diff = np.where(np.isnan(diff), np.inf, diff)
        mag = np.maximum(np.abs(a), np.abs(b))
        finite = mag[np.isfinite(mag)]
        scale = float(finite.max()) if finite.size else 0.0
        rel = np.where(same, 0.0, diff / np.where(mag > 0, mag, 1.0))
        rel = np.where(np.isnan(rel), np.inf, rel)
        # beyond tolerance: any difference involving inf/nan, or a finite one above the bound
        bad = ~same & (~np.isfinite(diff) | ~(diff <= atol * scale + rtol * mag))
    return bad, diff, rel, scale


def _diff_row(name, a, b, rtol, atol) -> ArrayDiff:
    sa, sb = tuple(a.shape), tuple(b.shape)
    if sa != sb:
        return ArrayDiff(name, sa, sb, str(a.dtype), str(b.dtype), math.nan, math.nan,
                         math.nan, -1, None, False)
    bad, diff, rel, scale = _bad_mask(a, b, rtol, atol)
    n_bad = int(bad.sum())
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if n_bad else None
    return ArrayDiff(name, sa, sb, str(a.dtype), str(b.dtype), scale,
                     float(diff.max()) if diff.size else 0.0,
                     float(rel.max()) if rel.size else 0.0, n_bad, first, n_bad == 0)


# --- ordering ----------------------------------------------------------------------------------

def _natural_key(name: str):
    """Fallback network order from names: stem < conv < layer < fc, numbers as numbers."""
    rank = {"stem": 0, "conv": 1, "layer": 2, "fc": 3}
    head = re.match(r"[a-z]+", name)
    parts = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    return (rank.get(head.group(0) if head else "", 4), [(0, p) if isinstance(p, int)
                                                          else (1, p) for p in parts])


_TRACE_NAME = re.compile(r"^trace\.(.+)\.(current|membrane_pre|spikes|membrane)$")


def _trace_layers(names) -> list:
    """Layer names of the trace.<layer>.<quantity> arrays among ``names``."""
    return list({m.group(1) for m in map(_TRACE_NAME.match, names) if m})


def _ordered(names, order) -> list:
    """``names`` in ``order`` first (where listed), the rest in natural order."""
    order = list(order or [])
    pos = {n: i for i, n in enumerate(order)}
    listed = sorted((n for n in names if n in pos), key=pos.get)
    rest = sorted((n for n in names if n not in pos), key=_natural_key)
    return listed + rest


def _order(names, layers, params) -> list:
    """Report order: setup (input, label, param.*, mask.*, dropout.*), trace.* by layer and
    quantity, output, loss, grad.*, then anything else."""
    names = set(names)
    out = [n for n in ("input", "label") if n in names]
    # param.<name> and mask.<name> ("conv1.weight") by parameter, dropout.<layer> by layer
    for prefix, order in (("param.", params), ("mask.", params), ("dropout.", layers)):
        group = [n[len(prefix):] for n in names if n.startswith(prefix)]
        out += [prefix + k for k in _ordered(group, order)]
    for layer in _ordered(_trace_layers(names), layers):
        out += [f"trace.{layer}.{q}" for q in QUANTITIES if f"trace.{layer}.{q}" in names]
    out += [n for n in ("output", "loss") if n in names]
    out += ["grad." + g for g in _ordered([n[len("grad."):] for n in names
                                           if n.startswith("grad.")], params)]
    seen = set(out)
    return out + sorted(n for n in names if n not in seen)


# --- the comparison ----------------------------------------------------------------------------

def _layer_divergence(layer, a, b, rtol, atol) -> Divergence | None:
    """First (t, quantity) of one layer beyond tolerance; t-major, quantities causal."""
    found = {}
    for q in QUANTITIES:
        k = f"trace.{layer}.{q}"
        if k not in a or k not in b:
            continue
        x, y = a[k], b[k]
        if x.shape != y.shape:
            return Divergence(layer, None, q, None, None, None)
        bad = _bad_mask(x, y, rtol, atol)[0]
        if bad.ndim == 0 or not bad.any():
            continue
        t_idx = int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))
        found[q] = (t_idx, x, y, bad)
    if not found:
        return None
    t_idx = min(v[0] for v in found.values())
    q = next(q for q in QUANTITIES if q in found and found[q][0] == t_idx)
    _, x, y, bad = found[q]
    rel = tuple(int(i) for i in np.argwhere(bad[t_idx])[0])
    index = (t_idx,) + rel
    return Divergence(layer, t_idx + 1, q, index, float(x[index]), float(y[index]))


def compare_traces(a: dict, b: dict, *, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                   layer_order=None, param_order=None, strict: bool = False) -> Report:
    """Compare trace arrays ``a`` and ``b`` (name -> ndarray) entry by entry (module doc).

    layer_order: spiking layer names in network order (a trace's "layers" metadata), or None
    to order them by name. param_order: parameter names in network order, for the gradient
    list and the table (a trace's "params" metadata), or None. strict: arrays present on one
    side only, and dtype mismatches, also make the report not ok.
    -> Report; ``ok`` is True when every common array has equal shapes and agrees everywhere.
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            raise ValueError(f"compare_traces: {name} must be a finite number >= 0, got {value!r}")
    common = [n for n in a if n in b]
    rows = tuple(_diff_row(n, np.asarray(a[n]), np.asarray(b[n]), rtol, atol)
                 for n in _order(common, layer_order, param_order))
    divs = []
    for layer in _ordered(_trace_layers(common), layer_order):
        d = _layer_divergence(layer, a, b, rtol, atol)
        if d is not None:
            divs.append(d)
    grads = tuple(r.name[len("grad."):] for r in rows if r.name.startswith("grad.") and not r.ok)
    only_a = tuple(_order([n for n in a if n not in b], layer_order, param_order))
    only_b = tuple(_order([n for n in b if n not in a], layer_order, param_order))
    ok = all(r.ok for r in rows)
    if strict:
        ok = ok and not only_a and not only_b and all(r.dtype_a == r.dtype_b for r in rows)
    return Report(rows, only_a, only_b, divs[0] if divs else None, tuple(divs), grads,
                  float(rtol), float(atol), ok)


# --- files and printing ------------------------------------------------------------------------

def read_trace(path) -> tuple[dict, dict]:
    """(arrays, metadata) of a safetensors trace; metadata = the JSON under key "refsnn", or {}
    for a file written without it. ValueError for a missing or unreadable file."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"no trace file at {path!r}")
    try:
        with safe_open(path, framework="np") as f:
            raw = (f.metadata() or {}).get("refsnn")
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path!r} is not a readable safetensors file ({e})") from None
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path!r}: its 'refsnn' metadata is not JSON ({e})") from None
    return arrays, meta if isinstance(meta, dict) else {}


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def format_report(report: Report, *, name_a: str = "A", name_b: str = "B",
                  only_failures: bool = False) -> str:
    """The report as a table plus summary lines (what ``python -m refsnn.compare`` prints)."""
    rows = [r for r in report.rows if not (only_failures and r.ok)]
    width = max([len(r.name) for r in rows] + [5])
    shapes = [str(r.shape_a) if r.shape_a == r.shape_b else f"{r.shape_a} vs {r.shape_b}"
              for r in rows]
    sw = max([len(x) for x in shapes] + [5])
    lines = [f"A = {name_a}", f"B = {name_b}",
             f"tolerance: |a - b| <= {report.atol:g} * scale + {report.rtol:g} * max(|a|, |b|)  "
             f"(scale = the array's max |value|)", "",
             f"{'array':<{width}}  {'shape':<{sw}}  {'dtype':<15} {'scale':>9} {'max abs':>9} "
             f"{'max rel':>9} {'beyond':>7}  status"]
    for r, shape in zip(rows, shapes):
        if r.shape_a != r.shape_b:
            status, beyond = "SHAPE", "-"
        else:
            status, beyond = ("ok" if r.ok else "DIVERGES"), str(r.n_bad)
        dtype = r.dtype_a if r.dtype_a == r.dtype_b else f"{r.dtype_a}/{r.dtype_b}"
        lines.append(f"{r.name:<{width}}  {shape:<{sw}}  {dtype:<15} {_fmt(r.scale):>9} "
                     f"{_fmt(r.max_abs):>9} {_fmt(r.max_rel):>9} {beyond:>7}  {status}")
    lines.append("")
    if report.only_in_a:
        lines.append(f"only in A ({len(report.only_in_a)}): {', '.join(report.only_in_a)}")
    if report.only_in_b:
        lines.append(f"only in B ({len(report.only_in_b)}): {', '.join(report.only_in_b)}")
    mism = [r.name for r in report.rows if r.shape_a != r.shape_b]
    if mism:
        lines.append(f"shape mismatch ({len(mism)}): {', '.join(mism)}")
    setup = [r.name for r in report.rows if not r.ok and r.name.split(".")[0] in
             ("input", "label", "param", "mask", "dropout")]
    if setup:
        lines.append(f"inputs differ ({len(setup)}): {', '.join(setup)}  <- the two runs did "
                     f"not start from the same input, parameters or masks")
    d = report.first_divergence
    if d is None:
        lines.append("first divergence: none in the trace.* arrays")
    elif d.t is None:
        lines.append(f"first divergence: layer {d.layer}, {d.quantity}: shapes differ")
    else:
        lines.append(f"first divergence: layer {d.layer}, t={d.t}, {d.quantity} "
                     f"(at index {d.index}: A={d.a!r} B={d.b!r})")
        later = [f"{x.layer} t={x.t} {x.quantity}" if x.t else f"{x.layer} (shape)"
                 for x in report.layer_divergences[1:]]
        if later:
            lines.append(f"  later layers first diverge at: {'; '.join(later)}")
    if report.grad_divergences:
        lines.append(f"diverging gradients ({len(report.grad_divergences)}): "
                     f"{', '.join(report.grad_divergences)}")
    n_bad = sum(not r.ok for r in report.rows)
    verdict = "AGREE" if report.ok else "DIVERGE"
    lines.append(f"result: {verdict} ({n_bad} of {len(report.rows)} common arrays beyond "
                 f"tolerance or mis-shaped)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m refsnn.compare",
        description="Compare two golden traces: per-array max abs/rel differences, the first "
                    "layer and time step where they diverge, the diverging gradients. Exit 0 "
                    "if they agree, 1 if they diverge, 2 on a usage or file error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("a", help="trace file A (e.g. refsnn's)")
    p.add_argument("b", help="trace file B (e.g. your implementation's)")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                   help="relative tolerance, times max(|a|, |b|); for float32 use ~1e-4")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                   help="absolute floor, in units of each array's largest |value| (its scale); "
                        "for float32 use ~1e-5")
    p.add_argument("--strict", action="store_true",
                   help="arrays missing on one side and dtype mismatches also fail")
    p.add_argument("--only-failures", action="store_true",
                   help="print only the arrays that diverge")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage error (2) or --help (0)
        return int(e.code or 0)
    try:
        a, meta_a = read_trace(args.a)
        b, meta_b = read_trace(args.b)
        report = compare_traces(a, b, rtol=args.rtol, atol=args.atol,
                                layer_order=meta_a.get("layers") or meta_b.get("layers"),
                                param_order=meta_a.get("params") or meta_b.get("params"),
                                strict=args.strict)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report, name_a=args.a, name_b=args.b, only_failures=args.only_failures))
    if not report.rows:
        print("error: the two files have no array name in common", file=sys.stderr)
        return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
