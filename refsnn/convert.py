"""Stage C (SPEC 5.4): ANN -> SNN conversion, i.e. threshold initialisation from activations.

    thresholds = init_thresholds(arch, ann_weights, x, timesteps=5)      # x: 512 train images
    params = convert_checkpoint_arrays(arch, ann_arrays, thresholds)     # SNN parameter dict

The weights (and masks) are copied unchanged and every leak is 1. Each spiking layer l, in
network order (VGG: conv1..convK, then fc1, fc2; ResNet: stem.conv1..3, then per block conv1,
conv2), gets

    p_l[t] = k-th smallest of the n values of I_l[t]         (all N images, all neurons)
             k = 1 + round_half_up(q (n - 1)),  q = percentile / 100 = 0.997 by default
    v_l    = max(max_{t=1..T_init} p_l[t], v_min)             the threshold later layers see
    final  = max(alpha * v_l, v_min)                          alpha = 0.2 if T <= 5 else 0.3

where I_l[t] is the input current of layer l at step t when the SNN (SPEC 5.1, leak 1, no
dropout) runs for T_init steps on x with the unscaled v_1..v_{l-1} already found.

Conventions where SPEC 5.4 is silent:
- Rounding: half up, k = 1 + floor(q (n - 1) + 1/2), in exact rational arithmetic, with the
  percentile read as the decimal it prints as (99.7 is 997/10, not the nearest binary double).
  Python's round() would round half to even: for n = 501, 0.997 * 500 = 498.5 gives k = 500
  here, k = 499 with round(). No interpolation: v_l is one of the current values.
- Layers after l: not run at all while layer l is calibrated. The network is feed-forward in
  space, so I_l[t] does not depend on them (equivalently: any threshold for them, e.g. +inf).
- v_min = 1e-3 (SPEC 5.1's threshold clamp) guards a layer whose percentile is <= 0 (e.g. a
  layer that receives no spikes): its v_l would make the LIF undefined for the layers after.
- alpha * v_l is computed in float64 and rounded once to the parameters' dtype.
- The first layer's current is the same at every step (direct input), so p_1[t] = p_1[1].

Efficiency: one layer-wise pass over the network instead of one SNN run per layer. Layer l's
input over all T_init steps depends only on layers < l, whose thresholds are final by then; so
layer l's current is computed for every step (percentiles), v_l is set, then layer l's spikes
are computed once and kept, 1 bit per neuron per step (numpy.packbits), for the next layer.
Each layer's conv/linear runs twice (percentile sweep, spike sweep) unless one chunk holds all
T_init steps (then once): at most about two SNN forwards in all. Time is processed in chunks of
``time_chunk`` steps with the membrane carried from chunk to chunk, which computes exactly the
same numbers as one T_init-step run (the carried state enters as u-[t0] = lam u[t0-1] + I[t0],
the kernel's own expression), so the chunk size bounds memory without changing results.
Memory: T_init * N * neurons / 8 bytes per stored layer (vgg9's conv1 at 32x32, T_init = 100,
N = 512: 420 MB) plus one chunk of activations. Measured: vgg9 width 0.25, 32x32, N = 128,
T_init = 20, float32, one thread: 4.9 s (mostly the conv GEMMs), 530 MB peak.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ._checks import check_array, check_int
from .models.arch import (POOL_KERNEL, Arch, Block, Conv, Linear, Pool, weight_layers,
                          weight_shape)
from .models.snn import snn_param_shapes, spiking_layers
from .neurons.lif import lif_forward
from .ops.winograd import conv2d_forward_auto
from .ops.linear import linear_forward
from .ops.pool import avg_pool2d_forward

MIN_THRESHOLD = 1e-3  # SPEC 5.1: v is clamped to >= 1e-3
_CHUNK_ELEMENTS = 1 << 24  # auto time_chunk: the largest per-chunk array holds <= 2^24 values


# --- the percentile ---------------------------------------------------------------------------

def _check_percentile(fn, percentile) -> Fraction:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer,
                                                                   np.floating)):
        raise TypeError(f"{fn}: percentile must be a number in (0, 100], got {percentile!r}")
    p = float(percentile)
    if not (0.0 < p <= 100.0):
        raise ValueError(f"{fn}: percentile must be in (0, 100], got {p!r}")
    return Fraction(repr(p)) / 100  # the decimal it prints as: 99.7 -> 997/1000 exactly


def percentile_rank(n: int, percentile: float = 99.7) -> int:
    """The 1-based rank k of SPEC 5.4's percentile among n values.

    k = 1 + floor(q (n - 1) + 1/2),  q = percentile / 100   (round half up, exact arithmetic;
    percentile read as its printed decimal). percentile in (0, 100]; n >= 1. 100 gives the
    maximum (k = n); k = 1 (the minimum) when q (n - 1) < 1/2.
    """
    fn = "percentile_rank"
    q = _check_percentile(fn, percentile)
    n = check_int(fn, "n", n, minimum=1)
    return 1 + (2 * q.numerator * (n - 1) + q.denominator) // (2 * q.denominator)


def spec_percentile(a: np.ndarray, percentile: float = 99.7) -> np.ndarray:
    """The k-th smallest of all n = a.size values (k = percentile_rank(n, percentile)).

    One value of ``a`` (no interpolation), returned as a 0-d array of a's dtype. Differs from
    numpy.percentile (linear interpolation at position q (n - 1)) unless that position is an
    integer; equals numpy.percentile(a, percentile, method="nearest") except at exact halves,
    where numpy rounds to even. NaN is rejected (ValueError).
    """
    fn = "spec_percentile"
    check_array(fn, "a", a)
    if a.size == 0:
        raise ValueError(f"{fn}: a is empty")
    k = percentile_rank(a.size, percentile)
    return np.asarray(_percentiles(fn, a.reshape(1, -1), k)[0], dtype=a.dtype)


def _percentiles(fn, rows: np.ndarray, k: int) -> np.ndarray:
    """The k-th smallest of every row of a (R, n) array -> (R,) in the same dtype."""
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"{fn}: the values contain NaN or inf (diverged weights?)")
    return np.partition(rows, k - 1, axis=1)[:, k - 1]


# --- threshold initialisation ------------------------------------------------------------------

def calibration_batch(x_uint8: np.ndarray, mean, std, *, rng: np.random.Generator,
                      batch_size: int = 512, dtype=np.float32) -> np.ndarray:
    """The images of SPEC 5.4's calibration: ``batch_size`` training images, training transform.

    Draws, in this order: idx = rng.permutation(n)[:batch_size] (without replacement; all n
    images if n < batch_size), then make_batch(x_uint8[idx], mean, std, augment=True, rng=rng,
    dtype=dtype) (random crop + flip, normalised). x_uint8: (n, C, H, W) uint8 training split.
    -> (min(n, batch_size), C, H, W) ``dtype``. Dropout is not part of it: calibration runs
    with dropout off.
    """
    from .data.transforms import make_batch

    fn = "calibration_batch"
    batch_size = check_int(fn, "batch_size", batch_size, minimum=1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{fn}: rng must be a numpy.random.Generator, got {rng!r}")
    if not isinstance(x_uint8, np.ndarray) or x_uint8.ndim != 4 or len(x_uint8) == 0:
        raise ValueError(f"{fn}: x_uint8 must be a non-empty (n, C, H, W) uint8 array")
    idx = rng.permutation(len(x_uint8))[:batch_size]
    return make_batch(x_uint8[idx], mean, std, augment=True, rng=rng, dtype=dtype)


def default_scale(timesteps: int) -> float:
    """SPEC 5.4's alpha: 0.2 for T <= 5, 0.3 above."""
    timesteps = check_int("default_scale", "timesteps", timesteps, minimum=1)
    return 0.2 if timesteps <= 5 else 0.3


