"""Stage E metrics (SPEC 6): compression, dense FLOPs, spike activity, SynOps, compute energy.

Static (from the architecture and the weights or masks):

    comp = compression_ratio(arch, arrays)          # ratio, densities, live channels, FLOPs
    flops = dense_flops(arch)                       # {layer: MACs per image per step}
    live = live_weights(arch, arrays)               # {layer: bool array}, masks preferred
    fan = fanout_maps(arch, live)                   # {layer: live outgoing weights per input}

Per test batch, from snn_forward's tape, accumulated as plain dicts of ints:

    spikes = add_counts(spikes, spike_counts(tape))
    synops = add_counts(synops, synop_counts(arch, fan, tape))
    n_images += N
    report = summarise(arch, fan, spikes, synops, n_images=n_images, timesteps=T)

Definitions (where SPEC 6 leaves a choice, the choice is marked *):
- One FLOP = one multiply-accumulate (MAC), as the paper counts: dense_flops(vgg9, 3x32x32,
  10 classes) = 281,780,224 MACs per step; twice that (563.6 M) counts multiplies and adds.
- Dense FLOPs of a layer, per image and step: conv k*k*C_in*C_out*H_out*W_out (padding
  positions included), linear n_in*n_out. A ResNet 1x1 shortcut is a conv (k = 1); pooling,
  identity shortcuts and the neuron updates are not counted.
- *Live weights: ``mask.<layer>.weight != 0`` where a mask is given, else ``weight != 0``
  (SPEC 4.2: live counts come from the masks; a just-regrown weight is live and 0).
- Fan-out of an input element of layer l: its number of live outgoing weights that reach an
  in-bounds output. Conv (boundary aware):
      fanout[c, h, w] = #{(o, p, q): live[o, c, p, q], h + pad - p = i*stride, w + pad - q =
                          j*stride for some 0 <= i < H_out, 0 <= j < W_out}
  linear: fanout[i] = #{o: live[o, i]} (the nonzero entries of the weight's column i).
- SynOps of layer l >= 2 = sum_{t, n} sum_e [x_l[t, n, e] != 0] * fanout_l[e], with x_l the
  layer's actual input (after pooling and dropout; the eval forward has no dropout). Counted
  for every conv and linear after the first, the output layer (x_L[t] = spikes of the last
  hidden layer), both paths into a Block's neuron (conv2 on conv1's spikes, and the shortcut
  on the block input: a 1x1 conv with its own fan-out, or *the identity: one accumulate per
  nonzero input element, reported as "<block>.shortcut").
- Layer 1 (analog input): MACs = T * N * sum(fanout_1) (the nonzero-weight, boundary-aware
  MAC count, executed at every step whatever the pixel values).
- *ANN nonzero FLOPs (for E_ANN): sum over conv and linear layers of sum(fanout_l), the same
  boundary-aware nonzero-weight MAC count as the SNN's layer 1 (so the first layer costs the
  SNN exactly T times what it costs the ANN); identity-shortcut adds are not counted.
- *Spike activity of layer l = (total spikes of l over T steps and all images) /
  (neurons of l * images): the average number of spikes per neuron per image over the T-step
  window (in [0, T]). Network average = total spikes of all layers / (total neurons * images):
  the neuron-weighted mean of the layers' activities.
- Energy (pJ): E_SNN = MACs * E_MAC + SynOps * E_AC, E_ANN = ANN nonzero FLOPs * E_MAC,
  E_MAC = 4.6 pJ, E_AC = 0.9 pJ (45 nm, 32-bit float), per image.
- *Channel mode: a conv filter (output channel) is alive if any of its weights is live. A
  channel of a layer's output is dead if its filter is; pooling keeps channel liveness; a Block's
  output channel is alive if conv2's filter or the shortcut's channel (1x1 filter, or the block
  input's channel for the identity) is. Channel FLOPs: each conv costs k*k*(live input
  channels)*(live filters)*H_out*W_out, each linear (live inputs)*n_out (fc1's inputs of dead
  channels are dead; linear rows are never pruned by channel); FLOP reduction = dense / that.

Counts are exact Python ints (the SynOps kernel accumulates in int64 per (t, n) row).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .models.arch import (POOL_KERNEL, Arch, Block, Conv, Linear, Pool, weight_layers,
                          weight_shape)
from .models.snn import (BlockRecord, ConvRecord, LinearRecord, OutputRecord, PoolRecord,
                         spiking_layers)
from .ops.pool import avg_pool2d_forward

E_MAC = 4.6  # pJ per 32-bit float multiply-accumulate, 45 nm
E_AC = 0.9  # pJ per 32-bit float accumulate, 45 nm


# --- architecture counts -----------------------------------------------------------------------

def dense_flops(arch: Arch) -> dict:
    """{layer: dense MACs per image per time step} for every Conv/Linear, network order.

    conv: k*k*C_in*C_out*H_out*W_out;  linear: n_in*n_out  (one FLOP = one MAC, SPEC 6).
    """
    out = {}
    for layer in weight_layers(arch):
        if isinstance(layer, Conv):
            out[layer.name] = (layer.kernel * layer.kernel * layer.c_in * layer.c_out
                               * layer.out_hw[0] * layer.out_hw[1])
        else:
            out[layer.name] = layer.n_in * layer.n_out
    return out


def neuron_counts(arch: Arch) -> dict:
    """{layer: neurons per image} of every spiking layer: C_out*H_out*W_out or n_out."""
    out = {}
    for layer in spiking_layers(arch):
        if isinstance(layer, Conv):
            out[layer.name] = layer.c_out * layer.out_hw[0] * layer.out_hw[1]
        else:
            out[layer.name] = layer.n_out
    return out


def live_weights(arch: Arch, arrays: dict) -> dict:
    """{layer: bool array of the weight's shape}: ``mask.<layer>.weight != 0`` if that mask is
    in ``arrays``, else ``<layer>.weight != 0``. ValueError if neither is there or a shape is
    wrong."""
    fn = "live_weights"
    if not isinstance(arrays, dict):
        raise TypeError(f"{fn}: arrays must be a dict of arrays, got {type(arrays).__name__}")
    out = {}
    for layer in weight_layers(arch):
        for key in (f"mask.{layer.name}.weight", f"{layer.name}.weight"):
            if key in arrays:
                break
        else:
            raise ValueError(f"{fn}: arrays has neither 'mask.{layer.name}.weight' nor "
                             f"'{layer.name}.weight'")
        a = np.asarray(arrays[key])
        if a.shape != weight_shape(layer):
            raise ValueError(f"{fn}: arrays[{key!r}].shape={a.shape}, expected "
                             f"{weight_shape(layer)}")
        out[layer.name] = a != 0
    return out


# --- compression -------------------------------------------------------------------------------

class Compression(NamedTuple):
    ratio: float  # total / live (inf when nothing is live)
    total: int  # conv + linear weight count
    live: int  # live weights (masks, or nonzero weights)
    density: dict  # {layer: live / size}
    channels: dict  # {conv layer: (live filters, C_out)}
    dense_flops: int  # MACs per image per step, dense
    channel_flops: int  # the same with dead channels removed on both sides
    flop_reduction: float  # dense_flops / channel_flops (inf when channel_flops == 0)


def compression_ratio(arch: Arch, arrays: dict) -> Compression:
    """SPEC 6 compression: (sum of conv + linear weight counts) / (their live count), per-layer
    densities, and the channel-mode figures (module doc): live filters per conv layer and the
    dense FLOPs with dead channels removed. ``arrays``: weights and/or masks (live_weights)."""
    live = live_weights(arch, arrays)
    total = sum(int(m.size) for m in live.values())
    n_live = sum(int(np.count_nonzero(m)) for m in live.values())
    density = {k: int(np.count_nonzero(m)) / m.size for k, m in live.items()}
    filters = {layer.name: live[layer.name].reshape(layer.c_out, -1).any(axis=1)
               for layer in weight_layers(arch) if isinstance(layer, Conv)}
    channels = {k: (int(f.sum()), int(f.size)) for k, f in filters.items()}
    dense = sum(dense_flops(arch).values())
    reduced = _channel_flops(arch, filters)
    return Compression(
        ratio=total / n_live if n_live else math.inf, total=total, live=n_live,
        density=density, channels=channels, dense_flops=dense, channel_flops=reduced,
        flop_reduction=dense / reduced if reduced else math.inf)


def _channel_flops(arch: Arch, filters: dict) -> int:
    """Dense MACs per image per step with dead input channels and dead filters removed."""
    alive = np.ones(arch.in_shape[0], dtype=bool)  # live channels of the current activation

    def conv(layer, a_in):
        f = filters[layer.name]
        k2hw = layer.kernel * layer.kernel * layer.out_hw[0] * layer.out_hw[1]
        return int(a_in.sum()) * int(f.sum()) * k2hw, f

    total, hw = 0, arch.in_shape[1:]
    for layer in arch.layers:
        if isinstance(layer, Conv):
            flops, alive = conv(layer, alive)
            total, hw = total + flops, layer.out_hw
        elif isinstance(layer, Pool):
            hw = layer.out_hw
        elif isinstance(layer, Linear):
            if alive is not None:  # the first linear: inputs are channel-major C*H*W
                n_live_in = int(alive.sum()) * hw[0] * hw[1]
                alive = None
            else:
                n_live_in = layer.n_in
            total += n_live_in * layer.n_out
        elif isinstance(layer, Block):
            f1, a1 = conv(layer.conv1, alive)
            f2, a2 = conv(layer.conv2, a1)
            total += f1 + f2
            if layer.shortcut:
                fs, a_s = conv(layer.shortcut, alive)
                total += fs
            else:
                a_s = alive
            alive, hw = a2 | a_s, layer.conv2.out_hw
    return total


# --- fan-out maps -------------------------------------------------------------------------------

def conv_fanout(live: np.ndarray, *, in_hw: tuple, stride: int, padding: int) -> np.ndarray:
    """fanout[c, h, w]: live outgoing weights of input element (c, h, w) that reach an in-bounds
    output (module doc), int64 (C_in, H, W).

    Computed as fanout[c, h, w] = sum_{p,q} L[c, p, q] A[p, h] B[q, w], with
    L[c, p, q] = #{o: live[o, c, p, q]} and A[p, h] = 1 iff h + padding - p = i*stride for an
    output row 0 <= i < H_out (B the same for columns). live: (C_out, C_in, kH, kW) bool.
    sum(fanout) is the layer's nonzero-weight MAC count per image (padding excluded).
    """
    live = np.asarray(live) != 0
    if live.ndim != 4:
        raise ValueError(f"conv_fanout: live must be (C_out, C_in, kH, kW), got {live.shape}")
    c_out, c_in, kh, kw = live.shape
    h, w = in_hw
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    per_kernel = live.sum(axis=0, dtype=np.int64)  # L[c, p, q]
    a = _reach(kh, h, ho, stride, padding)  # (kH, H)
    b = _reach(kw, w, wo, stride, padding)  # (kW, W)
    return np.einsum("cpq,ph,qw->chw", per_kernel, a, b)


def _reach(k, size, out_size, stride, padding):
    """r[p, h] = 1 iff input row h meets kernel row p at some output row 0 <= i < out_size."""
    p = np.arange(k)[:, None]
    d = np.arange(size)[None, :] + padding - p  # = i * stride
    return ((d >= 0) & (d % stride == 0) & (d // stride < out_size)).astype(np.int64)


def fanout_maps(arch: Arch, live: dict) -> dict:
    """{layer: fan-out map} of every Conv (conv_fanout, (C_in, H, W)) and Linear ((n_in,):
    live entries of each weight column), network order; ``live`` from live_weights."""
    out = {}
    for layer in weight_layers(arch):
        m = live[layer.name]
        if isinstance(layer, Conv):
            out[layer.name] = conv_fanout(m, in_hw=layer.in_hw, stride=layer.stride,
                                          padding=layer.padding)
        else:
            out[layer.name] = np.asarray(m != 0).sum(axis=0, dtype=np.int64)
    return out


def nonzero_macs(arch: Arch, fanouts: dict) -> dict:
    """{layer: nonzero-weight, boundary-aware MACs per image per step} = sum(fanout_l): the
    ANN's "nonzero FLOPs" per layer (for E_ANN), and the SNN's layer-1 cost per step."""
    return {layer.name: int(fanouts[layer.name].sum()) for layer in weight_layers(arch)}


# --- per-batch counts from a tape ---------------------------------------------------------------

def synop_count(x: np.ndarray, fanout: np.ndarray) -> int:
    """sum over rows r and elements e of [x[r, e] != 0] * fanout[e].

    x: (..., *fanout.shape), e.g. (T, N, C, H, W) with fanout (C, H, W), or (T*N, n_in) with
    fanout (n_in,); every leading index is one row. Exact int.
    """
    fanout = np.asarray(fanout)
    k = fanout.ndim
    if x.ndim < k or x.shape[x.ndim - k:] != fanout.shape:
        raise ValueError(f"synop_count: x.shape={x.shape} does not end in fanout.shape="
                         f"{fanout.shape}")
    x2 = np.ascontiguousarray(x).reshape(-1, fanout.size)
    rows = np.empty(x2.shape[0], dtype=np.int64)
    _synop_count_kernel(x2, np.ascontiguousarray(fanout, dtype=np.int64).reshape(-1), rows)
    return int(rows.sum())


@numba.njit(cache=True, parallel=True)
def _synop_count_kernel(x, fanout, rows):
    # x (R, K), fanout (K,) int64, rows (R,) int64: row r writes only rows[r]
    for r in numba.prange(x.shape[0]):
        acc = 0
        for e in range(x.shape[1]):
            if x[r, e] != 0:
                acc += fanout[e]  # one accumulate per live outgoing weight
        rows[r] = acc


def spike_counts(tape: list) -> dict:
    """{layer: total spikes of the batch over all T steps} of every spiking layer, network
    order (a Block gives conv1 and conv2). For heaviside tapes (spikes exactly 0/1)."""
    out = {}
    for rec in tape:
        if isinstance(rec, (ConvRecord, LinearRecord)):
            out[rec.layer.name] = int(np.count_nonzero(rec.neuron.trace.spikes))
        elif isinstance(rec, BlockRecord):
            out[rec.layer.conv1.name] = int(np.count_nonzero(rec.neuron1.trace.spikes))
            out[rec.layer.conv2.name] = int(np.count_nonzero(rec.neuron2.trace.spikes))
    return out


def synop_counts(arch: Arch, fanouts: dict, tape: list, *, dropout_masks: dict | None = None
                 ) -> dict:
    """{layer: SynOps of the batch} of every weight layer after the first, network order
    (module doc); a Block with an identity shortcut adds "<block>.shortcut" (one accumulate per
    nonzero block-input element). The first layer's MACs: layer1_macs.

    tape: snn_forward's tape (its inputs already include pooling and dropout).
    dropout_masks: the masks given to snn_forward (None in eval); only the output layer's input
    is rebuilt from the last hidden layer's spikes and needs them.
    """
    out = {}
    last, pools = None, 0  # the last neuron's (spikes, dropout name), pools since
    for rec in tape:
        if isinstance(rec, ConvRecord):
            if rec.x.ndim == 5:  # layer 1's input is the 4-D image: MACs (layer1_macs)
                out[rec.layer.name] = synop_count(rec.x, fanouts[rec.layer.name])
            last, pools = (rec.neuron.trace.spikes, rec.layer.name), 0
        elif isinstance(rec, PoolRecord):
            pools += 1
        elif isinstance(rec, LinearRecord):
            out[rec.layer.name] = synop_count(rec.x, fanouts[rec.layer.name])
            last, pools = (rec.neuron.trace.spikes, rec.layer.name), 0
        elif isinstance(rec, BlockRecord):
            blk = rec.layer
            out[blk.conv1.name] = synop_count(rec.x, fanouts[blk.conv1.name])
            out[blk.conv2.name] = synop_count(rec.h_in, fanouts[blk.conv2.name])
            if blk.shortcut:
                out[blk.shortcut.name] = synop_count(rec.x, fanouts[blk.shortcut.name])
            else:  # identity: x is added to conv2's current, element by element
                out[f"{blk.name}.shortcut"] = int(np.count_nonzero(rec.x))
            last, pools = (rec.neuron2.trace.spikes, None), 0
        elif isinstance(rec, OutputRecord):
            x = _output_input(last, pools, dropout_masks)
            out[rec.layer.name] = synop_count(x.reshape(x.shape[0], x.shape[1], -1),
                                              fanouts[rec.layer.name])
    return out


def _output_input(last, pools, dropout_masks):
    """x_L[t] = pool^pools(dropout(s[t])) of the last hidden layer, (T, N, ...)."""
    s, name = last
    if dropout_masks is not None and name in dropout_masks:
        s = s * dropout_masks[name]  # the same mask at every t
    for _ in range(pools):
        y = avg_pool2d_forward(s.reshape((-1,) + s.shape[2:]), kernel=POOL_KERNEL)
        s = y.reshape(s.shape[:2] + y.shape[1:])
    return s


def layer1_macs(arch: Arch, fanouts: dict, *, n_images: int, timesteps: int) -> int:
    """MACs of the first (analog-input) layer: timesteps * n_images * sum(fanout_1)."""
    first = weight_layers(arch)[0].name
    return int(timesteps) * int(n_images) * int(fanouts[first].sum())


def add_counts(total: dict, counts: dict) -> dict:
    """{k: total[k] + counts[k]}: the accumulator over test batches (start with {}). The keys
    must agree (ValueError otherwise), except that an empty ``total`` takes counts' keys."""
    if not total:
        return dict(counts)
    if set(total) != set(counts):
        raise ValueError(f"add_counts: keys differ: {sorted(set(total) ^ set(counts))}")
    return {k: total[k] + counts[k] for k in total}


# --- finishers ----------------------------------------------------------------------------------

class Activity(NamedTuple):
    per_layer: dict  # {layer: spikes per neuron per image over T steps}
    network: float  # total spikes / (total neurons * images)


def spike_activity(arch: Arch, spike_totals: dict, *, n_images: int) -> Activity:
    """SPEC 6 spike activity from spike_counts accumulated over n_images (module doc)."""
    if n_images < 1:
        raise ValueError(f"spike_activity: n_images must be >= 1, got {n_images}")
    neurons = neuron_counts(arch)
    if set(spike_totals) != set(neurons):
        raise ValueError(f"spike_activity: spike_totals has layers {sorted(spike_totals)}, "
                         f"expected {sorted(neurons)}")
    per_layer = {k: spike_totals[k] / (neurons[k] * n_images) for k in neurons}
    network = sum(spike_totals.values()) / (sum(neurons.values()) * n_images)
    return Activity(per_layer, network)


class Energy(NamedTuple):
    snn: float  # pJ: macs * e_mac + synops * e_ac
    ann: float  # pJ: ann_macs * e_mac
    ratio: float  # snn / ann (inf if ann == 0)


def energy(*, macs: float, synops: float, ann_macs: float, e_mac: float = E_MAC,
           e_ac: float = E_AC) -> Energy:
    """Compute energy (SPEC 6): E_SNN = MACs * E_MAC + SynOps * E_AC, E_ANN = ANN nonzero
    FLOPs * E_MAC, in pJ for e_mac / e_ac in pJ (defaults 4.6 / 0.9, 45 nm 32-bit float).
    Pass counts for the same unit of work (e.g. per image)."""
    for name, v in (("macs", macs), ("synops", synops), ("ann_macs", ann_macs)):
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"energy: {name} must be a finite count >= 0, got {v!r}")
    for name, v in (("e_mac", e_mac), ("e_ac", e_ac)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"energy: {name} must be a finite number > 0 (pJ), got {v!r}")
    e_snn = macs * e_mac + synops * e_ac
    e_ann = ann_macs * e_mac
    return Energy(e_snn, e_ann, e_snn / e_ann if e_ann > 0 else math.inf)


