"""Event-driven SNN inference for VGG networks: spikes travel as events, one fused kernel per
layer integrates them straight into the membranes.

    out = snn_event_infer(arch, params, x, timesteps=5)     # out.logits, out.spikes

The same network and equations as ``snn_forward`` in evaluation mode (SPEC 5.1), organised
the way an event-driven simulator is. Between layers nothing dense is stored: layer l's
output is, per sample n and step t, a list of events (channel and position in layer l+1's
input, coded (c << 16) | (r * W + s); value). A spike is one event of value 1; an average
pool of kernel k that follows a layer is folded into its events (each spike becomes one event
of value 1/k^2 at its pooled position: the next layer is linear, so events that share a
position simply add). Each spiking layer is one Numba kernel, parallel over samples (each
sample writes only its own membranes and events), that for t = 1..T:

    u += sum over the events of step t of  w * value      (scatter through the live weights)
    s  = 1 if u / v - 1 > 0 else 0;  u = lam * (u - v s)   (one pass; u now holds lam u[t])
    emit an event for every spike

so u before the check is lam * u[t-1] + I[t] = u-[t]: the reference's pre-reset membrane,
with I[t]'s products added onto lam * u[t-1] one by one instead of summed first (the same
numbers to rounding). The first layer's current is the analog image's, dense and the same at
every step: computed once per sample by direct convolution (no BLAS call: OpenBLAS's threads
would spin on the cores the event kernels need), then the same loop with u += I. The output
layer sums its input events over t into U = W_L sum_t x_L[t]. Work per layer and step: one
pass over the layer's neurons plus (events) x (live weights per input channel and kernel
offset); no dense spike tensor, no dense current. Residual networks (Blocks) are not
covered: use snn_infer.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from ..ops.event import EventWeights
from .arch import POOL_KERNEL, Arch, Block, Conv, Linear, Pool
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
        return POOL_KERNEL, pool.out_hw
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
    size = -(-size // 8) * 8  # whole 8-byte words of spike flags (see _spiking)
    work = (np.empty((n, size), dtype=dtype), np.empty((n, size), dtype=np.bool_),
            np.empty((n, size), dtype=np.int32), np.zeros(n, dtype=np.int64))
    events, geom = None, None  # geom: (C, H, W) of the current events' index space
    logits = None
    for i, layer in enumerate(layers):
        if isinstance(layer, Pool):
            continue  # folded into the previous layer's events
        if isinstance(layer, Linear) and not layer.act:
            ew = packed[layer.name]
            logits = np.zeros((n, layer.n_out), dtype=dtype)
            _output_kernel(*events, geom[1] * geom[2], ew.ptr, ew.out, ew.value, logits)
            paths[layer.name] = "event"
            break
        v = np.asarray(params[f"{layer.name}.threshold"], dtype=dtype)[()]
        lam = np.asarray(params[f"{layer.name}.leak"], dtype=dtype)[()]
        if isinstance(layer, Conv):
            c, hw = layer.c_out, layer.out_hw
        else:
            c, hw = layer.n_out, (1, 1)
        k, (ph, pw) = _emit_geometry(layers, i, hw)
        if c >= 1 << 15 or hw[0] * hw[1] > 1 << 16:
            raise ValueError(f"{fn}: {layer.name} has {c} channels of {hw[0]}x{hw[1]}; the "
                             f"event code holds < 32768 channels of <= 65536 positions")
        cap = c * hw[0] * hw[1]  # at most one event per neuron and step
        # each sample's events of steps 1..T back to back (cnt[m, t] of step t): only the
        # pages that events fill are ever touched
        out = (np.empty((n, timesteps * cap), np.int32),
               np.empty((n, timesteps * cap), dtype), np.zeros((n, timesteps), np.int64))
        work[3][:] = 0  # this layer's spikes per sample
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
                rows, cols = np.divmod(np.arange(geom[1] * geom[2], dtype=np.int32), geom[2])
                _conv_kernel(*events, rows, cols, ec.ptr, ec.p, ec.q, ec.out, ec.value,
                             ec.offset, layer.kernel, layer.kernel, layer.padding, c, hw[0],
                             hw[1], v, lam, k, ph, pw, *work, *out)
            else:
                _linear_kernel(*events, geom[1] * geom[2], ew.ptr, ew.out, ew.value, c, v, lam,
                               *work, *out)
            paths[layer.name] = "event"
        counts[layer.name] = int(work[3].sum())  # spikes, including those a pool drops
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
def _spiking(spk, size, pos):
    """pos[:count] = the indices i < size with spk[i] set, ascending; returns count. spk is a
    whole C-contiguous row of flags (a multiple of 8 long), read 8 at a time: at the sparse
    activity this engine is for, most words are zero."""
    words = spk.view(np.uint64)
    count = 0
    for wi in range((size + 7) // 8):
        if words[wi] != 0:
            for i in range(wi * 8, min(size, wi * 8 + 8)):
                if spk[i]:
                    pos[count] = i
                    count += 1
    return count


@numba.njit(cache=True, inline="always")
def _emit(o, a, b, h, w, k, ph, pw, idx, val, e):
    """Append the spike of neuron (o, a, b) as event e of its sample (idx, val: its rows), coded
    (o << 16) | (a * w + b) for position (a, b) of channel o of the (C, h, w) output; or with a
    pool of kernel k, (o << 16) | (a//k * pw + b//k) in the (C, ph, pw) pooled output, value
    1/k^2 (dropped if outside the pooled map). The consumer decodes without a division."""
    if k == 0:
        idx[e] = (o << 16) | (a * w + b)
        val[e] = 1.0
        return e + 1
    a2, b2 = a // k, b // k
    if a2 >= ph or b2 >= pw:
        return e
    idx[e] = (o << 16) | (a2 * pw + b2)
    val[e] = 1.0 / (k * k)
    return e + 1


@numba.njit(cache=True, inline="always")
def _emit_map(spk, size, pos, c_out, ho, wo, k, ph, pw, idx, val, e):
    """Emit the spikes of a channels-last (H_out, W_out, C_out) map of flags (index
    i = (a * W_out + b) * C_out + o) as events from position e; returns (spikes, next e)."""
    fired = _spiking(spk, size, pos)
    for j in range(fired):
        ab, o = pos[j] // c_out, pos[j] % c_out
        e = _emit(o, ab // wo, ab % wo, ho, wo, k, ph, pw, idx, val, e)
    return fired, e


@numba.njit(cache=True, parallel=True)
def _static_kernel(x, wt, stride, padding, ho, wo, v, lam, timesteps, k, ph, pw, work_c, work_u,
                   work_s, work_p, work_f, idx, val, cnt):
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
        u, spk, pos = work_u[m, :size], work_s[m], work_p[m]
        u[:] = 0.0
        e = 0
        for t in range(timesteps):
            for i in range(size):  # _fire with u- = lam u[t-1] + I, in one pass
                um = u[i] + cur[i]
                s = um / v - 1.0 > 0.0
                u[i] = lam * (um - v * s)
                spk[i] = s
            e0 = e
            fired, e = _emit_map(spk, size, pos, c_out, ho, wo, k, ph, pw, idx[m], val[m], e)
            work_f[m] += fired
            cnt[m, t] = e - e0


@numba.njit(cache=True, parallel=True)
def _conv_kernel(in_idx, in_val, in_cnt, row_of, col_of, ptr, p, q, out, value, offset, kh,
                 kw, padding, c_out, ho, wo, v, lam, k, ph, pw, work_u, work_s, work_p, work_f,
                 idx, val, cnt):
    n, t_steps = in_cnt.shape
    for m in numba.prange(n):
        u = work_u[m, :ho * wo * c_out]  # channels-last (H_out, W_out, C_out)
        spk, pos = work_s[m], work_p[m]
        u[:] = 0.0
        first, e = 0, 0  # this step's first input event; the next output event
        for t in range(t_steps):
            for e_in in range(first, first + in_cnt[m, t]):
                code = in_idx[m, e_in]
                c, rs = code >> 16, code & 0xFFFF
                r, s = row_of[rs], col_of[rs]
                x = in_val[m, e_in]
                base = (r * wo + s) * c_out
                lo, hi = ptr[c], ptr[c + 1]
                if r >= kh - 1 - padding and r + padding < ho and s >= kw - 1 - padding \
                        and s + padding < wo:  # every target (r + padding - p, ...) in range
                    for j in range(lo, hi):  # unsigned index: no negative-index wraparound
                        u[np.uint64(base + offset[j])] += value[j] * x
                else:
                    for j in range(lo, hi):
                        a, b = r + padding - p[j], s + padding - q[j]
                        if 0 <= a < ho and 0 <= b < wo:
                            u[np.uint64(base + offset[j])] += value[j] * x
            first += in_cnt[m, t]
            _fire(u, spk, v, lam)
            e0 = e
            fired, e = _emit_map(spk, u.size, pos, c_out, ho, wo, k, ph, pw, idx[m], val[m], e)
            work_f[m] += fired
            cnt[m, t] = e - e0


@numba.njit(cache=True, parallel=True)
def _linear_kernel(in_idx, in_val, in_cnt, hw, ptr, out, value, c_out, v, lam, work_u, work_s,
                   work_p, work_f, idx, val, cnt):
    n, t_steps = in_cnt.shape
    for m in numba.prange(n):
        u, spk, pos = work_u[m, :c_out], work_s[m], work_p[m]
        u[:] = 0.0
        first, e = 0, 0
        for t in range(t_steps):
            for e_in in range(first, first + in_cnt[m, t]):
                code, x = in_idx[m, e_in], in_val[m, e_in]
                i = (code >> 16) * hw + (code & 0xFFFF)  # flattened (C, H, W) input index
                for j in range(ptr[i], ptr[i + 1]):
                    u[np.uint32(out[j])] += value[j] * x
            first += in_cnt[m, t]
            _fire(u, spk, v, lam)
            e0 = e
            fired = _spiking(spk, c_out, pos)
            work_f[m] += fired
            for j in range(fired):
                e = _emit(pos[j], 0, 0, 1, 1, 0, 1, 1, idx[m], val[m], e)
            cnt[m, t] = e - e0


@numba.njit(cache=True, parallel=True)
def _output_kernel(in_idx, in_val, in_cnt, hw, ptr, out, value, logits):
    n = in_cnt.shape[0]
    for m in numba.prange(n):
        row = logits[m]
        for e_in in range(in_cnt[m].sum()):  # every step's events: U = W_L sum_t x_L[t]
            code, x = in_idx[m, e_in], in_val[m, e_in]
            i = (code >> 16) * hw + (code & 0xFFFF)
            for j in range(ptr[i], ptr[i + 1]):
                row[np.uint32(out[j])] += value[j] * x
