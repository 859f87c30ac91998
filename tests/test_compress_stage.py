"""Stage compress (B) and sparse learning in stage snn (D) through the command line.

Tiny runs (vgg9 at width 0.0625, 96 train / 40 test images, 3 steps per epoch): the masks'
invariants (exact live count, masked weights exactly 0, masks carried through convert and
snn, frozen masks, whole dead filters in channel mode), the AT term, and exact resume.
"""

import json
import shutil

import numpy as np
import pytest

from refsnn import compress_stage, train
from refsnn.checkpoint import load_checkpoint

TINY = ["--arch", "vgg9", "--width", "0.0625", "--limit-train", "96", "--limit-test", "40",
        "--batch-size", "32", "--epochs", "1", "--compress-epochs", "2", "--snn-epochs", "2",
        "--quiet", "--convert-batch", "32", "--convert-timesteps", "8", "--timesteps", "3",
        "--density", "0.3"]
PIPELINE = ["--stages", "ann,compress,convert,snn"]


class Killed(Exception):
    pass


def _masks(arrays):
    return {k: v for k, v in arrays.items() if k.startswith("mask.")}


def _live_total(masks):
    return (sum(int(np.count_nonzero(m)) for m in masks.values()),
            sum(m.size for m in masks.values()))


def _assert_masked_weights_zero(arrays):
    masks = _masks(arrays)
    assert masks, "no masks in the checkpoint"
    for k, m in masks.items():
        w = arrays[k[len("mask."):]]
        assert m.shape == w.shape and set(np.unique(m)) <= {0.0, 1.0}, k
        assert np.all(w[m == 0] == 0), f"{k}: a masked weight is nonzero"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    assert train.main(TINY + PIPELINE + ["--out", str(out)]) == 0
    return out


def test_compressed_checkpoint_has_exact_density_and_zero_masked_weights(pipeline):
    comp, meta = load_checkpoint(pipeline / "compress.safetensors")
    assert meta["stage"] == "compress" and meta["epoch"] == 2
    live, total = _live_total(_masks(comp))
    # every conv and linear weight is prunable; one sparse_update (after epoch 1) makes the
    # irregular live count exact
    weights = [k for k in comp if k.endswith(".weight") and not k.startswith(("mask.", "optim."))]
    assert sorted(_masks(comp)) == sorted(f"mask.{k}" for k in weights) and len(weights) == 10
    assert live == round(0.3 * total)
    _assert_masked_weights_zero(comp)


def test_masks_flow_through_convert_and_snn(pipeline):
    comp, _ = load_checkpoint(pipeline / "compress.safetensors")
    conv, meta_c = load_checkpoint(pipeline / "convert.safetensors")
    snn, meta_s = load_checkpoint(pipeline / "snn.safetensors")
    # convert's source is this run's compressed model: same masks and weights
    assert meta_c["source"].endswith("compress.safetensors")
    assert sorted(_masks(conv)) == sorted(_masks(comp))
    for k, m in _masks(comp).items():
        assert np.array_equal(conv[k], m) and np.array_equal(conv[k[5:]], comp[k[5:]])
    _assert_masked_weights_zero(conv)
    _assert_masked_weights_zero(snn)
    # stage D keeps the density of stage B (one sparse_update after its epoch 1) ...
    assert _live_total(_masks(snn)) == _live_total(_masks(comp))
    assert meta_s["target_density"] == pytest.approx(0.3, abs=1e-4)
    # ... and learns the masks (--mask learn is the default)
    assert any(not np.array_equal(snn[k], conv[k]) for k in _masks(conv))


