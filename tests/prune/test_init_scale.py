"""The variance-preserving sparse init (refsnn.prune.init_scale)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refsnn.models.arch import build_arch, init_params, weight_layers
from refsnn.prune import apply_masks, init_masks, scale_sparse_init, sparse_init_scales


def _arch(name="vgg9"):
    return build_arch(name, in_shape=(3, 16, 16), classes=5, width=0.125)


@given(d=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_irregular_scale_is_inverse_sqrt_of_the_live_fraction(d, seed):
    arch = _arch()
    params = init_params(arch, np.random.default_rng(seed), np.float64)
    masks = init_masks(arch, params, density=d, rng=np.random.default_rng(seed + 1))
    scales = sparse_init_scales(arch, masks)
    for layer in weight_layers(arch):
        m = masks[f"mask.{layer.name}.weight"]
        rows = m.reshape(m.shape[0], -1).any(axis=1)
        if not rows.any():
            assert scales[layer.name] == 1.0
            continue
        # no dead input channels in irregular mode unless a whole filter died by chance
        frac = m[rows].sum() / (rows.sum() * m[0].size)
        assert scales[layer.name] >= 1.0
        if layer.name == "conv1":  # the image channels are always alive
            assert scales[layer.name] == pytest.approx(1 / math.sqrt(frac), rel=1e-12)


def test_density_one_leaves_the_weights_bit_identical():
    arch = _arch("resnet12")
    params = init_params(arch, np.random.default_rng(0), np.float32)
    before = {k: v.copy() for k, v in params.items()}
    masks = init_masks(arch, params, density=1.0, rng=np.random.default_rng(1))
    assert set(scale_sparse_init(arch, params, masks).values()) == {1.0}
    for k in before:
        assert np.array_equal(before[k], params[k]), k


def test_channel_mode_scales_the_layer_after_dead_filters():
    arch = _arch()
    params = init_params(arch, np.random.default_rng(0), np.float64)
    masks = {f"mask.{l.name}.weight": np.ones_like(params[f"{l.name}.weight"])
             for l in weight_layers(arch)}
    c1 = masks["mask.conv1.weight"]
    c1[: c1.shape[0] // 4] = 0  # a quarter of conv1's filters dead
    scales = sparse_init_scales(arch, masks)
    # conv1 keeps full fan-in (its live filters are whole); conv2 sees 3/4 of its inputs
    assert scales["conv1"] == 1.0
    assert scales["conv2"] == pytest.approx(math.sqrt(4 / 3), rel=1e-12)
    assert scales["conv3"] == 1.0


def test_scaled_init_preserves_the_dense_preactivation_variance():
    # E[(sum_i m_i w_i x_i)^2] = sum_i d (sigma^2 / d) x_i^2 = sigma^2 |x|^2, the dense value
    rng = np.random.default_rng(3)
    n_in, n_out, d = 4000, 2000, 0.1
    w = rng.normal(0, 0.01, (n_out, n_in))
    m = (rng.random((n_out, n_in)) < d).astype(np.float64)
    x = rng.normal(size=n_in)
    dense_var = np.var(w @ x)
    ws = w * m / math.sqrt(m.mean())
    assert np.var(ws @ x) == pytest.approx(dense_var, rel=0.1)
    assert np.var((w * m) @ x) == pytest.approx(d * dense_var, rel=0.1)  # unscaled: d times


def test_missing_mask_is_an_error():
    arch = _arch()
    with pytest.raises(ValueError, match="mask.fc3.weight"):
        params = init_params(arch, np.random.default_rng(0), np.float64)
        masks = init_masks(arch, params, density=0.5, rng=np.random.default_rng(1))
        del masks["mask.fc3.weight"]
        sparse_init_scales(arch, masks)


def test_scale_is_applied_after_masking_so_dead_weights_stay_zero():
    arch = _arch()
    params = init_params(arch, np.random.default_rng(0), np.float64)
    masks = init_masks(arch, params, density=0.2, rng=np.random.default_rng(1))
    apply_masks(params, masks)
    ref = {k: v.copy() for k, v in params.items()}
    scales = scale_sparse_init(arch, params, masks)
    for l in weight_layers(arch):
        k = f"{l.name}.weight"
        assert np.all(params[k][masks[f"mask.{k}"] == 0] == 0)
        np.testing.assert_array_equal(params[k], ref[k] * scales[l.name])
