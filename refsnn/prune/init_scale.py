"""Variance-preserving initialisation of a sparse network (stage B, ``--sparse-init scaled``).

SPEC 2 draws every weight from N(0, sigma_l^2) for the dense network; SPEC 4.2.1 then keeps a
Bernoulli(d) subset. A unit of layer l then sums about d * fan_in terms instead of fan_in, so
its pre-activation variance shrinks by d, and over the 10 layers of vgg9 at d = 0.1 the signal
reaching the output is ~1e-5 of the dense network's: Adam's updates are damped by its eps and
the compressed ANN sat at chance (loss 2.3026) for two epochs of the embedded run, then settled
with late activations ~1e-4 that the SNN conversion cannot represent (logits ~300 after stage
C). Scaling the live weights restores the dense variance at initialisation, as sparse-training
work does (RigL, Evci et al. 2020, initialises with the sparse fan-in):

    W_l <- W_l / sqrt(r_l),   r_l = (live weights of l whose input is alive, over its live
                                     output units) / (live output units * fan_in_l)

so that E[(sum_i M_i W_i x_i)^2] = r_l fan_in (sigma^2 / r_l) x^2 = the dense value. In
irregular mode r_l is the layer's live fraction; in channel mode a conv's own filters are
complete, and r_l is the fraction of its input channels that are alive (the previous layer's
live filters, refsnn.prune.dead_input_channels). A layer with nothing live is left alone.
``--sparse-init spec`` skips this and keeps SPEC 2's draw as written.
"""

from __future__ import annotations

import math

import numpy as np

from ..models.arch import Arch, weight_layers
from .channel import dead_input_channels

__all__ = ["sparse_init_scales", "scale_sparse_init"]


def sparse_init_scales(arch: Arch, masks: dict) -> dict:
    """{layer: 1 / sqrt(r_l)} (module doc) for every conv and linear layer, from the masks
    ``{"mask.<layer>.weight": 0/1 array}`` (1.0 where nothing is live)."""
    if not isinstance(masks, dict):
        raise TypeError(f"sparse_init_scales: masks must be a dict, got {type(masks).__name__}")
    dead = dead_input_channels(arch, masks)
    out = {}
    for layer in weight_layers(arch):
        key = f"mask.{layer.name}.weight"
        if key not in masks:
            raise ValueError(f"sparse_init_scales: masks lacks {key!r}")
        m = np.asarray(masks[key]) != 0
        rows = m.reshape(m.shape[0], -1).any(axis=1)  # live output units
        eff = m.copy()
        eff[:, dead[layer.name]] = False  # inputs that never carry a signal
        fan_in = m[0].size
        live_in = int(eff[rows].sum())
        out[layer.name] = math.sqrt(int(rows.sum()) * fan_in / live_in) if live_in else 1.0
    return out


def scale_sparse_init(arch: Arch, params: dict, masks: dict) -> dict:
    """Multiply each ``<layer>.weight`` in params by its sparse_init_scales factor, in place
    (in the weight's dtype); returns the factors."""
    scales = sparse_init_scales(arch, masks)
    for name, s in scales.items():
        w = params[f"{name}.weight"]
        w *= w.dtype.type(s)
    return scales