def test_metrics_record_ce_and_at_separately(pipeline):
    lines = [json.loads(s) for s in (pipeline / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines] == ["ann", "compress", "compress", "convert", "snn", "snn"]
    rec = [r for r in lines if r["stage"] == "compress"]
    for r in rec:
        assert r["train_at"] > 0 and r["train_ce"] > 0
        assert r["train_loss"] == pytest.approx(r["train_ce"] + r["train_at"])
        assert r["compression_ratio"] == pytest.approx(1 / r["density"])
    assert "prune_rate" in rec[0] and "prune_rate" not in rec[1]  # none after the last epoch
    assert rec[1]["density"] == pytest.approx(0.3, abs=1e-4)
    assert all("density" in r for r in lines if r["stage"] == "snn")


def test_frozen_masks_stay_those_of_convert(pipeline, tmp_path):
    out = tmp_path / "frozen"
    out.mkdir()
    shutil.copy(pipeline / "convert.safetensors", out / "convert.safetensors")
    assert train.main(TINY + ["--stages", "snn", "--mask", "frozen", "--out", str(out)]) == 0
    conv, _ = load_checkpoint(out / "convert.safetensors")
    snn, _ = load_checkpoint(out / "snn.safetensors")
    assert sorted(_masks(snn)) == sorted(_masks(conv))
    for k in _masks(conv):
        assert np.array_equal(snn[k], conv[k]), k
    _assert_masked_weights_zero(snn)


def test_channel_mode_kills_whole_filters(tmp_path):
    out = tmp_path / "channel"
    assert train.main(TINY + ["--stages", "ann,compress", "--prune", "channel",
                              "--out", str(out)]) == 0
    comp, _ = load_checkpoint(out / "compress.safetensors")
    _assert_masked_weights_zero(comp)
    dead = 0
    for k, m in _masks(comp).items():
        if m.ndim == 4:  # conv: each output filter entirely live or entirely dead
            f = m.reshape(m.shape[0], -1)
            assert np.all(f == f[:, :1]), f"{k} is not constant per filter"
            dead += int((f[:, 0] == 0).sum())
    assert dead > 0
    live, total = _live_total(_masks(comp))
    assert 0.25 < live / total < 0.35


@pytest.mark.parametrize("kill_at", [3, 5])  # before epoch 1's sparse_update; mid epoch 2
def test_compress_resume_is_bit_identical(tmp_path, monkeypatch, kill_at):
    args = TINY + ["--stages", "ann,compress", "--checkpoint-every", "1"]
    ref = tmp_path / "ref"
    assert train.main(args + ["--out", str(ref)]) == 0
    out = tmp_path / "killed"
    calls = {"n": 0}
    real = compress_stage.optimizer_step

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Killed()
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(compress_stage, "optimizer_step", step)
        with pytest.raises(Killed):
            train.main(args + ["--out", str(out)])
    assert train.main(args + ["--out", str(out), "--resume"]) == 0
    a, _ = load_checkpoint(ref / "compress.safetensors")
    b, _ = load_checkpoint(out / "compress.safetensors")
    assert sorted(a) == sorted(b) and _masks(a)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{k} differs"
    ref_lines = (ref / "metrics.jsonl").read_text().splitlines()
    out_lines = (out / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(s).items() if k not in ("seconds", "images_per_s")}
             for s in ref_lines], [{k: v for k, v in json.loads(s).items()
                                    if k not in ("seconds", "images_per_s")} for s in out_lines]
    assert strip[0] == strip[1]


def test_compress_without_meta_model_is_an_error(tmp_path, capsys):
    assert train.main(TINY + ["--stages", "compress", "--out", str(tmp_path / "x")]) == 2
    assert "ann.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--density", "0"], ["--density", "1.5"], ["--beta", "-1"],
                                  ["--compress-epochs", "0"]])
def test_bad_compression_flags(tmp_path, capsys, flag):
    with pytest.raises(SystemExit):
        train.main(TINY + flag + ["--out", str(tmp_path / "x")])
    assert flag[0] in capsys.readouterr().err


def test_sparse_snn_resume_is_bit_identical(pipeline, tmp_path, monkeypatch):
    from refsnn import snn_stage

    runs = {}
    for name in ("ref", "killed"):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        shutil.copy(pipeline / "convert.safetensors", runs[name] / "convert.safetensors")
    args = TINY + ["--stages", "snn"]
    assert train.main(args + ["--out", str(runs["ref"])]) == 0
    calls = {"n": 0}
    real = snn_stage.optimizer_step

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, after the masks' update at the end of epoch 1
            raise Killed()
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(snn_stage, "optimizer_step", step)
        with pytest.raises(Killed):
            train.main(args + ["--out", str(runs["killed"])])
    assert train.main(args + ["--out", str(runs["killed"]), "--resume"]) == 0
    a, meta_a = load_checkpoint(runs["ref"] / "snn.safetensors")
    b, meta_b = load_checkpoint(runs["killed"] / "snn.safetensors")
    assert sorted(a) == sorted(b) and _masks(a)
    assert meta_a["target_density"] == meta_b["target_density"]
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs after resume"


def test_evaluate_compressed_checkpoint_reports_its_compression(pipeline, capsys):
    from refsnn import evaluate

    capsys.readouterr()
    assert evaluate.main([str(pipeline / "compress.safetensors"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    last = [json.loads(s) for s in (pipeline / "metrics.jsonl").read_text().splitlines()
            if json.loads(s)["stage"] == "compress"][-1]
    assert r["test_acc"] == pytest.approx(last["test_acc"], abs=1e-12)
    # the live count after the last epoch's model is exactly round(0.3 * total)
    assert r["compression_ratio"] == pytest.approx(1 / 0.3, rel=1e-3)


def test_convert_takes_an_earlier_runs_compressed_ann(pipeline, tmp_path):
    # --stages convert in a folder that holds compress.safetensors converts the compressed ANN
    # (its masks come along), not the meta-model given by --ann-checkpoint
    out = tmp_path / "again"
    out.mkdir()
    shutil.copy(pipeline / "compress.safetensors", out / "compress.safetensors")
    argv = TINY + ["--stages", "convert", "--out", str(out),
                   "--ann-checkpoint", str(pipeline / "ann.safetensors")]
    assert train.main(argv) == 0
    conv, meta = load_checkpoint(out / "convert.safetensors")
    ref, _ = load_checkpoint(pipeline / "convert.safetensors")
    assert meta["source"].endswith("compress.safetensors")
    assert _masks(conv) and all(np.array_equal(conv[k], ref[k]) for k in _masks(conv))
    for k in ref:
        if k.endswith(".weight") and not k.startswith("mask."):
            assert np.array_equal(conv[k], ref[k]), k
