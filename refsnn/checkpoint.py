"""Checkpoints: safetensors files of named arrays plus one JSON metadata document (SPEC 7).

    save_checkpoint(path, arrays, meta)      # atomic: temporary file, fsync, rename
    arrays, meta = load_checkpoint(path)

A checkpoint is readable without refsnn: ``safetensors.numpy.load_file(path)`` gives the arrays
(``safetensors.safe_open(path, "np").metadata()["refsnn"]`` the JSON), and
``safetensors.torch.load_file`` the same tensors for PyTorch. No pickle anywhere.

Array names: ``<layer>.weight`` (and for SNNs ``<layer>.threshold``, ``<layer>.leak``),
``mask.<layer>.weight``, ``optim.<slot>.<parameter name>``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile

import numpy as np

FORMAT_VERSION = 1
_META_KEY = "refsnn"


def library_versions() -> dict:
    """Versions recorded in every checkpoint and trace."""
    import numba

    from . import __version__

    return {"refsnn": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version()}


def save_checkpoint(path: str | os.PathLike, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` (name -> ndarray) and ``meta`` (JSON-serialisable dict) atomically.

    The bytes go to a temporary file in the destination folder, are flushed and fsynced, then
    renamed over ``path`` (os.replace is atomic on POSIX): a run killed at any moment leaves
    either the previous checkpoint or the new one, never a torn file.
    """
    from safetensors.numpy import save

    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"save_checkpoint: arrays[{name!r}] must be a numpy.ndarray, "
                            f"got {type(a).__name__}")
    doc = dict(meta)
    doc.setdefault("format_version", FORMAT_VERSION)
    doc.setdefault("versions", library_versions())
    blob = save({k: np.require(v, requirements="C") for k, v in arrays.items()},  # keeps 0-d
                metadata={_META_KEY: json.dumps(doc, sort_keys=True)})
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | os.PathLike):
    """Read a checkpoint: (arrays dict, meta dict). Clear errors for a missing or foreign file."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"load_checkpoint: no checkpoint file at {path!r}")
    try:
        with safe_open(path, framework="np") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"load_checkpoint: {path!r} is not a readable safetensors file ({e})") \
            from None
    if raw is None:
        raise ValueError(f"load_checkpoint: {path!r} has no {_META_KEY!r} metadata: "
                         "not a refsnn checkpoint")
    meta = json.loads(raw)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"load_checkpoint: {path!r} has format_version "
                         f"{meta.get('format_version')!r}, this refsnn reads {FORMAT_VERSION}")
    return arrays, meta


def check_names_and_shapes(expected: dict, arrays: dict, *, what: str, path: str = "") -> None:
    """Require arrays to hold exactly the names in ``expected`` with the expected shapes.

    Names the first missing, unexpected or mis-shaped array (and the file), so a checkpoint
    written for another architecture, width or dataset fails loudly.
    """
    where = f" in {path!r}" if path else ""
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise ValueError(f"{what}: missing {missing[0]!r}{where} "
                         f"({len(missing)} missing; expected names like {list(expected)[:3]})")
    extra = [k for k in arrays if k not in expected]
    if extra:
        raise ValueError(f"{what}: unexpected array {extra[0]!r}{where} ({len(extra)} unexpected)")
    for k, shape in expected.items():
        if tuple(arrays[k].shape) != tuple(shape):
            raise ValueError(f"{what}: {k!r}{where} has shape {tuple(arrays[k].shape)}, "
                             f"expected {tuple(shape)}")
