"""Stage E (`report`): the pipeline's results in one table.

    python -m refsnn.report DIR          # a run folder written by refsnn.train
    python -m refsnn.report CHECKPOINT   # one checkpoint of any stage

For every checkpoint present (DIR/ann, compress, convert, snn .safetensors) it scores the test
split again (eval mode: no dropout, no augmentation) and, for the SNNs, counts the SPEC 6
metrics exactly (refsnn.metrics). It writes

    DIR/report.json   every figure, machine-readable (the schema is the dict build_report returns)
    DIR/report.md     the same as Markdown tables (also printed on the terminal)
    DIR/*.png         with the `plots` extra (matplotlib): training curves, per-layer density and
                      spike activity, attention maps of four test images, meta-model vs student

The headline energy ratio compares the SNN with the *dense* ANN of the same architecture:
E_dense = (dense nonzero MACs, every weight live) * E_MAC per image, as SPEC 6 counts E_ANN. The
ratio against the compressed ANN (its own nonzero MACs) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from .checkpoint import check_names_and_shapes, load_checkpoint
from .loop import evaluate, split_state

MODELS = (("ann", "meta-model ANN"), ("compress", "compressed ANN"),
          ("convert", "converted SNN"), ("snn", "trained SNN"))
N_ATTENTION_IMAGES = 4


def _without_masks(params: dict) -> dict:
    return {k: v for k, v in params.items() if not k.startswith("mask.")}


def score_checkpoint(path: str, data, *, batch_size: int = 256) -> dict:
    """Test accuracy and metrics of one checkpoint over ``data``'s test split.

    Returns (scores, cfg, arch): the checkpoint's configuration and architecture, and scores =
    ANN stages: {"stage", "epoch", "checkpoint", "test_acc", "compression",
    "ann_nonzero_flops", "energy_ann_pj"}; SNN stages: the SPEC 6 report of
    evaluate.snn_report (spike activity, SynOps, energy) instead of the last two.
    ``compression`` holds the ratio, live/total weights, per-layer density, live filters per
    conv and the FLOP reduction.
    """
    from .ann_stage import ann_arch, ann_predict
    from .evaluate import snn_report
    from .metrics import E_MAC, compression_ratio, fanout_maps, live_weights, nonzero_macs
    from .models.arch import param_shapes
    from .models.snn import snn_param_shapes
    from .snn_stage import snn_arch

    arrays, meta = load_checkpoint(path)
    cfg, stage = meta["config"], meta.get("stage")
    params = split_state(arrays)[0]
    dtype = np.dtype(cfg["dtype"])
    if stage in ("ann", "compress"):
        arch = ann_arch(cfg, data)
        expected = param_shapes(arch)
    elif stage in ("convert", "snn"):
        arch = snn_arch(cfg, data)
        expected = snn_param_shapes(arch)
    else:
        raise ValueError(f"report: {path} holds stage {stage!r}; expected one of "
                         f"{[m for m, _ in MODELS]}")
    check_names_and_shapes(expected, _without_masks(params), what="report", path=path)
    comp = compression_ratio(arch, params)
    out = {"stage": stage, "epoch": meta.get("epoch"), "checkpoint": path,
           "compression": {"ratio": comp.ratio, "live": comp.live, "total": comp.total,
                           "density": comp.density,
                           "channels": {k: list(v) for k, v in comp.channels.items()},
                           "dense_flops": comp.dense_flops, "channel_flops": comp.channel_flops,
                           "flop_reduction": comp.flop_reduction}}
    if stage in ("ann", "compress"):
        out["test_acc"] = evaluate(ann_predict(arch, _without_masks(params)), data.test_x,
                                   data.test_y, data.mean, data.std, batch_size=batch_size,
                                   dtype=dtype)
        macs = sum(nonzero_macs(arch, fanout_maps(arch, live_weights(arch, params))).values())
        out["ann_nonzero_flops"], out["energy_ann_pj"] = macs, E_MAC * macs
    else:
        out.update(snn_report(arch, params, cfg, data, batch_size=batch_size, dtype=dtype))
    return out, cfg, arch


def dense_ann_energy_pj(arch) -> float:
    """E_MAC * the nonzero MACs of the dense ANN (every weight live), per image."""
    from .metrics import E_MAC, fanout_maps, nonzero_macs
    from .models.arch import weight_layers, weight_shape

    live = {layer.name: np.ones(weight_shape(layer), dtype=bool) for layer in weight_layers(arch)}
    return E_MAC * float(sum(nonzero_macs(arch, fanout_maps(arch, live)).values()))


def stage_seconds(metrics_path: str) -> dict:
    """{stage: wall seconds summed over its epochs} from a run's metrics.jsonl."""
    out = {}
    for rec in read_metrics(metrics_path):
        if "seconds" in rec:
            out[rec["stage"]] = out.get(rec["stage"], 0.0) + float(rec["seconds"])
    return out


