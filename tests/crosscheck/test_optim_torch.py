"""refsnn.optim against torch.optim.SGD / torch.optim.Adam (single-tensor path, foreach=False,
which is torch's default on CPU).

Each case runs 5 steps with a fresh random gradient and a different lr at every step, on a
dict of differently shaped tensors (a conv weight, two scalars exempt from weight decay as
thresholds and leaks are in stage D, and two linear weights large enough for torch's vectorised
and its scalar-tail code paths), and compares parameters and optimizer state after every step.

Tolerances (measured on an AVX512 x86 CPU with torch 2.13.0):
- SGD: bit for bit (the kernels use fused multiply-adds exactly where torch's vectorised
  kernels do); test_sgd_bitwise asserts it where torch runs its AVX2/AVX512 kernels.
- Adam, float64: max relative difference 2.2e-16 (1 ulp); asserted at rtol 1e-13.
- Adam, float32: max relative difference 2.1e-7 (2 ulp); asserted at rtol 1e-6.
  The only source is torch's CPU sqrt, which is not correctly rounded (1 ulp off in about
  16 % of float32 and 1 % of float64 elements); the moments exp_avg, exp_avg_sq and
  max_exp_avg_sq agree bit for bit when weight decay is off (test_adam_moments_bitwise).
Parameters are drawn with |p| in [0.5, 2] so a relative tolerance is meaningful; the
"crossing zero" case draws N(0, 1) parameters with a large lr and measures the difference
relative to max |p| instead.
"""

import numpy as np
import pytest

from refsnn.optim import adam_init, adam_step, sgd_init, sgd_step

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.crosscheck

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-6, np.float64: 1e-13}  # see the module docstring for what was measured
STEPS = 5
SHAPES = {
    "conv1.weight": (5, 3, 3, 2),
    "conv1.threshold": (),
    "conv1.leak": (),
    "fc1.weight": (7, 33),
    "fc2.weight": (3, 700),
}
NO_DECAY = ("conv1.threshold", "conv1.leak")
FMA_CPU = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")

SGD_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.5, weight_decay=0.05),
    dict(momentum=0.9, dampening=0.1, weight_decay=5e-4),
    dict(momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(weight_decay=0.1),
]
ADAM_CASES = [
    dict(),
    dict(amsgrad=True),
    dict(weight_decay=0.01),
    dict(amsgrad=True, weight_decay=5e-4),
    dict(beta1=0.5, beta2=0.9, eps=1e-6),  # lerp weight 0.5: ATen's other lerp branch
    dict(beta1=0.0, beta2=0.0, amsgrad=True),
    dict(beta1=0.3, beta2=0.99, eps=1e-3, weight_decay=0.1),
]


def _case_id(opts):
    return ",".join(f"{k}={v}" for k, v in opts.items()) or "defaults"


def _draw(rng, dtype, draw):
    if draw == "bounded":  # |p| in [0.5, 2]: stays away from 0 over 5 small steps
        params = {n: np.asarray(rng.choice([-1.0, 1.0], size=s) * rng.uniform(0.5, 2.0, size=s))
                  for n, s in SHAPES.items()}
    else:  # "crossing zero"
        params = {n: np.asarray(rng.standard_normal(s)) for n, s in SHAPES.items()}
    params = {n: p.astype(dtype) for n, p in params.items()}
    grads = [{n: np.asarray(rng.standard_normal(s)).astype(dtype) for n, s in SHAPES.items()}
             for _ in range(STEPS)]
    return params, grads


def _torch_optimizer(kind, tparams, opts, lr):
    decay = opts.get("weight_decay", 0.0)
    groups = [
        {"params": [t for n, t in tparams.items() if n not in NO_DECAY]},
        {"params": [t for n, t in tparams.items() if n in NO_DECAY], "weight_decay": 0.0},
    ]
    if kind == "sgd":
        kw = {k: v for k, v in opts.items() if k != "weight_decay"}
        return torch.optim.SGD(groups, lr=lr, weight_decay=decay, foreach=False, **kw)
    kw = dict(betas=(opts.get("beta1", 0.9), opts.get("beta2", 0.999)), eps=opts.get("eps", 1e-8),
              amsgrad=opts.get("amsgrad", False))
    return torch.optim.Adam(groups, lr=lr, weight_decay=decay, foreach=False, **kw)


def _run(kind, dtype, opts, seed, *, draw="bounded", lrs=None, momenta=None):
    """Yield (step, ours: params, ours: state, torch: params, torch: state) after every step."""
    rng = np.random.default_rng(seed)
    params, grads = _draw(rng, dtype, draw)
    if lrs is None:
        scale = 0.01 if draw == "bounded" else 0.1
        lrs = scale * rng.uniform(0.2, 1.5, size=STEPS)
    tparams = {n: torch.tensor(p.copy(), requires_grad=True) for n, p in params.items()}
    optimizer = _torch_optimizer(kind, tparams, opts, float(lrs[0]))
    if kind == "sgd":
        state = sgd_init(params)
    else:
        state = adam_init(params, amsgrad=opts.get("amsgrad", False))
    for k in range(STEPS):
        step_opts = dict(opts)
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[k])
            if momenta is not None:
                group["momentum"] = step_opts["momentum"] = momenta[k]
        for n, t in tparams.items():
            t.grad = torch.from_numpy(grads[k][n].copy())
        optimizer.step()
        if kind == "sgd":
            sgd_step(params, grads[k], state, lr=float(lrs[k]), no_decay=NO_DECAY, **step_opts)
        else:
            adam_step(params, grads[k], state, lr=float(lrs[k]), no_decay=NO_DECAY, **step_opts)
        tstate = {}
        for n, t in tparams.items():
            for slot, value in optimizer.state[t].items():
                tstate[f"{slot}.{n}"] = value.detach().numpy().copy()
        yield k, params, state, {n: t.detach().numpy() for n, t in tparams.items()}, tstate


