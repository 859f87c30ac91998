"""ImageFolder and Tiny-ImageNet-200 folder layouts, decoded with Pillow into uint8 arrays.

    ImageFolder:    root/train/<class>/*.{jpg,jpeg,png}, root/test/<class>/*.{jpg,jpeg,png}
    Tiny-ImageNet:  root/wnids.txt, root/train/<wnid>/images/*.JPEG, root/val/images/*.JPEG,
                    root/val/val_annotations.txt (tab-separated: file, wnid, x0, y0, x1, y1)

Conventions (torchvision ImageFolder agrees on the first three):
  - classes are the class folder names in sorted order; label k is classes[k];
  - files within a class are taken in sorted file-name order;
  - extensions match case-insensitively; other files and names starting with '.' are ignored;
  - every image is converted to RGB (grayscale, palette and RGBA alike: alpha is dropped),
    so x is always uint8 (N, 3, H, W); all images of a split, and both splits, share one size;
  - Tiny-ImageNet: the 200 wnids of wnids.txt in *sorted* order (what ImageFolder gives on
    train/), the val split is the test split, in the order of val_annotations.txt.

Decoding is a plain loop (Image.open, convert, np.asarray into a preallocated array); pass
``cache_dir`` to keep the decoded arrays as an .npz there (nothing is ever written into the data
folder). The cache key hashes the resolved root and every image's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (extensions case-insensitive)."""
    with os.scandir(folder) as entries:
        names = [
            e.name for e in entries
            if e.is_file() and not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        ]
    return [folder / name for name in sorted(names)]


def _subfolders(folder: Path) -> list[str]:
    """Names of the sub-folders of ``folder``, sorted (hidden ones ignored)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise ValueError(f"{what}: folder {str(path)!r} does not exist")


def _decode_rgb(path: Path) -> np.ndarray:
    """Decode one image file into uint8 (H, W, 3) RGB; ValueError naming the file if corrupt."""
    try:
        with Image.open(path) as im:
            # convert() and load() decode; a truncated or corrupt file raises here.
            rgb = im.convert("RGB") if im.mode != "RGB" else im
            rgb.load()
            return np.asarray(rgb)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot decode image: {exc}") from exc


def decode_images(paths: list[Path]) -> np.ndarray:
    """Decode image files into one uint8 array (N, 3, H, W), RGB, in the order given.

    Every image must have the size of the first one; otherwise ValueError naming the file and
    both sizes. An unreadable or corrupt file raises ValueError naming the file.
    """
    if not paths:
        raise ValueError("decode_images: no image files")
    first = _decode_rgb(paths[0])
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)  # (N, H, W, 3)
    out[0] = first
    for i in range(1, len(paths)):
        a = _decode_rgb(paths[i])
        if a.shape != first.shape:
            raise ValueError(
                f"{paths[i]}: image is {a.shape[1]}x{a.shape[0]} (WxH) but {paths[0]} is "
                f"{first.shape[1]}x{first.shape[0]}; all images of a split must have one size"
            )
        out[i] = a
    # (N, H, W, 3) -> (N, 3, H, W)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _decode_split(files: list[Path], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return decode_images(files), np.asarray(labels, dtype=np.int64)


def _check_same_size(root: Path, train_x: np.ndarray, test_x: np.ndarray) -> None:
    if train_x.shape[2:] != test_x.shape[2:]:
        raise ValueError(
            f"{root}: train images are {train_x.shape[3]}x{train_x.shape[2]} (WxH) but test "
            f"images are {test_x.shape[3]}x{test_x.shape[2]}"
        )


def _cache_path(cache_dir, kind: str, root: Path, files: list[Path]) -> Path:
    """``cache_dir/<kind>-<hash>.npz``; the hash covers root and each file's name, size, mtime."""
    h = hashlib.sha256(f"{kind}\n{root.resolve()}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"{kind}-{h.hexdigest()[:20]}.npz"


def _load_cached(path: Path):
    """The cached ``(train_x, train_y, test_x, test_y, classes)`` or None if absent/unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = [z[k] for k in ("train_x", "train_y", "test_x", "test_y")]
            classes = tuple(str(c) for c in z["classes"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # unreadable cache: decode again and overwrite it
    return (*arrays, classes)


def _save_cached(path: Path, result: tuple) -> None:
    """Write the cache atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    train_x, train_y, test_x, test_y, classes = result
    with open(tmp, "wb") as f:
        np.savez(f, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                 classes=np.array(classes, dtype=str))
    os.replace(tmp, path)


def _load(kind: str, root: Path, splits: list, classes: tuple, cache_dir) -> tuple:
    """Decode (or fetch from the cache) ``splits = [(files, labels), (files, labels)]``."""
    cache = None
    if cache_dir is not None:
        cache = _cache_path(cache_dir, kind, root, [f for files, _ in splits for f in files])
        cached = _load_cached(cache)
        if cached is not None:
            return cached
    train_x, train_y = _decode_split(*splits[0])
    test_x, test_y = _decode_split(*splits[1])
    _check_same_size(root, train_x, test_x)
    result = (train_x, train_y, test_x, test_y, classes)
    if cache is not None:
        _save_cached(cache, result)
    return result


def load_image_folder(root, *, cache_dir=None) -> tuple:
    """Load ``root/{train,test}/<class>/*.{jpg,jpeg,png}``.

    Returns ``(train_x, train_y, test_x, test_y, classes)``: x uint8 (N, 3, H, W) RGB; y int64
    (N,), label k = classes[k]; classes the sorted class folder names, which must be the same in
    train and test. Raises ValueError for a missing folder, differing class lists, an empty
    class folder, a corrupt image or images of differing sizes.
    """
    root = Path(root)
    _require_dir(root, "load_image_folder")
    class_lists = {}
    for split in ("train", "test"):
        _require_dir(root / split, "load_image_folder")
        class_lists[split] = _subfolders(root / split)
    if class_lists["train"] != class_lists["test"]:
        only_train = sorted(set(class_lists["train"]) - set(class_lists["test"]))
        only_test = sorted(set(class_lists["test"]) - set(class_lists["train"]))
        raise ValueError(
            f"load_image_folder: {root}: train and test must have the same class folders; "
            f"only in train: {only_train}, only in test: {only_test}"
        )
    classes = tuple(class_lists["train"])
    if not classes:
        raise ValueError(f"load_image_folder: {root / 'train'} has no class folders")
    splits = []
    for split in ("train", "test"):
        files, labels = [], []
        for k, name in enumerate(classes):
            found = _image_files(root / split / name)
            if not found:
                raise ValueError(
                    f"load_image_folder: {root / split / name} holds no "
                    f"{'/'.join(IMAGE_EXTENSIONS)} files"
                )
            files += found
            labels += [k] * len(found)
        splits.append((files, labels))
    return _load("imagefolder", root, splits, classes, cache_dir)


def _read_wnids(root: Path) -> tuple[str, ...]:
    path = root / "wnids.txt"
    if not path.is_file():
        raise ValueError(f"load_tiny_imagenet: {path} does not exist")
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"load_tiny_imagenet: {path} lists a wnid twice")
    return tuple(sorted(wnids))


