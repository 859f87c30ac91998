"""CIFAR-10/100 loaders and the safe unpickler, on tiny pickles written here.

The real batches were written by Python 2's cPickle at protocol 2: byte strings as BINSTRING
opcodes and b'data' as a numpy uint8 array (globals numpy.core.multiarray._reconstruct,
numpy.ndarray, numpy.dtype). ``py2_dumps`` reproduces that byte stream opcode by opcode
(Python 3's pickle.dumps cannot: at protocol 2 it writes bytes via the global _codecs.encode).
"""

import os
import pickle
import struct

import numpy as np
import pytest

from refsnn.data.cifar import load_cifar10, load_cifar100, safe_unpickle
from refsnn.data.datasets import load_dataset


def _py2(obj) -> bytes:
    if isinstance(obj, bytes):  # a Python 2 str
        if len(obj) < 256:
            return b"U" + bytes([len(obj)]) + obj                # SHORT_BINSTRING
        return b"T" + struct.pack("<i", len(obj)) + obj          # BINSTRING
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"                       # NEWTRUE / NEWFALSE
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b"K" + bytes([obj])                           # BININT1
        return b"J" + struct.pack("<i", obj)                     # BININT
    if obj is None:
        return b"N"
    if isinstance(obj, list):
        return b"](" + b"".join(map(_py2, obj)) + b"e"           # EMPTY_LIST MARK ... APPENDS
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(_py2, obj)) + b"t"            # MARK ... TUPLE
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray):  # what numpy 1.x under Python 2 wrote for a uint8 array
        dtype = (b"cnumpy\ndtype\n" + _py2((b"u1", 0, 1))            # dtype('u1', 0, 1)
                 + b"R" + _py2((3, b"|", None, None, None, -1, -1, 0)) + b"b")
        return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
                + _py2((0,)) + b"U\x01b" + b"\x87R"              # (ndarray, (0,), 'b') REDUCE
                + b"(" + _py2(1) + _py2(obj.shape) + dtype + _py2(False)
                + _py2(obj.tobytes()) + b"tb")                   # state tuple, BUILD
    raise TypeError(type(obj))


def py2_dumps(obj) -> bytes:
    return b"\x80\x02" + _py2(obj) + b"."


def batch(rng, n, label_key=b"labels", num_classes=10):
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, num_classes, n)]
    return {b"batch_label": b"training batch 1 of 5", label_key: y, b"data": x,
            b"filenames": [b"img_%d.png" % k for k in range(n)]}


def write_cifar10(root, rng, sizes=(3, 2, 1, 2, 2), n_test=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{k}" for k in range(1, 6)]
    batches = {}
    for name, n in zip(names + ["test_batch"], list(sizes) + [n_test]):
        batches[name] = batch(rng, n)
        (folder / name).write_bytes(py2_dumps(batches[name]))
    meta = {b"num_cases_per_batch": 10000, b"num_vis": 3072,
            b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                             b"frog", b"horse", b"ship", b"truck"]}
    (folder / "batches.meta").write_bytes(py2_dumps(meta))
    return folder, batches


def write_cifar100(root, rng):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in (("train", 5), ("test", 3)):
        b = batch(rng, n, b"fine_labels", 100)
        b[b"coarse_labels"] = [0] * n
        batches[name] = b
        (folder / name).write_bytes(py2_dumps(b))
    meta = {b"fine_label_names": [b"class_%d" % k for k in range(100)],
            b"coarse_label_names": [b"super_%d" % k for k in range(20)]}
    (folder / "meta").write_bytes(py2_dumps(meta))
    return folder, batches


def test_py2_emitter_is_a_valid_pickle():
    # The stream our emitter writes is what the stdlib unpickler reads back (with numpy).
    b = batch(np.random.default_rng(0), 2)
    back = pickle.loads(py2_dumps(b), encoding="bytes")
    np.testing.assert_array_equal(back[b"data"], b[b"data"])
    assert back[b"labels"] == b[b"labels"] and back[b"filenames"] == b[b"filenames"]


