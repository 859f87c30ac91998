"""Stage E (`report`): the results table agrees with the training run and with the checkpoints.

One tiny A-E run (vgg9 at width 0.0625, 96 train / 40 test images, density 0.3): the report
re-scores every checkpoint, so its accuracies must equal those the stages logged (same weights,
same test images, same eval path), its compression ratios must equal the masks' counts, and its
energy figures must obey SPEC 6's formulas.
"""

import json
import math
import re

import numpy as np
import pytest

from refsnn import report, train
from refsnn.checkpoint import load_checkpoint

TINY = ["--arch", "vgg9", "--width", "0.0625", "--limit-train", "96", "--limit-test", "40",
        "--batch-size", "32", "--epochs", "1", "--compress-epochs", "2", "--snn-epochs", "1",
        "--quiet", "--convert-batch", "32", "--convert-timesteps", "8", "--timesteps", "3",
        "--density", "0.3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    assert train.main(TINY + ["--out", str(out)]) == 0  # default --stages: all five
    rep = json.loads((out / "report.json").read_text())
    metrics = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    return out, rep, metrics


def _live_total(arrays):
    masks = [v for k, v in arrays.items() if k.startswith("mask.")]
    return sum(int(np.count_nonzero(m)) for m in masks), sum(m.size for m in masks)


def test_default_stages_are_the_whole_pipeline():
    cfg = train.resolve_config(train.build_parser().parse_args([]))
    assert cfg["stages"] == "ann,compress,convert,snn,report"
    # the embedded subset's measured stage B-D defaults; SPEC 4.1/5.4/5.5 values elsewhere
    assert (cfg["convert_scale"], cfg["snn_lr"], cfg["sparse_init"]) == (0.6, 1e-3, "scaled")
    assert cfg["beta"] == 100.0
    for t, alpha in ((5, 0.2), (6, 0.3)):
        other = train.resolve_config(train.build_parser().parse_args(
            ["--dataset", "fashion-mnist", "--timesteps", str(t)]))
        assert (other["convert_scale"], other["snn_lr"], other["beta"]) == (alpha, 5e-4, 1000.0)
    explicit = train.resolve_config(train.build_parser().parse_args(
        ["--convert-scale", "0.2", "--beta", "1000"]))
    assert (explicit["convert_scale"], explicit["beta"]) == (0.2, 1000.0)


def test_report_accuracies_equal_the_logged_ones(run):
    out, rep, metrics = run
    last = {}
    for r in metrics:
        last[r["stage"]] = r  # the last epoch of each stage
    assert set(rep["models"]) == {"ann", "compress", "convert", "snn"}
    for stage, m in rep["models"].items():
        assert m["test_acc"] == pytest.approx(last[stage]["test_acc"], abs=1e-9), stage
    meta = rep["models"]["ann"]["test_acc"]
    for stage, d in rep["accuracy_vs_meta_model"].items():
        assert d == pytest.approx(rep["models"][stage]["test_acc"] - meta)
    assert rep["run"]["test_images"] == 40 and rep["run"]["timesteps"] == 3


def test_report_compression_equals_the_masks(run):
    out, rep, _ = run
    for stage in ("compress", "convert", "snn"):
        live, total = _live_total(load_checkpoint(out / f"{stage}.safetensors")[0])
        c = rep["models"][stage]["compression"]
        assert (c["live"], c["total"]) == (live, total)
        assert c["ratio"] == pytest.approx(total / live)
        assert 1 / c["ratio"] == pytest.approx(0.3, abs=0.01)
    assert rep["models"]["ann"]["compression"]["ratio"] == 1.0
    snn, _ = load_checkpoint(out / "snn.safetensors")
    for row in rep["layers"]:
        m = snn[f"mask.{row['layer']}.weight"]
        assert row["weights"] == m.size
        assert row["density_snn"] == pytest.approx(np.count_nonzero(m) / m.size)


def test_report_energy_follows_spec6(run):
    _, rep, _ = run
    snn, e = rep["models"]["snn"], rep["energy"]
    # E_SNN = MACs * 4.6 pJ + SynOps * 0.9 pJ; the dense ANN's E = 4.6 pJ * its nonzero MACs,
    # which for the meta-model (no exact zero weight) is what the ANN row reports
    assert snn["energy_snn_pj"] == pytest.approx(4.6 * snn["macs"] + 0.9 * snn["synops_total"])
    assert e["snn_uj"] == pytest.approx(snn["energy_snn_pj"] / 1e6)
    assert e["dense_ann_uj"] == pytest.approx(rep["models"]["ann"]["energy_ann_pj"] / 1e6)
    assert e["ratio_vs_dense_ann"] == pytest.approx(e["snn_uj"] / e["dense_ann_uj"])
    # the ANN of the SNN's own live weights (its nonzero MACs at E_MAC), whose ratio the
    # report gives besides the dense one; it has fewer nonzero MACs than the dense ANN
    assert e["compressed_ann_uj"] == pytest.approx(snn["energy_ann_pj"] / 1e6)
    assert rep["models"]["compress"]["energy_ann_pj"] < rep["models"]["ann"]["energy_ann_pj"]
    assert e["ratio_vs_compressed_ann"] > e["ratio_vs_dense_ann"]
    acts = [r["spike_activity"] for r in rep["layers"] if r["spike_activity"] is not None]
    assert len(acts) == 9 and all(0 <= a <= 3 for a in acts)  # spikes per neuron over T = 3


def test_report_markdown_shows_the_json_figures(run):
    out, rep, _ = run
    md = (out / "report.md").read_text()
    for stage, label in report.MODELS:
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        assert f"| {rep['models'][stage]['test_acc']:.2f} |" in row, row
    assert f"{rep['energy']['ratio_vs_dense_ann']:.4f}" in md
    assert (f"the ANN with the SNN's live weights {rep['energy']['compressed_ann_uj']:.4g} uJ"
            in md)
    layer_rows = [line for line in md.splitlines() if re.match(r"\| (conv|fc)\d+ \|", line)]
    assert len(layer_rows) == 10
    assert set(rep["seconds"]) == {"ann", "compress", "convert", "snn"}


def test_report_of_one_checkpoint(run, tmp_path, capsys):
    out, rep, _ = run
    assert report.main([str(out / "convert.safetensors"), "--out", str(tmp_path),
                        "--no-plots"]) == 0
    one = json.loads((tmp_path / "report.json").read_text())
    assert set(one["models"]) == {"convert"}
    assert one["models"]["convert"]["test_acc"] == rep["models"]["convert"]["test_acc"]
    assert "| compressed ANN | not run |" in capsys.readouterr().out


def test_report_errors(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "holds none of" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "neither a run folder nor a checkpoint" in capsys.readouterr().err


def test_json_safe_writes_inf_as_null():
    assert report._json_safe({"a": math.inf, "b": [1.0, -math.inf, np.float32(2)]}) == \
        {"a": None, "b": [1.0, None, 2.0]}


def test_channel_report_states_flop_reduction(tmp_path):
    out = tmp_path / "channel"
    argv = TINY + ["--prune", "channel", "--stages", "ann,compress,report", "--out", str(out)]
    assert train.main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    c = rep["models"]["compress"]["compression"]
    assert c["flop_reduction"] == pytest.approx(c["dense_flops"] / c["channel_flops"])
    assert c["flop_reduction"] > 1
    comp, _ = load_checkpoint(out / "compress.safetensors")
    for row in rep["layers"]:
        m = comp[f"mask.{row['layer']}.weight"]
        if m.ndim == 4:
            live = int(m.reshape(m.shape[0], -1).any(axis=1).sum())
            assert row["live_filters"] == [live, m.shape[0]]
    assert "FLOP reduction" in (out / "report.md").read_text()


def test_plots_are_listed_and_written(run):
    pytest.importorskip("matplotlib")
    out, rep, _ = run
    assert rep["plots"] == ["curves.png", "layers.png", "attention.png"]
    for name in rep["plots"]:
        assert (out / name).stat().st_size > 0


def test_resnet_report_rows_follow_the_weight_layers(tmp_path):
    from refsnn.models.arch import build_arch, weight_layers

    out = tmp_path / "resnet"
    argv = [a if a != "vgg9" else "resnet12" for a in TINY]
    assert train.main(argv + ["--stages", "ann,compress,convert,snn,report", "--prune",
                              "channel", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    arch = build_arch("resnet12", in_shape=(1, 28, 28), classes=10, width=0.0625)
    assert [r["layer"] for r in rep["layers"]] == [layer.name for layer in weight_layers(arch)]
    for r in rep["layers"]:  # a 1x1 shortcut and the output layer have no neuron
        no_neuron = r["layer"].endswith("shortcut") or r["layer"] == "fc"
        assert (r["spike_activity"] is None) == no_neuron, r["layer"]
    snn = rep["models"]["snn"]
    # SynOps total includes the identity shortcuts ("layer1.0.shortcut": one accumulate per
    # nonzero input), which have no weight and so no row
    assert snn["synops_total"] == pytest.approx(sum(snn["synops"].values()))
    assert "layer1.0.shortcut" in snn["synops"]
