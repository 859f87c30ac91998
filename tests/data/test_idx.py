"""IDX reader and load_idx_dataset on tiny files written here, plus the real Fashion-MNIST."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from refsnn.data.datasets import load_dataset
from refsnn.data.idx import (
    FASHION_MNIST_CLASSES, IMAGES_MAGIC, LABELS_MAGIC, MNIST_CLASSES, load_idx_dataset,
    read_idx_images, read_idx_labels,
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(magic, array):
    """IDX encoding written independently of refsnn: big-endian header, then raw bytes."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path, payload, *, gz):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_split(rng, n, h=5, w=3, num_classes=10):
    # H != W so that a transposed reshape would show
    return (rng.integers(0, 256, (n, h, w), dtype=np.uint8),
            rng.integers(0, num_classes, n).astype(np.uint8))


def write_tree(root, rng, *, gz_train=True, gz_test=False, n_train=7, n_test=4):
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix, n, gz in (("train", "train", n_train, gz_train),
                                 ("test", "t10k", n_test, gz_test)):
        x, y = make_split(rng, n)
        ext = ".gz" if gz else ""
        write(root / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(IMAGES_MAGIC, x), gz=gz)
        write(root / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes(LABELS_MAGIC, y), gz=gz)
        data[split] = (x, y)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_read_images_and_labels_roundtrip(tmp_path, gz):
    x, y = make_split(np.random.default_rng(0), 6)
    xi = read_idx_images(write(tmp_path / "im", idx_bytes(IMAGES_MAGIC, x), gz=gz))
    yi = read_idx_labels(write(tmp_path / "lb", idx_bytes(LABELS_MAGIC, y), gz=gz))
    assert xi.dtype == np.uint8 and xi.shape == (6, 5, 3)
    np.testing.assert_array_equal(xi, x)
    np.testing.assert_array_equal(yi, y)


def test_gzip_detected_by_magic_not_extension(tmp_path):
    x, _ = make_split(np.random.default_rng(1), 2)
    payload = idx_bytes(IMAGES_MAGIC, x)
    gz_named_plain = write(tmp_path / "a-images-idx3-ubyte", payload, gz=True)
    plain_named_gz = write(tmp_path / "b-images-idx3-ubyte.gz", payload, gz=False)
    np.testing.assert_array_equal(read_idx_images(gz_named_plain), x)
    np.testing.assert_array_equal(read_idx_images(plain_named_gz), x)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload_names_file_and_counts(tmp_path, gz):
    x, _ = make_split(np.random.default_rng(2), 4)  # 4*5*3 = 60 payload bytes
    path = write(tmp_path / "short-images", idx_bytes(IMAGES_MAGIC, x)[:-7], gz=gz)
    with pytest.raises(ValueError, match=r"short-images.*truncated.*need 60 bytes.*got 53"):
        read_idx_images(path)


def test_trailing_bytes_rejected(tmp_path):
    x, _ = make_split(np.random.default_rng(3), 2)
    path = write(tmp_path / "long", idx_bytes(IMAGES_MAGIC, x) + b"\0", gz=False)
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx_images(path)


def test_truncated_gzip_stream(tmp_path):
    x, _ = make_split(np.random.default_rng(4), 50)
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES_MAGIC, x))[:-20])
    with pytest.raises(ValueError, match=r"cut\.gz.*gzip"):
        read_idx_images(path)


def test_truncated_header(tmp_path):
    path = write(tmp_path / "hdr", IMAGES_MAGIC.to_bytes(4, "big") + b"\0\0\0\1", gz=False)
    with pytest.raises(ValueError, match=r"hdr.*truncated IDX header: expected 16 bytes, got 8"):
        read_idx_images(path)


def test_wrong_magic(tmp_path):
    _, y = make_split(np.random.default_rng(5), 3)
    labels = write(tmp_path / "labels", idx_bytes(LABELS_MAGIC, y), gz=True)
    with pytest.raises(ValueError, match=r"labels: IDX magic is 0x00000801, expected 0x00000803"):
        read_idx_images(labels)
    junk = write(tmp_path / "junk", b"\x89PNG\r\n\x1a\n" + bytes(40), gz=False)
    with pytest.raises(ValueError, match="junk: IDX magic"):
        read_idx_labels(junk)


def test_load_idx_dataset_mixed_gz_and_plain(tmp_path):
    data = write_tree(tmp_path, np.random.default_rng(6))
    train_x, train_y, test_x, test_y, classes = load_idx_dataset(tmp_path)
    assert train_x.shape == (7, 1, 5, 3) and test_x.shape == (4, 1, 5, 3)
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    np.testing.assert_array_equal(train_x[:, 0], data["train"][0])
    np.testing.assert_array_equal(train_y, data["train"][1])
    np.testing.assert_array_equal(test_x[:, 0], data["test"][0])
    np.testing.assert_array_equal(test_y, data["test"][1])
    assert classes == FASHION_MNIST_CLASSES


def test_plain_file_preferred_over_gz(tmp_path):
    write_tree(tmp_path, np.random.default_rng(7), gz_train=True)
    other = write_tree(tmp_path / "other", np.random.default_rng(8), gz_train=False)
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        (tmp_path / "other" / f"train-{kind}").rename(tmp_path / f"train-{kind}")
    train_x, *_ = load_idx_dataset(tmp_path)
    np.testing.assert_array_equal(train_x[:, 0], other["train"][0])


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_idx_dataset(tmp_path / "nope")
    write_tree(tmp_path, np.random.default_rng(9))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match=r"no test labels IDX file.*t10k-labels-idx1-ubyte\.gz"):
        load_idx_dataset(tmp_path)


def test_label_out_of_range(tmp_path):
    write_tree(tmp_path, np.random.default_rng(10))
    y = np.array([0, 1, 10, 2], dtype=np.uint8)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, y), gz=False)
    with pytest.raises(ValueError, match=r"label 10 at index 2 is out of range 0\.\.9"):
        load_idx_dataset(tmp_path)
    # the same file is fine for a loader told there are 11 classes
    load_idx_dataset(tmp_path, classes=MNIST_CLASSES + ("extra",))


def test_image_label_count_mismatch(tmp_path):
    write_tree(tmp_path, np.random.default_rng(11))
    y = np.zeros(5, dtype=np.uint8)  # 4 test images
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, y), gz=False)
    with pytest.raises(ValueError, match="has 4 images but .* has 5 labels"):
        load_idx_dataset(tmp_path)


def test_load_dataset_fashion_mnist_with_data_dir(tmp_path):
    data = write_tree(tmp_path, np.random.default_rng(12))
    ds = load_dataset("fashion-mnist", tmp_path)
    x = data["train"][0].astype(np.float64) / 255
    assert ds.name == "fashion-mnist" and ds.classes == FASHION_MNIST_CLASSES
    np.testing.assert_allclose(ds.mean, [x.mean()], rtol=1e-12)
    np.testing.assert_allclose(ds.std, [x.std()], rtol=1e-12)


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.train_y).tolist() == [6000] * 10
    assert np.bincount(ds.test_y).tolist() == [1000] * 10
    # the widely quoted Fashion-MNIST statistics
    assert abs(ds.mean[0] - 0.2860) < 1e-4 and abs(ds.std[0] - 0.3530) < 1e-4