def summarise(arch: Arch, fanouts: dict, spike_totals: dict, synop_totals: dict, *,
              n_images: int, timesteps: int, e_mac: float = E_MAC, e_ac: float = E_AC) -> dict:
    """The SPEC 6 activity report of a test set, per image, JSON-ready:

    {"spike_activity": {layer: ...}, "spike_activity_network": ..., "synops": {layer: SynOps
    per image}, "synops_total", "macs" (layer 1, per image), "ann_nonzero_flops" (per image),
    "dense_flops" (per image per step), "energy_snn_pj", "energy_ann_pj", "energy_ratio"}
    from the totals accumulated with add_counts over n_images images run for ``timesteps``.
    """
    act = spike_activity(arch, spike_totals, n_images=n_images)
    synops = {k: v / n_images for k, v in synop_totals.items()}
    macs = layer1_macs(arch, fanouts, n_images=1, timesteps=timesteps)
    ann = sum(nonzero_macs(arch, fanouts).values())
    e = energy(macs=macs, synops=sum(synops.values()), ann_macs=ann, e_mac=e_mac, e_ac=e_ac)
    return {"spike_activity": act.per_layer, "spike_activity_network": act.network,
            "synops": synops, "synops_total": sum(synops.values()), "macs": macs,
            "ann_nonzero_flops": ann, "dense_flops": sum(dense_flops(arch).values()),
            "energy_snn_pj": e.snn, "energy_ann_pj": e.ann, "energy_ratio": e.ratio}
