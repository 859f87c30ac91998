"""The front door: ``load_dataset(name, data_dir)`` -> a ``Dataset`` of uint8 images and stats.

Every loader returns ``(train_x, train_y, test_x, test_y, classes)``; this module adds the
normalisation statistics of SPEC section 3 and the name:
  - cifar10:  mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010)
  - cifar100: mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565, 0.2761)
  - all others: per-channel mean and population std of the training split, pixels scaled to
    [0, 1], computed in float64 and not rounded (``channel_mean_std``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from refsnn._checks import check_choice
from refsnn.data.cifar import load_cifar10, load_cifar100
from refsnn.data.embedded import load_embedded
from refsnn.data.folders import load_image_folder, load_tiny_imagenet
from refsnn.data.idx import FASHION_MNIST_CLASSES, load_idx_dataset
from refsnn.data.transforms import channel_mean_std

DATASETS = ("embedded", "cifar10", "cifar100", "tiny-imagenet", "imagefolder", "fashion-mnist")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


class Dataset(NamedTuple):
    """A dataset in memory, as stored (normalise per batch with transforms.make_batch).

    train_x, test_x: uint8 (N, C, H, W); train_y, test_y: int64 (N,), label k = classes[k];
    mean, std: C floats each, the normalisation statistics; name: the ``load_dataset`` name.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str


def load_dataset(name: str, data_dir=None, *, cache_dir=None) -> Dataset:
    """Load dataset ``name`` (one of DATASETS) from ``data_dir``.

    data_dir: "embedded" takes none (the files ship in the package); "fashion-mnist" defaults to
    /usr/share/datasets/fashion-mnist; the others require it (the CLI's --data-dir):
      cifar10       the folder holding cifar-10-batches-py/ (or that folder)
      cifar100      the folder holding cifar-100-python/ (or that folder)
      tiny-imagenet the tiny-imagenet-200 folder (wnids.txt, train/, val/)
      imagefolder   the folder holding train/<class>/ and test/<class>/
    cache_dir: for tiny-imagenet and imagefolder only, a folder in which to keep the decoded
    arrays (.npz) between runs; None (default) decodes every time.
    """
    check_choice("load_dataset", "name", name, DATASETS)
    if cache_dir is not None and name not in ("tiny-imagenet", "imagefolder"):
        raise ValueError(f"load_dataset: cache_dir applies to tiny-imagenet and imagefolder, "
                         f"not {name!r}")
    if name == "embedded":
        if data_dir is not None:
            raise ValueError("load_dataset: 'embedded' ships with refsnn and takes no --data-dir, "
                             f"got {str(data_dir)!r}")
        raw = load_embedded()
    elif name == "fashion-mnist":
        raw = load_idx_dataset(FASHION_MNIST_DIR if data_dir is None else data_dir,
                               classes=FASHION_MNIST_CLASSES)
    elif data_dir is None:
        raise ValueError(f"load_dataset: {name!r} needs --data-dir (data_dir), the folder "
                         f"holding its files; see load_dataset's docstring for the layout")
    elif name == "cifar10":
        raw = load_cifar10(data_dir)
    elif name == "cifar100":
        raw = load_cifar100(data_dir)
    elif name == "tiny-imagenet":
        raw = load_tiny_imagenet(data_dir, cache_dir=cache_dir)
    else:
        raw = load_image_folder(data_dir, cache_dir=cache_dir)

    if name == "cifar10":
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    elif name == "cifar100":
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    else:
        mean, std = channel_mean_std(raw[0])
    return Dataset(*raw, mean=mean, std=std, name=name)
