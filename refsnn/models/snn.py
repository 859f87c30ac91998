"""The SNN form of every architecture (SPEC 5): forward over T steps records a tape, backward
(BPTT, SPEC 5.3) walks it in reverse.

    params.update(snn_init_neurons(arch, dtype))           # "<layer>.threshold", "<layer>.leak"
    U, tape = snn_forward(arch, params, x, timesteps=5, masks=masks)
    grads = snn_backward(grad_U, arch, params, tape, masks=masks)

The same Arch records as the ANN (models/arch.py; for the SNN build them with
``dropout_conv=0.2, dropout_fc=0.2``). Every Conv and every Linear but the last integrates its
current in a LIF neuron (neurons/lif.py); in a Block the neuron after the sum belongs to conv2
and the shortcut has none. Per spiking layer l and step t (SPEC 5.1):

    I_l[t] = W_l * x_l[t]        x_1[t] = x (direct input: I_1 is computed once)
    s_l    = LIF(I_l)            all T steps of layer l in one call (lif_forward)
    x_{l+1}[t] = dropout_l(pool_l(s_l[t]))    the dropout mask is the same at every t
    U = sum_t W_L x_L[t] = W_L (sum_t x_L[t])   no neuron; logits = U

Layer-wise order (all T steps of layer l, then layer l+1) performs exactly the operations of the
SPEC's step-by-step order, since nothing flows backwards in space. Each conv/linear runs once
over all steps as one GEMM on a (T*N, ...) batch. Average-pooled spikes (0, 0.25, ...) are used
as they are. Arrays are time-major, (T, N, ...).

The tape is a list of per-layer NamedTuples in network order (below): the layer record, its
input, and for each neuron its current, pre-reset membrane and spikes. ``snn_trace_arrays``
turns it into the golden-trace arrays of SPEC 7.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import check_array, check_choice, check_int
from ..neurons.lif import SPIKE_MODES, LIFTrace, lif_backward, lif_forward, lif_membrane
from ..neurons.surrogate import DEFAULT_ALPHA, DEFAULT_GAMMA, SURROGATES
from ..ops.conv import conv2d_backward, conv2d_forward_keep
from ..ops.winograd import (WinogradOut, conv2d_forward_auto, winograd_applies,
                            winograd_conv_backward, winograd_conv_forward)
from ..ops.event import (conv2d_event_backward, conv2d_event_forward, flat_order_grad,
                         linear_event_forward, unpack_event_grad)
from ..ops.linear import linear_backward, linear_forward
from ..ops.pool import avg_pool2d_backward, avg_pool2d_forward
from ..ops.sparse_conv import conv2d_sparse_backward, conv2d_sparse_forward_keep
from ..ops.sparse_linear import linear_sparse_backward
from .arch import POOL_KERNEL, Arch, Block, Conv, Linear, Pool, weight_layers, weight_shape


class NeuronRecord(NamedTuple):
    current: np.ndarray  # I[t] (T, N, ...), or (N, ...) when the same at every t (first layer)
    trace: LIFTrace  # spikes s[t], membrane_pre u-[t]: (T, N, ...)


# Weight-sparse convs in training (sparse=): the forward scatters the input's spikes as events
# (ops.event) when at most this fraction of the input is nonzero, else it runs the
# shifted-plane kernels (ops.sparse_conv). Measured on vgg9's shapes at weight density 0.05,
# T*N = 160, 2 threads: the event forward took 0.24 of the plane forward's time over the six
# convs at input density 0.02, 0.40 at 0.05, 0.86 at 0.1 (about equal on 16x16 maps, faster
# on smaller ones); the whole training step at tools/bench.py's operating point (inputs of
# density 0.02-0.075) 23.5 ms/image with the limit at 0.05, 22.2 at 0.08, 21.6 at 0.1, 22.3
# at 1 (events always).
EVENT_MAX_DENSITY = 0.1
# ... and, after an event forward, the weight gradient gathers over the events too when an
# output map has at most this many positions (the same runs: 4x4 and 2x2 maps 0.07-0.36 of
# the plane kernel's time; 16x16 maps 1.8-5.7 times it, from scattered reads of grad_y).
# With the four-weight plane kernels, the operating-point step (interleaved in one process,
# 2 threads) took 17.29 / 16.86 ms/image at 16 positions, 16.91 / 16.34 at 64 (8x8 maps by
# events too), 17.25 at 256.
EVENT_GRAD_W_MAX_POSITIONS = 64


class ConvRecord(NamedTuple):
    layer: Conv
    x: np.ndarray  # input (T, N, C_in, H, W); the image (N, C_in, H, W) for the first layer
    neuron: NeuronRecord
    cols: np.ndarray | WinogradOut | None = None  # im2col of x over the (T*N) batch, or the
    # WinogradOut where Winograd computed the conv (sparse convs: the padded planes; None
    # after an event forward), reused by the backward


class PoolRecord(NamedTuple):
    layer: Pool
    x_shape: tuple  # (T, N, C, H, W)


class LinearRecord(NamedTuple):
    layer: Linear  # a hidden (spiking) Linear
    x: np.ndarray  # input flattened to (T*N, n_in)
    x_shape: tuple  # (T, N, ...) before flattening
    neuron: NeuronRecord


class OutputRecord(NamedTuple):
    layer: Linear  # the last Linear: no neuron
    x_sum: np.ndarray  # sum_t x_L[t], flattened to (N, n_in)
    x_shape: tuple  # (T, N, ...) of x_L before summing and flattening


class BlockRecord(NamedTuple):
    layer: Block
    x: np.ndarray  # block input (T, N, C, H, W)
    neuron1: NeuronRecord  # conv1's neuron: I = conv1(x)
    h_in: np.ndarray  # conv2's input: dropout(spikes of conv1), (T, N, ...)
    neuron2: NeuronRecord  # conv2's neuron, after the sum: I = conv2(h_in) + shortcut(x)


def spiking_layers(arch: Arch) -> list:
    """The Conv/Linear records that own a LIF neuron, in network order: every Conv (a Block
    gives conv1, conv2; its shortcut has none) and every Linear but the output layer."""
    out = []
    for layer in arch.layers:
        if isinstance(layer, Block):
            out += [layer.conv1, layer.conv2]
        elif isinstance(layer, Conv) or (isinstance(layer, Linear) and layer.act):
            out.append(layer)
    return out


def snn_init_neurons(arch: Arch, dtype, *, threshold: float = 1.0, leak: float = 1.0) -> dict:
    """{"<layer>.threshold": v, "<layer>.leak": lam} for every spiking layer, as 0-d arrays of
    ``dtype`` (SPEC 5.1: lam starts at 1; stage C replaces v by its calibrated values)."""
    dtype = np.dtype(dtype)
    out = {}
    for layer in spiking_layers(arch):
        out[f"{layer.name}.threshold"] = np.asarray(threshold, dtype=dtype)
        out[f"{layer.name}.leak"] = np.asarray(leak, dtype=dtype)
    return out


def snn_param_shapes(arch: Arch) -> dict:
    """{name: shape} of every SNN parameter, in network order: "<layer>.weight" for every
    Conv/Linear, then "<layer>.threshold" and "<layer>.leak" (shape ()) for every neuron."""
    spiking = {layer.name for layer in spiking_layers(arch)}
    out = {}
    for layer in weight_layers(arch):
        out[f"{layer.name}.weight"] = weight_shape(layer)
        if layer.name in spiking:
            out[f"{layer.name}.threshold"] = ()
            out[f"{layer.name}.leak"] = ()
    return out


# --- time-batched ops: (T, N, ...) <-> (T*N, ...) --------------------------------------------

def _merge(a):
    return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


def _split(a, t):
    return a.reshape((t, a.shape[0] // t) + a.shape[1:])


def _conv(layer: Conv, params, x):
    """conv over every step at once: (T, N, C, H, W) -> (T, N, C_out, H', W'); or (N, ...) ->
    (N, ...) for the static image. Winograd where ops.winograd's shape rule says so."""
    w = params[f"{layer.name}.weight"]
    if x.ndim == 4:
        return conv2d_forward_auto(x, w, stride=layer.stride, padding=layer.padding)
    y = conv2d_forward_auto(_merge(x), w, stride=layer.stride, padding=layer.padding)
    return _split(y, x.shape[0])


