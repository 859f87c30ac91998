"""Report figures (refsnn/plots.py): sizes, content, determinism, atomic writes, validation.

The pixel sizes expected here follow the figure sizes documented in the module (inches * 100
dpi); content checks look for the colours the module draws with (tab:red bars, gray images).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

from refsnn import plots  # noqa: E402

TAB_RED = (214, 39, 40)  # matplotlib "tab:red", the spike-activity bars


def pixels(path) -> np.ndarray:
    """The PNG at ``path`` as an (H, W, 3) uint8 array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def size(path) -> tuple:
    with Image.open(path) as im:
        return im.size  # (width, height)


def run_records() -> list:
    recs = [{"stage": "ann", "epoch": e, "train_loss": 2.0 / e, "train_acc": 40.0 + 5 * e,
             "test_acc": 35.0 + 5 * e} for e in range(1, 5)]
    recs += [{"stage": "compress", "epoch": e, "train_loss": 1.2 / e, "train_ce": 1.0 / e,
              "train_at": 0.2 / e, "train_acc": 60.0, "test_acc": 55.0 + e} for e in (1, 2)]
    recs += [{"stage": "convert", "epoch": 0, "test_acc": 50.0}]
    recs += [{"stage": "snn", "epoch": e, "train_loss": 1.5 / e, "test_acc": 50.0 + 2 * e}
             for e in (1, 2, 3)]
    return recs


def attention_inputs(n=2, points=1, c=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, c, 8, 8))
    shapes = [(n, 4 + 2 * j, 4 + 2 * j) for j in range(points)]
    meta = [rng.random(s) for s in shapes]
    student = [rng.random(s) for s in shapes]
    return images, meta, student, [f"conv{j + 1}" for j in range(points)]


# --- import without matplotlib ---------------------------------------------------------------

def test_module_imports_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None; import refsnn.plots as p; "
            "print(p.have_matplotlib())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_import_does_not_load_matplotlib():
    code = "import sys, refsnn.plots as p; print('matplotlib' in sys.modules, p.have_matplotlib())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "True"]


# --- plot_curves ---------------------------------------------------------------------------------

def test_curves_size_content_and_no_tmp(tmp_path):
    path = str(tmp_path / "curves.png")
    assert plots.plot_curves(run_records(), path) == path
    assert size(path) == (1000, 400)  # 10 x 4 in at 100 dpi
    assert pixels(path).std() > 0
    assert os.listdir(tmp_path) == ["curves.png"]  # no curves.png.tmp left behind
    with Image.open(path) as im:
        assert "Software" not in im.info