@pytest.mark.parametrize("give_inner_folder", [False, True])
def test_cifar10_pixels_and_labels(tmp_path, give_inner_folder):
    folder, batches = write_cifar10(tmp_path, np.random.default_rng(1))
    train_x, train_y, test_x, test_y, classes = load_cifar10(
        folder if give_inner_folder else tmp_path)
    order = [f"data_batch_{k}" for k in range(1, 6)]
    want_x = np.concatenate([batches[n][b"data"] for n in order]).reshape(-1, 3, 32, 32)
    want_y = np.concatenate([batches[n][b"labels"] for n in order])
    assert train_x.shape == (10, 3, 32, 32) and train_x.dtype == np.uint8
    np.testing.assert_array_equal(train_x, want_x)
    np.testing.assert_array_equal(train_y, want_y)
    assert train_y.dtype == np.int64
    np.testing.assert_array_equal(test_x, batches["test_batch"][b"data"].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(test_y, batches["test_batch"][b"labels"])
    assert classes[0] == "airplane" and classes[9] == "truck"
    # channel order: the first 1024 values of a row are the red plane, row-major
    assert train_x[0, 0, 1, 0] == want_x[0, 0, 1, 0] == batches["data_batch_1"][b"data"][0, 32]


def test_cifar100_fine_labels(tmp_path):
    folder, batches = write_cifar100(tmp_path, np.random.default_rng(2))
    train_x, train_y, test_x, test_y, classes = load_cifar100(tmp_path)
    np.testing.assert_array_equal(train_x.reshape(5, -1), batches["train"][b"data"])
    np.testing.assert_array_equal(train_y, batches["train"][b"fine_labels"])
    np.testing.assert_array_equal(test_y, batches["test"][b"fine_labels"])
    assert len(classes) == 100 and classes[7] == "class_7"


def test_load_dataset_uses_spec_statistics(tmp_path):
    write_cifar10(tmp_path / "c10", np.random.default_rng(3))
    write_cifar100(tmp_path / "c100", np.random.default_rng(4))
    d10 = load_dataset("cifar10", tmp_path / "c10")
    d100 = load_dataset("cifar100", tmp_path / "c100")
    assert d10.mean == (0.4914, 0.4822, 0.4465) and d10.std == (0.2023, 0.1994, 0.2010)
    assert d100.mean == (0.5071, 0.4867, 0.4408) and d100.std == (0.2675, 0.2565, 0.2761)
    assert d10.name == "cifar10" and d100.name == "cifar100"


def test_load_dataset_needs_data_dir():
    with pytest.raises(ValueError, match="--data-dir"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match=r"name must be one of .*'mnist'"):
        load_dataset("mnist")


def test_python3_protocol2_pickles_also_load(tmp_path):
    # Python 3 writes bytes at protocol 2 through _codecs.encode; its inert stand-in accepts it.
    b = batch(np.random.default_rng(5), 3)
    path = tmp_path / "p3"
    path.write_bytes(pickle.dumps(b, protocol=2))
    back = safe_unpickle(path)
    np.testing.assert_array_equal(back[b"data"], b[b"data"])
    assert back[b"labels"] == b[b"labels"]


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_pickle_naming_a_global_is_refused_and_runs_nothing(tmp_path, protocol):
    marker = tmp_path / "pwned"
    folder, _ = write_cifar10(tmp_path, np.random.default_rng(6))
    evil = {b"data": _RunsCommand(f"touch {marker}"), b"labels": [0]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=protocol))
    with pytest.raises(ValueError, match=r"data_batch_3.*global (posix|os)\.system refused"):
        load_cifar10(tmp_path)
    assert not marker.exists()
    # Control: the payload is live, the stdlib unpickler would have run it.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_RunsCommand(f"touch {control}"), protocol=protocol))
    assert control.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("numpy", "load"),
                                          ("numpy.core.multiarray", "scalar"),
                                          ("copyreg", "_reconstructor")])
def test_other_globals_refused(tmp_path, module, name):
    path = tmp_path / "g"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"U\x011\x85R.")
    with pytest.raises(ValueError, match=f"g: .*global {module}.{name} refused"):
        safe_unpickle(path)


def test_non_uint8_arrays_refused(tmp_path):
    for dtype in (np.float64, object):
        path = tmp_path / f"a_{np.dtype(dtype).char}"
        path.write_bytes(pickle.dumps({b"data": np.zeros(3, dtype=dtype)}, protocol=2))
        with pytest.raises(ValueError, match="dtype .* refused"):
            safe_unpickle(path)


def test_truncated_and_non_dict_pickles(tmp_path):
    good = py2_dumps(batch(np.random.default_rng(7), 2))
    (tmp_path / "cut").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cut: not a safe CIFAR pickle"):
        safe_unpickle(tmp_path / "cut")
    (tmp_path / "list").write_bytes(py2_dumps([1, 2]))
    with pytest.raises(ValueError, match="list: expected a pickled dict, got list"):
        safe_unpickle(tmp_path / "list")


def test_bad_labels_and_counts(tmp_path):
    folder, batches = write_cifar10(tmp_path, np.random.default_rng(8))
    b = batches["test_batch"]
    b[b"labels"][1] = 10
    (folder / "test_batch").write_bytes(py2_dumps(b))
    with pytest.raises(ValueError, match=r"test_batch: label 10 at index 1 is out of range 0\.\.9"):
        load_cifar10(tmp_path)
    b[b"labels"] = [0, 1, 2]  # 4 images
    (folder / "test_batch").write_bytes(py2_dumps(b))
    with pytest.raises(ValueError, match="test_batch: 4 images but 3 labels"):
        load_cifar10(tmp_path)
    del b[b"labels"]
    (folder / "test_batch").write_bytes(py2_dumps(b))
    with pytest.raises(ValueError, match="test_batch: missing key b'labels'"):
        load_cifar10(tmp_path)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_cifar10(tmp_path / "nope")
    with pytest.raises(ValueError, match="no CIFAR files"):
        load_cifar100(tmp_path)
    folder, _ = write_cifar10(tmp_path, np.random.default_rng(9))
    (folder / "data_batch_5").unlink()
    with pytest.raises(ValueError, match="data_batch_5"):
        load_cifar10(tmp_path)
