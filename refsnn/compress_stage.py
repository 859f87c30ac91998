"""Stage B (`compress`): a sparse student of the stage-A architecture, trained with CE + L_AT.

    student   same architecture as stage A (ANN dropout 0.2 conv / 0.5 classifier), random init
              from default_rng([seed, 1, 10**6]); masks init_masks(density, mode) drawn from
              default_rng([seed, 1, 10**6 + 1]) (stage id 1 = "compress"; epochs use [seed, 1, e])
    teacher   the frozen stage-A meta-model (--ann-checkpoint or DIR/ann.safetensors), run in
              evaluation mode: no dropout, no gradient, weights never change
    loss      CE(student logits, y) + L_AT (SPEC 4.1, beta = --beta) between the attention maps
              of the student's and the teacher's activations at attention_layers(arch); the
              student's are the post-ReLU activations before dropout (the tape), the same x
              (augmented batch) goes through both
    sparsity  SPEC 4.2: apply_masks after init and after every optimizer step; at the end of
              every epoch but the last, sparse_update with prune_rate(it, total) (it = iterations
              done, total = iterations of the stage) and the optimizer's momenta, target
              density --density, mode --prune

-> DIR/compress.safetensors after every epoch (and every ``checkpoint_every`` steps): weights,
masks ``mask.<layer>.weight``, optimizer state; ``--resume`` continues bit for bit (masks come
from the checkpoint). With one epoch no sparse_update runs, so the live count is the Bernoulli
draw of init_masks (about d * total), not exactly round(d * total).
"""

from __future__ import annotations

import os

import numpy as np

from .ann_stage import ann_arch, ann_predict
from .checkpoint import check_names_and_shapes, load_checkpoint
from .loop import (STAGE_IDS, checkpoint_due, end_epoch, learning_rate, metrics_append, now,
                   optimizer_init, optimizer_step, progress, resume_or_start, save_with_state,
                   split_state, steps_per_epoch, tally_step, train_batches)
from .metrics import compression_ratio
from .models.ann import ann_backward, ann_forward
from .models.arch import draw_dropout_masks, init_params, param_shapes
from .models.attention_points import attention_activations, attention_layers
from .ops.attention import (at_loss_backward, at_loss_forward, attention_map_backward,
                            attention_map_forward)
from .ops.loss import cross_entropy_backward, cross_entropy_forward
from .prune import apply_masks, init_masks, momenta, scale_sparse_init, sparse_update
from .schedules import prune_rate


def _split_masks(arrays: dict):
    """(arrays without masks, {"mask.<layer>.weight": mask})."""
    masks = {k: v for k, v in arrays.items() if k.startswith("mask.")}
    return {k: v for k, v in arrays.items() if k not in masks}, masks


def load_teacher(arch, ann_path: str, dtype) -> dict:
    """The frozen meta-model's weights from a stage-A checkpoint, cast to ``dtype``."""
    if not os.path.isfile(ann_path):
        raise ValueError(f"--stages compress needs the meta-model {ann_path} (run --stages ann "
                         f"or pass --ann-checkpoint)")
    arrays, _ = load_checkpoint(ann_path)
    teacher, _ = _split_masks(split_state(arrays)[0])
    check_names_and_shapes(param_shapes(arch), teacher, what="compress (meta-model)",
                           path=ann_path)
    return {k: v.astype(dtype) for k, v in teacher.items()}


def at_step(arch, params, teacher, x, y, drop, *, beta: float):
    """One batch of stage B: (logits, CE, L_AT, grads) of CE + L_AT for the student.

    The teacher runs without dropout; its maps are constants (no gradient). The AT gradient
    dL_AT/dA enters ann_backward at the student's activations before dropout (grad_acts).
    """
    logits, tape = ann_forward(arch, params, x, masks=drop)
    acts = attention_activations(arch, tape)
    a_s = [attention_map_forward(A) for A in acts]
    t_acts = attention_activations(arch, ann_forward(arch, teacher, x, masks=None)[1])
    a_m = [attention_map_forward(A) for A in t_acts]
    ce = cross_entropy_forward(logits, y)
    at = at_loss_forward(a_s, a_m, beta=beta)
    grad_acts = {name: attention_map_backward(g, A) for name, g, A in
                 zip(attention_layers(arch), at_loss_backward(a_s, a_m, beta=beta), acts)}
    grads = ann_backward(cross_entropy_backward(1.0, logits, y), arch, params, tape,
                         masks=drop, grad_acts=grad_acts)
    return logits, ce, at, grads


def _zero_running():
    return {"ce": 0.0, "at": 0.0, "correct": 0, "seen": 0}