def init_thresholds(arch: Arch, params: dict, x: np.ndarray, *, timesteps: int = 5,
                    scale: float | None = None, timesteps_init: int = 100,
                    percentile: float = 99.7, time_chunk: int | None = None,
                    min_threshold: float = MIN_THRESHOLD, on_layer=None) -> dict:
    """SPEC 5.4's initial thresholds {"<layer>.threshold": 0-d array} of every spiking layer.

    final_l = max(alpha * v_l, min_threshold), v_l from calibrate_thresholds (module doc);
    alpha = ``scale``, or default_scale(timesteps) (0.2 for T <= 5, 0.3 above) when None.
    params: "<layer>.weight" of every Conv/Linear (extra keys are ignored), in x's dtype; pass
    the masked weights (SPEC 4.2 keeps masked weights at exactly 0). x: (N, C, H, W) images made
    with the training transform (stage C uses 512 of them), float32 or float64. timesteps: the
    T of stage D (it only selects alpha). Other arguments: calibrate_thresholds.
    Returns 0-d arrays of x's dtype, in network order.
    """
    fn = "init_thresholds"
    timesteps = check_int(fn, "timesteps", timesteps, minimum=1)
    alpha = default_scale(timesteps) if scale is None else _positive(fn, "scale", scale)
    v_min = _positive(fn, "min_threshold", min_threshold)
    _, unscaled = calibrate_thresholds(arch, params, x, timesteps_init=timesteps_init,
                                       percentile=percentile, time_chunk=time_chunk,
                                       min_threshold=v_min, on_layer=on_layer)
    return {k: np.asarray(max(alpha * float(v), v_min), dtype=x.dtype)
            for k, v in unscaled.items()}


