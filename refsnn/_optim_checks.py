"""Argument checks shared by refsnn.optim's SGD and Adam (each error names the function, the
argument, what was given and what was expected)."""

from __future__ import annotations

import math

import numpy as np

from refsnn._checks import check_array


def _check_number(fn: str, name: str, value, *, minimum: float | None = None) -> float:
    """Require a real number (not bool), finite, and >= minimum when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{fn}: {name} must be finite, got {value!r}")
    if minimum is not None and not v >= minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    return v


def _check_params(fn: str, params) -> None:
    """Require a non-empty dict name -> writable C-contiguous float32/float64 array."""
    if not isinstance(params, dict):
        raise TypeError(
            f"{fn}: params must be a dict name -> numpy.ndarray, got {type(params).__name__}"
        )
    for name, p in params.items():
        if not isinstance(name, str):
            raise TypeError(
                f"{fn}: parameter names must be str, got {type(name).__name__} {name!r}"
            )
        check_array(fn, f"params[{name!r}]", p)
        if not (p.flags.c_contiguous and p.flags.writeable):
            raise ValueError(
                f"{fn}: params[{name!r}] must be C-contiguous and writeable (it is updated in "
                f"place), got c_contiguous={p.flags.c_contiguous}, writeable={p.flags.writeable}"
            )


def _check_grads(fn: str, params: dict, grads, live: dict | None = None) -> None:
    """Require grads with exactly the keys, shapes and dtypes of params (shape (nnz,) for the
    names in live: the gradient of the live elements only)."""
    if not isinstance(grads, dict):
        raise TypeError(
            f"{fn}: grads must be a dict name -> numpy.ndarray, got {type(grads).__name__}"
        )
    missing = sorted(set(params) - set(grads))
    extra = sorted(set(grads) - set(params))
    if missing or extra:
        raise ValueError(
            f"{fn}: grads must have the keys of params; missing {missing}, unexpected {extra}"
        )
    for name, p in params.items():
        g = check_array(fn, f"grads[{name!r}]", grads[name])
        shape = (live[name].size,) if live and name in live else p.shape
        if g.shape != shape:
            what = "one per live index" if shape != p.shape else "the parameter's"
            raise ValueError(f"{fn}: grads[{name!r}].shape={g.shape}, expected {shape} ({what})")
        if g.dtype != p.dtype:
            raise TypeError(
                f"{fn}: grads[{name!r}].dtype={g.dtype}, expected {p.dtype} (the parameter's; "
                f"no silent promotion)"
            )


def _check_live(fn: str, params: dict, live) -> dict:
    """live: None or {parameter name: strictly increasing int64 flat indices within it}."""
    if live is None:
        return {}
    if not isinstance(live, dict):
        raise TypeError(f"{fn}: live must be a dict name -> int64 indices, got "
                        f"{type(live).__name__}")
    for name, idx in live.items():
        if name not in params:
            raise ValueError(f"{fn}: live names {name!r}, not a parameter; known: "
                             f"{sorted(params)}")
        if not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype != np.int64:
            raise TypeError(f"{fn}: live[{name!r}] must be a 1-D int64 array of flat indices, "
                            f"got {getattr(idx, 'dtype', type(idx).__name__)} "
                            f"{getattr(idx, 'shape', '')}")
        size = params[name].size
        if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            raise ValueError(f"{fn}: live[{name!r}] must be strictly increasing (distinct "
                             f"elements, in memory order)")
        if idx.size and not (0 <= int(idx[0]) and int(idx[-1]) < size):
            raise ValueError(f"{fn}: live[{name!r}] has indices in [{int(idx[0])}, "
                             f"{int(idx[-1])}], outside the parameter's [0, {size})")
    return live


def _check_no_decay(fn: str, params: dict, no_decay) -> frozenset:
    """Require an iterable of parameter names (not a bare string)."""
    if isinstance(no_decay, (str, bytes)):
        raise TypeError(
            f"{fn}: no_decay must be a collection of names, got the string {no_decay!r}"
        )
    names = frozenset(no_decay)
    unknown = sorted(n for n in names if n not in params)
    if unknown:
        raise ValueError(
            f"{fn}: no_decay names {unknown} are not parameters; known: {sorted(params)}"
        )
    return names


def _check_slot(fn: str, state, slot: str, name: str, p: np.ndarray) -> np.ndarray:
    """Return state[f"{slot}.{name}"], required to be shaped and typed like parameter p."""
    key = f"{slot}.{name}"
    if key not in state:
        raise ValueError(f"{fn}: state has no {key!r}; create the state with the matching *_init")
    a = state[key]
    check_array(fn, f"state[{key!r}]", a)
    if a.shape != p.shape or a.dtype != p.dtype:
        raise ValueError(
            f"{fn}: state[{key!r}] has shape {a.shape} dtype {a.dtype}, expected {p.shape} "
            f"{p.dtype} (the parameter's)"
        )
    if not (a.flags.c_contiguous and a.flags.writeable):
        raise ValueError(f"{fn}: state[{key!r}] must be C-contiguous and writeable")
    return a


def _check_step(fn: str, state, name: str) -> np.ndarray:
    """Return state[f"step.{name}"], required to be a writeable 0-d int64 array >= 0."""
    key = f"step.{name}"
    if key not in state:
        raise ValueError(f"{fn}: state has no {key!r}; create the state with the matching *_init")
    s = state[key]
    if not isinstance(s, np.ndarray) or s.shape != () or s.dtype != np.int64:
        got = f"shape {s.shape} dtype {s.dtype}" if isinstance(s, np.ndarray) else type(s).__name__
        raise ValueError(f"{fn}: state[{key!r}] must be a 0-d int64 array, got {got}")
    if int(s) < 0 or not s.flags.writeable:
        raise ValueError(f"{fn}: state[{key!r}] must be writeable and >= 0, got {int(s)}")
    return s


def _check_state(fn: str, state) -> None:
    if not isinstance(state, dict):
        raise TypeError(
            f"{fn}: state must be a dict (from the matching *_init), got {type(state).__name__}"
        )
