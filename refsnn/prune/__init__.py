"""Sparse learning (SPEC 4.2): masks, the end-of-epoch sparse-momentum update, channel mode.

    sparse.py    init_masks, masks_from_weights, apply_masks, momentum_of, momenta,
                 sparse_update (-> new masks, SparseUpdate info)
    allocate.py  the exact integer redistribution arithmetic (waterfill, distribute)
    channel.py   dead_input_channels: dead filters as dead inputs of the next layer
    init_scale.py  scale_sparse_init: the variance-preserving sparse initialisation

Plain functions on dicts of arrays, no state kept between calls; see sparse.py's module doc
for every convention (mask dtype, tie-breaking, rounding, drift, tolerances).
"""

from .channel import dead_input_channels
from .init_scale import scale_sparse_init, sparse_init_scales
from .sparse import (LayerUpdate, SparseUpdate, apply_masks, init_masks, masks_from_weights,
                     momenta, momentum_of, sparse_update)

__all__ = ["LayerUpdate", "SparseUpdate", "apply_masks", "dead_input_channels", "init_masks",
           "masks_from_weights", "momenta", "momentum_of", "scale_sparse_init",
           "sparse_init_scales", "sparse_update"]