def _conv_keep(layer: Conv, params, x):
    """_conv that also returns what its backward needs of a (T, N, ...) input: the im2col
    matrix, or the WinogradOut (transformed input and filters) where Winograd computed it;
    None for the static image (its weight gradient needs one small im2col of (N, ...) only)."""
    w = params[f"{layer.name}.weight"]
    if x.ndim == 4:
        return _conv(layer, params, x), None
    xm = _merge(x)
    if winograd_applies(xm.shape, w.shape, layer.stride, layer.padding):
        out = winograd_conv_forward(xm, w)
        return _split(out.y, x.shape[0]), out
    out = conv2d_forward_keep(xm, w, stride=layer.stride, padding=layer.padding)
    return _split(out.y, x.shape[0]), out.cols


def _drop(a, masks, name):
    """dropout with one mask for every step: a[t] * mask (mask (N, ...), a (T, N, ...))."""
    if masks is None or name not in masks:
        return a
    m = masks[name]
    if not isinstance(m, np.ndarray) or m.shape != a.shape[1:] or m.dtype != a.dtype:
        raise ValueError(f"snn: masks[{name!r}] must be a {a.dtype} array of shape "
                         f"{a.shape[1:]} (N, ...), got {getattr(m, 'dtype', type(m).__name__)} "
                         f"{getattr(m, 'shape', '')}")
    return a * m  # the dropout_forward product, broadcast over t