def read_metrics(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def build_report(paths: dict, data, *, batch_size: int = 256, log=print) -> dict:
    """The report of the checkpoints ``paths`` = {stage: path} (any subset of MODELS).

    Returns {"run": {...}, "models": {stage: score_checkpoint(...)}, "layers": [...],
    "energy": {...}} (JSON-ready; inf is written as null by write_report). energy's
    "compressed_ann_uj" / "ratio_vs_compressed_ann" are for the ANN with the SNN's own live
    weights: the compressed ANN's when the masks stayed fixed in stage D, not after sparse
    learning there moved them (the compress row then has its own figure).
    """
    if not paths:
        raise ValueError("report: no checkpoint to report (expected DIR/ann.safetensors, "
                         "compress, convert or snn)")
    from .loop import progress

    models, cfg, arch = {}, None, None
    bar = progress(len(paths), "report: scoring checkpoints", unit="model")
    for stage, _ in MODELS:
        if stage in paths:
            log(f"[report] scoring {paths[stage]}")
            models[stage], c, a = score_checkpoint(paths[stage], data, batch_size=batch_size)
            bar.update(1)
            cfg, arch = cfg or c, arch or a
            if stage in ("convert", "snn"):
                cfg, arch = c, a  # the SNN's T and layers name the run
    bar.close()
    snn = models.get("snn") or models.get("convert")
    run = {k: cfg.get(k) for k in ("arch", "dataset", "width", "timesteps", "prune", "density",
                                   "seed", "dtype")}
    run["test_images"] = len(data.test_y)
    report = {"run": run, "models": models, "layers": _layer_rows(models, arch)}
    if snn is not None:
        dense = dense_ann_energy_pj(arch)
        report["energy"] = {
            "snn_uj": snn["energy_snn_pj"] / 1e6, "dense_ann_uj": dense / 1e6,
            "ratio_vs_dense_ann": snn["energy_snn_pj"] / dense,
            "compressed_ann_uj": snn["energy_ann_pj"] / 1e6,
            "ratio_vs_compressed_ann": snn["energy_ratio"]}
    if "ann" in models:
        report["accuracy_vs_meta_model"] = {  # points; negative = lost accuracy
            s: m["test_acc"] - models["ann"]["test_acc"] for s, m in models.items() if s != "ann"}
    return report


def _layer_rows(models: dict, arch) -> list:
    """Per weight layer: weights, density (compressed ANN and final SNN), live filters, spike
    activity and SynOps per image of the final SNN."""
    from .models.arch import weight_layers, weight_shape

    final = models.get("snn") or models.get("convert")
    sparse = models.get("compress") or final or models.get("ann")
    rows = []
    for layer in weight_layers(arch):
        name = layer.name
        row = {"layer": name, "weights": int(np.prod(weight_shape(layer))),
               "density_compressed_ann": sparse["compression"]["density"].get(name)}
        if final is not None:
            row["density_snn"] = final["compression"]["density"].get(name)
            row["spike_activity"] = final["spike_activity"].get(name)
            row["synops"] = final["synops"].get(name)
        ch = (final or sparse)["compression"]["channels"].get(name)
        row["live_filters"] = ch
        rows.append(row)
    return rows


# --- output ------------------------------------------------------------------------------------

def _num(x, fmt: str, none: str = "-") -> str:
    if x is None:
        return none
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, fmt)


