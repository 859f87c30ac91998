"""Stages convert and snn through the command line: files, clamps, exact resume, evaluate."""

import json

import numpy as np
import pytest

from refsnn import evaluate, snn_stage, train
from refsnn.checkpoint import load_checkpoint
from refsnn.models.arch import build_arch
from refsnn.models.snn import snn_init_neurons, spiking_layers

TINY = ["--arch", "vgg9", "--width", "0.0625", "--limit-train", "96", "--limit-test", "40",
        "--batch-size", "32", "--epochs", "1", "--snn-epochs", "2", "--quiet",
        "--convert-batch", "32", "--convert-timesteps", "8", "--timesteps", "3"]


class Killed(Exception):
    pass


def test_pipeline_writes_snn_checkpoints(tmp_path):
    out = tmp_path / "run"
    assert train.main(TINY + ["--stages", "ann,convert,snn", "--out", str(out)]) == 0
    conv, meta_c = load_checkpoint(out / "convert.safetensors")
    snn, meta_s = load_checkpoint(out / "snn.safetensors")
    assert meta_c["stage"] == "convert" and meta_s["stage"] == "snn" and meta_s["epoch"] == 2
    arch = build_arch("vgg9", in_shape=(1, 28, 28), classes=10, width=0.0625,
                      dropout_conv=0.2, dropout_fc=0.2)
    for layer in spiking_layers(arch):
        # SPEC 5.4: leak starts at 1; thresholds are positive; SPEC 5.1 clamps after training
        assert conv[f"{layer.name}.leak"] == 1.0 and conv[f"{layer.name}.threshold"] > 0
        assert snn[f"{layer.name}.leak"] <= 1.0 and snn[f"{layer.name}.threshold"] >= 1e-3
        assert snn[f"{layer.name}.threshold"].shape == ()
    assert "fc3.threshold" not in snn  # the output layer has no neuron
    # stage D's optimizer state covers weights, thresholds and leaks (Adam with amsgrad)
    assert "optim.max_exp_avg_sq.conv1.threshold" in snn
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines] == ["ann", "convert", "snn", "snn"]
    assert set(lines[-1]["thresholds"]) == {layer.name for layer in spiking_layers(arch)}
    assert 0 <= lines[-1]["spike_activity"] <= 3  # spikes per neuron over T = 3 steps


def test_clamp_neurons_enforces_spec_bounds():
    arch = build_arch("vgg9", in_shape=(1, 16, 16), classes=3, width=0.0625)
    params = snn_init_neurons(arch, np.float64)
    params["conv1.leak"][...] = 1.5
    params["conv2.threshold"][...] = -2.0
    params["conv3.leak"][...] = 0.25
    snn_stage.clamp_neurons(arch, params)
    assert params["conv1.leak"] == 1.0 and params["conv2.threshold"] == 1e-3
    assert params["conv3.leak"] == 0.25 and params["conv1.threshold"] == 1.0


