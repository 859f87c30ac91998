"""CIFAR-10 / CIFAR-100 "python version" batches, read through an unpickler that runs no code.

Layouts (https://www.cs.toronto.edu/~kriz/cifar.html):
    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch   keys b'data', b'labels'
    cifar-10-batches-py/batches.meta                               key  b'label_names'
    cifar-100-python/train, test                                   keys b'data', b'fine_labels'
    cifar-100-python/meta                                          key  b'fine_label_names'
Each batch is a dict whose b'data' is a uint8 array (n, 3072): per row the 1024 red, then
1024 green, then 1024 blue values of a 32x32 image in row-major order, i.e. (3, 32, 32).

What the files really contain. They were written by Python 2's cPickle (protocol 2): dicts,
byte strings (Python 2 ``str``, read back as ``bytes`` with ``encoding='bytes'``), lists and ints
-- but b'data' is a *numpy array*, and a pickled numpy array names three globals:
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``. A loader that
refused every global could therefore not read the real files.

So ``_SafeUnpickler.find_class`` never imports anything: it refuses every global except those
three names (and ``_codecs.encode``, which Python 3 uses to pickle bytes at protocols 0-2), and
for them returns small local stand-ins that can only rebuild a plain uint8 array from raw bytes
(or turn a str into latin-1 bytes). No callable named by the file is ever looked up, so a
crafted file (``os.system``, ``builtins.eval``, ...) fails with a ValueError naming the file
before anything runs.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))


class _NdarrayType:
    """Stand-in for ``numpy.ndarray`` as the first argument of ``_reconstruct``; not callable."""


_NDARRAY = _NdarrayType()


class _DtypeStub:
    """Stand-in for ``numpy.dtype(code, align, copy)``: only uint8 ('u1') is accepted."""

    def __init__(self, code, align=False, copy=True):
        if isinstance(code, bytes):
            code = code.decode("ascii", errors="replace")
        if code != "u1":
            raise pickle.UnpicklingError(f"array dtype {code!r} refused (only 'u1' is accepted)")

    def __setstate__(self, state):
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, align, flags)
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("|", b"|"):
            raise pickle.UnpicklingError(f"unexpected uint8 dtype state {state!r}")


class _ArrayStub:
    """Stand-in for ``_reconstruct(ndarray, (0,), b'b')``; BUILD then fills ``self.array``."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # numpy's ndarray state: (version, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("unexpected ndarray state (not a 5-tuple)")
        _version, shape, dtype, is_fortran, raw = state
        if not isinstance(dtype, _DtypeStub) or not isinstance(raw, bytes):
            raise pickle.UnpicklingError("ndarray state must hold a uint8 dtype and raw bytes")
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
            raise pickle.UnpicklingError(f"bad ndarray shape {shape!r}")
        if len(raw) != math.prod(shape):
            raise pickle.UnpicklingError(
                f"ndarray of shape {shape} needs {math.prod(shape)} bytes, got {len(raw)}"
            )
        order = "F" if is_fortran else "C"
        self.array = np.frombuffer(raw, dtype=np.uint8).reshape(shape, order=order)


def _reconstruct(subtype, shape, typecode):
    """Stand-in for ``numpy.core.multiarray._reconstruct``: returns an empty _ArrayStub."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("_reconstruct is only accepted for numpy.ndarray")
    return _ArrayStub()


def _codecs_encode(text, encoding):
    """Stand-in for ``_codecs.encode(str, 'latin1')``, Python 3's pickling of bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only accepted as (str, 'latin1')")
    return text.encode("latin1")


_STAND_INS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeStub,
    ("_codecs", "encode"): _codecs_encode,
}


class _SafeUnpickler(pickle.Unpickler):
    """Refuses every global; the few names of a uint8 ndarray map to inert local stand-ins."""

    def find_class(self, module, name):
        stand_in = _STAND_INS.get((module, name))
        if stand_in is None:
            raise pickle.UnpicklingError(f"global {module}.{name} refused")
        return stand_in


