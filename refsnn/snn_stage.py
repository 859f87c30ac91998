"""Stages C (`convert`) and D (`snn`): the ANN's weights in an SNN, then BPTT training.

Stage C copies the ANN's weights (and masks), sets every leak to 1 and initialises the
thresholds from activation statistics (convert.py, SPEC 5.4) -> DIR/convert.safetensors.
Stage D trains weights, thresholds and leaks with BPTT over T steps (SPEC 5.5: Adam with
amsgrad, lr 5e-4; thresholds and leaks without weight decay; after every step leak <= 1 and
threshold >= 1e-3) -> DIR/snn.safetensors, resumable like stage A.

Masks in stage D (SPEC 4.2, 5.5): only when the convert checkpoint has ``mask.*`` arrays (it
came from a compressed model; a dense run stays dense: no masks, no sparse updates). Layers
without a mask get masks_from_weights (W != 0). apply_masks after every step (with
--snn-kernels sparse, whose masks are frozen, Adam updates the sparse layers' live weights only,
adam_step(live=), so their pruned weights stay +0.0 without it); at the end of
every epoch but the last, sparse_update (Adam momenta, prune_rate(iterations done, total),
mode --prune) at the density the masks start with (live / total of the convert checkpoint's
masks, recorded as meta "target_density"), unless ``--mask frozen`` (the only choice with
--prune channel: a filter regrown at 0 never spikes and the surrogate is 0 at u = 0, so it
could not learn; train.resolve_config). Checkpoints keep the masks.

Channel mode, frozen masks (``--snn-channels compact``, the default there): every step runs
the network without its dead channels (prune/compact.py: the same logits, spikes and
gradients, to rounding), on weights gathered from the full ones; the gradients are scattered
back to full shape, so the optimizer state, the checkpoints and the report see the full
network. Dropout masks are drawn for the full network and cut, so the random stream is the
full path's; spike activity counts the removed neurons too (they never spike).
"""

from __future__ import annotations

import os

import numpy as np

from .checkpoint import check_names_and_shapes, load_checkpoint
from .loop import (checkpoint_due, end_epoch, epoch_rng, evaluate, learning_rate, metrics_append,
                   metrics_truncate, now, optimizer_step, progress, resume_or_start, save_stage,
                   save_with_state, split_state, steps_per_epoch, tally_step, train_batches)
from .models.arch import Conv, build_arch, draw_dropout_masks, param_shapes, weight_layers
from .models.snn import (BlockRecord, live_indices, snn_backward, snn_forward,
                         snn_param_shapes, sparse_layer_names, spiking_layers)
from .ops.event import pack_event_weights, refresh_event_weights
from .ops.loss import cross_entropy_backward, cross_entropy_forward
from .optim import adam_init
from .prune import apply_masks, masks_from_weights, momenta, sparse_update
from .prune.compact import (channel_plan, compact_arch, gather_dropout, gather_params,
                            scatter_grads)
from .schedules import prune_rate

# weight-sparse kernels (--snn-kernels sparse, or auto with frozen masks): a layer runs them
# when its weight density is at most this; measured with tools/bench_sparse_layers.py (vgg9
# widths 0.25-1, inputs 6 % nonzero as in trained SNNs): convs at density 0.1 took 0.23-0.98
# of the dense time, at 0.2 0.60-1.95; linears at 0.05 0.67-1.04, at 0.1 0.79-1.56
SPARSE_MAX_DENSITY = {"conv": 0.1, "linear": 0.05}

LEAK_MAX, THRESHOLD_MIN = 1.0, 1e-3


def snn_arch(cfg: dict, data):
    """The SNN architecture for a dataset (SNN dropout: 0.2 everywhere)."""
    return build_arch(cfg["arch"], in_shape=tuple(data.train_x.shape[1:]),
                      classes=len(data.classes), width=cfg["width"], dropout_conv=0.2,
                      dropout_fc=0.2)


def neuron_names(arch) -> list:
    """"<layer>.threshold" and "<layer>.leak" of every spiking layer, in network order."""
    return [f"{layer.name}.{kind}" for layer in spiking_layers(arch)
            for kind in ("threshold", "leak")]


def _opts(cfg):
    return {"surrogate": cfg["surrogate"], "gamma": cfg["gamma"]}


def snn_predict(arch, params, cfg):
    """predict(x) -> U (summed output over T steps), evaluation mode (no dropout)."""
    def predict(x):
        return snn_forward(arch, params, x, timesteps=cfg["timesteps"], masks=None,
                           **_opts(cfg))[0]
    return predict


