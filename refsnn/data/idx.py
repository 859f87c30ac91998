"""MNIST / Fashion-MNIST IDX files (``*-images-idx3-ubyte[.gz]``, ``*-labels-idx1-ubyte[.gz]``).

The IDX format (http://yann.lecun.com/exdb/mnist/), all integers big-endian:

    bytes 0-1   0x00 0x00
    byte  2     element type; 0x08 = unsigned byte (the only type these datasets use)
    byte  3     number of dimensions d (3 for images, 1 for labels)
    4*d bytes   the sizes of the dimensions, uint32 each
    payload     prod(sizes) elements, row-major

so images start with the magic 0x00000803 and labels with 0x00000801. A file may be gzipped
or not; that is detected from the gzip magic bytes 0x1f 0x8b, never from the file name.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
GZIP_MAGIC = b"\x1f\x8b"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))

# The file names of the standard releases; each may also end in ".gz".
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def read_idx_images(path) -> np.ndarray:
    """Read an IDX image file: magic 0x00000803, dims (N, H, W) -> uint8 array (N, H, W)."""
    return _read_idx(Path(path), IMAGES_MAGIC, "images (N, H, W)")


def read_idx_labels(path) -> np.ndarray:
    """Read an IDX label file: magic 0x00000801, dims (N,) -> uint8 array (N,)."""
    return _read_idx(Path(path), LABELS_MAGIC, "labels (N,)")


def _read_idx(path: Path, magic: int, what: str) -> np.ndarray:
    """Read a whole IDX file, gzipped or not, and check its magic, dims and payload length."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}") from exc
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip stream: {exc}") from exc

    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic:
        raise ValueError(
            f"{path}: IDX magic is 0x{got_magic:08x}, expected 0x{magic:08x} for {what}"
        )
    if len(raw) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header: expected {header_len} bytes, got {len(raw)}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    if any(d == 0 for d in dims):
        raise ValueError(f"{path}: IDX dims {dims} contain a zero")

    # The payload must hold exactly prod(dims) bytes: a short file is truncated and a long
    # one is not what its header says.
    expected = math.prod(dims)
    got = len(raw) - header_len
    if got != expected:
        problem = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX payload {problem}: dims {dims} need {expected} bytes after the "
            f"{header_len}-byte header, got {got}"
        )
    payload = np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header_len)
    return payload.reshape(dims).copy()  # a writable array that owns its memory


def find_idx_file(root, split: str, kind: str) -> Path:
    """Return the path of the ``split`` ('train'/'test') ``kind`` ('images'/'labels') file.

    Looks for the standard name, plain first and then with ``.gz`` (so a decompressed copy next
    to the original wins). Raises ValueError listing the names tried.
    """
    root = Path(root)
    base = IDX_FILES[(split, kind)]
    candidates = [root / base, root / (base + ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(c.name for c in candidates)
    raise ValueError(f"no {split} {kind} IDX file in {root} (looked for {tried})")


def load_idx_dataset(root, *, classes: tuple[str, ...] = FASHION_MNIST_CLASSES) -> tuple:
    """Load the train and t10k IDX files found in the folder ``root``.

    Returns ``(train_x, train_y, test_x, test_y, classes)``:
      train_x, test_x: uint8 (N, 1, H, W), pixel values as stored (0 = background);
      train_y, test_y: int64 (N,), each in 0 .. len(classes) - 1;
      classes: the ``classes`` argument (Fashion-MNIST names by default; MNIST_CLASSES for MNIST).
    Raises ValueError if the folder or a file is missing, a file is malformed, the image and
    label counts differ, a label is out of range, or train and test images differ in size.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"load_idx_dataset: folder {str(root)!r} does not exist")
    out = []
    for split in ("train", "test"):
        images_path = find_idx_file(root, split, "images")
        labels_path = find_idx_file(root, split, "labels")
        images = read_idx_images(images_path)
        labels = read_idx_labels(labels_path)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"load_idx_dataset: {images_path.name} has {images.shape[0]} images but "
                f"{labels_path.name} has {labels.shape[0]} labels (in {root})"
            )
        bad = np.flatnonzero(labels >= len(classes))
        if bad.size:
            raise ValueError(
                f"load_idx_dataset: {labels_path}: label {int(labels[bad[0]])} at index "
                f"{int(bad[0])} is out of range 0..{len(classes) - 1}"
            )
        # (N, H, W) -> (N, 1, H, W): one grey channel, NCHW like every other loader.
        out += [images[:, None, :, :], labels.astype(np.int64)]
    if out[0].shape[2:] != out[2].shape[2:]:
        raise ValueError(
            f"load_idx_dataset: train images are {out[0].shape[2:]} but test images are "
            f"{out[2].shape[2:]} (in {root})"
        )
    return (*out, tuple(classes))