def calibrate_thresholds(arch: Arch, params: dict, x: np.ndarray, *, timesteps_init: int = 100,
                         percentile: float = 99.7, time_chunk: int | None = None,
                         min_threshold: float = MIN_THRESHOLD, on_layer=None):
    """The unscaled calibration of SPEC 5.4: per-step percentiles and thresholds v_l.

    Returns (percentiles, thresholds):
      percentiles {"<layer>": (T_init,) array}: p_l[t], the k-th smallest value of I_l[t]
      thresholds  {"<layer>.threshold": 0-d}:   v_l = max(max_t p_l[t], min_threshold),
                  the value layers after l see while they are calibrated
    both in network order and in x's dtype. I_l[t] is layer l's input current in the SNN of
    SPEC 5.1 run for timesteps_init steps on x, leak 1 everywhere, no dropout, thresholds v_1..
    v_{l-1} (the current of a Block's conv2 includes the shortcut). time_chunk: steps per chunk
    (results do not depend on it; None picks the largest chunk whose biggest array holds <= 2^24
    values). on_layer(name), if given, is called after each layer's calibration (progress
    bars). Raises ValueError for percentile outside (0, 100], timesteps_init < 1, a
    non-finite current, or params that do not match arch.
    """
    fn = "calibrate_thresholds"
    check_array(fn, "x", x, ndim=4, dims="(N, C, H, W)")
    if tuple(x.shape[1:]) != tuple(arch.in_shape):
        raise ValueError(f"{fn}: x.shape={x.shape}, expected (N,) + {arch.in_shape} for "
                         f"{arch.name}")
    if x.shape[0] < 1:
        raise ValueError(f"{fn}: x holds no image")
    if not arch.layers or not isinstance(arch.layers[0], Conv):
        raise ValueError(f"{fn}: direct input needs a Conv first layer in {arch.name}")
    t_init = check_int(fn, "timesteps_init", timesteps_init, minimum=1)
    _check_percentile(fn, percentile)
    if time_chunk is not None:
        time_chunk = check_int(fn, "time_chunk", time_chunk, minimum=1)
    v_min = _positive(fn, "min_threshold", min_threshold)
    weights = _check_weights(fn, arch, params, x.dtype)

    run = _Run(t_init, x.shape[0], x.dtype, percentile, time_chunk, v_min)
    done = on_layer if on_layer is not None else (lambda name: None)
    src = _Source.image(x)
    for layer in arch.layers:
        if isinstance(layer, Conv):
            src = run.neuron(layer.name, _conv_current(layer, weights, src))
            done(layer.name)
        elif isinstance(layer, Pool):
            src = src.pooled()
        elif isinstance(layer, Linear) and layer.act:
            src = run.neuron(layer.name, _linear_current(layer, weights, src))
            done(layer.name)
        elif isinstance(layer, Linear):
            break  # the output layer has no neuron: nothing after it to calibrate
        else:  # Block: conv1 -> LIF -> (dropout off) -> conv2 (+ shortcut) -> LIF
            h = run.neuron(layer.conv1.name, _conv_current(layer.conv1, weights, src))
            done(layer.conv1.name)
            src = run.neuron(layer.conv2.name, _block_current(layer, weights, h, src))
            done(layer.conv2.name)
    return run.percentiles, run.thresholds