def _read_val_annotations(root: Path, index: dict) -> tuple[list[Path], list[int]]:
    """val/val_annotations.txt -> (files, labels) in file order; each line names one image."""
    path = root / "val" / "val_annotations.txt"
    if not path.is_file():
        raise ValueError(f"load_tiny_imagenet: {path} does not exist")
    images = root / "val" / "images"
    _require_dir(images, "load_tiny_imagenet")
    files, labels = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise ValueError(
                f"load_tiny_imagenet: {path}:{lineno}: expected 'file<TAB>wnid<TAB>...' with a "
                f"wnid from wnids.txt, got {line!r}"
            )
        files.append(images / fields[0])
        labels.append(index[fields[1]])
    on_disk = {f.name for f in _image_files(images)}
    annotated = {f.name for f in files}
    if len(annotated) != len(files):
        raise ValueError(f"load_tiny_imagenet: {path} annotates a file twice")
    if annotated != on_disk:
        missing = sorted(annotated - on_disk)[:3]
        unlabelled = sorted(on_disk - annotated)[:3]
        raise ValueError(
            f"load_tiny_imagenet: {path} and {images} disagree: annotated but missing "
            f"{missing}, present but not annotated {unlabelled}"
        )
    return files, labels


def load_tiny_imagenet(root, *, cache_dir=None) -> tuple:
    """Load Tiny-ImageNet-200 from ``root`` (the folder holding wnids.txt, train/, val/).

    Returns ``(train_x, train_y, test_x, test_y, classes)``: x uint8 (N, 3, 64, 64) RGB
    (grayscale JPEGs converted), N = 100000 / 10000 for the real data; the test split is val/;
    y int64 (N,); classes the wnids of wnids.txt in sorted order. train/ must hold exactly the
    wnids of wnids.txt. Raises ValueError for a missing or inconsistent file or folder.
    """
    root = Path(root)
    _require_dir(root, "load_tiny_imagenet")
    classes = _read_wnids(root)
    _require_dir(root / "train", "load_tiny_imagenet")
    train_dirs = _subfolders(root / "train")
    if list(classes) != train_dirs:
        raise ValueError(
            f"load_tiny_imagenet: {root / 'train'} folders differ from wnids.txt: only in "
            f"train/ {sorted(set(train_dirs) - set(classes))[:3]}, only in wnids.txt "
            f"{sorted(set(classes) - set(train_dirs))[:3]}"
        )
    index = {wnid: k for k, wnid in enumerate(classes)}
    files, labels = [], []
    for k, wnid in enumerate(classes):
        folder = root / "train" / wnid / "images"
        _require_dir(folder, "load_tiny_imagenet")
        found = _image_files(folder)
        if not found:
            raise ValueError(f"load_tiny_imagenet: {folder} holds no images")
        files += found
        labels += [k] * len(found)
    splits = [(files, labels), _read_val_annotations(root, index)]
    return _load("tiny-imagenet", root, splits, classes, cache_dir)