def test_snn_stage_resume_is_bit_identical(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    assert train.main(TINY + ["--stages", "ann,convert,snn", "--out", str(ref)]) == 0
    out = tmp_path / "killed"
    assert train.main(TINY + ["--stages", "ann,convert", "--out", str(out)]) == 0
    calls = {"n": 0}
    real = snn_stage.optimizer_step

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, step 2 of 3
            raise Killed()
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(snn_stage, "optimizer_step", step)
        with pytest.raises(Killed):
            train.main(TINY + ["--stages", "snn", "--out", str(out)])
    assert train.main(TINY + ["--stages", "snn", "--out", str(out), "--resume"]) == 0
    a, _ = load_checkpoint(ref / "snn.safetensors")
    b, _ = load_checkpoint(out / "snn.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs after resume"


def test_snn_stage_without_convert_checkpoint_is_an_error(tmp_path, capsys):
    code = train.main(TINY + ["--stages", "snn", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "convert.safetensors" in capsys.readouterr().err


def test_evaluate_snn_reports_spec6_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(TINY + ["--stages", "ann,convert,snn", "--out", str(out)]) == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    capsys.readouterr()
    assert evaluate.main([str(out / "snn.safetensors"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["test_acc"] == pytest.approx(last["test_acc"], abs=1e-12)
    assert r["compression_ratio"] == 1.0 and r["timesteps"] == 3
    assert set(r["spike_activity"]) == {f"conv{i}" for i in range(1, 8)} | {"fc1", "fc2"}
    # E_SNN = MACs * 4.6 pJ + SynOps * 0.9 pJ (SPEC 6)
    assert r["energy_snn_pj"] == pytest.approx(4.6 * r["macs"] + 0.9 * r["synops_total"])
    assert evaluate.main([str(out / "snn.safetensors")]) == 0
    assert "spike activity" in capsys.readouterr().out


def test_sparse_kernels_train_the_same_snn_to_rounding(tmp_path, monkeypatch):
    # one compressed float64 model, stage D twice from its convert checkpoint with frozen
    # masks: the weight-sparse layers must end at the dense path's weights to rounding
    import shutil

    monkeypatch.setattr(snn_stage, "SPARSE_MAX_DENSITY",  # every layer that can
                        {"conv": 1.0, "linear": 1.0})
    used = []
    packs = snn_stage._sparse_packs
    monkeypatch.setattr(snn_stage, "_sparse_packs", lambda *a: used.append(packs(*a)) or used[-1])

    base = TINY + ["--dtype", "float64", "--density", "0.3", "--compress-epochs", "1",
                   "--mask", "frozen", "--snn-epochs", "1"]
    src = tmp_path / "src"
    assert train.main(base + ["--stages", "ann,compress,convert", "--out", str(src)]) == 0
    runs = {}
    for kernels in ("dense", "sparse"):
        out = tmp_path / kernels
        out.mkdir()
        shutil.copy(src / "convert.safetensors", out / "convert.safetensors")
        assert train.main(base + ["--stages", "snn", "--snn-kernels", kernels,
                                  "--out", str(out)]) == 0
        runs[kernels] = load_checkpoint(out / "snn.safetensors")[0]
    assert len(used) == 1 and sorted(used[0]) == sorted(  # conv2..conv7, fc1, fc2 ran sparse
        [f"conv{i}" for i in range(2, 8)] + ["fc1", "fc2"])
    dense, sparse = runs["dense"], runs["sparse"]
    for key, ref in dense.items():
        if key.startswith(("optim.", "mask.")) or not isinstance(ref, np.ndarray):
            continue
        err = float(np.abs(sparse[key] - ref).max(initial=0.0))
        assert err <= 1e-9 * max(1.0, float(np.abs(ref).max(initial=0.0))), key
    for key in (k for k in dense if k.startswith("mask.")):
        np.testing.assert_array_equal(sparse[key], dense[key])  # frozen
        w = sparse[key[len("mask."):]]
        assert np.all(w[sparse[key] == 0] == 0)  # pruned weights stay exactly zero


def test_sparse_kernels_need_frozen_masks(tmp_path, capsys):
    with pytest.raises(SystemExit):  # argparse's error exit, with the message on stderr
        train.main(TINY + ["--stages", "snn", "--snn-kernels", "sparse", "--out",
                           str(tmp_path)])
    assert "--snn-kernels sparse needs --mask frozen" in capsys.readouterr().err


def test_evaluate_event_engine_gives_the_reference_accuracy_and_activity(tmp_path, capsys):
    # float64: the event engine's different summation order cannot flip a spike here
    out = tmp_path / "run"
    args = TINY + ["--dtype", "float64", "--density", "0.3", "--compress-epochs", "1",
                   "--snn-epochs", "1"]
    assert train.main(args + ["--stages", "ann,compress,convert,snn", "--out", str(out)]) == 0
    capsys.readouterr()
    reports = {}
    for engine in ("reference", "event"):
        assert evaluate.main([str(out / "snn.safetensors"), "--json", "--engine", engine]) == 0
        reports[engine] = json.loads(capsys.readouterr().out)
    ref, ev = reports["reference"], reports["event"]
    assert ev["engine"] == "event" and ev["test_acc"] == ref["test_acc"]
    assert ev["spike_activity"] == ref["spike_activity"]  # the same spike counts
    assert ev["spike_activity_network"] == ref["spike_activity_network"]
    assert evaluate.main([str(out / "snn.safetensors"), "--engine", "event"]) == 0
    assert "event engine" in capsys.readouterr().out


def test_channel_compact_trains_the_same_snn_to_rounding(tmp_path, capsys):
    # one channel-pruned float64 model, stage D twice from its convert checkpoint (masks
    # frozen, channel mode's default): without its dead channels, and at full size. The
    # weights, thresholds, leaks and the logged spike activity must agree to rounding
    import shutil

    base = TINY + ["--dtype", "float64", "--prune", "channel", "--density", "0.3",
                   "--compress-epochs", "2", "--snn-epochs", "1"]
    src = tmp_path / "src"
    assert train.main(base + ["--stages", "ann,compress,convert", "--out", str(src)]) == 0
    runs, logs = {}, {}
    for mode in ("compact", "full"):
        out = tmp_path / mode
        out.mkdir()
        shutil.copy(src / "convert.safetensors", out / "convert.safetensors")
        capsys.readouterr()
        assert train.main([a for a in base if a != "--quiet"] + [
            "--stages", "snn", "--snn-channels", mode, "--out", str(out)]) == 0
        logs[mode] = capsys.readouterr().out
        runs[mode] = load_checkpoint(out / "snn.safetensors")[0]
        runs[mode + ".metrics"] = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "run physically smaller" in logs["compact"]
    assert "run physically smaller" not in logs["full"]
    full, compact = runs["full"], runs["compact"]
    for key, ref in full.items():
        if not isinstance(ref, np.ndarray):
            continue
        err = float(np.abs(compact[key] - ref).max(initial=0.0))
        assert err <= 1e-9 * max(1.0, float(np.abs(ref).max(initial=0.0))), key
    a, b = runs["compact.metrics"], runs["full.metrics"]
    assert abs(a["spike_activity"] - b["spike_activity"]) <= 1e-12
    assert a["test_acc"] == b["test_acc"]


def test_channel_compact_refuses_sparse_kernels(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(TINY + ["--stages", "snn", "--prune", "channel", "--snn-kernels", "sparse",
                           "--snn-channels", "compact", "--out", str(tmp_path)])
    assert "--snn-channels compact with --snn-kernels sparse" in capsys.readouterr().err


@pytest.mark.parametrize("argv, kernels, channels", [
    ([], "dense", "compact"), (["--mask", "frozen"], "sparse", "full"),
    (["--prune", "channel"], "dense", "compact"),
    (["--mask", "frozen", "--snn-kernels", "dense"], "dense", "compact")])
def test_snn_kernels_auto(argv, kernels, channels):
    """auto: the weight-sparse kernels where they apply (frozen irregular masks), else dense;
    channel mode runs the compact network on the dense kernels instead."""
    cfg = train.resolve_config(train.build_parser().parse_args(argv))
    assert (cfg["snn_kernels"], cfg["snn_channels"]) == (kernels, channels)


def test_sparse_packs_take_the_layers_below_their_kinds_threshold():
    """Convs at density <= 0.1 and hidden linears at <= 0.05 run weight-sparse (measured
    thresholds, SPARSE_MAX_DENSITY); denser layers stay on the GEMMs."""
    arch = build_arch("vgg9", in_shape=(1, 28, 28), classes=10, width=0.25)
    rng = np.random.default_rng(0)
    params = {}
    live = {"conv2": 0.1, "conv3": 0.11, "conv4": 0.05, "fc1": 0.05, "fc2": 0.06}
    for name, shape in snn_stage.snn_param_shapes(arch).items():
        if not name.endswith(".weight"):
            continue
        w = rng.standard_normal(shape)
        flat = w.reshape(-1)
        keep = int(live.get(name[:-len(".weight")], 1.0) * flat.size)  # density <= the value
        flat[rng.permutation(flat.size)[keep:]] = 0.0
        params[name] = w
    assert sorted(snn_stage._sparse_packs(arch, params)) == ["conv2", "conv4", "fc1"]
