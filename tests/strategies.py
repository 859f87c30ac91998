"""Hypothesis strategies: a configuration first (shapes, hyperparameters), then the data.

Array contents come from ``np.random.default_rng(seed)`` with a drawn seed, so values are
well scaled (standard normal) and hypothesis shrinks the shapes, not the floats. Shapes are
small (the suite runs on 2 shared cores) and never forced square: H and W, kH and kW, C_in and
C_out are drawn independently.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)


class ConvCase(NamedTuple):
    x: np.ndarray  # (N, C_in, H, W)
    w: np.ndarray  # (C_out, C_in, kH, kW)
    stride: int
    padding: int

    @property
    def out_shape(self):
        n, _, h, w = self.x.shape
        c_out, _, kh, kw = self.w.shape
        s, p = self.stride, self.padding
        return (n, c_out, (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1)


class PoolCase(NamedTuple):
    x: np.ndarray  # (N, C, H, W)
    kernel: int
    stride: int | None  # None = kernel

    @property
    def out_shape(self):
        n, c, h, w = self.x.shape
        s = self.kernel if self.stride is None else self.stride
        return (n, c, (h - self.kernel) // s + 1, (w - self.kernel) // s + 1)


class LinearCase(NamedTuple):
    x: np.ndarray  # (N, n_in)
    w: np.ndarray  # (n_out, n_in)


class CECase(NamedTuple):
    logits: np.ndarray  # (N, K)
    labels: np.ndarray  # (N,) int64 in [0, K)


@st.composite
def conv2d_configs(draw, max_side=7, max_channels=3, max_batch=2, dtype=np.float64):
    """ConvCase with kH, kW in 1..4, stride 1..3, padding 0..2, H_out, W_out >= 1."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, padding = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * padding), max_side))  # H + 2p >= kH: H_out >= 1
    w = draw(st.integers(max(1, kw - 2 * padding), max_side))  # drawn independently: H != W
    n = draw(st.integers(1, max_batch))
    c_in, c_out = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    rng = np.random.default_rng(draw(seeds))
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    wt = rng.standard_normal((c_out, c_in, kh, kw)).astype(dtype)
    return ConvCase(x, wt, stride, padding)


@st.composite
def pool_configs(draw, max_side=8, max_channels=3, max_batch=2, dtype=np.float64):
    """PoolCase with kernel 1..3, stride None (= kernel) or 1..3, H, W >= kernel."""
    kernel = draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.integers(1, 3)))
    h, w = draw(st.integers(kernel, max_side)), draw(st.integers(kernel, max_side))
    n, c = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))
    rng = np.random.default_rng(draw(seeds))
    return PoolCase(rng.standard_normal((n, c, h, w)).astype(dtype), kernel, stride)


@st.composite
def linear_configs(draw, max_batch=3, max_in=6, max_out=5, dtype=np.float64):
    """LinearCase with N, n_in, n_out drawn independently."""
    n, n_in, n_out = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_in)),
                      draw(st.integers(1, max_out)))
    rng = np.random.default_rng(draw(seeds))
    return LinearCase(rng.standard_normal((n, n_in)).astype(dtype),
                      rng.standard_normal((n_out, n_in)).astype(dtype))


@st.composite
def ce_configs(draw, max_batch=5, max_classes=6, dtype=np.float64):
    """CECase: logits scaled by a drawn factor in [0.1, 10] (soft and peaked softmaxes)."""
    n, k = draw(st.integers(1, max_batch)), draw(st.integers(2, max_classes))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0, 10.0]))
    rng = np.random.default_rng(draw(seeds))
    logits = (scale * rng.standard_normal((n, k))).astype(dtype)
    return CECase(logits, rng.integers(0, k, size=n).astype(np.int64))


@st.composite
def nd_arrays(draw, min_dims=1, max_dims=4, max_side=5, dtype=np.float64):
    """A standard normal array of any shape (element-wise ops)."""
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims)))
    rng = np.random.default_rng(draw(seeds))
    return rng.standard_normal(shape).astype(dtype)