def _neuron(layer, params, current, repeat, opts) -> NeuronRecord:
    """lif_forward of one layer's current; repeat=T for the first layer's static current."""
    trace = lif_forward(current, threshold=params[f"{layer.name}.threshold"],
                        leak=params[f"{layer.name}.leak"], repeat=repeat, **opts)
    return NeuronRecord(current, trace)


def _check_forward(fn, arch, params, x, timesteps, spike, surrogate):
    check_array(fn, "x", x, ndim=4, dims="(N, C, H, W)")
    if tuple(x.shape[1:]) != tuple(arch.in_shape):
        raise ValueError(f"{fn}: x.shape={x.shape}, expected (N,) + {arch.in_shape} for "
                         f"{arch.name}")
    check_int(fn, "timesteps", timesteps, minimum=1)
    check_choice(fn, "spike", spike, SPIKE_MODES)
    check_choice(fn, "surrogate", surrogate, tuple(SURROGATES))
    if not arch.layers or not isinstance(arch.layers[0], Conv):
        raise ValueError(f"{fn}: direct input needs a Conv first layer; {arch.name} starts with "
                         f"{type(arch.layers[0]).__name__ if arch.layers else 'nothing'}")
    _check_params(fn, arch, params, x.dtype)


def _check_sparse(fn, arch, params, sparse):
    """sparse may name the stride-1 Conv layers of the network's top level after the first and
    the hidden Linear layers, each with the packing of its current weight (same shape, values of
    the weight's dtype)."""
    if not sparse:
        return
    allowed = sparse_layer_names(arch)
    for name, ew in sparse.items():
        if name not in allowed:
            raise ValueError(f"{fn}: sparse[{name!r}]: only the stride-1 convs after the first "
                             f"(outside residual blocks) and the hidden linear layers run "
                             f"weight-sparse: {list(allowed)}")
        w = params[f"{name}.weight"]
        if getattr(ew, "shape", None) != w.shape or ew.value.dtype != w.dtype:
            raise ValueError(f"{fn}: sparse[{name!r}] must be pack_event_weights of the current "
                             f"{w.dtype} weight of shape {w.shape}")


