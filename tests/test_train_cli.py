"""The training command line: outputs, checkpoints, exact resume, evaluate, errors.

Runs on the embedded dataset at a tiny width and a few hundred images so each run takes
seconds. "Killed" runs are simulated by an exception raised from inside the loop at a chosen
step: everything the process wrote before that point stays on disk, as after a SIGKILL.
"""

import json
import os

import numpy as np
import pytest

from refsnn import ann_stage, evaluate, train
from refsnn.checkpoint import load_checkpoint, save_checkpoint

TINY = ["--arch", "vgg9", "--width", "0.0625", "--limit-train", "96", "--limit-test", "40",
        "--batch-size", "32", "--epochs", "2", "--quiet", "--optimizer", "adam", "--lr", "0.002",
        "--stages", "ann"]


class Killed(Exception):
    pass


def _kill_after(monkeypatch, n_steps):
    """Make the n-th optimizer step (1-based) raise, as if the process died just before it."""
    calls = {"n": 0}
    real = ann_stage.optimizer_step

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == n_steps:
            raise Killed()
        return real(*a, **k)

    monkeypatch.setattr(ann_stage, "optimizer_step", step)


def _arrays(path):
    arrays, meta = load_checkpoint(path)
    return arrays, meta


def _assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), f"{k} differs after resume"


def test_run_writes_checkpoint_metrics_and_config(tmp_path):
    out = tmp_path / "run"
    assert train.main(TINY + ["--out", str(out)]) == 0
    arrays, meta = _arrays(out / "ann.safetensors")
    # SPEC 7 names: parameters, and optimizer state under optim.<slot>.<name>
    assert "conv1.weight" in arrays and "fc3.weight" in arrays
    assert "optim.exp_avg.conv1.weight" in arrays
    assert meta["stage"] == "ann" and meta["epoch"] == 2 and meta["step"] == 0
    assert meta["dataset"]["name"] == "embedded" and len(meta["dataset"]["mean"]) == 1
    assert meta["versions"]["numpy"] == np.__version__
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(0 <= r["test_acc"] <= 100 and r["train_loss"] > 0 for r in lines)
    assert json.loads((out / "config.json").read_text())["width"] == 0.0625


@pytest.mark.parametrize("kill_at, every", [(5, 0), (2, 1)])
def test_resume_is_bit_identical(tmp_path, monkeypatch, kill_at, every):
    """A run killed mid-epoch 2 (kill_at=5 of 6 steps, epoch checkpoints only) or mid-epoch 1
    (kill_at=2, a checkpoint after every step) resumes to the uninterrupted run's bits."""
    args = TINY + ["--checkpoint-every", str(every)]
    ref = tmp_path / "ref"
    assert train.main(args + ["--out", str(ref)]) == 0

    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        _kill_after(m, kill_at)
        with pytest.raises(Killed):
            train.main(args + ["--out", str(out)])
    assert train.main(args + ["--out", str(out), "--resume"]) == 0

    a, meta_a = _arrays(ref / "ann.safetensors")
    b, meta_b = _arrays(out / "ann.safetensors")
    _assert_same_arrays(a, b)
    ref_lines = [json.loads(s) for s in (ref / "metrics.jsonl").read_text().splitlines()]
    res_lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    timing = {"images_per_s", "seconds"}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert strip(ref_lines) == strip(res_lines)


def test_resume_refuses_a_different_configuration(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(TINY + ["--out", str(out), "--epochs", "1"]) == 0
    capsys.readouterr()
    code = train.main(TINY + ["--out", str(out), "--epochs", "1", "--lr", "0.5", "--resume"])
    assert code == 2
    assert "--lr" in capsys.readouterr().err


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """If the rename never happens (killed mid-write), the old checkpoint is intact and no
    temporary file is left behind."""
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": np.arange(3.0)}, {"stage": "ann"})

    def boom(*a, **k):
        raise Killed()

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(Killed):
        save_checkpoint(path, {"w": np.zeros(3)}, {"stage": "ann"})
    monkeypatch.undo()
    arrays, _ = load_checkpoint(path)
    assert np.array_equal(arrays["w"], np.arange(3.0))
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]


def test_evaluate_reports_the_final_test_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(TINY + ["--out", str(out)]) == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    capsys.readouterr()
    assert evaluate.main([str(out / "ann.safetensors"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["test_acc"] == pytest.approx(last["test_acc"], abs=1e-12)
    assert got["test_images"] == 40


def test_evaluate_rejects_a_checkpoint_of_another_shape(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(TINY + ["--out", str(out), "--epochs", "1"]) == 0
    arrays, meta = load_checkpoint(out / "ann.safetensors")
    arrays["conv2.weight"] = arrays["conv2.weight"][:, :1].copy()
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, arrays, meta)
    assert evaluate.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "conv2.weight" in err and "expected" in err


@pytest.mark.parametrize("argv, match", [
    (["--epochs", "0"], "--epochs"),
    (["--stages", "ann,bogus"], "bogus"),
    (["--width", "-1"], "--width"),
    (["--arch", "vgg10"], "--arch"),
    (["--prune", "channel", "--mask", "learn"], "--mask learn with --prune channel"),
])
def test_bad_arguments_exit_with_a_message(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as e:
        train.main(["--out", str(tmp_path / "x")] + argv)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("argv, mask", [
    ([], "learn"), (["--prune", "channel"], "frozen"), (["--mask", "frozen"], "frozen"),
    (["--prune", "channel", "--mask", "frozen"], "frozen")])
def test_mask_default_follows_the_pruning_mode(argv, mask):
    """Stage snn keeps sparse learning in irregular mode, and freezes the masks in channel
    mode, where a filter regrown at 0 could not learn (the surrogate is 0 at u = 0)."""
    assert train.resolve_config(train.build_parser().parse_args(argv))["mask"] == mask


def test_missing_data_dir_is_reported(tmp_path, capsys):
    code = train.main(["--dataset", "cifar10", "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2
    assert "--data-dir" in capsys.readouterr().err


def test_evaluate_on_missing_file(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "nope.safetensors")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
