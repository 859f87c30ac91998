"""PNG figures of the stage E report: learning curves, per-layer bars, attention maps.

matplotlib (the ``plots`` extra) is imported inside the functions, so the module imports
without it; callers check :func:`have_matplotlib` first. Figures are drawn on a
``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global state), saved at
DPI = 100 with fixed PNG metadata (same inputs, byte-identical files) and written atomically
(``path + ".tmp"``, then ``os.replace``). Sizes are never cropped, so pixels = inches * 100:

- plot_curves: 10 x 4 in (1000 x 400 px).
- plot_layers: max(6, 2 + 0.5 * L) x 6 in for L layers (L = 4: 600 x 600 px).
- plot_attention: 1.5 * (1 + 2 * P) x (0.75 + 1.5 * N) in for N images and P attention points
  (N = 2, P = 1: 450 x 375 px).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ._checks import check_array, check_shape

DPI = 100
STAGES = ("ann", "compress", "convert", "snn")  # plotting order; unknown stages come last
COLORS = {"ann": "tab:blue", "compress": "tab:orange", "convert": "tab:green", "snn": "tab:red"}
CURVES_SIZE = (10.0, 4.0)  # inches
CELL = 1.5  # inches per attention-grid cell
HEAD = 0.75  # inches above the attention grid (title and column titles)


def have_matplotlib() -> bool:
    """True iff ``import matplotlib`` works (the ``plots`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def _figure(width: float, height: float):
    """A Figure of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> str:
    """Write ``fig`` as a PNG to ``path + ".tmp"``, then rename it over ``path``; return path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _number(value) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None


def plot_curves(records: list[dict], path: str) -> str:
    """Test accuracy (left) and training loss (right, log y) against epoch, one line per stage.

    ``records`` are the lines of a run's metrics.jsonl: dicts with "stage" and "epoch" (int),
    usually "test_acc" (percent) and a loss. The loss drawn is the cross-entropy: "train_ce"
    where present (stage compress, whose "train_loss" also holds the attention term), else
    "train_loss" (stages ann and snn). A "convert" record (epoch 0, test_acc only) is a single
    star. Records without a finite value for a panel (or a loss <= 0) are skipped in it; when
    two records share a stage and epoch, the later wins. Figure: 10 x 4 in (1000 x 400 px).
    Raises ValueError if no record has a finite "test_acc". Returns ``path``.
    """
    fn = "plot_curves"
    if not isinstance(records, (list, tuple)):
        raise TypeError(f"{fn}: records must be a list of dicts, got {type(records).__name__}")
    acc, loss = {}, {}  # {stage: {epoch: value}}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise TypeError(f"{fn}: records[{i}] must be a dict, got {type(rec).__name__}")
        if "stage" not in rec or "epoch" not in rec:
            raise ValueError(f"{fn}: records[{i}] must have keys 'stage' and 'epoch', "
                             f"got keys {sorted(rec)}")
        epoch = rec["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise TypeError(f"{fn}: records[{i}]['epoch'] must be an int, got {epoch!r}")
        stage, epoch = str(rec["stage"]), int(epoch)
        if (a := _number(rec.get("test_acc"))) is not None:
            acc.setdefault(stage, {})[epoch] = a
        lo = _number(rec["train_ce"] if "train_ce" in rec else rec.get("train_loss"))
        if lo is not None and lo > 0:
            loss.setdefault(stage, {})[epoch] = lo
    if not acc:
        raise ValueError(f"{fn}: records has no record with a finite 'test_acc' "
                         f"({len(records)} records given); expected at least one")

    fig = _figure(*CURVES_SIZE)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for ax, series in ((ax_acc, acc), (ax_loss, loss)):
        for stage in sorted(series, key=lambda s: (STAGES.index(s) if s in STAGES else 9, s)):
            epochs = sorted(series[stage])
            single = stage == "convert"
            ax.plot(epochs, [series[stage][e] for e in epochs], label=stage,
                    color=COLORS.get(stage), marker="*" if single else "o",
                    markersize=12 if single else 3, linestyle="none" if single else "-")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    ax_acc.set(title="Test accuracy", ylabel="test accuracy (%)")
    ax_acc.legend()
    ax_loss.set(title="Training loss", ylabel="cross-entropy (log scale)")
    if loss:
        ax_loss.set_yscale("log")
        ax_loss.legend()
    else:
        ax_loss.text(0.5, 0.5, "no loss records", ha="center", transform=ax_loss.transAxes)
    fig.suptitle("Training curves")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.25)
    return _save(fig, path)


def _layer_values(fn: str, name: str, values, upper: float) -> dict:
    """Check ``values`` is a dict of finite numbers in [0, upper]; return it as floats."""
    if not isinstance(values, dict):
        raise TypeError(f"{fn}: {name} must be a dict, got {type(values).__name__}")
    out = {}
    for layer, v in values.items():
        x = _number(v)
        if x is None or not 0.0 <= x <= upper:
            raise ValueError(f"{fn}: {name}[{layer!r}] must be a finite number in "
                             f"[0, {upper}], got {v!r}")
        out[layer] = x
    return out


def plot_layers(layers: list[str], density: dict, activity: dict, path: str) -> str:
    """Bars per layer, in the order of ``layers``: weight density (top), spike activity (bottom).

    ``density`` {layer: live / total weights, in [0, 1]} and ``activity`` {layer: spikes per
    neuron over the T steps, >= 0}; a layer missing from a dict is a bar of height 0, and an
    empty ``activity`` (no SNN evaluated) leaves the lower panel saying "no SNN". Figure:
    max(6, 2 + 0.5 * L) x 6 in for L = len(layers). Raises ValueError if ``layers`` is empty or
    a value is negative, non-finite (or a density > 1). Returns ``path``.
    """
    fn = "plot_layers"
    if not isinstance(layers, (list, tuple)) or not all(isinstance(s, str) for s in layers):
        raise TypeError(f"{fn}: layers must be a list of layer names (str), got {layers!r}")
    if not layers:
        raise ValueError(f"{fn}: layers must name at least one layer, got {layers!r}")
    density = _layer_values(fn, "density", density, 1.0)
    activity = _layer_values(fn, "activity", activity, math.inf)

    x, acts = np.arange(len(layers)), [activity.get(k, 0.0) for k in layers]
    fig = _figure(max(6.0, 2.0 + 0.5 * len(layers)), 6.0)
    ax_d, ax_a = fig.subplots(2, 1, sharex=True)
    bars = ax_d.bar(x, [density.get(k, 0.0) for k in layers], color="tab:blue")
    ax_d.bar_label(bars, fmt="%.2f", fontsize=7)
    ax_d.set(title="Weight density", ylabel="live / total weights", ylim=(0.0, 1.1))
    if activity:
        bars = ax_a.bar(x, acts, color="tab:red")
        ax_a.bar_label(bars, fmt="%.2f", fontsize=7)
        ax_a.set_ylim(0.0, 1.15 * max(max(acts), 1e-3))
    else:
        ax_a.text(0.5, 0.5, "no SNN", ha="center", va="center", transform=ax_a.transAxes)
        ax_a.set_yticks([])
    ax_a.set(title="Spike activity", ylabel="spikes / neuron over T")
    ax_a.set_xticks(x, layers, rotation=45, ha="right", fontsize=8)
    for ax in (ax_d, ax_a):
        ax.grid(True, axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.93, hspace=0.3)
    return _save(fig, path)


def _check_finite(fn: str, name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{fn}: {name} must be finite, got {np.sum(~np.isfinite(a))} NaN/inf")


def plot_attention(images: np.ndarray, meta_maps: list, student_maps: list, names: list,
                   path: str) -> str:
    """A grid of attention maps: one row per image; the image, then per point meta | student.

    ``images`` (N, C, H, W) float, C = 1 (gray) or 3 (RGB), any range: each image is rescaled
    to [0, 1] for display. ``meta_maps[j]`` and ``student_maps[j]`` (N, h_j, w_j) float are the
    maps of the meta model and of the student at point ``names[j]``; the two maps of one image
    and point share one colour scale. Figure: 1.5 * (1 + 2 * P) x (0.75 + 1.5 * N) in for
    P = len(names). Raises TypeError/ValueError naming the argument. Returns ``path``.
    """
    fn = "plot_attention"
    images = check_array(fn, "images", images, ndim=4, dims="(N, C, H, W)")
    n, c = images.shape[:2]
    if n < 1 or c not in (1, 3):
        raise ValueError(f"{fn}: images must have N >= 1 images of C = 1 or 3 channels, "
                         f"got shape {images.shape}")
    _check_finite(fn, "images", images)
    for arg, value in (("meta_maps", meta_maps), ("student_maps", student_maps),
                       ("names", names)):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{fn}: {arg} must be a list, got {type(value).__name__}")
    if not names or len(meta_maps) != len(names) or len(student_maps) != len(names):
        raise ValueError(f"{fn}: meta_maps, student_maps and names must have one equal length "
                         f">= 1, got {len(meta_maps)}, {len(student_maps)} and {len(names)}")
    for j, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"{fn}: names[{j}] must be a str, got {type(name).__name__}")
        meta = check_array(fn, f"meta_maps[{j}]", meta_maps[j], ndim=3, dims="(N, h, w)")
        check_array(fn, f"student_maps[{j}]", student_maps[j], ndim=3, dims="(N, h, w)")
        if meta.shape[0] != n:
            raise ValueError(f"{fn}: meta_maps[{j}] ({name!r}) has shape {meta.shape}, expected "
                             f"N = {n} maps as images has shape {images.shape}")
        check_shape(fn, f"student_maps[{j}]", student_maps[j], meta.shape,
                    f"the shape of meta_maps[{j}] ({name!r})")
        _check_finite(fn, f"meta_maps[{j}]", meta)
        _check_finite(fn, f"student_maps[{j}]", student_maps[j])

    height = HEAD + CELL * n
    fig = _figure(CELL * (1 + 2 * len(names)), height)
    axes = fig.subplots(n, 1 + 2 * len(names), squeeze=False)
    axes[0, 0].set_title("image", fontsize=8)
    for i in range(n):
        img = images[i].astype(np.float64)
        span = img.max() - img.min()
        img = (img - img.min()) / span if span > 0 else np.zeros_like(img)
        if c == 1:
            axes[i, 0].imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            axes[i, 0].imshow(img.transpose(1, 2, 0))
        for j, name in enumerate(names):
            pair = (meta_maps[j][i], student_maps[j][i])
            lo, hi = min(float(m.min()) for m in pair), max(float(m.max()) for m in pair)
            for k, who in enumerate(("meta", "student")):
                ax = axes[i, 1 + 2 * j + k]
                ax.imshow(pair[k], cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
                if i == 0:
                    ax.set_title(f"{name} {who}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle("Attention maps: meta model vs student", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.1 / height,  # margins in inches
                        top=1.0 - (HEAD - 0.1) / height, wspace=0.08, hspace=0.08)
    return _save(fig, path)
