"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``: an IDX reader and a loader.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence): 70,000 grey 28 x 28 Zalando article
images in 10 classes, 60,000 train and 10,000 test. The Debian package installs the four
original gzipped IDX files into :data:`DEFAULT_DIR`; ``make data`` installs it. Nothing is
downloaded here.

Example::

    images, labels = load_fashion_mnist("test")   # (10000, 28, 28) uint8, (10000,) int64
    CLASS_NAMES[labels[0]]                         # 'Ankle boot'

IDX format (LeCun): big-endian; bytes 0-1 zero, byte 2 the element type (0x08 uint8, 0x09 int8,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), byte 3 the number of dimensions, then one
uint32 size per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from xmr.errors import XmrError

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

#: label -> class name, in the dataset's label order
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

#: split -> (images file, labels file), without the ``.gz`` suffix
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_DTYPES: dict[int, np.dtype] = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise XmrError(f"IDX file not found: {path}") from None
    except OSError as e:
        raise XmrError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise XmrError(f"truncated gzip file: {path}") from None
    except (OSError, zlib.error) as e:  # BadGzipFile is an OSError
        raise XmrError(f"corrupt gzip file {path}: {e}") from None


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian array of the stored shape and type.

    Raises:
        XmrError: bad magic (first two bytes not zero, unknown element type, no dimensions),
            a header or data shorter than the header promises (truncated), or trailing bytes.
    """
    if len(data) < 4:
        raise XmrError(f"not an IDX file (only {len(data)} bytes): {name}")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise XmrError(f"not an IDX file (bad magic 0x{data[:4].hex()}): {name}")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise XmrError(f"truncated IDX file (header needs {head} bytes, got {len(data)}): {name}")
    shape = struct.unpack(f">{ndim}I", data[4:head])
    dtype = _IDX_DTYPES[code]
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - head
    if got < need:
        raise XmrError(f"truncated IDX file (shape {shape} needs {need} data bytes, got {got}): {name}")
    if got > need:
        raise XmrError(f"IDX file has {got - need} unexpected trailing bytes after shape {shape}: {name}")
    arr = np.frombuffer(data, dtype=dtype, count=need // dtype.itemsize, offset=head).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzipped (detected from its first bytes). See :func:`parse_idx`."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path))


def find_fashion_mnist_dir(root: str | Path | None = None) -> Path:
    """The folder holding the Fashion-MNIST IDX files (default :data:`DEFAULT_DIR`).

    Raises:
        XmrError: the folder or one of its four files is missing; the message says how to install.
    """
    folder = Path(root) if root is not None else DEFAULT_DIR
    hint = (f"run `make data` or `apt-get install {DEBIAN_PACKAGE}` (Debian/Ubuntu), "
            "or pass the folder holding the IDX files")
    if not folder.is_dir():
        raise XmrError(f"Fashion-MNIST not found: no folder {folder}; {hint}")
    for stem in (s for pair in SPLIT_FILES.values() for s in pair):
        if _locate(folder, stem) is None:
            raise XmrError(f"Fashion-MNIST incomplete: no {stem}[.gz] in {folder}; {hint}")
    return folder


def _locate(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split.

    Args:
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        root: folder of the IDX files; None uses :data:`DEFAULT_DIR`.

    Returns:
        ``(images, labels)``: uint8 of shape (n, 28, 28) (0 = background) and int64 of shape (n,)
        with values in ``range(len(CLASS_NAMES))``.
    """
    if split not in SPLIT_FILES:
        raise XmrError(f"unknown Fashion-MNIST split {split!r}; use one of {sorted(SPLIT_FILES)}")
    folder = find_fashion_mnist_dir(root)
    img_path, lab_path = (_locate(folder, stem) for stem in SPLIT_FILES[split])
    images, labels = read_idx(img_path), read_idx(lab_path)  # type: ignore[arg-type]  # _locate found both files
    if images.ndim != 3 or images.dtype != np.uint8:
        raise XmrError(f"expected uint8 images of shape (n, rows, cols), got {images.dtype} {images.shape}: {img_path}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise XmrError(f"{len(images)} images but labels of shape {labels.shape}: {lab_path}")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise XmrError(f"labels outside 0..{len(CLASS_NAMES) - 1} in {lab_path}")
    return images, labels
