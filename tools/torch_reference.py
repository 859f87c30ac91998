"""The SNN of SPEC section 5, written from the SPEC's equations in PyTorch with autograd.

A worked example for anyone verifying their own implementation against refsnn, and the torch
side of tests/crosscheck/test_snn_torch.py. It does not import refsnn: the architecture comes
from SPEC section 2's tables (transcribed below), the parameters and inputs from a safetensors
file, and gradients from torch autograd through the forward, not from a hand-written BPTT.

Recipe (the files are plain safetensors; any framework can play the part of torch here):

    python -m refsnn.trace CKPT --out ref.safetensors --input random --batch 4
    python tools/torch_reference.py ref.safetensors --out torch.safetensors
    python -m refsnn.compare ref.safetensors torch.safetensors       # exit 0: they agree

The second command reads the reference trace's parameters ("param.<name>"), input, labels
and dropout masks ("dropout.<layer>"), runs the network below and writes the same arrays.
``build_torch_snn(arch, params, timesteps=T)`` gives the network as a callable for other uses
(a benchmark, a training loop), in float32 or float64; ``load_params(path)`` reads the
parameters of a refsnn checkpoint or trace for it.

The equations (SPEC 5.1), for t = 1..T (outer loop) and spiking layers l in order (inner):

    I_l[t]  = W_l * x_l[t]             conv (3x3, pad 1; 1x1 shortcut, pad 0) or linear, no bias
    u-_l    = lam_l * u_l + I_l[t]     u_l = 0 before t = 1
    z_l     = u-_l / v_l - 1
    s_l[t]  = 1 if z_l > 0 else 0      strict; backward: ds/dz = gamma * max(0, 1 - |z|)
    u_l     = u-_l - v_l * s_l[t]      soft reset; s is a constant here (detached), v is not
    x_{l+1}[t] = dropout_l(pool_l(s_l[t]))    same dropout mask at every t
    U = sum_t W_L x_L[t],   loss = mean_n CE(softmax(U[n]), y[n])

The first layer's input is the image at every step ("direct input"), so I_1 is computed once.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# --- SPEC section 2, transcribed -----------------------------------------------------------------
SPEC_VGG = {  # conv output channels at width 1; "A" = AvgPool2d(2, 2)
    "vgg9": (64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512),
    "vgg11": (64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512),
    "vgg16": (64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512),
}
SPEC_RESNET_BLOCKS = {"resnet12": (1, 1, 1, 1), "resnet20": (2, 2, 2, 2)}  # blocks per stage
SPEC_RESNET_STRIDES = (1, 2, 2, 2)  # stride of each stage's first block


# --- the spike function ------------------------------------------------------------------------

class SpikePWL(torch.autograd.Function):
    """s = heaviside(z) (strict: z == 0 gives 0); backward ds/dz = gamma * max(0, 1 - |z|)."""

    @staticmethod
    def forward(ctx, z, gamma):
        ctx.save_for_backward(z)
        ctx.gamma = gamma  # stored on this call's context, not on the class
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_s):
        (z,) = ctx.saved_tensors
        return grad_s * ctx.gamma * torch.clamp(1.0 - z.abs(), min=0.0), None


class SpikeSigmoid(torch.autograd.Function):
    """s = heaviside(z); backward ds/dz = gamma * alpha * sig(alpha z) (1 - sig(alpha z))
    (refsnn's optional "sigmoid" surrogate)."""

    @staticmethod
    def forward(ctx, z, gamma, alpha):
        ctx.save_for_backward(z)
        ctx.gamma, ctx.alpha = gamma, alpha
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_s):
        (z,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.alpha * z)
        return grad_s * ctx.gamma * ctx.alpha * sig * (1.0 - sig), None, None


def lif_step(current, u, v, lam, spike_fn):
    """One LIF step (SPEC 5.1). current, u: (N, ...); v, lam: 0-d. -> (s, u_new, u_pre)."""
    u_pre = lam * u + current  # u- = lam * u + I   (leaky integration)
    z = u_pre / v - 1.0  # z = u-/v - 1
    s = spike_fn(z)  # s = 1 if z > 0 else 0, surrogate gradient in backward
    u_new = u_pre - v * s.detach()  # soft reset: no gradient through s, but v gets -du * s
    return s, u_new, u_pre