def sparse_layer_names(arch: Arch) -> tuple:
    """The layers snn_forward / snn_backward can run weight-sparse (sparse=), in network order:
    the stride-1 convs of the top level after the first, and the hidden (spiking) linears."""
    first = next(layer.name for layer in arch.layers if isinstance(layer, Conv))
    return tuple(layer.name for layer in arch.layers
                 if (isinstance(layer, Conv) and layer.stride == 1 and layer.name != first)
                 or (isinstance(layer, Linear) and layer.act))


def live_indices(sparse: dict) -> dict:
    """{"<layer>.weight": flat indices of its live weights, increasing} for the packings in
    sparse: where snn_backward(packed_grads=True) puts each packed gradient, and what
    adam_step(live=) takes (computed once per mask change, not per step)."""
    return {f"{name}.weight": ew.index[ew.order] for name, ew in sparse.items()}


def _check_params(fn, arch, params, dtype):
    missing = [k for k in snn_param_shapes(arch) if k not in params]
    if missing:
        raise ValueError(f"{fn}: params lacks {missing} (thresholds and leaks come from "
                         f"snn_init_neurons)")
    for k, shape in snn_param_shapes(arch).items():
        p = params[k]
        if np.shape(p) != shape or getattr(p, "dtype", dtype) != dtype:
            raise ValueError(f"{fn}: params[{k!r}] has shape {np.shape(p)} and dtype "
                             f"{getattr(p, 'dtype', type(p).__name__)}, expected {shape} {dtype}")


