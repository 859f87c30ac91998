"""Regenerate refsnn/data/embedded/: a class-balanced subset of Fashion-MNIST, byte-identical.

    python tools/make_embedded.py            # reads /usr/share/datasets/fashion-mnist
    python tools/make_embedded.py --source DIR --out DIR

Selection (deterministic, no RNG): the first TRAIN_PER_CLASS images of each class of the
Fashion-MNIST training file and the first TEST_PER_CLASS of each class of the t10k file, kept in
their original file order. Written as gzipped IDX files with gzip mtime 0, no file name in the
gzip header and compression level 9, so a rerun writes the same bytes (given the same zlib:
the version is recorded in README.md). README.md lists the SHA-256 of every data file; NOTICE
carries the licence.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # so that `python tools/make_embedded.py` finds refsnn

from refsnn.data.idx import (  # noqa: E402
    IDX_FILES, IMAGES_MAGIC, LABELS_MAGIC, find_idx_file, read_idx_images, read_idx_labels,
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
OUT_DIR = REPO / "refsnn" / "data" / "embedded"
TRAIN_PER_CLASS = 800
TEST_PER_CLASS = 200
NUM_CLASSES = 10

NOTICE = """\
The files train-*-ubyte.gz and t10k-*-ubyte.gz in this folder are a subset of Fashion-MNIST
(the first {train} training and the first {test} test images of each of the 10 classes, in their
original order), made by tools/make_embedded.py from Debian's dataset-fashion-mnist package.

Fashion-MNIST
Source: https://github.com/zalandoresearch/fashion-mnist
Copyright (c) 2017 Zalando SE, https://tech.zalando.com
License: MIT (Expat)

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

README = """\
# Embedded Fashion-MNIST subset

A class-balanced subset of Fashion-MNIST shipped inside refsnn, so that training runs with no
download (`load_dataset("embedded")`). Licence and source: see NOTICE.

- train: the first {train} images of each class of `train-images-idx3-ubyte` ({n_train} images)
- test: the first {test} images of each class of `t10k-images-idx3-ubyte` ({n_test} images)
- order: the original file order; images 28x28 uint8, labels 0..9
- format: IDX, gzipped with mtime 0, no file name, level 9 (zlib {zlib})

Regenerate (byte-identical) from Debian's `dataset-fashion-mnist` package:

    python tools/make_embedded.py --source /usr/share/datasets/fashion-mnist

SHA-256:

{sums}
"""


def balanced_subset(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` items of each class 0..9, in increasing order."""
    chosen = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)[:per_class]
        if idx.size != per_class:
            raise ValueError(f"class {c} has only {idx.size} items, need {per_class}")
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: big-endian magic, big-endian uint32 dims, raw payload."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gzip(path: Path, payload: bytes) -> None:
    """gzip with mtime=0 and no embedded file name, so the bytes depend on the payload only."""
    with open(path, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0
    ) as gz:
        gz.write(payload)


def make_embedded(source: Path, out: Path) -> dict[str, str]:
    """Write the subset, NOTICE and README.md into ``out``; return {file name: sha256}."""
    out.mkdir(parents=True, exist_ok=True)
    sums, counts = {}, {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        images = read_idx_images(find_idx_file(source, split, "images"))
        labels = read_idx_labels(find_idx_file(source, split, "labels"))
        keep = balanced_subset(labels, per_class)
        counts[split] = keep.size
        for kind, magic, array in (("images", IMAGES_MAGIC, images[keep]),
                                   ("labels", LABELS_MAGIC, labels[keep])):
            name = IDX_FILES[(split, kind)] + ".gz"
            write_gzip(out / name, idx_bytes(magic, array))
            sums[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    (out / "NOTICE").write_text(NOTICE.format(train=TRAIN_PER_CLASS, test=TEST_PER_CLASS))
    (out / "README.md").write_text(README.format(
        train=TRAIN_PER_CLASS, test=TEST_PER_CLASS, n_train=counts["train"],
        n_test=counts["test"], zlib=zlib.ZLIB_RUNTIME_VERSION,
        sums="\n".join(f"    {digest}  {name}" for name, digest in sorted(sums.items())),
    ))
    return sums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--source", type=Path, default=DEBIAN_DIR,
                        help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to write")
    args = parser.parse_args(argv)
    sums = make_embedded(args.source, args.out)
    total = sum((args.out / name).stat().st_size for name in sums)
    for name, digest in sorted(sums.items()):
        print(f"{digest}  {args.out / name}")
    print(f"data files: {total} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