# --- the network -------------------------------------------------------------------------------

def spec_layers(arch_name: str, params: dict) -> list:
    """The layer sequence of SPEC 2 for ``arch_name``, channel counts read from the weights.

    Items: ("conv", name, dropout?), ("pool",), ("fc", name, spiking?, dropout?),
    ("block", prefix, stride, has_shortcut). Dropout follows every conv block except one
    followed by a pool, and both hidden Linears; in a BasicBlock it follows conv1 only.
    """
    def w(name):
        key = f"{name}.weight"
        if key not in params:
            raise ValueError(f"spec_layers: {arch_name} needs parameter {key!r}")
        return params[key]

    layers = []
    if arch_name in SPEC_VGG:
        cfg = SPEC_VGG[arch_name]
        k = 0
        for i, item in enumerate(cfg):
            if item == "A":
                layers.append(("pool",))
                continue
            k += 1
            w(f"conv{k}")
            next_is_pool = i + 1 < len(cfg) and cfg[i + 1] == "A"
            layers.append(("conv", f"conv{k}", not next_is_pool))
        layers += [("fc", "fc1", True, True), ("fc", "fc2", True, True), ("fc", "fc3", False,
                                                                           False)]
    elif arch_name in SPEC_RESNET_BLOCKS:
        layers += [("conv", "stem.conv1", True), ("conv", "stem.conv2", True),
                   ("conv", "stem.conv3", False), ("pool",)]
        c = w("stem.conv3").shape[0]
        for s, (blocks, stride0) in enumerate(zip(SPEC_RESNET_BLOCKS[arch_name],
                                                  SPEC_RESNET_STRIDES), start=1):
            for b in range(blocks):
                prefix, stride = f"layer{s}.{b}", stride0 if b == 0 else 1
                c_out = w(f"{prefix}.conv1").shape[0]
                shortcut = stride != 1 or c != c_out  # SPEC: 1x1 conv when the shape changes
                if shortcut != (f"{prefix}.shortcut.weight" in params):
                    raise ValueError(f"spec_layers: {prefix} {'needs' if shortcut else 'has'} "
                                     f"a shortcut weight but the parameters "
                                     f"{'lack it' if shortcut else 'include one'}")
                layers.append(("block", prefix, stride, shortcut))
                c = c_out
        w("fc")
        layers.append(("fc", "fc", False, False))
    else:
        raise ValueError(f"spec_layers: unknown architecture {arch_name!r}")
    return layers


class TorchSNN(NamedTuple):
    params: dict  # name -> leaf tensor (requires_grad), the network's parameters
    forward: Callable  # forward(x, masks=None, record=None) -> U (N, classes)
    loss: Callable  # loss(x, y, masks=None) -> scalar tensor, mean CE of U
    spiking: tuple  # spiking layer names in network order


