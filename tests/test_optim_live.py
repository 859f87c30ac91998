"""adam_step(live=): the Adam step restricted to a frozen mask's live elements.

Property: under a frozen mask M, steps with live = the flat indices of M's ones and the packed
gradients g[live] give, bit for bit, the parameters of dense steps each followed by W <- W * M
(the pruned weights stay exactly zero without re-masking), and the live elements' moments of
the dense steps; the pruned elements and their moments are not touched.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsnn.optim import adam_init, adam_step


@settings(deadline=None, max_examples=40)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple),
       density=st.sampled_from([0.0, 0.3, 1.0]), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float32, np.float64]), amsgrad=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.1]), steps=st.integers(1, 3))
def test_live_steps_equal_dense_steps_then_masking(shape, density, seed, dtype, amsgrad,
                                                   weight_decay, steps):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < density).astype(dtype)
    w = (rng.standard_normal(shape) * mask).astype(dtype)
    live = np.flatnonzero(mask)  # increasing
    dense = {"w": w.copy(), "b": np.ones(2, dtype)}
    sparse = {k: v.copy() for k, v in dense.items()}
    s_dense, s_sparse = adam_init(dense, amsgrad=amsgrad), adam_init(sparse, amsgrad=amsgrad)
    untouched = {k: v.copy() for k, v in s_sparse.items()}
    opts = dict(lr=0.01, weight_decay=weight_decay, amsgrad=amsgrad)
    for _ in range(steps):
        g = rng.standard_normal(shape).astype(dtype)
        gb = rng.standard_normal(2).astype(dtype)
        adam_step(dense, {"w": g, "b": gb}, s_dense, **opts)
        dense["w"] *= mask
        adam_step(sparse, {"w": g.reshape(-1)[live], "b": gb}, s_sparse, live={"w": live},
                  **opts)
        for k in dense:
            np.testing.assert_array_equal(sparse[k], dense[k], err_msg=k)
    dead = mask.reshape(-1) == 0
    for key in s_dense:
        if key.startswith("step."):
            assert int(s_sparse[key]) == int(s_dense[key]) == steps
        elif key.endswith(".w"):
            a, b = s_sparse[key].reshape(-1), s_dense[key].reshape(-1)
            np.testing.assert_array_equal(a[live], b[live], err_msg=key)
            np.testing.assert_array_equal(a[dead], untouched[key].reshape(-1)[dead])
        else:
            np.testing.assert_array_equal(s_sparse[key], s_dense[key], err_msg=key)
    assert np.all(sparse["w"][mask == 0] == 0)


def test_live_arguments_are_checked():
    params = {"w": np.zeros((2, 3))}
    state = adam_init(params, amsgrad=False)
    idx = np.array([0, 4], dtype=np.int64)
    with pytest.raises(ValueError, match=r"grads\['w'\].shape=\(2, 3\), expected \(2,\)"):
        adam_step(params, {"w": np.zeros((2, 3))}, state, lr=0.1, live={"w": idx})
    with pytest.raises(ValueError, match="live names 'v'"):
        adam_step(params, {"w": np.zeros(2)}, state, lr=0.1, live={"v": idx})
    with pytest.raises(TypeError, match=r"live\['w'\] must be a 1-D int64"):
        adam_step(params, {"w": np.zeros(2)}, state, lr=0.1, live={"w": idx.astype(np.int32)})
    with pytest.raises(TypeError, match="live must be a dict"):
        adam_step(params, {"w": np.zeros(2)}, state, lr=0.1, live=[idx])
    with pytest.raises(ValueError, match=r"indices in \[0, 6\], outside"):
        adam_step(params, {"w": np.zeros(2)}, state, lr=0.1,
                  live={"w": np.array([0, 6], dtype=np.int64)})
    with pytest.raises(ValueError, match="strictly increasing"):
        adam_step(params, {"w": np.zeros(2)}, state, lr=0.1,
                  live={"w": np.array([4, 0], dtype=np.int64)})
    assert np.all(params["w"] == 0) and int(state["step.w"]) == 0  # nothing done on errors
