"""Batches for training and evaluation: augmentation, normalisation, mean/std, batch indices.

make_batch does what torchvision's
    Compose([RandomCrop(H, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)])
does (without ``augment``: ``Compose([ToTensor(), Normalize(mean, std)])``), but on a whole
uint8 NCHW batch and with the random draws taken from a numpy Generator in a fixed order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numba
import numpy as np

from refsnn._checks import check_choice, check_int

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def channel_mean_std(x_uint8: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of pixels scaled to [0, 1], in float64.

    mean[c] = (1/M) sum_{n,i,j} x[n,c,i,j]/255,
    std[c]  = sqrt((1/M) sum_{n,i,j} (x[n,c,i,j]/255 - mean[c])^2),   M = N*H*W
    x_uint8: (N, C, H, W) uint8. Computed from per-channel histograms of the 256 values (no
    float copy of the data) with correctly rounded sums (math.fsum), so the result is the same
    on every machine; not rounded further. Matches
    ``x.astype(np.float64).transpose(1,0,2,3).reshape(C,-1) / 255`` then ``.mean(1)``,
    ``.std(1)`` (ddof=0) up to float64 summation order.
    """
    _check_uint8_nchw("channel_mean_std", "x_uint8", x_uint8)
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x_uint8.shape[1]):
        counts = np.bincount(x_uint8[:, c].ravel(), minlength=256).astype(np.float64)
        m = x_uint8[:, c].size  # M = N*H*W
        # math.fsum: correctly rounded sums, so the result does not depend on BLAS or SIMD.
        mean = math.fsum(counts * values) / m
        std = math.sqrt(math.fsum(counts * (values - mean) ** 2) / m)
        means.append(mean)
        stds.append(std)
    return tuple(means), tuple(stds)


def _check_uint8_nchw(fn: str, name: str, x) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise TypeError(f"{fn}: {name} must have dtype uint8, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{fn}: {name} must have 4 dimensions (N, C, H, W), got shape {x.shape}")


def draw_augmentation(rng: np.random.Generator, n: int, padding: int = 4):
    """The random draws of one augmented batch, in this order:

        offsets = rng.integers(0, 2*padding + 1, size=(n, 2))   # (dy, dx) per image
        flips = rng.random(n) < 0.5                               # horizontal flip per image
    """
    offsets = rng.integers(0, 2 * padding + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    return offsets, flips


def make_batch(x_uint8, mean, std, *, augment: bool, rng=None, dtype=np.float32,
               padding: int = 4) -> np.ndarray:
    """Augment (optionally) and normalise a uint8 batch into float (N, C, H, W).

    With ``augment`` (draws from ``rng`` as in ``draw_augmentation``), for image n with
    offsets (dy, dx) and flip bit f:
        xp = x zero-padded by ``padding`` pixels on each side (raw value 0, before normalising)
        crop[c, i, j] = xp[c, i + dy, j + dx]                      i < H, j < W
        a[c, i, j]    = crop[c, i, W-1-j] if f else crop[c, i, j]   (flip after crop)
    without it, a = x. Then, in ``dtype`` throughout (mean and std cast to it first):
        y[n, c, i, j] = (a[n, c, i, j] / 255 - mean[c]) / std[c]
    x_uint8: (N, C, H, W) uint8;  mean, std: C floats;  -> (N, C, H, W) ``dtype``.
    Matches torchvision RandomCrop(H, padding=4) + RandomHorizontalFlip() on the uint8 image
    followed by ToTensor() (float32 x/255) and Normalize(mean, std) for dtype=float32 (torch's
    own RNG differs, of course).
    """
    fn = "make_batch"
    _check_uint8_nchw(fn, "x_uint8", x_uint8)
    dtype = np.dtype(dtype)
    check_choice(fn, "dtype", dtype, _DTYPES)
    padding = check_int(fn, "padding", padding, minimum=0)
    n, c = x_uint8.shape[:2]
    mean = np.asarray(mean, dtype=dtype)
    std = np.asarray(std, dtype=dtype)
    if mean.shape != (c,) or std.shape != (c,):
        raise ValueError(
            f"{fn}: mean and std need one value per channel ({c}), got shapes "
            f"{mean.shape} and {std.shape}"
        )
    if not np.all(std > 0):
        raise ValueError(f"{fn}: std must be > 0, got {tuple(std.tolist())}")

    # lut[c, v] = (v/255 - mean[c]) / std[c]: the same float ops as normalising each pixel.
    lut = (np.arange(256, dtype=dtype)[None, :] / dtype.type(255) - mean[:, None]) / std[:, None]
    if augment:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"{fn}: augment=True needs rng, a numpy.random.Generator, got {rng!r}")
        offsets, flips = draw_augmentation(rng, n, padding)
    else:
        # The centre crop of the padded image is the image itself.
        offsets = np.full((n, 2), padding, dtype=np.int64)
        flips = np.zeros(n, dtype=np.bool_)
    out = np.empty(x_uint8.shape, dtype=dtype)
    _crop_flip_normalise_kernel(x_uint8, offsets.astype(np.int64), flips, padding, lut, out)
    return out


@numba.njit(cache=True, parallel=True)
def _crop_flip_normalise_kernel(x, offsets, flips, padding, lut, out):
    """out[n,c,i,j] = lut[c, xp[n, c, i+dy, jj+dx]], jj = W-1-j if flipped; 0 outside x."""
    n_images, channels, height, width = x.shape
    for n in numba.prange(n_images):  # each n writes only out[n]
        dy = offsets[n, 0] - padding
        dx = offsets[n, 1] - padding
        for c in range(channels):
            for i in range(height):
                r = i + dy  # row in the unpadded image
                for j in range(width):
                    jj = width - 1 - j if flips[n] else j
                    q = jj + dx  # column in the unpadded image
                    if 0 <= r < height and 0 <= q < width:
                        out[n, c, i, j] = lut[c, x[n, c, r, q]]
                    else:
                        out[n, c, i, j] = lut[c, 0]  # zero padding, raw value 0


def iterate_batches(n: int, batch_size: int, *, shuffle: bool, rng=None) -> Iterator[np.ndarray]:
    """Return an iterator over int64 index arrays covering 0..n-1 in batches of ``batch_size``.

    Order: ``rng.permutation(n)`` if ``shuffle`` (one draw per call), else 0, 1, ..., n-1. The
    last batch holds the remaining n % batch_size indices when that is not zero (drop_last=False
    in torch's DataLoader).
    """
    n = check_int("iterate_batches", "n", n, minimum=0)
    batch_size = check_int("iterate_batches", "batch_size", batch_size, minimum=1)
    if shuffle:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"iterate_batches: shuffle=True needs rng, a numpy.random.Generator, got {rng!r}"
            )
        order = rng.permutation(n).astype(np.int64)
    else:
        order = np.arange(n, dtype=np.int64)
    # A generator expression, so the checks and the permutation happen at the call.
    return (order[start:start + batch_size] for start in range(0, n, batch_size))
