"""make_batch against an independent NumPy implementation; mean/std; iterate_batches."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.data.transforms import (
    _crop_flip_normalise_kernel, channel_mean_std, iterate_batches, make_batch,
)


def numpy_reference(x, mean, std, offsets, flips, dtype, pad=4):
    """torchvision order on uint8: pad with 0, crop at (dy, dx), flip, then /255, normalise."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # raw value 0
    out = np.empty(x.shape, dtype=dtype)
    for k in range(n):
        dy, dx = offsets[k]
        crop = xp[k, :, dy:dy + h, dx:dx + w]
        if flips[k]:
            crop = crop[:, :, ::-1]
        out[k] = crop
    m = np.asarray(mean, dtype=dtype)[None, :, None, None]
    s = np.asarray(std, dtype=dtype)[None, :, None, None]
    return (out / dtype(255) - m) / s


@st.composite
def batches(draw):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))  # independent: H != W too
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    mean = tuple(rng.uniform(0.2, 0.6, c))
    std = tuple(rng.uniform(0.1, 0.4, c))
    return x, mean, std, draw(st.integers(0, 2**32 - 1))


@settings(deadline=None, max_examples=60)
@given(batches(), st.sampled_from([np.float32, np.float64]))
def test_augment_equals_numpy_reference(batch, dtype):
    x, mean, std, seed = batch
    y = make_batch(x, mean, std, augment=True, rng=np.random.default_rng(seed), dtype=dtype)
    # the documented draw order
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, 9, size=(x.shape[0], 2))
    flips = rng.random(x.shape[0]) < 0.5
    want = numpy_reference(x, mean, std, offsets, flips, dtype)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, want)


def test_augment_consumes_exactly_the_documented_draws():
    x = np.zeros((7, 1, 4, 3), dtype=np.uint8)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    make_batch(x, (0.5,), (0.5,), augment=True, rng=rng_a)
    rng_b.integers(0, 9, size=(7, 2))
    rng_b.random(7)
    assert rng_a.random() == rng_b.random()


def test_every_offset_and_flip_occurs_and_padding_is_zero():
    x = np.full((4000, 1, 2, 3), 255, dtype=np.uint8)
    y = make_batch(x, (0.0,), (1.0,), augment=True, rng=np.random.default_rng(0),
                   dtype=np.float64)
    assert set(np.unique(y)) == {0.0, 1.0}  # padding is raw 0, image is 255
    # with all 81 offsets and both flips, every output pixel is sometimes padding
    assert np.all(y.min(axis=0) == 0.0) and np.all(y.max(axis=0) == 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_augment_is_exact_normalisation(dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 3, 5, 7), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    y = make_batch(x, mean, std, augment=False, dtype=dtype)
    m = np.array(mean, dtype=dtype)[None, :, None, None]
    s = np.array(std, dtype=dtype)[None, :, None, None]
    np.testing.assert_array_equal(y, (x.astype(dtype) / dtype(255) - m) / s)
    assert y.dtype == dtype


def test_kernel_matches_python_version():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (6, 2, 5, 4), dtype=np.uint8)
    offsets = rng.integers(0, 9, size=(6, 2))
    flips = rng.random(6) < 0.5
    lut = rng.standard_normal((2, 256))
    jit, py = np.empty(x.shape), np.empty(x.shape)
    _crop_flip_normalise_kernel(x, offsets, flips, 4, lut, jit)
    # .py_func is the plain-Python function (absent when NUMBA_DISABLE_JIT=1 already made it so)
    getattr(_crop_flip_normalise_kernel, "py_func", _crop_flip_normalise_kernel)(
        x, offsets, flips, 4, lut, py)
    np.testing.assert_array_equal(jit, py)


def test_make_batch_validation():
    x = np.zeros((2, 3, 4, 4), dtype=np.uint8)
    with pytest.raises(TypeError, match="x_uint8 must have dtype uint8, got float64"):
        make_batch(x.astype(float), (0,) * 3, (1,) * 3, augment=False)
    with pytest.raises(ValueError, match=r"one value per channel \(3\)"):
        make_batch(x, (0, 0), (1, 1), augment=False)
    with pytest.raises(ValueError, match="std must be > 0"):
        make_batch(x, (0,) * 3, (1, 0, 1), augment=False)
    with pytest.raises(TypeError, match="augment=True needs rng"):
        make_batch(x, (0,) * 3, (1,) * 3, augment=True, rng=None)
    with pytest.raises(ValueError, match="dtype must be one of"):
        make_batch(x, (0,) * 3, (1,) * 3, augment=False, dtype=np.float16)


def test_channel_mean_std_matches_float64_numpy():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (9, 3, 7, 5), dtype=np.uint8)
    x[:, 1] //= 4  # channels with different statistics
    mean, std = channel_mean_std(x)
    f = x.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(mean, f.mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(std, f.std(axis=1), rtol=1e-13)  # population std (ddof=0)
    assert all(type(v) is float for v in mean + std)
    assert channel_mean_std(np.full((2, 1, 3, 3), 51, dtype=np.uint8)) == ((0.2,), (0.0,))


def test_iterate_batches():
    got = list(iterate_batches(10, 4, shuffle=False))
    assert [b.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = list(iterate_batches(10, 4, shuffle=True, rng=np.random.default_rng(4)))
    assert [len(b) for b in shuffled] == [4, 4, 2]
    flat = np.concatenate(shuffled)
    assert sorted(flat.tolist()) == list(range(10))
    np.testing.assert_array_equal(flat, np.random.default_rng(4).permutation(10))
    assert list(iterate_batches(0, 3, shuffle=False)) == []
    # checks happen at the call, not at the first next()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        iterate_batches(10, 0, shuffle=False)
    with pytest.raises(TypeError, match="shuffle=True needs rng"):
        iterate_batches(10, 2, shuffle=True)