# ------------------------------------------------------------------------------- stage C
def convert_ann(cfg: dict, data, out_dir: str, ann_path: str, *, log=print) -> str:
    """Run stage C from the ANN checkpoint ``ann_path``; return DIR/convert.safetensors."""
    from .convert import calibration_batch, convert_checkpoint_arrays, init_thresholds

    path = os.path.join(out_dir, "convert.safetensors")
    if cfg["resume"] and os.path.isfile(path):
        log(f"[convert] {path} exists: kept (--resume)")
        return path
    arrays, _ = load_checkpoint(ann_path)
    params, _ = split_state(arrays)
    arch = snn_arch(cfg, data)
    dtype = np.dtype(cfg["dtype"])
    check_names_and_shapes(param_shapes(arch), {k: v for k, v in params.items()
                                                if not k.startswith("mask.")},
                           what="convert", path=ann_path)
    params = {k: v.astype(dtype) for k, v in params.items()}
    # SPEC 5.4: convert_batch training images with the training transform, dropout off
    x = calibration_batch(data.train_x, data.mean, data.std,
                          rng=epoch_rng(cfg["seed"], "convert", 0),
                          batch_size=cfg["convert_batch"], dtype=dtype)
    t0 = now()
    bar = progress(len(neuron_names(arch)) // 2, "convert: calibrating thresholds",
                   unit="layer")
    thresholds = init_thresholds(arch, params, x, timesteps=cfg["timesteps"],
                                 scale=cfg["convert_scale"],
                                 timesteps_init=cfg["convert_timesteps"],
                                 percentile=cfg["convert_percentile"],
                                 on_layer=lambda name: bar.update(1))
    bar.close()
    snn = convert_checkpoint_arrays(arch, params, thresholds)  # weights, masks, v, leak = 1
    acc = evaluate(snn_predict(arch, snn, cfg), data.test_x, data.test_y, data.mean, data.std,
                   batch_size=cfg["eval_batch_size"], dtype=dtype)
    save_stage(path, snn, cfg=cfg, data=data, stage="convert", epoch=0, step=0,
               running={}, extra={"source": os.path.abspath(ann_path)})
    metrics_truncate(os.path.join(out_dir, "metrics.jsonl"), "convert", 0)
    metrics_append(os.path.join(out_dir, "metrics.jsonl"),
                   {"stage": "convert", "epoch": 0, "test_acc": acc,
                    "thresholds": _neuron_values(arch, snn, "threshold"),
                    "seconds": now() - t0})
    log(f"[convert] thresholds {_fmt(_neuron_values(arch, snn, 'threshold'))}  "
        f"SNN test acc before training (T={cfg['timesteps']}) {acc:.2f}%  ({now() - t0:.1f} s)")
    return path


# ------------------------------------------------------------------------------- stage D
def clamp_neurons(arch, params) -> None:
    """After every optimizer step: leak <= 1 and threshold >= 1e-3 (SPEC 5.1), in place."""
    for layer in spiking_layers(arch):
        lk, th = params[f"{layer.name}.leak"], params[f"{layer.name}.threshold"]
        np.minimum(lk, lk.dtype.type(LEAK_MAX), out=lk)
        np.maximum(th, th.dtype.type(THRESHOLD_MIN), out=th)


def spike_activity(tape, n_images: int, neurons: dict | None = None) -> dict:
    """{layer: spikes over the T steps per neuron, averaged over the batch} from a tape.

    activity_l = sum_{t, n, i} s_l[t, n, i] / (N * neurons_l)   (SPEC 6)
    neurons: {layer: neurons per image}, e.g. the full network's when the tape is a compact
    network's (neuron_counts); default: the tape's own.
    """
    out = {}
    for rec in tape:
        if isinstance(rec, BlockRecord):
            pairs = [(rec.layer.conv1.name, rec.neuron1), (rec.layer.conv2.name, rec.neuron2)]
        elif getattr(rec, "neuron", None) is not None:
            pairs = [(rec.layer.name, rec.neuron)]
        else:
            continue
        for name, nr in pairs:
            s = nr.trace.spikes  # (T, N, ...)
            n = neurons[name] if neurons is not None else int(np.prod(s.shape[2:]))
            out[name] = float(s.sum(dtype=np.float64)) / (n_images * n)
    return out