def train_compressed(cfg: dict, data, out_dir: str, ann_path: str, *, log=print) -> str:
    """Run stage B against the meta-model ``ann_path``; return DIR/compress.safetensors."""
    dtype = np.dtype(cfg["dtype"])
    arch = ann_arch(cfg, data)
    path = os.path.join(out_dir, "compress.safetensors")
    metrics = os.path.join(out_dir, "metrics.jsonl")
    spe = steps_per_epoch(len(data.train_y), cfg["batch_size"])
    epochs = cfg["compress_epochs"]
    total = spe * epochs
    warmup = min(total // 2, int(round(cfg["warmup_epochs"] * spe)))
    start_epoch, start_step, running = 0, 0, _zero_running()
    teacher = load_teacher(arch, ann_path, dtype)

    r = resume_or_start(path, cfg, "compress", epochs=epochs, metrics=metrics, log=log)
    if r is not None:
        state = r.state
        params, masks = _split_masks(r.params)
        check_names_and_shapes(param_shapes(arch), params, what="--resume", path=path)
        check_names_and_shapes({f"mask.{k}": s for k, s in param_shapes(arch).items()}, masks,
                               what="--resume", path=path)
        start_epoch, start_step, running = r.epoch, r.step, r.running
        if start_epoch >= epochs:
            return path
    else:
        sid = STAGE_IDS["compress"]
        params = init_params(arch, np.random.default_rng([cfg["seed"], sid, 10**6]), dtype)
        masks = init_masks(arch, params, density=cfg["density"], mode=cfg["prune"],
                           rng=np.random.default_rng([cfg["seed"], sid, 10**6 + 1]))
        apply_masks(params, masks)
        if cfg.get("sparse_init", "spec") == "scaled":
            scale_sparse_init(arch, params, masks)
        state = optimizer_init(cfg, params)

    def save(epoch, step):
        save_with_state(path, {**params, **masks}, state, cfg=cfg, data=data, stage="compress",
                        epoch=epoch, step=step, running=running,
                        extra={"source": os.path.abspath(ann_path)})

    for epoch in range(start_epoch, epochs):
        bar = progress(spe, f"compress {epoch + 1}/{epochs}")
        bar.update(start_step)
        t0, seen0 = now(), running["seen"]
        for k, x, y, rng in train_batches(data, cfg, "compress", epoch, dtype, start=start_step):
            drop = draw_dropout_masks(arch, len(y), rng, dtype)
            logits, ce, at, grads = at_step(arch, params, teacher, x, y, drop, beta=cfg["beta"])
            optimizer_step(cfg, params, grads, state,
                           lr=learning_rate(cfg, epoch * spe + k, total, warmup))
            apply_masks(params, masks)  # SPEC 4.2.2: W <- W * M after every step
            running["ce"] += ce * len(y)
            running["at"] += at * len(y)
            tally_step(running, logits, y, bar, running["ce"] + running["at"])
            if checkpoint_due(cfg, k, spe):
                save(epoch, k + 1)
        train_s, ips, test_acc = end_epoch(bar, t0, running["seen"] - seen0,
                                           ann_predict(arch, params), data, cfg, dtype)
        comp = compression_ratio(arch, masks)  # the evaluated model, before the update below
        n = running["seen"]
        rec = {"stage": "compress", "epoch": epoch + 1, "train_loss": (running["ce"] +
               running["at"]) / n, "train_ce": running["ce"] / n, "train_at": running["at"] / n,
               "train_acc": 100.0 * running["correct"] / n, "test_acc": test_acc,
               "density": comp.live / comp.total, "live": comp.live,
               "compression_ratio": comp.ratio, "lr": learning_rate(cfg, (epoch + 1) * spe - 1,
                                                                     total, warmup)}
        if cfg["prune"] == "channel":
            rec["flop_reduction"] = comp.flop_reduction
        if epoch + 1 < epochs:  # SPEC 4.2.4: no update after the last epoch
            p = prune_rate((epoch + 1) * spe, total)
            masks, info = sparse_update(params, masks, momenta(cfg["optimizer"], state, masks),
                                        prune_rate=p, target_density=cfg["density"],
                                        mode=cfg["prune"])
            rec.update(prune_rate=p, live_after_update=info.live)
        rec.update(images_per_s=ips, seconds=now() - t0)
        start_step, running = 0, _zero_running()
        save(epoch + 1, 0)
        metrics_append(metrics, rec)
        log(f"[compress] epoch {epoch + 1}/{epochs}  train loss CE {rec['train_ce']:.4f} "
            f"AT {rec['train_at']:.4f}  train acc {rec['train_acc']:.2f}%  test acc "
            f"{test_acc:.2f}%  density {rec['density']:.4f} ({comp.ratio:.2f}x)  "
            f"{ips:.1f} img/s  ({rec['seconds']:.1f} s)")
    return path