def _compare(k, ours, theirs, rtol, *, atol_scale=None, label=""):
    for n, want in theirs.items():
        got = ours[n]
        where = f"{label} step {k + 1}: {n}"
        assert got.shape == want.shape and got.dtype == want.dtype, (
            f"{where}: {got.shape} {got.dtype}, expected {want.shape} {want.dtype}")
        atol = 0.0 if atol_scale is None else rtol * max(float(np.max(np.abs(want), initial=0)),
                                                         atol_scale)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=where)


def _compare_state(k, state, tstate, rtol, label):
    # torch keeps step as a float32 0-d tensor; ours is int64 0-d with the same value.
    # Slot arrays are compared with atol = rtol * max |slot|: a moment can be ~0 in places.
    for key, want in tstate.items():
        assert key in state, f"{label} step {k + 1}: torch has state {key!r}, refsnn does not"
        if key.startswith("step."):
            assert int(state[key]) == int(want), f"{label}: {key}={int(state[key])}, torch {want}"
    slots = {key: v for key, v in tstate.items() if not key.startswith("step.")}
    _compare(k, state, slots, rtol, atol_scale=0.0, label=label + " state")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", SGD_CASES, ids=_case_id)
def test_sgd_matches_torch(opts, dtype, seed):
    label = f"SGD({opts}) {np.dtype(dtype).name}"
    for k, params, state, tparams, tstate in _run("sgd", dtype, opts, seed):
        _compare(k, params, tparams, RTOL[dtype], label=label)
        _compare_state(k, state, tstate, RTOL[dtype], label)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", ADAM_CASES, ids=_case_id)
def test_adam_matches_torch(opts, dtype, seed):
    label = f"Adam({opts}) {np.dtype(dtype).name}"
    for k, params, state, tparams, tstate in _run("adam", dtype, opts, seed):
        _compare(k, params, tparams, RTOL[dtype], label=label)
        _compare_state(k, state, tstate, RTOL[dtype], label)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, opts", [
    ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adam", dict(amsgrad=True, weight_decay=0.01)),
    ("adam", dict()),
])
def test_crossing_zero_matches_torch(kind, opts, dtype):
    # N(0, 1) parameters and lr ~ 0.1: some entries pass near 0, where a relative difference
    # means nothing; measure it against max |p| instead.
    for k, params, _, tparams, _ in _run(kind, dtype, opts, seed=5, draw="normal"):
        _compare(k, params, tparams, RTOL[dtype], atol_scale=0.0, label=f"{kind} crossing zero")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_momentum_switched_on_later_matches_torch(dtype):
    # torch creates the buffer at the first step with momentum != 0 and copies the gradient
    # into it (no dampening): refsnn's step count stays 0 until then.
    momenta = [0.0, 0.0, 0.9, 0.9, 0.5]
    for k, params, state, tparams, tstate in _run(
            "sgd", dtype, dict(momentum=0.0, dampening=0.3), seed=3, momenta=momenta):
        _compare(k, params, tparams, RTOL[dtype], label="momentum switched on")
        if k < 2:
            assert all(int(state[f"step.{n}"]) == 0 for n in SHAPES)
        else:
            _compare_state(k, state, tstate, RTOL[dtype], "momentum switched on")


@pytest.mark.skipif(not FMA_CPU, reason="torch's FMA kernels need AVX2/AVX512")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", SGD_CASES, ids=_case_id)
def test_sgd_bitwise(opts, dtype):
    for k, params, state, tparams, tstate in _run("sgd", dtype, opts, seed=2, draw="normal"):
        for n in SHAPES:
            np.testing.assert_array_equal(params[n], tparams[n], err_msg=f"step {k + 1}: {n}")
        for key, want in tstate.items():
            np.testing.assert_array_equal(state[key], want, err_msg=f"step {k + 1}: {key}")


@pytest.mark.skipif(not FMA_CPU, reason="torch's FMA kernels need AVX2/AVX512")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", [o for o in ADAM_CASES if not o.get("weight_decay")],
                         ids=_case_id)
def test_adam_moments_bitwise(opts, dtype):
    # without weight decay the moments do not depend on p (nor on sqrt): they must be identical
    for k, _, state, _, tstate in _run("adam", dtype, opts, seed=4, draw="normal"):
        for key, want in tstate.items():
            if not key.startswith("step."):
                np.testing.assert_array_equal(state[key], want, err_msg=f"step {k + 1}: {key}")