def test_curves_deterministic_and_overwrites(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    b.write_bytes(b"not a png")
    plots.plot_curves(run_records(), str(a))
    plots.plot_curves(run_records(), str(b))
    assert a.read_bytes() == b.read_bytes()


def test_curves_skip_records_without_fields(tmp_path):
    """Records with nothing to draw leave the figure byte-identical; a NaN accuracy too."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plots.plot_curves(run_records(), str(a))
    extra = run_records() + [{"stage": "snn", "epoch": 9}, {"stage": "ann", "epoch": 7,
                                                          "test_acc": float("nan")}]
    plots.plot_curves(extra, str(b))
    assert a.read_bytes() == b.read_bytes()


def test_curves_without_loss(tmp_path):
    recs = [{"stage": "convert", "epoch": 0, "test_acc": 70.0}]
    path = tmp_path / "c.png"
    plots.plot_curves(recs, str(path))
    assert size(path) == (1000, 400) and pixels(path).std() > 0


@pytest.mark.parametrize("records, exc, words", [
    ([], ValueError, ["records", "test_acc"]),
    ([{"stage": "ann", "epoch": 1, "train_loss": 1.0}], ValueError, ["records", "test_acc"]),
    ([{"stage": "ann", "test_acc": 1.0}], ValueError, ["records[0]", "epoch"]),
    ([{"stage": "ann", "epoch": 1, "test_acc": 1.0}, 3], TypeError, ["records[1]", "dict"]),
    ([{"stage": "ann", "epoch": "1", "test_acc": 1.0}], TypeError, ["records[0]", "epoch"]),
    ({"stage": "ann"}, TypeError, ["records", "list"]),
])
def test_curves_errors(tmp_path, records, exc, words):
    path = tmp_path / "x.png"
    with pytest.raises(exc) as info:
        plots.plot_curves(records, str(path))
    assert all(w in str(info.value) for w in words), str(info.value)
    assert not path.exists()


# --- plot_layers ---------------------------------------------------------------------------------

LAYERS = ["conv1", "conv2", "conv3", "fc1"]


def test_layers_size_and_activity_panel(tmp_path):
    density = {"conv1": 1.0, "conv2": 0.3, "conv3": 0.1, "fc1": 0.05}
    with_snn, no_snn = tmp_path / "snn.png", tmp_path / "ann.png"
    plots.plot_layers(LAYERS, density, {"conv1": 0.4, "conv2": 0.2, "conv3": 0.1}, str(with_snn))
    plots.plot_layers(LAYERS, density, {}, str(no_snn))
    for p in (with_snn, no_snn):
        assert size(p) == (600, 600)  # max(6, 2 + 0.5 * 4) x 6 in
    red = [np.all(pixels(p) == TAB_RED, axis=-1).sum() for p in (with_snn, no_snn)]
    assert red[0] > 500 and red[1] == 0  # the activity bars, absent when there is no SNN
    assert sorted(os.listdir(tmp_path)) == ["ann.png", "snn.png"]


def test_layers_width_grows_and_missing_layers_are_zero(tmp_path):
    names = [f"layer{i}" for i in range(20)]
    path = tmp_path / "l.png"
    plots.plot_layers(names, {"layer0": 0.5}, {"layer19": 1.0}, str(path))  # others missing
    assert size(path) == (1200, 600)  # 2 + 0.5 * 20 = 12 in wide


def test_layers_deterministic(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for p in (a, b):
        plots.plot_layers(LAYERS, {"conv1": 0.5}, {"conv1": 0.7}, str(p))
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("layers, density, activity, exc, words", [
    ([], {}, {}, ValueError, ["layers"]),
    (["conv1", 2], {}, {}, TypeError, ["layers"]),
    (LAYERS, {"conv2": -0.1}, {}, ValueError, ["density", "conv2"]),
    (LAYERS, {"conv2": 1.5}, {}, ValueError, ["density", "conv2"]),
    (LAYERS, {"conv1": 0.5}, {"fc1": float("nan")}, ValueError, ["activity", "fc1"]),
    (LAYERS, {}, {"conv3": float("inf")}, ValueError, ["activity", "conv3"]),
    (LAYERS, {}, {"conv3": -2.0}, ValueError, ["activity", "conv3"]),
    (LAYERS, [0.5], {}, TypeError, ["density"]),
])
def test_layers_errors(tmp_path, layers, density, activity, exc, words):
    with pytest.raises(exc) as info:
        plots.plot_layers(layers, density, activity, str(tmp_path / "x.png"))
    assert all(w in str(info.value) for w in words), str(info.value)
    assert os.listdir(tmp_path) == []


# --- plot_attention ------------------------------------------------------------------------------

def test_attention_size_grows_with_points_and_images(tmp_path):
    for n, points in ((2, 1), (2, 3), (3, 2)):
        path = tmp_path / f"a{n}{points}.png"
        plots.plot_attention(*attention_inputs(n, points), str(path))
        # 1.5 * (1 + 2P) x (0.75 + 1.5N) inches at 100 dpi
        assert size(path) == (150 * (1 + 2 * points), 75 + 150 * n)
        assert pixels(path).std() > 0
    assert len(os.listdir(tmp_path)) == 3  # no .tmp files


def test_attention_rescales_each_image(tmp_path):
    """Display is per-image [0, 1]: an affine change of one image's range draws the same PNG."""
    images, meta, student, names = attention_inputs(2, 1)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plots.plot_attention(images, meta, student, names, str(a))
    images2 = images.copy()
    images2[0] = 255.0 * images2[0] + 40.0
    plots.plot_attention(images2, meta, student, names, str(b))
    assert a.read_bytes() == b.read_bytes()  # also: the same inputs give the same bytes
    images2[1] = images2[1][:, ::-1]  # a real change to the image shows
    plots.plot_attention(images2, meta, student, names, str(b))
    assert a.read_bytes() != b.read_bytes()


def test_attention_gray_and_rgb(tmp_path):
    """The image column is gray (R = G = B) for C = 1 and coloured for C = 3."""
    spread = {}
    for c in (1, 3):
        path = tmp_path / f"c{c}.png"
        plots.plot_attention(*attention_inputs(1, 1, c=c), str(path))
        px = pixels(path).astype(int)
        # centre of the first cell: 0.02 of 450 px + half a 1.5 in cell, 0.75 in below the top
        cell = px[75 + 55:75 + 95, 9 + 50:9 + 90]
        spread[c] = np.abs(cell - cell[..., :1]).max()
    assert spread[1] == 0 and spread[3] > 20


def test_atomic_write_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out.png"
    target.mkdir()  # os.replace of a file onto a directory fails
    with pytest.raises(OSError):
        plots.plot_attention(*attention_inputs(1, 1), str(target))
    assert sorted(os.listdir(tmp_path)) == ["out.png"] and target.is_dir()


def _attention_case(change):
    images, meta, student, names = attention_inputs(2, 2)
    args = {"images": images, "meta_maps": meta, "student_maps": student, "names": names}
    change(args)
    return args


@pytest.mark.parametrize("change, exc, words", [
    (lambda a: a.update(images=a["images"][0]), ValueError,
     ["images", "(3, 8, 8)", "4 dimensions"]),
    (lambda a: a.update(images=a["images"][:, :2]), ValueError, ["images", "1 or 3"]),
    (lambda a: a.update(images=a["images"].tolist()), TypeError, ["images", "list"]),
    (lambda a: a["images"].__setitem__((1, 0, 0, 0), np.nan), ValueError, ["images", "finite"]),
    (lambda a: a.update(names=[]), ValueError, ["names", "0"]),
    (lambda a: a.update(names=["conv1"]), ValueError, ["names", "2, 2 and 1"]),
    (lambda a: a.update(names=("conv1", 3)), TypeError, ["names[1]", "int"]),
    (lambda a: a.update(meta_maps=a["meta_maps"][0]), TypeError, ["meta_maps", "list"]),
    (lambda a: a["student_maps"].pop(), ValueError, ["student_maps", "2, 1 and 2"]),
    (lambda a: a["meta_maps"].__setitem__(1, a["meta_maps"][1][0]), ValueError,
     ["meta_maps[1]", "3 dimensions", "(6, 6)"]),
    (lambda a: a["meta_maps"].__setitem__(0, a["meta_maps"][0][:1]), ValueError,
     ["meta_maps[0]", "'conv1'", "N = 2"]),
    (lambda a: a["student_maps"].__setitem__(1, a["student_maps"][1][:, :5]), ValueError,
     ["student_maps[1]", "(2, 5, 6)", "(2, 6, 6)", "'conv2'"]),
    (lambda a: a["student_maps"][0].__setitem__((0, 0, 0), np.inf), ValueError,
     ["student_maps[0]", "finite"]),
])
def test_attention_errors(tmp_path, change, exc, words):
    with pytest.raises(exc) as info:
        plots.plot_attention(**_attention_case(change), path=str(tmp_path / "x.png"))
    assert all(w in str(info.value) for w in words), str(info.value)
    assert os.listdir(tmp_path) == []
