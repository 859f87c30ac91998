"""ImageFolder and Tiny-ImageNet loaders on tiny trees of PNG/JPEG files written here."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refsnn.data import folders
from refsnn.data.datasets import load_dataset
from refsnn.data.folders import load_image_folder, load_tiny_imagenet
from refsnn.data.transforms import channel_mean_std

CIFAR_JPEG = Path("/work/scratch/cifar10-jpeg")
H, W = 6, 5  # H != W so that a transposed layout would show


def save(path, array, fmt):
    """Write a uint8 (H, W, 3) or (H, W) array as an image; return what a decoder gives back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def rgb(rng, h=H, w=W):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image_folder(root, rng):
    """train: cat (2 PNG, one .PNG) and dog (1 PNG + 1 grayscale JPEG); test: one each.

    Returns {split: [(expected HWC RGB, label), ...]} in the loader's order.
    """
    expected = {"train": [], "test": []}
    spec = {"train": {"cat": ["b.png", "a.PNG"], "dog": ["x.png", "y.jpg"]},
            "test": {"cat": ["z.png"], "dog": ["k.jpeg"]}}
    for split, by_class in spec.items():
        for label, name in enumerate(sorted(by_class)):
            for fname in sorted(by_class[name]):
                path = root / split / name / fname
                if fname.lower().endswith((".jpg", ".jpeg")):
                    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
                    img = save(path, grey, "JPEG")  # mode L
                else:
                    img = save(path, rgb(rng), "PNG")
                expected[split].append((img, label))
    # files that must be ignored
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / "train" / "README").write_text("stray file next to the class folders")
    return expected


def check(x, y, expected):
    want_x = np.stack([e[0] for e in expected]).transpose(0, 3, 1, 2)
    assert x.dtype == np.uint8 and x.shape == want_x.shape
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, [e[1] for e in expected])
    assert y.dtype == np.int64


def test_image_folder_pixels_labels_order(tmp_path):
    expected = write_image_folder(tmp_path, np.random.default_rng(0))
    train_x, train_y, test_x, test_y, classes = load_image_folder(tmp_path)
    assert classes == ("cat", "dog")
    check(train_x, train_y, expected["train"])
    check(test_x, test_y, expected["test"])


def test_png_values_exact_and_grayscale_jpeg_to_rgb(tmp_path):
    rng = np.random.default_rng(1)
    a = rgb(rng)
    Image.fromarray(a).save(tmp_path / "a.png")
    grey = np.full((H, W), 77, dtype=np.uint8)  # flat: JPEG reproduces it exactly
    Image.fromarray(grey).save(tmp_path / "g.jpg", quality=95)
    with Image.open(tmp_path / "g.jpg") as im:
        assert im.mode == "L"
    x = folders.decode_images([tmp_path / "a.png", tmp_path / "g.jpg"])
    np.testing.assert_array_equal(x[0], a.transpose(2, 0, 1))
    np.testing.assert_array_equal(x[1], np.full((3, H, W), 77))


def test_mismatched_class_lists(tmp_path):
    write_image_folder(tmp_path, np.random.default_rng(2))
    save(tmp_path / "test" / "emu" / "e.png", rgb(np.random.default_rng(3)), "PNG")
    with pytest.raises(ValueError, match=r"only in train: \[\], only in test: \['emu'\]"):
        load_image_folder(tmp_path)


def test_images_of_different_sizes(tmp_path):
    write_image_folder(tmp_path, np.random.default_rng(4))
    save(tmp_path / "train" / "dog" / "big.png", rgb(np.random.default_rng(5), 7, 5), "PNG")
    with pytest.raises(ValueError, match=r"big\.png: image is 5x7 \(WxH\) but .* is 5x6"):
        load_image_folder(tmp_path)