def build_torch_snn(arch, params: dict, *, timesteps: int, surrogate: str = "pwl",
                    gamma: float = 0.3, alpha: float = 4.0, dtype=torch.float64,
                    device="cpu") -> TorchSNN:
    """The SNN of SPEC 5 as torch code: TorchSNN(params, forward, loss, spiking).

    arch: an architecture name ("vgg9", ..., "resnet20") or any object with a ``.name`` (a
    refsnn Arch). params: "<layer>.weight", "<layer>.threshold", "<layer>.leak" as numpy
    arrays or tensors (other names are ignored); they are copied into leaf tensors of ``dtype``
    with requires_grad=True, so after ``loss(...).backward()`` each ``params[k].grad`` holds
    dL/dk. forward(x, masks=None, record=None): x (N, C, H, W) tensor; masks {layer name:
    (N, ...) dropout mask} or None (no dropout); record: a dict to fill with the per-step
    tensors of every spiking layer, record[(layer, quantity)] = list over t.
    """
    arch_name = getattr(arch, "name", arch)
    p = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v.detach())
         .to(dtype=dtype, device=device).clone().requires_grad_(True)
         for k, v in params.items() if k.split(".")[-1] in ("weight", "threshold", "leak")
         and not k.startswith(("mask.", "optim."))}
    layers = spec_layers(arch_name, p)
    if surrogate == "pwl":
        def spike_fn(z):
            return SpikePWL.apply(z, gamma)
    elif surrogate == "sigmoid":
        def spike_fn(z):
            return SpikeSigmoid.apply(z, gamma, alpha)
    else:
        raise ValueError(f"build_torch_snn: surrogate must be 'pwl' or 'sigmoid', got "
                         f"{surrogate!r}")
    spiking = []
    for item in layers:
        if item[0] == "conv" or (item[0] == "fc" and item[2]):
            spiking.append(item[1])
        elif item[0] == "block":
            spiking += [f"{item[1]}.conv1", f"{item[1]}.conv2"]

    def forward(x, masks=None, record=None):
        used = set()

        def drop(h, name):  # dropout: h * mask, the same mask at every step
            if masks is None:
                return h
            if name not in masks:
                raise ValueError(f"forward: masks lacks {name!r}; the SPEC puts a dropout "
                                 f"after it (masks has {sorted(masks)})")
            used.add(name)
            return h * masks[name]

        u = {}  # membrane of every spiking layer after the reset, u[0] = 0

        def neuron(name, current):
            u_prev = u[name] if name in u else torch.zeros_like(current)  # u[0] = 0
            s, u_new, u_pre = lif_step(current, u_prev, p[f"{name}.threshold"],
                                       p[f"{name}.leak"], spike_fn)
            u[name] = u_new
            if record is not None:
                for q, val in (("current", current), ("membrane_pre", u_pre), ("spikes", s),
                               ("membrane", u_new)):
                    record.setdefault((name, q), []).append(val)
            return s

        first = layers[0][1]
        i_first = F.conv2d(x, p[f"{first}.weight"], padding=1)  # direct input: I_1 once
        U = None
        for _t in range(timesteps):  # t outer ...
            h = x
            for item in layers:  # ... layers inner
                kind = item[0]
                if kind == "conv":
                    _, name, has_dropout = item
                    cur = (i_first if name == first
                           else F.conv2d(h, p[f"{name}.weight"], padding=1))
                    h = neuron(name, cur)
                    if has_dropout:
                        h = drop(h, name)
                elif kind == "pool":
                    h = F.avg_pool2d(h, 2, 2)  # pooled spikes: 0, 0.25, ... used as they are
                elif kind == "block":
                    _, prefix, stride, shortcut = item
                    c1, c2 = f"{prefix}.conv1", f"{prefix}.conv2"
                    s1 = neuron(c1, F.conv2d(h, p[f"{c1}.weight"], stride=stride, padding=1))
                    a = drop(s1, c1)
                    short = (F.conv2d(h, p[f"{prefix}.shortcut.weight"], stride=stride)
                             if shortcut else h)
                    # the neuron after the sum belongs to conv2
                    h = neuron(c2, F.conv2d(a, p[f"{c2}.weight"], padding=1) + short)
                else:  # fc
                    _, name, is_spiking, has_dropout = item
                    cur = F.linear(torch.flatten(h, 1), p[f"{name}.weight"])
                    if not is_spiking:  # output layer: U = sum_t W_L x_L[t]
                        U = cur if U is None else U + cur
                        continue
                    h = neuron(name, cur)
                    if has_dropout:
                        h = drop(h, name)
        if masks is not None and set(masks) != used:
            raise ValueError(f"forward: dropout masks {sorted(set(masks) - used)} were not used;"
                             f" the SPEC's dropout places are {sorted(used)}")
        return U

    def loss(x, y, masks=None):
        return F.cross_entropy(forward(x, masks), y)  # mean over the batch of CE(softmax(U))

    return TorchSNN(p, forward, loss, tuple(spiking))


# --- traces ------------------------------------------------------------------------------------