def snn_forward(arch: Arch, params: dict, x: np.ndarray, *, timesteps: int,
                masks: dict | None = None, spike: str = "heaviside", surrogate: str = "pwl",
                gamma: float = DEFAULT_GAMMA, alpha: float = DEFAULT_ALPHA,
                sparse: dict | None = None, event_max_density: float = EVENT_MAX_DENSITY):
    """The SNN's output U = sum_t W_L x_L[t] (the logits) and the tape for snn_backward.

    x: (N, C, H, W) normalised images, the same at every step (direct input), in the
    parameters' dtype -> U: (N, classes). params: "<layer>.weight" for every Conv/Linear plus
    "<layer>.threshold" / "<layer>.leak" (0-d) for every spiking layer (snn_init_neurons).
    masks: {layer name: (N, ...) dropout mask} from draw_dropout_masks, reused at every step,
    or None (no dropout). spike / surrogate / gamma / alpha: as lif_forward ("smooth" makes the
    forward differentiable, for gradient tests). sparse: {layer name: pack_event_weights of its
    current weight} for the layers that should run weight-sparse (sparse_layer_names: the
    stride-1 convs after the first, ops/sparse_conv.py, d of the multiply-adds; the hidden
    linears, whose backward is ops/sparse_linear.py; the same numbers to rounding); pass the
    same dict to snn_backward. Those layers scatter their input's spikes as events instead
    (ops/event.py) when at most event_max_density of the input is nonzero (a sparse linear's
    forward is otherwise the masked weight's GEMM): the same numbers to rounding either way
    (0 never, 1 always; the default is measured, EVENT_MAX_DENSITY).
    """
    fn = "snn_forward"
    _check_forward(fn, arch, params, x, timesteps, spike, surrogate)
    _check_sparse(fn, arch, params, sparse)
    if isinstance(event_max_density, bool) or not isinstance(event_max_density, (int, float)) \
            or not 0.0 <= event_max_density <= 1.0:
        raise ValueError(f"{fn}: event_max_density must be a number in [0, 1], got "
                         f"{event_max_density!r}")
    opts = dict(spike=spike, surrogate=surrogate, gamma=gamma, alpha=alpha)
    tape, h = [], x  # h: (N, C, H, W) image, then (T, N, ...) from the first neuron on
    for layer in arch.layers:
        if isinstance(layer, Conv):
            static = h.ndim == 4  # the image: I_1 is the same at every step
            if sparse and layer.name in sparse and not static:
                hm, ew = _merge(h), sparse[layer.name]
                if np.count_nonzero(hm) <= event_max_density * hm.size:  # few spikes
                    y, cols = conv2d_event_forward(hm, ew, padding=layer.padding), None
                else:  # cols: the padded planes, for the backward
                    y, cols = conv2d_sparse_forward_keep(hm, ew, padding=layer.padding)
                current = _split(y, timesteps)
            else:
                current, cols = _conv_keep(layer, params, h)
            nr = _neuron(layer, params, current, timesteps if static else None, opts)
            tape.append(ConvRecord(layer, h, nr, cols))
            h = _drop(nr.trace.spikes, masks, layer.name)
        elif isinstance(layer, Pool):
            tape.append(PoolRecord(layer, h.shape))
            h = _split(avg_pool2d_forward(_merge(h), kernel=POOL_KERNEL), timesteps)
        elif isinstance(layer, Linear) and layer.act:
            x2 = h.reshape(h.shape[0] * h.shape[1], -1)  # flatten each (t, n) sample, C order
            if sparse and layer.name in sparse and \
                    np.count_nonzero(x2) <= event_max_density * x2.size:  # few spikes
                cur = linear_event_forward(x2, sparse[layer.name])
            else:  # the masked weight's GEMM (pruned weights are 0)
                cur = linear_forward(x2, params[f"{layer.name}.weight"])  # (T*N, n_out)
            nr = _neuron(layer, params, _split(cur, timesteps), None, opts)
            tape.append(LinearRecord(layer, x2, h.shape, nr))
            h = _drop(nr.trace.spikes, masks, layer.name)
        elif isinstance(layer, Linear):  # output: U = W_L (sum_t x_L[t])
            x_sum = h.sum(axis=0).reshape(h.shape[1], -1)  # (N, n_in), summed t = 1..T
            tape.append(OutputRecord(layer, x_sum, h.shape))
            h = linear_forward(x_sum, params[f"{layer.name}.weight"])
        else:  # Block
            n1 = _neuron(layer.conv1, params, _conv(layer.conv1, params, h), None, opts)
            h_in = _drop(n1.trace.spikes, masks, layer.conv1.name)
            short = _conv(layer.shortcut, params, h) if layer.shortcut else h
            n2 = _neuron(layer.conv2, params, _conv(layer.conv2, params, h_in) + short, None,
                         opts)
            tape.append(BlockRecord(layer, h, n1, h_in, n2))
            h = n2.trace.spikes
    return h, tape


