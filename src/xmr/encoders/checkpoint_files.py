"""The content digest of a checkpoint: what the ids of the encoders read from local weights follow.

Two checkpoints never share an id (and so cached features), whatever their files are called, and
one checkpoint keeps its id when moved: the digest covers the files' names within the checkpoint
and their contents, never where they are. ``hf-clip`` (:mod:`xmr.encoders.hf_clip`) and
``open-clip`` (:mod:`xmr.encoders.openclip`) use it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from xmr.errors import XmrError
from xmr.utils.io import sha1_file

#: files of a checkpoint folder that transformers' PyTorch loader never reads (left out of the digest)
OTHER_FORMATS = (".h5", ".msgpack", ".onnx", ".tflite", ".ot", ".md")

_DIGESTS: dict[tuple[tuple[str, str, int, int], ...], str] = {}
_DIGEST_LOCK = threading.Lock()


def hashed_files(path: Path) -> list[Path]:
    """The folder's files the digest covers: every top-level regular file except hidden ones,
    documentation and other frameworks' weights, and ``*.bin`` when ``*.safetensors`` weights are
    there (transformers and open_clip then read those)."""
    files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    has_safetensors = any(p.suffix == ".safetensors" for p in files)
    return [p for p in files if p.suffix.lower() not in OTHER_FORMATS and not (has_safetensors and p.suffix == ".bin")]


def files_digest(files: Sequence[tuple[str, Path]], what: str) -> str:
    """SHA-1 (hex) over ``(label, file)`` pairs: each label, file size and file SHA-1, in order.

    Computed once per (labels, real paths, sizes, mtimes) in this process: reading a 600 MB checkpoint
    takes about a second, so both sides (and every later encoder of the same files) reuse it; an
    edited or replaced file is hashed again. ``what`` names the checkpoint in errors.
    """
    try:
        key = tuple((label, os.path.realpath(p), (st := os.stat(p)).st_size, st.st_mtime_ns) for label, p in files)
    except OSError as e:
        raise XmrError(f"cannot read {what} ({type(e).__name__}: {e.strerror or e})") from None
    with _DIGEST_LOCK:
        if key not in _DIGESTS:
            h = hashlib.sha1()
            for label, real, size, _ in key:
                try:
                    content = sha1_file(real)
                except OSError as e:
                    raise XmrError(f"cannot read {real} ({type(e).__name__}: {e.strerror or e})") from None
                h.update(f"{label}\0{size}\0{content}\n".encode())
            _DIGESTS[key] = h.hexdigest()
        return _DIGESTS[key]


def checkpoint_digest(path: str | Path) -> str:
    """SHA-1 (hex) of a checkpoint folder's content: each hashed file's name, size and SHA-1 (:func:`hashed_files`)."""
    real = Path(os.path.realpath(path))
    try:
        files = hashed_files(real)
    except OSError as e:
        raise XmrError(f"cannot read the checkpoint {path} ({type(e).__name__}: {e.strerror or e})") from None
    return files_digest([(p.name, p) for p in files], f"the checkpoint {path}")
