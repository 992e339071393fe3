"""The Fashion-MNIST IDX reader on tiny IDX files written here (the Debian package is not needed)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from xmr.data.fashion_mnist import (
    CLASS_NAMES,
    SPLIT_FILES,
    find_fashion_mnist_dir,
    load_fashion_mnist,
    parse_idx,
    read_idx,
)
from xmr.errors import XmrError


def idx_bytes(arr: np.ndarray) -> bytes:
    """Reference IDX encoder: zero, type code, ndim, big-endian sizes, big-endian data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    head = struct.pack(">HBB", 0, codes[arr.dtype], arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, *, gz: bool = True) -> None:
    img_name, lab_name = SPLIT_FILES[split]
    for name, arr in ((img_name, images), (lab_name, labels)):
        data = idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.fixture
def tiny_fmnist(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_split(tmp_path, "train", rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
                np.array([0, 1, 2, 9, 9, 3], dtype=np.uint8))
    write_split(tmp_path, "test", rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
                np.array([5, 6, 7], dtype=np.uint8), gz=False)
    return tmp_path


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path: Path, dtype: type, gz: bool) -> None:
    arr = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    data = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    arr = np.arange(7, dtype=np.uint8)
    (tmp_path / "labels").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), arr)


def test_load_split_gz_and_raw(tiny_fmnist: Path) -> None:
    x, y = load_fashion_mnist("train", root=tiny_fmnist)
    assert x.shape == (6, 28, 28) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 9, 9, 3]
    x, y = load_fashion_mnist("test", root=tiny_fmnist)  # raw, not gzipped
    assert x.shape == (3, 28, 28) and y.tolist() == [5, 6, 7]
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[9] == "Ankle boot"


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00", "only 2 bytes"),
    (b"\x08\x03\x00\x00" + b"\x00" * 16, "bad magic"),           # first two bytes not zero
    (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x00", "bad magic"),  # unknown type code
    (b"\x00\x00\x08\x00", "bad magic"),                          # no dimensions
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header needs 16 bytes"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05" + b"\x01\x02", "truncated IDX file"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01" + b"\x01\x02", "trailing bytes"),
])
def test_parse_idx_errors(data: bytes, message: str) -> None:
    with pytest.raises(XmrError, match=message):
        parse_idx(data, name="x.idx")


def test_truncated_and_corrupt_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(XmrError, match="truncated gzip file: .*cut.gz"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "bad.gz").write_bytes(packed[:10] + b"\xff" * 40)
    with pytest.raises(XmrError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")


def test_missing_files_say_how_to_install(tmp_path: Path, tiny_fmnist: Path) -> None:
    with pytest.raises(XmrError, match=r"no folder .*make data.*dataset-fashion-mnist"):
        find_fashion_mnist_dir(tmp_path / "nowhere")
    (tiny_fmnist / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(XmrError, match=r"no t10k-labels-idx1-ubyte\[\.gz\].*make data"):
        load_fashion_mnist("train", root=tiny_fmnist)
    with pytest.raises(XmrError, match="file not found"):
        read_idx(tmp_path / "absent.idx")


def test_unknown_split_and_mismatched_files(tiny_fmnist: Path) -> None:
    with pytest.raises(XmrError, match="unknown Fashion-MNIST split 'val'"):
        load_fashion_mnist("val", root=tiny_fmnist)
    write_split(tiny_fmnist, "train", np.zeros((6, 28, 28), np.uint8), np.zeros(5, np.uint8))
    with pytest.raises(XmrError, match="6 images but labels of shape"):
        load_fashion_mnist("train", root=tiny_fmnist)
    write_split(tiny_fmnist, "train", np.zeros((2, 28, 28), np.uint8), np.array([0, 10], np.uint8))
    with pytest.raises(XmrError, match="labels outside 0..9"):
        load_fashion_mnist("train", root=tiny_fmnist)