def snn_backward(grad_U: np.ndarray, arch: Arch, params: dict, tape: list, *,
                 masks: dict | None = None, surrogate: str = "pwl",
                 gamma: float = DEFAULT_GAMMA, alpha: float = DEFAULT_ALPHA,
                 detach_reset: bool = True, sparse: dict | None = None,
                 consume_tape: bool = False, packed_grads: bool = False) -> dict:
    """Gradients of a scalar loss with respect to every SNN parameter, given dL/dU (SPEC 5.3).

    Returns {"<layer>.weight": array, "<layer>.threshold": 0-d, "<layer>.leak": 0-d} in
    snn_param_shapes order. Walks the tape in reverse:
      output:  dW_L = dU^T (sum_t x_L[t]);  dL/dx_L[t] = dU W_L at every t
      neuron:  lif_backward (BPTT over t; v and lam gradients summed over t and neurons)
      conv/linear: one VJP over the (T*N, ...) batch, so dW_l = sum_t du-_l[t] (*) x_l[t]
      dropout: times the same mask at every t;  pool: avg_pool2d_backward per step
      Block:   dL/dx = conv1 path + shortcut path (identity or 1x1 conv)
    The first layer's current is the same at every t, so its weight gradient is one conv VJP
    of sum_t du-_1[t]; the image gets no gradient. masks, surrogate, gamma, alpha must be the
    forward's; detach_reset as lif_backward (True = SPEC 5.3). sparse: the forward's; those
    layers' weight gradients are computed for the live weights only (zero at pruned weights,
    where the dense path gives the full gradient). consume_tape=True lets the backward write
    its temporaries over the tape's im2col matrices (one matrix fewer alive at a time: lower
    peak memory; the same gradients, bit for bit); the tape cannot be used again.
    packed_grads=True returns the sparse layers' weight gradients per live weight, (nnz,) in
    increasing flat index (at live_indices(sparse)[f"{layer}.weight"]; for adam_step(live=)),
    instead of dense arrays that are zero at the pruned weights.
    """
    fn = "snn_backward"
    check_array(fn, "grad_U", grad_U, ndim=2, dims="(N, classes)")
    check_choice(fn, "surrogate", surrogate, tuple(SURROGATES))
    if not tape or not isinstance(tape[-1], OutputRecord):
        raise ValueError(f"{fn}: tape must be the list returned by snn_forward")
    _check_params(fn, arch, params, grad_U.dtype)
    for name, flag in (("consume_tape", consume_tape), ("packed_grads", packed_grads)):
        if not isinstance(flag, bool):
            raise TypeError(f"{fn}: {name} must be a bool, got {flag!r}")
    unpack = flat_order_grad if packed_grads else unpack_event_grad
    opts = dict(surrogate=surrogate, gamma=gamma, alpha=alpha, detach_reset=detach_reset)
    grads, g = {}, grad_U
    for rec in reversed(tape):
        if isinstance(rec, OutputRecord):
            lg = linear_backward(g, rec.x_sum, params[f"{rec.layer.name}.weight"])
            grads[f"{rec.layer.name}.weight"] = lg.w
            # d(sum_t x[t])/dx[t] = 1: the same gradient reaches every step
            g = np.ascontiguousarray(np.broadcast_to(lg.x.reshape(rec.x_shape[1:]), rec.x_shape))
        elif isinstance(rec, PoolRecord):
            t = rec.x_shape[0]
            g = _split(avg_pool2d_backward(_merge(g), _merge_shape(rec.x_shape),
                                           kernel=POOL_KERNEL), t)
        elif isinstance(rec, LinearRecord):
            g_i = _neuron_back(_drop(g, masks, rec.layer.name), rec.layer, rec.neuron, params,
                               grads, opts)
            ew = sparse.get(rec.layer.name) if sparse else None
            if ew is not None:  # through the live weights only
                lg = linear_sparse_backward(_merge(g_i), rec.x, ew)
                grads[f"{rec.layer.name}.weight"] = unpack(ew, lg.w)
            else:
                lg = linear_backward(_merge(g_i), rec.x, params[f"{rec.layer.name}.weight"])
                grads[f"{rec.layer.name}.weight"] = lg.w
            g = lg.x.reshape(rec.x_shape)
        elif isinstance(rec, ConvRecord):
            g_i = _neuron_back(_drop(g, masks, rec.layer.name), rec.layer, rec.neuron, params,
                               grads, opts)
            ew = sparse.get(rec.layer.name) if sparse and rec.x.ndim == 5 else None
            g = _conv_back(g_i, rec.layer, params, rec.x, grads, cols=rec.cols, ew=ew,
                           overwrite=consume_tape, unpack=unpack)
        else:  # BlockRecord
            blk = rec.layer
            g_i2 = _neuron_back(g, blk.conv2, rec.neuron2, params, grads, opts)  # at the sum
            g_h = _conv_back(g_i2, blk.conv2, params, rec.h_in, grads)
            g_i1 = _neuron_back(_drop(g_h, masks, blk.conv1.name), blk.conv1, rec.neuron1,
                                params, grads, opts)
            g_x = _conv_back(g_i1, blk.conv1, params, rec.x, grads)
            g_s = _conv_back(g_i2, blk.shortcut, params, rec.x, grads) if blk.shortcut else g_i2
            g = g_x + g_s
    return {k: grads[k] for k in snn_param_shapes(arch)}


