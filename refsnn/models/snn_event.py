"""Event-driven SNN inference for VGG networks: spikes travel as events, one fused kernel per
layer integrates them straight into the membranes.

    out = snn_event_infer(arch, params, x, timesteps=5)     # out.logits, out.spikes

The same network and equations as ``snn_forward`` in evaluation mode (SPEC 5.1), organised
the way an event-driven simulator is. Between layers nothing dense is stored: layer l's
output is, per sample n and step t, a list of events (flat index into layer l+1's input,
value). A spike is one event of value 1; an average pool of kernel k that follows a layer is
folded into its events (each spike becomes one event of value 1/k^2 at its pooled position:
the next layer is linear, so events that share a position simply add). Each spiking layer is
one Numba kernel, parallel over samples (each sample writes only its own membranes and
events), that for t = 1..T:

    u += sum over the events of step t of  w * value      (scatter through the live weights)
    s  = 1 if u / v - 1 > 0 else 0;  u = lam * (u - v s)   (one pass; u now holds lam u[t])
    emit an event for every spike

so u before the check is lam * u[t-1] + I[t] = u-[t]: the reference's pre-reset membrane,
with I[t]'s products added onto lam * u[t-1] one by one instead of summed first (the same
numbers to rounding). The first layer's current is the analog image's, dense and the same at
every step: computed once per sample by direct convolution (no BLAS call: OpenBLAS's threads
would spin on the cores the event kernels need), then the same loop with u += I. The output layer sums its input events
over t into U = W_L sum_t x_L[t]. Work per layer and step: one pass over the layer's neurons
plus (events) x (live weights per input channel and kernel offset); no dense spike tensor,
no dense current. Residual networks (Blocks) are not covered: use snn_infer.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from ..ops.event import EventWeights
from .arch import Arch, Block, Conv, Linear, Pool
from .snn import _check_forward
from .snn_infer import SNNInference, pack_snn_weights


class EventConv(NamedTuple):
    """A stride-1 conv's live weights for the fused kernel, grouped by input channel c
    (entries ptr[c]:ptr[c+1], in (p, q, o) order): kernel offsets p, q, output channel o,
    value, and the offset ((padding - p) * W_out + (padding - q)) * C_out + o of the entry's
    target from an event's base position (r * W_out + s) * C_out in the channels-last
    (H_out, W_out, C_out) membrane."""
    ptr: np.ndarray  # (C_in + 1,) int64
    p: np.ndarray  # (nnz,) int32
    q: np.ndarray  # (nnz,) int32
    out: np.ndarray  # (nnz,) int32
    value: np.ndarray  # (nnz,)
    offset: np.ndarray  # (nnz,) int32
    shape: tuple  # the dense weight's shape


def pack_event_conv(ew: EventWeights, conv: Conv) -> EventConv:
    """EventConv of a packed conv weight (pack_event_weights) for layer geometry ``conv``."""
    if conv.stride != 1:
        raise ValueError(f"pack_event_conv: {conv.name} has stride {conv.stride}; the fused "
                         f"event engine supports stride 1 (VGG)")
    c_out, c_in, kh, kw = ew.shape
    groups = np.repeat(np.arange(c_in * kh * kw), np.diff(ew.ptr))
    p, q = (groups // kw) % kh, groups % kw
    wo = conv.out_hw[1]
    offset = ((conv.padding - p) * wo + (conv.padding - q)) * c_out + ew.out
    return EventConv(np.ascontiguousarray(ew.ptr[::kh * kw]), p.astype(np.int32),
                     q.astype(np.int32), ew.out, ew.value, offset.astype(np.int32), ew.shape)


def pack_event_network(arch: Arch, params: dict) -> dict:
    """pack_snn_weights, with every conv after the first in its EventConv form: build it once
    per weight / mask change and pass it as snn_event_infer(packed=)."""
    packed = pack_snn_weights(arch, params)
    convs = [layer for layer in arch.layers if isinstance(layer, Conv)]
    for layer in convs[1:]:
        packed[layer.name] = pack_event_conv(packed[layer.name], layer)
    return packed


def _emit_geometry(layers, i, hw):
    """Pool folded into layer i's events: (k, pooled (H, W)) if layers[i+1] is a Pool, else
    (0, (H, W)); a Linear output has hw = (1, 1)."""
    if i + 1 < len(layers) and isinstance(layers[i + 1], Pool):
        pool = layers[i + 1]
        return hw[0] // pool.out_hw[0], pool.out_hw
    return 0, hw


def snn_event_infer(arch: Arch, params: dict, x: np.ndarray, *, timesteps: int,
                    packed: dict | None = None) -> SNNInference:
    """The SNN's logits for images x (N, C, H, W), event-driven (module doc), for VGG networks
    (Conv, Pool and Linear layers). params as snn_infer's; packed: pack_event_network(arch,
    params) (or pack_snn_weights'), built here when None. Returns SNNInference(logits, paths
    (every layer "event" but the first, "dense"), spikes)."""
    fn = "snn_event_infer"
    _check_forward(fn, arch, params, x, timesteps, "heaviside", "pwl")
    if any(isinstance(layer, Block) for layer in arch.layers):
        raise ValueError(f"{fn}: {arch.name} has residual blocks; the fused event engine "
                         f"covers VGG networks only (use snn_infer for {arch.name})")
    if packed is None:
        packed = pack_event_network(arch, params)
    n, dtype = x.shape[0], x.dtype
    layers, paths, counts = arch.layers, {}, {}
    # membranes and spike flags of one layer per sample, sized for the largest layer and reused
    # by every layer (allocated here, not inside the parallel kernels)
    size = max((L.c_out * L.out_hw[0] * L.out_hw[1] if isinstance(L, Conv) else L.n_out)
               for L in layers if isinstance(L, (Conv, Linear)))
    work = (np.empty((n, size), dtype=dtype), np.empty((n, size), dtype=np.bool_))
    events, geom = None, None  # geom: (C, H, W) of the current events' index space
    logits = None
    for i, layer in enumerate(layers):
        if isinstance(layer, Pool):
            continue  # folded into the previous layer's events
        if isinstance(layer, Linear) and not layer.act:
            ew = packed[layer.name]
            logits = np.zeros((n, layer.n_out), dtype=dtype)
            _output_kernel(*events, ew.ptr, ew.out, ew.value, logits)
            paths[layer.name] = "event"
            break
        v = np.asarray(params[f"{layer.name}.threshold"], dtype=dtype)[()]
        lam = np.asarray(params[f"{layer.name}.leak"], dtype=dtype)[()]
        if isinstance(layer, Conv):
            c, hw = layer.c_out, layer.out_hw
        else:
            c, hw = layer.n_out, (1, 1)
        k, (ph, pw) = _emit_geometry(layers, i, hw)
        cap = c * hw[0] * hw[1]  # at most one event per neuron and step
        out = (np.empty((n, timesteps, cap), np.int32), np.empty((n, timesteps, cap), dtype),
               np.zeros((n, timesteps), np.int64))
        if events is None:  # the first layer: the image's dense current, once per sample
            w = params[f"{layer.name}.weight"]
            wt = np.ascontiguousarray(w.transpose(1, 2, 3, 0))  # (C_in, kH, kW, C_out)
            _static_kernel(np.ascontiguousarray(x), wt, layer.stride, layer.padding, hw[0],
                           hw[1], v, lam, timesteps, k, ph, pw, np.empty((n, cap), dtype),
                           *work, *out)
            paths[layer.name] = "dense"
        else:
            ew = packed[layer.name]
            if ew.shape != params[f"{layer.name}.weight"].shape:
                raise ValueError(f"{fn}: packed[{layer.name!r}] is stale; re-run "
                                 f"pack_event_network after changing params")
            if isinstance(layer, Conv):
                ec = ew if isinstance(ew, EventConv) else pack_event_conv(ew, layer)
                _conv_kernel(*events, geom[1], geom[2], ec.ptr, ec.p, ec.q, ec.out, ec.value,
                             ec.offset, layer.kernel, layer.kernel, layer.padding, c, hw[0],
                             hw[1], v, lam, k, ph, pw, *work, *out)
            else:
                _linear_kernel(*events, ew.ptr, ew.out, ew.value, c, v, lam, *work, *out)
            paths[layer.name] = "event"
        counts[layer.name] = int(out[2].sum())
        events, geom = out, (c, ph, pw)
    return SNNInference(logits, paths, counts)


@numba.njit(cache=True, inline="always")
def _fire(u, spk, v, lam):
    """One step's threshold over a layer's membranes u (1-D, u- = lam u[t-1] + I[t] on entry):
    spk[i] = (u-/v - 1 > 0) (the reference's strict test), u[i] = lam (u- - v s), the leaked
    post-reset membrane that step t+1's current is added onto. Branch-free, so it vectorises;
    with s in {0, 1}, u- - v s is exactly u- or u- - v as in the reference."""
    for i in range(u.size):
        um = u[i]
        s = um / v - 1.0 > 0.0
        u[i] = lam * (um - v * s)
        spk[i] = s


@numba.njit(cache=True, inline="always")
def _emit(o, a, b, h, w, k, ph, pw, idx, val, mt, e):
    """Append the spike of neuron (o, a, b) as an event of sample/step mt at position e:
    index (o, a, b) in the (C, h, w) output, or with a pool of kernel k, (o, a//k, b//k) in the
    (C, ph, pw) pooled output with value 1/k^2 (dropped if outside the pooled map)."""
    if k == 0:
        idx[mt[0], mt[1], e] = (o * h + a) * w + b
        val[mt[0], mt[1], e] = 1.0
        return e + 1
    a2, b2 = a // k, b // k
    if a2 >= ph or b2 >= pw:
        return e
    idx[mt[0], mt[1], e] = (o * ph + a2) * pw + b2
    val[mt[0], mt[1], e] = 1.0 / (k * k)
    return e + 1


@numba.njit(cache=True, parallel=True)
def _static_kernel(x, wt, stride, padding, ho, wo, v, lam, timesteps, k, ph, pw, work_c, work_u,
                   work_s, idx, val, cnt):
    """The first layer: its current I = conv(x) by direct convolution into a channels-last
    (H_out, W_out, C_out) row per sample (each tap adds x * w[:, c, p, q], contiguous in the
    output channel), then T steps of u += I, fire, emit. No BLAS call: a GEMM here would leave
    OpenBLAS's threads spinning on the cores the following kernels need."""
    n, c_in, h, w = x.shape
    c_out = wt.shape[3]
    size = ho * wo * c_out
    for m in numba.prange(n):
        cur = work_c[m, :size]
        cur[:] = 0.0
        for a in range(ho):
            for b in range(wo):
                row = (a * wo + b) * c_out
                for c in range(c_in):
                    for p in range(wt.shape[1]):
                        r = a * stride + p - padding
                        if r < 0 or r >= h:
                            continue
                        for q in range(wt.shape[2]):
                            s = b * stride + q - padding
                            if s < 0 or s >= w:
                                continue
                            xv = x[m, c, r, s]
                            for o in range(c_out):
                                cur[row + o] += xv * wt[c, p, q, o]
        u, spk = work_u[m, :size], work_s[m, :size]
        u[:] = 0.0
        for t in range(timesteps):
            for i in range(size):
                u[i] += cur[i]
            _fire(u, spk, v, lam)
            e = 0
            for i in range(size):
                if spk[i]:  # i = (a * W_out + b) * C_out + o
                    ab, o = i // c_out, i % c_out
                    e = _emit(o, ab // wo, ab % wo, ho, wo, k, ph, pw, idx, val, (m, t), e)
            cnt[m, t] = e


@numba.njit(cache=True, parallel=True)
def _conv_kernel(in_idx, in_val, in_cnt, h, w, ptr, p, q, out, value, offset, kh, kw,
                 padding, c_out, ho, wo, v, lam, k, ph, pw, work_u, work_s, idx, val, cnt):
    n, t_steps = in_cnt.shape
    hw = h * w
    for m in numba.prange(n):
        u = work_u[m, :ho * wo * c_out]  # channels-last (H_out, W_out, C_out)
        spk = work_s[m, :ho * wo * c_out]
        u[:] = 0.0
        for t in range(t_steps):
            for e_in in range(in_cnt[m, t]):
                flat = in_idx[m, t, e_in]
                c, rs = flat // hw, flat % hw
                r, s = rs // w, rs % w
                x = in_val[m, t, e_in]
                base = (r * wo + s) * c_out
                lo, hi = ptr[c], ptr[c + 1]
                if r >= kh - 1 - padding and r + padding < ho and s >= kw - 1 - padding \
                        and s + padding < wo:  # every target (r + padding - p, ...) in range
                    for j in range(lo, hi):
                        u[base + offset[j]] += value[j] * x
                else:
                    for j in range(lo, hi):
                        a, b = r + padding - p[j], s + padding - q[j]
                        if 0 <= a < ho and 0 <= b < wo:
                            u[base + offset[j]] += value[j] * x
            _fire(u, spk, v, lam)
            e = 0
            for i in range(u.size):
                if spk[i]:  # i = (a * W_out + b) * C_out + o
                    ab, o = i // c_out, i % c_out
                    e = _emit(o, ab // wo, ab % wo, ho, wo, k, ph, pw, idx, val, (m, t), e)
            cnt[m, t] = e


@numba.njit(cache=True, parallel=True)
def _linear_kernel(in_idx, in_val, in_cnt, ptr, out, value, c_out, v, lam, work_u, work_s,
                   idx, val, cnt):
    n, t_steps = in_cnt.shape
    for m in numba.prange(n):
        u, spk = work_u[m, :c_out], work_s[m, :c_out]
        u[:] = 0.0
        for t in range(t_steps):
            for e_in in range(in_cnt[m, t]):
                i, x = in_idx[m, t, e_in], in_val[m, t, e_in]
                for j in range(ptr[i], ptr[i + 1]):
                    u[out[j]] += value[j] * x
            _fire(u, spk, v, lam)
            e = 0
            for o in range(c_out):
                if spk[o]:
                    e = _emit(o, 0, 0, 1, 1, 0, 1, 1, idx, val, (m, t), e)
            cnt[m, t] = e


@numba.njit(cache=True, parallel=True)
def _output_kernel(in_idx, in_val, in_cnt, ptr, out, value, logits):
    n, t_steps = in_cnt.shape
    for m in numba.prange(n):
        row = logits[m]
        for t in range(t_steps):
            for e_in in range(in_cnt[m, t]):
                i, x = in_idx[m, t, e_in], in_val[m, t, e_in]
                for j in range(ptr[i], ptr[i + 1]):
                    row[out[j]] += value[j] * x
