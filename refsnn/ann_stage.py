"""Stage A (`ann`): train the uncompressed ANN, the meta-model, with cross-entropy.

One run of ``epochs`` epochs; a checkpoint ``DIR/ann.safetensors`` after every epoch (and every
``checkpoint_every`` steps), from which ``--resume`` continues bit for bit.
"""

from __future__ import annotations

import os

import numpy as np

from .checkpoint import check_names_and_shapes
from .loop import (STAGE_IDS, checkpoint_due, end_epoch, learning_rate, metrics_append, now,
                   optimizer_init, optimizer_step, progress, resume_or_start, save_with_state,
                   steps_per_epoch, tally_step, train_batches)
from .models.ann import ann_backward, ann_forward
from .models.arch import build_arch, draw_dropout_masks, init_params, param_shapes
from .ops.loss import cross_entropy_backward, cross_entropy_forward


def ann_arch(cfg: dict, data):
    """The stage-A architecture for a dataset (ANN dropout: 0.2 conv, 0.5 classifier)."""
    return build_arch(cfg["arch"], in_shape=tuple(data.train_x.shape[1:]),
                      classes=len(data.classes), width=cfg["width"], dropout_conv=0.2,
                      dropout_fc=0.5)


def ann_predict(arch, params):
    """predict(x) -> logits, evaluation mode (no dropout)."""
    return lambda x: ann_forward(arch, params, x, masks=None)[0]


def train_ann(cfg: dict, data, out_dir: str, *, log=print) -> str:
    """Run stage A; return the path of its final checkpoint."""
    dtype = np.dtype(cfg["dtype"])
    arch = ann_arch(cfg, data)
    path = os.path.join(out_dir, "ann.safetensors")
    metrics = os.path.join(out_dir, "metrics.jsonl")
    spe = steps_per_epoch(len(data.train_y), cfg["batch_size"])
    total, epochs = spe * cfg["epochs"], cfg["epochs"]
    warmup = min(total // 2, int(round(cfg["warmup_epochs"] * spe)))
    start_epoch, start_step, running = 0, 0, {"loss": 0.0, "correct": 0, "seen": 0}

    r = resume_or_start(path, cfg, "ann", epochs=epochs, metrics=metrics, log=log)
    if r is not None:
        params, state = r.params, r.state
        check_names_and_shapes(param_shapes(arch), params, what="--resume", path=path)
        start_epoch, start_step, running = r.epoch, r.step, r.running
        if start_epoch >= epochs:
            return path
    else:
        params = init_params(arch, np.random.default_rng([cfg["seed"], STAGE_IDS["ann"], 10**6]),
                             dtype)
        state = optimizer_init(cfg, params)

    def save(epoch, step):
        save_with_state(path, params, state, cfg=cfg, data=data, stage="ann", epoch=epoch,
                        step=step, running=running)

    for epoch in range(start_epoch, epochs):
        bar = progress(spe, f"ann {epoch + 1}/{epochs}")
        bar.update(start_step)
        t0, seen0 = now(), running["seen"]
        for k, x, y, rng in train_batches(data, cfg, "ann", epoch, dtype, start=start_step):
            masks = draw_dropout_masks(arch, len(y), rng, dtype)
            logits, tape = ann_forward(arch, params, x, masks=masks)
            loss = cross_entropy_forward(logits, y)
            grads = ann_backward(cross_entropy_backward(1.0, logits, y), arch, params, tape,
                                 masks=masks)
            optimizer_step(cfg, params, grads, state,
                           lr=learning_rate(cfg, epoch * spe + k, total, warmup))
            running["loss"] += loss * len(y)
            tally_step(running, logits, y, bar, running["loss"])
            if checkpoint_due(cfg, k, spe):
                save(epoch, k + 1)
        train_s, ips, test_acc = end_epoch(bar, t0, running["seen"] - seen0,
                                           ann_predict(arch, params), data, cfg, dtype)
        rec = {"stage": "ann", "epoch": epoch + 1,
               "train_loss": running["loss"] / running["seen"],
               "train_acc": 100.0 * running["correct"] / running["seen"], "test_acc": test_acc,
               "lr": learning_rate(cfg, (epoch + 1) * spe - 1, total, warmup),
               "images_per_s": ips, "seconds": now() - t0}
        start_step, running = 0, {"loss": 0.0, "correct": 0, "seen": 0}
        save(epoch + 1, 0)
        metrics_append(metrics, rec)
        log(f"[ann] epoch {epoch + 1}/{epochs}  train loss {rec['train_loss']:.4f}  "
            f"train acc {rec['train_acc']:.2f}%  test acc {test_acc:.2f}%  "
            f"{ips:.1f} img/s  ({rec['seconds']:.1f} s)")
    return path