def _merge_shape(shape):
    return (shape[0] * shape[1],) + tuple(shape[2:])


def _neuron_back(grad_spikes, layer, nr: NeuronRecord, params, grads, opts):
    """lif_backward for one neuron; stores its v and lam gradients, returns dL/dI."""
    lg = lif_backward(grad_spikes, nr.current, nr.trace,
                      threshold=params[f"{layer.name}.threshold"],
                      leak=params[f"{layer.name}.leak"], **opts)
    grads[f"{layer.name}.threshold"] = lg.threshold
    grads[f"{layer.name}.leak"] = lg.leak
    return lg.current


def _conv_back(g, layer: Conv, params, x, grads, cols=None, ew=None, overwrite=False,
               unpack=unpack_event_grad):
    """conv VJP over the (T*N) batch (cols: the forward's im2col, if kept; ew: packed live
    weights for the weight-sparse VJP, its weight gradient stored as unpack(ew, per entry));
    for the static image (x 4-D, g summed over t: (N, ...)) only the weight gradient."""
    if ew is not None:
        gm, xm = _merge(g), _merge(x)
        if cols is None and g.shape[-2] * g.shape[-1] <= EVENT_GRAD_W_MAX_POSITIONS:
            gw = conv2d_event_backward(gm, xm, ew, padding=layer.padding, need_x=False).w
            cg = conv2d_sparse_backward(gm, xm, ew, padding=layer.padding, need_w=False)
        else:  # cols None after an event forward: the planes are padded here
            cg = conv2d_sparse_backward(gm, xm, ew, padding=layer.padding, xp=cols)
            gw = cg.w
        grads[f"{layer.name}.weight"] = unpack(ew, gw)
        return _split(cg.x, x.shape[0])
    w = params[f"{layer.name}.weight"]
    if x.ndim == 4:
        cg = conv2d_backward(g, x, w, stride=layer.stride, padding=layer.padding, need_x=False)
        grads[f"{layer.name}.weight"] = cg.w
        return None
    if isinstance(cols, WinogradOut):  # the exact adjoint of the Winograd forward
        xm = _merge(x)
        cg = winograd_conv_backward(_merge(g), cols.v, w, xm.shape, u=cols.u,
                                    overwrite_v=overwrite)
        grads[f"{layer.name}.weight"] = cg.w
        return _split(cg.x, x.shape[0])
    cg = conv2d_backward(_merge(g), _merge(x), w, stride=layer.stride, padding=layer.padding,
                         cols=cols, overwrite_cols=overwrite and cols is not None)
    grads[f"{layer.name}.weight"] = cg.w
    return _split(cg.x, x.shape[0])


def snn_trace_arrays(arch: Arch, params: dict, tape: list) -> dict:
    """SPEC 7 golden-trace arrays of every spiking layer, in network order, each (T, N, ...):

    "trace.<layer>.current" (I[t]; the first layer's is broadcast over t), ".membrane_pre"
    (u-[t]), ".spikes" (s[t]) and ".membrane" (u[t] = u-[t] - v s[t], after the reset).
    """
    neurons = []
    for rec in tape:
        if isinstance(rec, (ConvRecord, LinearRecord)):
            neurons.append((rec.layer.name, rec.neuron))
        elif isinstance(rec, BlockRecord):
            neurons += [(rec.layer.conv1.name, rec.neuron1), (rec.layer.conv2.name, rec.neuron2)]
    out = {}
    for name, nr in neurons:
        shape = nr.trace.spikes.shape
        out[f"trace.{name}.current"] = np.ascontiguousarray(np.broadcast_to(nr.current, shape))
        out[f"trace.{name}.membrane_pre"] = nr.trace.membrane_pre
        out[f"trace.{name}.spikes"] = nr.trace.spikes
        out[f"trace.{name}.membrane"] = lif_membrane(nr.trace,
                                                     threshold=params[f"{name}.threshold"])
    return out