def torch_trace(arch, params: dict, x, y, *, timesteps: int, masks: dict | None = None,
                surrogate: str = "pwl", gamma: float = 0.3, alpha: float = 4.0,
                dtype=torch.float64) -> dict:
    """The golden-trace arrays (SPEC 7) computed by torch, as numpy arrays with refsnn's names:
    input, label, param.*, dropout.*, trace.<layer>.{current,membrane_pre,spikes,membrane}
    (T, N, ...), output, loss, grad.* (torch autograd of the mean CE loss)."""
    net = build_torch_snn(arch, params, timesteps=timesteps, surrogate=surrogate, gamma=gamma,
                          alpha=alpha, dtype=dtype)
    xt = torch.as_tensor(np.asarray(x)).to(dtype)
    yt = torch.as_tensor(np.asarray(y)).long()
    mt = None if masks is None else {k: torch.as_tensor(np.asarray(v)).to(dtype)
                                     for k, v in masks.items()}
    record = {}
    U = net.forward(xt, mt, record)
    loss = F.cross_entropy(U, yt)
    loss.backward()

    def np_(t):
        return t.detach().cpu().numpy()

    out = {"input": np_(xt), "label": np_(yt)}
    out.update({f"param.{k}": np_(v) for k, v in net.params.items()})
    out.update({f"dropout.{k}": np_(v) for k, v in (mt or {}).items()})
    for name in net.spiking:
        for q in ("current", "membrane_pre", "spikes", "membrane"):
            out[f"trace.{name}.{q}"] = np_(torch.stack(record[(name, q)]))  # (T, N, ...)
    out["output"] = np_(U)
    out["loss"] = np_(loss)
    out.update({f"grad.{k}": np_(v.grad) for k, v in net.params.items()})
    return out


def read_safetensors(path) -> tuple[dict, dict]:
    """(numpy arrays, metadata JSON under key "refsnn") of a refsnn trace or checkpoint."""
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        meta = json.loads((f.metadata() or {}).get("refsnn", "{}"))
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    return arrays, meta


def load_params(path) -> tuple[dict, dict]:
    """(params, metadata) from a refsnn checkpoint ("<layer>.weight", ...; optimizer state and
    masks dropped) or a refsnn trace ("param.<layer>.weight", ...): numpy arrays by name."""
    arrays, meta = read_safetensors(path)
    if any(k.startswith("param.") for k in arrays):
        return {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}, meta
    return {k: v for k, v in arrays.items() if not k.startswith(("optim.", "mask."))}, meta


def trace_from_reference(arrays: dict, meta: dict, *, dtype=torch.float64) -> dict:
    """torch_trace on the parameters, input, labels and dropout masks of a refsnn trace."""
    cfg = meta["config"]
    params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    masks = {k[len("dropout."):]: v for k, v in arrays.items() if k.startswith("dropout.")}
    return torch_trace(cfg["arch"], params, arrays["input"], arrays["label"],
                       timesteps=int(meta["timesteps"]), masks=masks or None,
                       surrogate=cfg.get("surrogate", "pwl"), gamma=float(cfg.get("gamma", 0.3)),
                       alpha=float(cfg.get("alpha", 4.0)), dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python tools/torch_reference.py",
        description="Recompute a refsnn trace with the torch SNN of this file and write the "
                    "same arrays (then: python -m refsnn.compare REF OUT).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("reference", help="a trace written by python -m refsnn.trace")
    p.add_argument("--out", required=True, help="the torch trace to write (.safetensors)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = p.parse_args(argv)
    from safetensors.numpy import save_file

    torch.set_num_threads(1)  # small networks; and deterministic
    arrays, meta = read_safetensors(args.reference)
    out = trace_from_reference(arrays, meta, dtype=getattr(torch, args.dtype))
    doc = {"kind": "trace", "generator": "tools/torch_reference.py", "torch": torch.__version__,
           "dtype": args.dtype, "layers": meta.get("layers"), "params": meta.get("params"),
           "timesteps": meta.get("timesteps"), "config": meta.get("config")}
    save_file({k: np.require(v, requirements="C") for k, v in out.items()}, args.out,  # keeps 0-d
              metadata={"refsnn": json.dumps(doc)})
    print(f"{args.out}: {len(out)} arrays, loss {float(out['loss']):.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