def _positive(fn, name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a number > 0, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_weights(fn, arch, params, dtype) -> dict:
    if not isinstance(params, dict):
        raise TypeError(f"{fn}: params must be a dict of arrays, got {type(params).__name__}")
    out = {}
    for layer in weight_layers(arch):
        key = f"{layer.name}.weight"
        if key not in params:
            raise ValueError(f"{fn}: params lacks {key!r} (needed: every '<layer>.weight' of "
                             f"{arch.name})")
        w = params[key]
        if not isinstance(w, np.ndarray) or w.shape != weight_shape(layer) or w.dtype != dtype:
            raise ValueError(f"{fn}: params[{key!r}] must be a {dtype} array of shape "
                             f"{weight_shape(layer)}, got {getattr(w, 'dtype', type(w).__name__)}"
                             f" {getattr(w, 'shape', '')}")
        out[layer.name] = w
    return out


class _Source:
    """An activation over all steps, materialised chunk by chunk: ``get(t0, t1)`` ->
    (t1 - t0, N, ...) array; or, for the image, ``static`` (N, C, H, W) (the same at every t).

    Spikes are kept as bits (T, N, ceil(M / 8)) uint8 and unpacked to exact 0/1 values; a
    following AvgPool is applied on unpacking (the same avg_pool2d_forward as snn_forward)."""

    def __init__(self, *, static=None, bits=None, shape=None, dtype=None, pools=0):
        self.static, self.bits, self.shape, self.dtype, self.pools = (static, bits, shape,
                                                                      dtype, pools)

    @classmethod
    def image(cls, x):
        return cls(static=x)

    @classmethod
    def spikes(cls, bits, shape, dtype):
        return cls(bits=bits, shape=shape, dtype=dtype)

    def pooled(self):
        if self.static is not None:  # not in SPEC architectures (the first layer is a conv)
            raise ValueError("calibrate_thresholds: a pool before the first conv")
        return _Source(bits=self.bits, shape=self.shape, dtype=self.dtype, pools=self.pools + 1)

    def get(self, t0, t1):
        m = int(np.prod(self.shape[1:]))
        s = np.unpackbits(self.bits[t0:t1], axis=-1, count=m)  # (tc, N, M) uint8 0/1
        a = s.reshape((t1 - t0,) + tuple(self.shape)).astype(self.dtype)
        for _ in range(self.pools):  # x_{l+1}[t] = pool(s_l[t]) (dropout off)
            y = avg_pool2d_forward(a.reshape((-1,) + a.shape[2:]), kernel=POOL_KERNEL)
            a = y.reshape(a.shape[:2] + y.shape[1:])
        return a

    def out_shape(self):
        """(N, ...) of the materialised activation at one step."""
        if self.static is not None:
            return self.static.shape
        shape = tuple(self.shape)
        for _ in range(self.pools):
            shape = shape[:2] + (shape[2] // 2, shape[3] // 2)
        return shape


class _Current:
    """A layer's input current: static (N, ...) for the first layer, else get(t0, t1)."""

    def __init__(self, *, static=None, get=None, shape=None, work=0):
        self.static, self.get, self.shape, self.work = static, get, shape, work


def _conv_on(layer: Conv, w, a):
    """conv of every (t, n) sample of a (tc, N, C, H, W) chunk, one call (as snn_forward)."""
    y = conv2d_forward_auto(a.reshape((-1,) + a.shape[2:]), w, stride=layer.stride,
                       padding=layer.padding)
    return y.reshape(a.shape[:2] + y.shape[1:])


def _conv_work(layer: Conv, n):
    # per step: im2col (C_in k k, N H' W') and the output; the biggest array of a chunk step
    p = layer.out_hw[0] * layer.out_hw[1] * n
    return max(layer.c_in * layer.kernel * layer.kernel * p, layer.c_out * p)


def _conv_current(layer: Conv, weights, src: _Source) -> _Current:
    w = weights[layer.name]
    n = src.out_shape()[0]
    shape = (n, layer.c_out) + tuple(layer.out_hw)
    if src.static is not None:  # I_1 = W_1 * x, the same at every step
        return _Current(static=conv2d_forward_auto(src.static, w, stride=layer.stride,
                                              padding=layer.padding), shape=shape)
    return _Current(get=lambda t0, t1: _conv_on(layer, w, src.get(t0, t1)), shape=shape,
                    work=_conv_work(layer, n))


def _linear_current(layer: Linear, weights, src: _Source) -> _Current:
    w = weights[layer.name]
    n = src.out_shape()[0]

    def get(t0, t1):
        a = src.get(t0, t1)
        y = linear_forward(a.reshape((t1 - t0) * n, -1), w)  # flatten each (t, n), C order
        return y.reshape(t1 - t0, n, layer.n_out)

    return _Current(get=get, shape=(n, layer.n_out), work=n * max(layer.n_in, layer.n_out))


def _block_current(block: Block, weights, h: _Source, x: _Source) -> _Current:
    """I[t] = conv2(h[t]) + shortcut(x[t]), the sum in snn_forward's order."""
    w2 = weights[block.conv2.name]
    n = h.out_shape()[0]

    def get(t0, t1):
        a = _conv_on(block.conv2, w2, h.get(t0, t1))
        xs = x.get(t0, t1)
        short = _conv_on(block.shortcut, weights[block.shortcut.name], xs) if block.shortcut \
            else xs
        return a + short

    work = _conv_work(block.conv2, n)
    if block.shortcut:
        work = max(work, _conv_work(block.shortcut, n))
    return _Current(get=get, shape=(n, block.conv2.c_out) + tuple(block.conv2.out_hw),
                    work=work)


class _Run:
    """The state of one calibration pass: options and the results so far."""

    def __init__(self, t_init, n, dtype, percentile, time_chunk, v_min):
        self.t_init, self.n, self.dtype = t_init, n, np.dtype(dtype)
        self.percentile, self.time_chunk, self.v_min = percentile, time_chunk, v_min
        self.percentiles, self.thresholds = {}, {}

    def _chunk(self, cur: _Current):
        if self.time_chunk is not None:
            return min(self.time_chunk, self.t_init)
        per_step = max(cur.work, int(np.prod(cur.shape)))
        return max(1, min(self.t_init, _CHUNK_ELEMENTS // max(1, per_step)))

    def neuron(self, name, cur: _Current) -> _Source:
        """Calibrate one layer's v from its current, then run its LIF; returns its spikes."""
        fn = "calibrate_thresholds"
        t_all, tc = self.t_init, self._chunk(cur)
        n_values = int(np.prod(cur.shape))  # n = N * neurons of the layer
        k = percentile_rank(n_values, self.percentile)
        # one chunk holds every step: compute the current once for both sweeps
        whole = cur.get(0, t_all) if cur.static is None and tc >= t_all else None
        # sweep 1: p_l[t] = k-th smallest of I_l[t], every t
        if cur.static is not None:
            p1 = _percentiles(fn, cur.static.reshape(1, -1), k)
            pct = np.repeat(p1, t_all)  # I_1[t] = I_1: the same percentile at every step
        else:
            pct = np.empty(t_all, dtype=self.dtype)
            for t0 in range(0, t_all, tc):
                t1 = min(t_all, t0 + tc)
                i = whole if whole is not None else cur.get(t0, t1)
                pct[t0:t1] = _percentiles(fn, i.reshape(t1 - t0, -1), k)
        # v_l = max_t p_l[t], clamped to v_min so that the LIF below is defined
        v = np.asarray(max(float(pct.max()), self.v_min), dtype=self.dtype)
        self.percentiles[name] = pct
        self.thresholds[f"{name}.threshold"] = v
        # sweep 2: the layer's spikes over all steps with v_l (leak 1), packed 1 bit each
        m = int(np.prod(cur.shape[1:]))
        bits = np.empty((t_all, self.n, (m + 7) // 8), dtype=np.uint8)
        u = None  # post-reset membrane u[t0 - 1] carried between chunks
        for t0 in range(0, t_all, tc):
            t1 = min(t_all, t0 + tc)
            if cur.static is not None:
                i = np.broadcast_to(cur.static, (t1 - t0,) + cur.static.shape).copy()
            else:
                i = whole if whole is not None else cur.get(t0, t1)  # (whole: u is None)
            if u is not None:
                i[0] = u + i[0]  # u-[t0] = lam u[t0-1] + I[t0], lam = 1 (the kernel's sum)
            trace = lif_forward(i, threshold=v, leak=1.0)
            u = trace.membrane_pre[-1] - v * trace.spikes[-1]  # u = u- - v s
            bits[t0:t1] = np.packbits(trace.spikes.reshape(t1 - t0, self.n, m) != 0, axis=-1)
        return _Source.spikes(bits, cur.shape, self.dtype)


# --- the SNN parameter dict --------------------------------------------------------------------

def convert_checkpoint_arrays(arch: Arch, ann_arrays: dict, thresholds: dict) -> dict:
    """The SNN's arrays from the compressed ANN's: weights and masks copied, thresholds set,
    every leak 1 (SPEC 5.4).

    ann_arrays: "<layer>.weight" of every Conv/Linear (one float dtype), optionally
    "mask.<layer>.weight" (0/1, the weight's shape); other keys (optimizer state) are ignored.
    thresholds: "<layer>.threshold" of every spiking layer (init_thresholds), finite > 0.
    Returns copies: first every name of snn_param_shapes(arch) in its order ("<layer>.weight",
    "<layer>.threshold", "<layer>.leak" = 1.0, 0-d, the weights' dtype), then the masks given.
    Raises ValueError if a name is missing or a shape wrong, or a weight is nonzero where its
    mask is 0 (SPEC 4.2: masked weights are exactly 0).
    """
    fn = "convert_checkpoint_arrays"
    if not isinstance(ann_arrays, dict) or not isinstance(thresholds, dict):
        raise TypeError(f"{fn}: ann_arrays and thresholds must be dicts of arrays")
    first = f"{weight_layers(arch)[0].name}.weight"
    if first not in ann_arrays or not isinstance(ann_arrays[first], np.ndarray):
        raise ValueError(f"{fn}: ann_arrays lacks {first!r}")
    dtype = ann_arrays[first].dtype
    weights = _check_weights(fn, arch, ann_arrays, dtype)
    spiking = {layer.name for layer in spiking_layers(arch)}
    extra = sorted(set(k for k in thresholds) - {f"{s}.threshold" for s in spiking})
    if extra:
        raise ValueError(f"{fn}: thresholds has names of no spiking layer: {extra}")
    out = {}
    for key in snn_param_shapes(arch):
        name, kind = key.rsplit(".", 1)
        if kind == "weight":
            out[key] = np.array(weights[name], copy=True)
        elif kind == "threshold":
            if key not in thresholds:
                raise ValueError(f"{fn}: thresholds lacks {key!r}")
            v = thresholds[key]
            if np.ndim(v) != 0 or not (np.isfinite(v) and float(v) > 0):
                raise ValueError(f"{fn}: thresholds[{key!r}] must be a finite scalar > 0, "
                                 f"got {v!r}")
            out[key] = np.asarray(float(v), dtype=dtype)
        else:  # leak: SPEC 5.4, lambda_l = 1
            out[key] = np.asarray(1.0, dtype=dtype)
    for layer in weight_layers(arch):
        key = f"mask.{layer.name}.weight"
        if key not in ann_arrays:
            continue
        m = ann_arrays[key]
        w = weights[layer.name]
        if not isinstance(m, np.ndarray) or m.shape != w.shape:
            raise ValueError(f"{fn}: ann_arrays[{key!r}] must be an array of shape {w.shape}, "
                             f"got {getattr(m, 'shape', type(m).__name__)}")
        if not np.all((m == 0) | (m == 1)):
            raise ValueError(f"{fn}: ann_arrays[{key!r}] must hold only 0 and 1")
        bad = int(np.count_nonzero(w[m == 0]))
        if bad:
            raise ValueError(f"{fn}: {layer.name}.weight has {bad} nonzero entries where "
                             f"{key} is 0 (masked weights must be exactly 0)")
        out[key] = np.array(m, copy=True)
    return out
