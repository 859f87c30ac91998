"""Pieces every training stage shares: seeds, optimizer dispatch, evaluation, checkpoints, logs.

Randomness is derived, never carried: the batch order of epoch e of stage s comes from
``np.random.default_rng([seed, s, e])`` and the augmentation and dropout draws of its step k
from ``np.random.default_rng([seed, s, e, k + 1])``. A run resumed from a checkpoint taken after
any step therefore replays exactly the draws an uninterrupted run makes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import NamedTuple

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint
from .data.transforms import iterate_batches, make_batch
from .optim import adam_init, adam_step, sgd_init, sgd_step
from .schedules import constant_lr, cosine_lr, step_lr

STAGE_IDS = {"ann": 0, "compress": 1, "convert": 2, "snn": 3}


def epoch_rng(seed: int, stage: str, epoch: int) -> np.random.Generator:
    """The generator of epoch ``epoch``'s batch order."""
    return np.random.default_rng([seed, STAGE_IDS[stage], epoch])


def step_rng(seed: int, stage: str, epoch: int, step: int) -> np.random.Generator:
    """The generator of one step's augmentation and dropout draws."""
    return np.random.default_rng([seed, STAGE_IDS[stage], epoch, step + 1])


def learning_rate(cfg: dict, it: int, total: int, warmup: int = 0) -> float:
    """The learning rate at iteration ``it`` of ``total`` (schedules stepped per iteration).

    The first ``warmup`` iterations ramp linearly: lr * (it + 1) / warmup; the schedule then
    runs over the remaining iterations (torch: LinearLR then the scheduler, in SequentialLR).
    """
    if it < warmup:
        return cfg["lr"] * (it + 1) / warmup
    it, total = it - warmup, total - warmup
    if cfg["schedule"] == "cosine":
        return cosine_lr(it, total, lr=cfg["lr"])
    if cfg["schedule"] == "step":  # x0.1 at 50 % and 75 % of the iterations
        return step_lr(it, lr=cfg["lr"], milestones=(total // 2, (3 * total) // 4), gamma=0.1)
    return constant_lr(it, lr=cfg["lr"])


def optimizer_init(cfg: dict, params: dict) -> dict:
    if cfg["optimizer"] == "adam":
        return adam_init(params, amsgrad=cfg["amsgrad"])
    return sgd_init(params)


def optimizer_step(cfg: dict, params, grads, state, *, lr: float, no_decay=(),
                   live=None) -> None:
    """One in-place step of the configured optimizer (torch.optim semantics); live: Adam's
    live elements (adam_step(live=), packed gradients)."""
    if cfg["optimizer"] == "adam":
        adam_step(params, grads, state, lr=lr, weight_decay=cfg["weight_decay"],
                  amsgrad=cfg["amsgrad"], no_decay=no_decay, live=live)
    elif live:
        raise ValueError("optimizer_step: live elements need optimizer 'adam', got "
                         f"{cfg['optimizer']!r}")
    else:
        sgd_step(params, grads, state, lr=lr, momentum=cfg["momentum"],
                 nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"], no_decay=no_decay)


def train_batches(data, cfg: dict, stage: str, epoch: int, dtype, *, start: int = 0):
    """(step, x float batch, y, rng) for one epoch, augmented, in the epoch's derived order.

    Steps before ``start`` are skipped (a resumed epoch); ``rng`` is the step's generator after
    the augmentation draws, for its dropout masks.
    """
    order = iterate_batches(len(data.train_y), cfg["batch_size"], shuffle=True,
                            rng=epoch_rng(cfg["seed"], stage, epoch))
    for k, idx in enumerate(order):
        if k < start:
            continue
        rng = step_rng(cfg["seed"], stage, epoch, k)
        x = make_batch(data.train_x[idx], data.mean, data.std, augment=cfg["augment"], rng=rng,
                       dtype=dtype)
        yield k, x, data.train_y[idx], rng


def evaluate(predict, x_uint8, y, mean, std, *, batch_size: int, dtype):
    """Accuracy (%) of ``predict(x) -> scores (N, classes)`` over a split, no augmentation."""
    correct = 0
    for idx in iterate_batches(len(y), batch_size, shuffle=False):
        x = make_batch(x_uint8[idx], mean, std, augment=False, dtype=dtype)
        correct += int((predict(x).argmax(axis=1) == y[idx]).sum())
    return 100.0 * correct / max(1, len(y))


def tally_step(running: dict, scores, y, bar, loss_sum: float) -> None:
    """Add one step's correct count and images to the epoch's running sums; advance the bar.

    loss_sum: the running loss total to show (the caller adds its own loss terms).
    """
    running["correct"] += int((scores.argmax(axis=1) == y).sum())
    running["seen"] += len(y)
    bar.update(1)
    bar.set_postfix(loss=f"{loss_sum / running['seen']:.3f}")


def end_epoch(bar, t0: float, seen: int, predict, data, cfg: dict, dtype):
    """Close an epoch's bar and score the model: (training seconds, training images/s, test
    accuracy %). seen: images trained in this process during the epoch; t0: its start."""
    bar.close()
    train_s = now() - t0
    test_acc = evaluate(predict, data.test_x, data.test_y, data.mean, data.std,
                        batch_size=cfg["eval_batch_size"], dtype=dtype)
    return train_s, seen / max(train_s, 1e-9), test_acc


def checkpoint_due(cfg: dict, k: int, spe: int) -> bool:
    """After step k (0-based) of an epoch of spe steps: a --checkpoint-every checkpoint?

    The last step never: the end-of-epoch checkpoint follows it.
    """
    every = cfg["checkpoint_every"]
    return bool(every) and (k + 1) % every == 0 and k + 1 < spe


def steps_per_epoch(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def progress(total: int, desc: str, unit: str = "batch"):
    """A tqdm bar on stderr (silent when stderr is not a terminal, unless forced)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit=unit, file=sys.stderr,
                disable=None, dynamic_ncols=True)


def save_stage(path, arrays: dict, *, cfg: dict, data, stage: str, epoch: int, step: int,
               running: dict, extra: dict | None = None) -> None:
    """Checkpoint after ``step`` steps of ``epoch`` (step == 0: the epoch is complete).

    meta: the stage, position (epoch, next step), running sums of the epoch so far (so a
    resumed epoch prints the same line), the configuration and the dataset description.
    """
    meta = {
        "stage": stage, "epoch": epoch, "step": step, "running": running,
        "config": cfg, "arch": cfg["arch"],
        "dataset": {"name": data.name, "classes": list(data.classes), "mean": list(data.mean),
                    "std": list(data.std), "in_shape": list(data.train_x.shape[1:])},
    }
    meta.update(extra or {})
    save_checkpoint(path, arrays, meta)


def split_state(arrays: dict):
    """Split checkpoint arrays into (params + masks + ..., optimizer state without 'optim.')."""
    params = {k: v for k, v in arrays.items() if not k.startswith("optim.")}
    state = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
    return params, state


def load_resume(path, cfg: dict, stage: str):
    """(arrays, meta) of a checkpoint to resume, or None when there is none.

    Refuses a checkpoint whose configuration differs in anything but the epoch count, so a
    resumed run cannot silently continue another experiment.
    """
    if not os.path.isfile(path):
        return None
    arrays, meta = load_checkpoint(path)
    if meta.get("stage") != stage:
        raise ValueError(f"--resume: {path} holds stage {meta.get('stage')!r}, not {stage!r}")
    old = {**_ADDED_LATER, **{k: v for k, v in meta["config"].items() if k not in _RESUME_FREE}}
    new = {k: v for k, v in cfg.items() if k not in _RESUME_FREE}
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        k = diff[0]
        raise ValueError(f"--resume: {path} was written with --{k.replace('_', '-')}="
                         f"{old.get(k)!r}, this run has {new.get(k)!r} ({len(diff)} differences)")
    return arrays, meta


_RESUME_FREE = {"resume", "out", "stages", "quiet"}
# configuration keys added after checkpoints were first written, with the value every run
# before them had: an older checkpoint resumes as if it recorded it
_ADDED_LATER = {"snn_kernels": "dense", "snn_channels": "full"}


class Resumed(NamedTuple):
    params: dict  # every array but the optimizer state (weights, masks, thresholds, leaks)
    state: dict  # the optimizer state, keys without the "optim." prefix
    epoch: int  # epochs completed
    step: int  # steps completed within epoch ``epoch``
    running: dict  # that epoch's running sums so far
    meta: dict


def resume_or_start(path, cfg: dict, stage: str, *, epochs: int, metrics, log) -> Resumed | None:
    """The checkpoint to continue from (with --resume and a file at ``path``), else None.

    Either way metrics.jsonl is cut back to match: a fresh run drops this stage's old lines,
    a resumed one the lines logged after its checkpoint. A complete checkpoint (epoch >=
    epochs) is returned as it is; the caller then has nothing to do.
    """
    resumed = load_resume(path, cfg, stage) if cfg["resume"] else None
    if resumed is None:
        metrics_truncate(metrics, stage, 0)
        return None
    arrays, meta = resumed
    params, state = split_state(arrays)
    if meta["epoch"] >= epochs:
        log(f"[{stage}] {path} is complete ({epochs} epochs): nothing to resume")
    else:
        log(f"[{stage}] resuming from {path}: epoch {meta['epoch'] + 1}, step {meta['step']}")
        metrics_truncate(metrics, stage, meta["epoch"] + 1)
    return Resumed(params, state, meta["epoch"], meta["step"], meta["running"], meta)


def save_with_state(path, params: dict, state: dict, **meta) -> None:
    """save_stage of the parameters (and masks) plus the optimizer state as optim.<key>."""
    arrays = dict(params)
    arrays.update({f"optim.{k}": v for k, v in state.items()})
    save_stage(path, arrays, **meta)


def metrics_truncate(path, stage: str, epoch: int) -> None:
    """Drop the lines of DIR/metrics.jsonl for ``stage`` at epochs >= ``epoch``.

    A resumed run calls this first: a killed run may have logged an epoch after its last
    checkpoint, and the resumed run logs that epoch again.
    """
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.readlines()
    def later(rec):
        return rec.get("stage") == stage and rec.get("epoch", -1) >= epoch

    keep = [ln for ln in lines if not later(json.loads(ln))]
    with open(path, "w") as f:
        f.writelines(keep)


def metrics_append(path, record: dict) -> None:
    """Append one JSON object as a line to DIR/metrics.jsonl."""
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def now() -> float:
    return time.perf_counter()