def neuron_counts(arch) -> dict:
    """{spiking layer: neurons per image}: C_out*H_out*W_out of a conv, n_out of a linear."""
    return {layer.name: (layer.c_out * layer.out_hw[0] * layer.out_hw[1]
                         if isinstance(layer, Conv) else layer.n_out)
            for layer in spiking_layers(arch)}


def train_snn(cfg: dict, data, out_dir: str, convert_path: str, *, log=print) -> str:
    """Run stage D from the stage-C checkpoint; return DIR/snn.safetensors."""
    dtype = np.dtype(cfg["dtype"])
    arch = snn_arch(cfg, data)
    path = os.path.join(out_dir, "snn.safetensors")
    metrics = os.path.join(out_dir, "metrics.jsonl")
    scfg = dict(cfg, optimizer="adam", amsgrad=True, lr=cfg["snn_lr"],
                weight_decay=cfg["snn_weight_decay"], epochs=cfg["snn_epochs"],
                schedule=cfg["snn_schedule"])
    spe = steps_per_epoch(len(data.train_y), cfg["batch_size"])
    epochs = scfg["epochs"]
    total = spe * epochs
    expected = snn_param_shapes(arch)
    no_decay = tuple(neuron_names(arch))
    start_epoch, start_step, running = 0, 0, _zero_running()

    r = resume_or_start(path, cfg, "snn", epochs=epochs, metrics=metrics, log=log)
    if r is not None:
        params, state = r.params, r.state
        start_epoch, start_step, running = r.epoch, r.step, r.running
        if start_epoch >= epochs:
            return path
    else:
        arrays, _ = load_checkpoint(convert_path)
        params, _ = split_state(arrays)
        params = {k: v.astype(dtype) for k, v in params.items()}
        state = adam_init({k: params[k] for k in expected}, amsgrad=True)
    check_names_and_shapes(expected, {k: v for k, v in params.items()
                                      if not k.startswith("mask.")},
                           what="snn", path=path if r is not None else convert_path)
    trainable = {k: params[k] for k in expected}
    wmasks = {k: v for k, v in params.items() if k.startswith("mask.")}  # weight masks
    if wmasks:  # a compressed model: complete the masks, then W = W * M
        wmasks = dict(masks_from_weights({k: v for k, v in trainable.items()
                                          if k.endswith(".weight")}, mode=cfg["prune"]),
                      **wmasks)
        params.update(wmasks)
        apply_masks(params, wmasks)
        target = r.meta.get("target_density") if r is not None else None
        if target is None:
            target = _density(wmasks)

    plan = None  # channel mode, frozen masks: compute without the dead channels
    if wmasks and cfg["mask"] == "frozen" and cfg.get("snn_channels") == "compact":
        plan = channel_plan(arch, wmasks)
        plan = plan if plan.removes_anything(arch) else None
    run_arch = compact_arch(arch, plan) if plan else arch
    shapes = {k: v.shape for k, v in trainable.items()}
    neurons = neuron_counts(arch)
    if plan:
        log("[snn] channel-pruned layers run physically smaller: "
            + ", ".join(f"{c.name} {c.c_in}x{c.c_out}" for c in weight_layers(run_arch)
                        if isinstance(c, Conv)) + " (input x output channels)")

    def run_params():
        return gather_params(arch, plan, params) if plan else params

    packs = _sparse_packs(arch, params) if cfg.get("snn_kernels") == "sparse" else None
    # the sparse layers' weights: Adam over their live elements only (the pruned ones stay 0)
    live = live_indices(packs) if packs else {}

    def save(epoch, step):
        save_with_state(path, params, state, cfg=cfg, data=data, stage="snn", epoch=epoch,
                        step=step, running=running,
                        extra={"target_density": target} if wmasks else None)

    for epoch in range(start_epoch, epochs):
        bar = progress(spe, f"snn {epoch + 1}/{epochs}")
        bar.update(start_step)
        t0, seen0 = now(), running["seen"]
        for k, x, y, rng in train_batches(data, cfg, "snn", epoch, dtype, start=start_step):
            masks = draw_dropout_masks(arch, len(y), rng, dtype)  # the full network's draw
            sparse = ({k: refresh_event_weights(ew, params[f"{k}.weight"])
                       for k, ew in packs.items()} if packs else None)
            p_run, m_run = run_params(), gather_dropout(arch, plan, masks) if plan else masks
            U, tape = snn_forward(run_arch, p_run, x, timesteps=cfg["timesteps"], masks=m_run,
                                  sparse=sparse, **_opts(cfg))
            loss = cross_entropy_forward(U, y)
            grads = snn_backward(cross_entropy_backward(1.0, U, y), run_arch, p_run, tape,
                                 masks=m_run, sparse=sparse, consume_tape=True,
                                 packed_grads=bool(packs), **_opts(cfg))
            if plan:
                grads = scatter_grads(arch, plan, grads, shapes)
            optimizer_step(scfg, trainable, grads, state, live=live or None,
                           lr=learning_rate(scfg, epoch * spe + k, total), no_decay=no_decay)
            clamp_neurons(arch, params)
            if wmasks:  # SPEC 4.2.2: W <- W * M after every step (the live-only updates
                apply_masks(params, {k: m for k, m in wmasks.items()  # leave their pruned
                                     if k[len("mask."):] not in live})  # weights at +0.0)
            act = spike_activity(tape, len(y), neurons)
            running["loss"] += loss * len(y)
            running["activity"] += float(np.mean(list(act.values()))) * len(y)
            tally_step(running, U, y, bar, running["loss"])
            if checkpoint_due(cfg, k, spe):
                save(epoch, k + 1)
        train_s, ips, test_acc = end_epoch(bar, t0, running["seen"] - seen0,
                                           snn_predict(run_arch, run_params(), cfg), data,
                                           cfg, dtype)
        rec = {"stage": "snn", "epoch": epoch + 1,
               "train_loss": running["loss"] / running["seen"],
               "train_acc": 100.0 * running["correct"] / running["seen"], "test_acc": test_acc,
               "spike_activity": running["activity"] / running["seen"],
               "thresholds": _neuron_values(arch, params, "threshold"),
               "leaks": _neuron_values(arch, params, "leak"),
               "lr": learning_rate(scfg, (epoch + 1) * spe - 1, total),
               "images_per_s": ips, "seconds": now() - t0}
        if wmasks:
            rec["density"] = _density(wmasks)  # the evaluated model's, before the update
            if cfg["mask"] == "learn" and epoch + 1 < epochs:  # none after the last epoch
                rec["prune_rate"] = prune_rate((epoch + 1) * spe, total)
                wmasks, _ = sparse_update(trainable, wmasks, momenta("adam", state, wmasks),
                                          prune_rate=rec["prune_rate"], target_density=target,
                                          mode=cfg["prune"])
                params.update(wmasks)
        start_step, running = 0, _zero_running()
        save(epoch + 1, 0)
        metrics_append(metrics, rec)
        log(f"[snn] epoch {epoch + 1}/{epochs}  train loss {rec['train_loss']:.4f}  "
            f"train acc {rec['train_acc']:.2f}%  test acc {test_acc:.2f}%  "
            f"spike activity {rec['spike_activity']:.3f}  "
            + (f"density {rec['density']:.4f}  " if wmasks else "") + f"{ips:.1f} img/s  "
            f"({rec['seconds']:.1f} s)\n"
            f"      thresholds {_fmt(rec['thresholds'])}\n      leaks      {_fmt(rec['leaks'])}")
    return path