def format_markdown(report: dict) -> str:
    """report.md: the headline table, the per-layer table, energy and stage times."""
    run, models = report["run"], report["models"]
    lines = [f"# refsnn report: {run['arch']} on {run['dataset']} (width {run['width']}, "
             f"T = {run['timesteps']}, {run['test_images']} test images)", "",
             "| model | test acc (%) | minus meta-model (pts) | compression | spike activity "
             "| SynOps / image | energy / image (uJ) | latency T |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    loss = report.get("accuracy_vs_meta_model", {})
    for stage, label in MODELS:
        m = models.get(stage)
        if m is None:
            lines.append(f"| {label} | not run | | | | | | |")
            continue
        snn = stage in ("convert", "snn")
        energy = m["energy_snn_pj" if snn else "energy_ann_pj"] / 1e6
        lines.append(
            f"| {label} | {m['test_acc']:.2f} | {_num(loss.get(stage), '+.2f', '')} "
            f"| {_num(m['compression']['ratio'], '.2f')}x "
            f"| {_num(m.get('spike_activity_network'), '.4f')} "
            f"| {_num(m.get('synops_total'), '.4g')} | {_num(energy, '.4g')} "
            f"| {run['timesteps'] if snn else '-'} |")
    e = report.get("energy")
    if e:
        lines += ["", f"Compute energy per image (SPEC 6, E_MAC 4.6 pJ, E_AC 0.9 pJ): SNN "
                  f"{e['snn_uj']:.4g} uJ; dense ANN {e['dense_ann_uj']:.4g} uJ "
                  f"(**SNN/dense ANN = {e['ratio_vs_dense_ann']:.4f}**); the ANN with the "
                  f"SNN's live weights {e['compressed_ann_uj']:.4g} uJ (SNN/that ANN = "
                  f"{e['ratio_vs_compressed_ann']:.4f}; the compressed ANN's own row differs "
                  f"when stage D's sparse learning moved the masks)."]
    comp = (models.get("snn") or models.get("compress") or {}).get("compression")
    if comp and run.get("prune") == "channel":
        lines += ["", f"Channel pruning: FLOP reduction {_num(comp['flop_reduction'], '.2f')}x "
                  f"({comp['channel_flops']:,} of {comp['dense_flops']:,} MACs per step)."]
    lines += ["", "| layer | weights | density (compressed ANN) | density (SNN) | live filters "
              "| spike activity | SynOps / image |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["layers"]:
        ch = r.get("live_filters")
        lines.append(f"| {r['layer']} | {r['weights']:,} | "
                     f"{_num(r.get('density_compressed_ann'), '.4f')} | "
                     f"{_num(r.get('density_snn'), '.4f')} | "
                     f"{f'{ch[0]}/{ch[1]}' if ch else '-'} | "
                     f"{_num(r.get('spike_activity'), '.4f')} | {_num(r.get('synops'), '.4g')} |")
    secs = report.get("seconds")
    if secs:
        lines += ["", "Wall time per stage: " + ", ".join(
            f"{k} {v / 60:.1f} min" for k, v in secs.items()) +
            f" (total {sum(secs.values()) / 60:.1f} min)."]
    if report.get("plots"):
        lines += [""] + [f"![{os.path.splitext(p)[0]}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(report: dict, out_dir: str) -> tuple:
    """Write DIR/report.json and DIR/report.md (atomically); return their paths."""
    js, md = os.path.join(out_dir, "report.json"), os.path.join(out_dir, "report.md")
    _write_atomic(js, json.dumps(_json_safe(report), indent=1, sort_keys=True) + "\n")
    _write_atomic(md, format_markdown(report))
    return js, md


def attention_figure_maps(paths: dict, data, arch_cfg: dict, n: int = N_ATTENTION_IMAGES):
    """(images, meta maps, student maps, names) of the first n test images, eval mode."""
    from .ann_stage import ann_arch
    from .data.transforms import make_batch
    from .models.ann import ann_forward
    from .models.attention_points import attention_activations, attention_layers
    from .ops.attention import attention_map_forward

    arch = ann_arch(arch_cfg, data)
    x = make_batch(data.test_x[:n], data.mean, data.std, augment=False, dtype=np.float64)
    maps = []
    for stage in ("ann", "compress"):
        params = _without_masks(split_state(load_checkpoint(paths[stage])[0])[0])
        params = {k: v.astype(np.float64) for k, v in params.items()}
        acts = attention_activations(arch, ann_forward(arch, params, x, masks=None)[1])
        maps.append([attention_map_forward(A).reshape(A.shape[0], *A.shape[2:])
                     for A in acts])
    return x, maps[0], maps[1], attention_layers(arch)


def make_plots(report: dict, paths: dict, data, out_dir: str, cfg: dict, metrics: str,
               log=print) -> list:
    """The PNG figures (plots extra); [] without matplotlib. Returns file names in out_dir."""
    from . import plots

    if not plots.have_matplotlib():
        log("[report] matplotlib not installed: no plots (pip install 'refsnn[plots]')")
        return []
    made = []
    records = read_metrics(metrics)
    if any("test_acc" in r for r in records):
        plots.plot_curves(records, os.path.join(out_dir, "curves.png"))
        made.append("curves.png")
    rows = report["layers"]
    density = {r["layer"]: r.get("density_snn", r.get("density_compressed_ann")) or 0.0
               for r in rows}
    activity = {r["layer"]: r["spike_activity"] for r in rows
                if r.get("spike_activity") is not None}
    plots.plot_layers([r["layer"] for r in rows], density, activity,
                      os.path.join(out_dir, "layers.png"))
    made.append("layers.png")
    if "ann" in paths and "compress" in paths:
        plots.plot_attention(*attention_figure_maps(paths, data, cfg),
                             os.path.join(out_dir, "attention.png"))
        made.append("attention.png")
    return made


def checkpoint_paths(out_dir: str) -> dict:
    """{stage: DIR/<stage>.safetensors} for the stages whose checkpoint exists."""
    paths = {s: os.path.join(out_dir, f"{s}.safetensors") for s, _ in MODELS}
    return {s: p for s, p in paths.items() if os.path.isfile(p)}


def run_report(out_dir: str, data, *, paths: dict | None = None, batch_size: int = 256,
               plots: bool = True, log=print) -> dict:
    """Stage E: score, write report.json/.md (+ PNGs) into out_dir and print the tables."""
    paths = checkpoint_paths(out_dir) if paths is None else paths
    report = build_report(paths, data, batch_size=batch_size, log=log)
    last = [paths[s] for s, _ in MODELS if s in paths][-1]  # the run the report is about
    metrics = os.path.join(os.path.dirname(os.path.abspath(last)), "metrics.jsonl")
    report["seconds"] = stage_seconds(metrics)
    if plots:
        cfg = load_checkpoint(last)[1]["config"]
        report["plots"] = make_plots(report, paths, data, out_dir, cfg, metrics, log=log)
    js, md = write_report(report, out_dir)
    log(format_markdown(report))
    log(f"[report] wrote {md} and {js}")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m refsnn.report",
                                description="Stage E: the results table of a run folder (or of "
                                            "one checkpoint).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("path", help="a run folder of refsnn.train, or one .safetensors checkpoint")
    p.add_argument("--data-dir", default=None, help="override the dataset folder it recorded")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-plots", dest="plots", action="store_false")
    p.add_argument("--out", default=None,
                   help="where to write report.md/json (default: the run folder, or the "
                        "checkpoint's folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    from .data.datasets import load_dataset
    from .runtime import configure_runtime
    from .train import limit

    args = build_parser().parse_args(argv)
    configure_runtime()
    try:
        if os.path.isdir(args.path):
            paths = checkpoint_paths(args.path)
            out_dir = args.out or args.path
        elif os.path.isfile(args.path):
            meta = load_checkpoint(args.path)[1]
            paths = {meta.get("stage"): args.path}
            out_dir = args.out or os.path.dirname(os.path.abspath(args.path))
        else:
            raise ValueError(f"path: {args.path!r} is neither a run folder nor a checkpoint")
        if not paths:
            raise ValueError(f"path: {args.path!r} holds none of "
                             f"{[s + '.safetensors' for s, _ in MODELS]}")
        cfg = load_checkpoint(next(iter(paths.values())))[1]["config"]
        data = load_dataset(cfg["dataset"], args.data_dir or cfg["data_dir"])
        data = limit(data, 0, cfg.get("limit_test", 0))
        os.makedirs(out_dir, exist_ok=True)
        run_report(out_dir, data, paths=paths, batch_size=args.batch_size, plots=args.plots)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
