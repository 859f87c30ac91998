"""The Fashion-MNIST subset shipped in refsnn/data/embedded/ and the script that makes it."""

import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from refsnn.data.datasets import load_dataset
from refsnn.data.embedded import EMBEDDED_DIR, load_embedded
from refsnn.data.idx import FASHION_MNIST_CLASSES
from refsnn.data.transforms import channel_mean_std

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_embedded.py"
DATA_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def load_tool():
    spec = importlib.util.spec_from_file_location("make_embedded", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_size_under_limit():
    total = sum(p.stat().st_size for p in EMBEDDED_DIR.iterdir())
    assert total < 4.5e6, f"embedded folder is {total} bytes"


def test_loads_balanced():
    train_x, train_y, test_x, test_y, classes = load_embedded()
    assert train_x.shape == (8000, 1, 28, 28) and test_x.shape == (2000, 1, 28, 28)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert np.bincount(train_y).tolist() == [800] * 10
    assert np.bincount(test_y).tolist() == [200] * 10
    assert classes == FASHION_MNIST_CLASSES


def test_load_dataset_embedded():
    ds = load_dataset("embedded")
    assert ds.name == "embedded" and (ds.mean, ds.std) == channel_mean_std(ds.train_x)
    assert 0.25 < ds.mean[0] < 0.32 and 0.32 < ds.std[0] < 0.38  # near Fashion-MNIST's
    with pytest.raises(ValueError, match="takes no --data-dir"):
        load_dataset("embedded", "/tmp")


def test_notice_and_checksums():
    notice = (EMBEDDED_DIR / "NOTICE").read_text()
    for needed in ("Zalando SE", "2017", "MIT", "Expat",
                   "https://github.com/zalandoresearch/fashion-mnist"):
        assert needed in notice
    readme = (EMBEDDED_DIR / "README.md").read_text()
    listed = dict((name, digest) for digest, name in
                  re.findall(r"^\s+([0-9a-f]{64})  (\S+)$", readme, flags=re.M))
    assert sorted(listed) == sorted(DATA_FILES)
    for name, digest in listed.items():
        assert hashlib.sha256((EMBEDDED_DIR / name).read_bytes()).hexdigest() == digest, name
    assert "python tools/make_embedded.py" in readme


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_subset_is_first_of_each_class_of_the_real_files():
    from refsnn.data.idx import load_idx_dataset
    full = load_idx_dataset(DEBIAN_DIR)
    sub = load_embedded()
    for (x_full, y_full, x_sub, y_sub, k) in ((full[0], full[1], sub[0], sub[1], 800),
                                              (full[2], full[3], sub[2], sub[3], 200)):
        keep = np.sort(np.concatenate([np.flatnonzero(y_full == c)[:k] for c in range(10)]))
        np.testing.assert_array_equal(x_sub, x_full[keep])
        np.testing.assert_array_equal(y_sub, y_full[keep])


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_tool_regenerates_byte_identical_files(tmp_path):
    assert load_tool().main(["--source", str(DEBIAN_DIR), "--out", str(tmp_path)]) == 0
    for name in DATA_FILES + ("NOTICE", "README.md"):
        assert (tmp_path / name).read_bytes() == (EMBEDDED_DIR / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in EMBEDDED_DIR.iterdir())