def test_train_and_test_sizes_differ(tmp_path):
    rng = np.random.default_rng(6)
    save(tmp_path / "train" / "a" / "1.png", rgb(rng), "PNG")
    save(tmp_path / "test" / "a" / "1.png", rgb(rng, 8, 8), "PNG")
    with pytest.raises(ValueError, match=r"train images are 5x6 \(WxH\) but test images are 8x8"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg(tmp_path, damage):
    write_image_folder(tmp_path, np.random.default_rng(7))
    path = tmp_path / "train" / "dog" / "bad.jpg"
    save(path, rgb(np.random.default_rng(8), 64, 64), "JPEG")
    data = path.read_bytes()
    bad = b"\xff\xd8 not really a jpeg" if damage == "garbage" else data[:len(data) // 2]
    path.write_bytes(bad)
    with pytest.raises(ValueError, match=r"bad\.jpg: cannot decode image"):
        load_image_folder(tmp_path)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="test.*does not exist"):
        load_image_folder(tmp_path)
    (tmp_path / "test" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="--data-dir"):
        load_dataset("imagefolder")


def test_cache_dir_round_trip_without_touching_data(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    write_image_folder(root, np.random.default_rng(9))
    before = sorted(str(p) for p in root.rglob("*"))
    first = load_image_folder(root, cache_dir=cache)
    assert len(list(cache.glob("imagefolder-*.npz"))) == 1
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing written into the data

    def no_decoding(path):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(folders, "_decode_rgb", no_decoding)
    second = load_image_folder(root, cache_dir=cache)
    for a, b in zip(first[:4], second[:4]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert first[4] == second[4]
    # A changed file changes the key: decoding happens again (and here fails on purpose).
    os.utime(root / "test" / "cat" / "z.png", ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_image_folder(root, cache_dir=cache)


def test_load_dataset_imagefolder_statistics(tmp_path):
    write_image_folder(tmp_path, np.random.default_rng(10))
    ds = load_dataset("imagefolder", tmp_path)
    x = ds.train_x.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(ds.mean, x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(ds.std, x.std(axis=1), rtol=1e-12)
    assert (ds.mean, ds.std) == channel_mean_std(ds.train_x)


WNIDS = ["n09", "n01", "n05"]  # deliberately not sorted


def write_tiny_imagenet(root, rng):
    """Return (train, val) as lists of (expected HWC RGB, label), labels by sorted wnid."""
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    order = sorted(WNIDS)
    train = []
    for wnid in order:
        for k in range(2):
            img = save(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", rgb(rng), "JPEG")
            train.append((img, order.index(wnid)))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
    grey_path = root / "train" / "n05" / "images" / "n05_2.JPEG"  # a grayscale JPEG
    grey = save(grey_path, rng.integers(0, 256, (H, W), dtype=np.uint8), "JPEG")
    train.insert(order.index("n05") * 2 + 2, (grey, order.index("n05")))
    val, lines = [], []
    for k, wnid in enumerate(["n05", "n09", "n01", "n05"]):
        name = f"val_{k}.JPEG"
        val.append((save(root / "val" / "images" / name, rgb(rng), "JPEG"), order.index(wnid)))
        lines.append(f"{name}\t{wnid}\t0\t1\t4\t5")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return train, val


def test_tiny_imagenet_layout(tmp_path):
    train, val = write_tiny_imagenet(tmp_path / "tiny", np.random.default_rng(11))
    train_x, train_y, test_x, test_y, classes = load_tiny_imagenet(tmp_path / "tiny")
    assert classes == ("n01", "n05", "n09")
    check(train_x, train_y, train)
    check(test_x, test_y, val)
    grey = train_x[np.flatnonzero(train_y == 1)[-1]]  # n05_2, the grayscale one
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    ds = load_dataset("tiny-imagenet", tmp_path / "tiny")
    assert ds.name == "tiny-imagenet" and len(ds.mean) == 3


def test_tiny_imagenet_inconsistencies(tmp_path):
    root = tmp_path / "tiny"
    write_tiny_imagenet(root, np.random.default_rng(12))
    ann = root / "val" / "val_annotations.txt"
    good = ann.read_text()
    ann.write_text(good.replace("n09", "n77", 1))
    with pytest.raises(ValueError, match=r"val_annotations\.txt:2: .*wnid from wnids\.txt"):
        load_tiny_imagenet(root)
    ann.write_text("\n".join(good.splitlines()[:-1]))  # val_3.JPEG no longer annotated
    with pytest.raises(ValueError, match=r"present but not annotated \['val_3\.JPEG'\]"):
        load_tiny_imagenet(root)
    ann.write_text(good)
    (root / "wnids.txt").write_text("n01\nn05\n")
    with pytest.raises(ValueError, match=r"differ from wnids\.txt: only in train/ \['n09'\]"):
        load_tiny_imagenet(root)
    with pytest.raises(ValueError, match="does not exist"):
        load_tiny_imagenet(tmp_path / "nope")


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason="no CIFAR-10 JPEG tree")
def test_real_cifar10_jpeg_tree():
    train_x, train_y, test_x, test_y, classes = load_image_folder(CIFAR_JPEG)
    assert train_x.shape == (50000, 3, 32, 32) and test_x.shape == (10000, 3, 32, 32)
    assert np.bincount(train_y).tolist() == [5000] * 10 and len(classes) == 10