def _sparse_packs(arch, params) -> dict:
    """{layer: packing of its live weights} of the layers snn_forward can run weight-sparse
    (sparse_layer_names: the stride-1 convs after the first, outside residual blocks, and the
    hidden linears) whose density is at most SPARSE_MAX_DENSITY of its kind, for --snn-kernels
    sparse. The
    live set is the layer's mask where it has one (a live weight that is exactly 0 is packed
    too), else W != 0; the masks are frozen, so packed once."""
    packs = {}
    for name in sparse_layer_names(arch):
        w, mask = params[f"{name}.weight"], params.get(f"mask.{name}.weight")
        ew = (pack_event_weights(w) if mask is None
              else refresh_event_weights(pack_event_weights(mask), w))
        if ew.density <= SPARSE_MAX_DENSITY["conv" if w.ndim == 4 else "linear"]:
            packs[name] = ew
    return packs


def _density(masks) -> float:
    """Live / total over all masks."""
    return (sum(int(np.count_nonzero(m)) for m in masks.values())
            / sum(m.size for m in masks.values()))


def _zero_running():
    return {"loss": 0.0, "correct": 0, "seen": 0, "activity": 0.0}


def _neuron_values(arch, params, kind) -> dict:
    return {layer.name: float(params[f"{layer.name}.{kind}"]) for layer in spiking_layers(arch)}


def _fmt(values: dict) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in values.items())