def safe_unpickle(path) -> dict:
    """Load a CIFAR pickle (``encoding='bytes'``) without running code; return its dict.

    Arrays in the file come back as read-only uint8 numpy arrays. Raises ValueError naming the
    file if it is missing, is not a pickle of a dict, or names any other global.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read CIFAR file {path}: {exc}") from exc
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any failure of untrusted input is reported the same way
        raise ValueError(f"{path}: not a safe CIFAR pickle: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {key: (v.array if isinstance(v, _ArrayStub) else v) for key, v in obj.items()}


def _get(batch: dict, key: str, path: Path):
    """``batch[b'key']`` (as the real files have it) or ``batch['key']``; ValueError if absent."""
    for k in (key.encode("ascii"), key):
        if k in batch:
            return batch[k]
    keys = sorted(repr(k) for k in batch)
    raise ValueError(f"{path}: missing key b{key!r}; keys are {', '.join(keys)}")


def read_cifar_batch(path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file -> (x uint8 (n, 3, 32, 32), y int64 (n,)), checking every label."""
    path = Path(path)
    batch = safe_unpickle(path)
    data = _get(batch, "data", path)
    labels = _get(batch, label_key, path)
    if isinstance(data, bytes):
        data = np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray) or data.size % 3072:
        raise ValueError(f"{path}: b'data' must hold n * 3072 uint8 values")
    # Row = 3 planes of 32x32 in row-major order -> (n, 3, 32, 32).
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32))
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise ValueError(f"{path}: b{label_key!r} must be a list of ints")
    y = np.array(labels, dtype=np.int64)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise ValueError(
            f"{path}: label {int(y[bad[0]])} at index {int(bad[0])} is out of range "
            f"0..{num_classes - 1}"
        )
    return x, y


def _read_names(path: Path, key: str) -> tuple[str, ...]:
    """Class names from a meta file: a list of byte strings under ``key``."""
    names = _get(safe_unpickle(path), key, path)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise ValueError(f"{path}: b{key!r} must be a list of strings")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)


def _resolve(root, folder: str, marker: str) -> Path:
    """Accept ``root`` as the folder containing ``folder`` or as ``folder`` itself."""
    root = Path(root)
    if (root / folder / marker).is_file():
        return root / folder
    if (root / marker).is_file():
        return root
    if not root.is_dir():
        raise ValueError(f"CIFAR folder {str(root)!r} does not exist")
    raise ValueError(
        f"no CIFAR files in {str(root)!r}: expected {folder}/{marker} or {marker} directly inside"
    )


def _concat(parts: list) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(root) -> tuple:
    """Load CIFAR-10 from ``root`` (the folder holding ``cifar-10-batches-py`` or that folder).

    Returns ``(train_x, train_y, test_x, test_y, classes)``: x uint8 (N, 3, 32, 32) with N =
    50000 / 10000 for the real data, train batches 1..5 in order; y int64 (N,) in 0..9;
    classes from ``batches.meta`` (airplane, automobile, ..., truck).
    """
    folder = _resolve(root, CIFAR10_DIR, "test_batch")
    classes = _read_names(folder / "batches.meta", "label_names")
    if len(classes) != 10:
        raise ValueError(f"{folder / 'batches.meta'}: expected 10 label_names, got {len(classes)}")
    train = _concat([read_cifar_batch(folder / f, "labels", 10) for f in CIFAR10_TRAIN])
    test = read_cifar_batch(folder / "test_batch", "labels", 10)
    return (*train, *test, classes)


def load_cifar100(root) -> tuple:
    """Load CIFAR-100 from ``root`` (the folder holding ``cifar-100-python`` or that folder).

    Returns ``(train_x, train_y, test_x, test_y, classes)``: x uint8 (N, 3, 32, 32), N = 50000
    / 10000 for the real data; y int64 (N,) the *fine* labels in 0..99; classes the 100
    ``fine_label_names`` from ``meta``.
    """
    folder = _resolve(root, CIFAR100_DIR, "test")
    classes = _read_names(folder / "meta", "fine_label_names")
    if len(classes) != 100:
        raise ValueError(f"{folder / 'meta'}: expected 100 fine_label_names, got {len(classes)}")
    train = read_cifar_batch(folder / "train", "fine_labels", 100)
    test = read_cifar_batch(folder / "test", "fine_labels", 100)
    return (*train, *test, classes)
