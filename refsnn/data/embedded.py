"""The small real dataset shipped inside the package: a class-balanced Fashion-MNIST subset.

refsnn/data/embedded/ holds gzipped IDX files (8000 train = the first 800 images of each class,
2000 test = the first 200 of each class, original order), made reproducibly from Debian's
dataset-fashion-mnist files by ``python tools/make_embedded.py``. Fashion-MNIST is
Copyright (c) 2017 Zalando SE, MIT (Expat) licence; see embedded/NOTICE, and embedded/README.md
for the SHA-256 of every file.
"""

from __future__ import annotations

from pathlib import Path

from refsnn.data.idx import FASHION_MNIST_CLASSES, load_idx_dataset

EMBEDDED_DIR = Path(__file__).parent / "embedded"


def load_embedded() -> tuple:
    """Load the shipped subset -> ``(train_x, train_y, test_x, test_y, classes)``.

    train_x uint8 (8000, 1, 28, 28), train_y int64 (8000,), test_x uint8 (2000, 1, 28, 28),
    test_y int64 (2000,), classes the 10 Fashion-MNIST class names.
    """
    return load_idx_dataset(EMBEDDED_DIR, classes=FASHION_MNIST_CLASSES)
