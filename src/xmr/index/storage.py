"""On-disk layout of an index (format version 2)::

    index.faiss    the FAISS index; its labels are slots (0, 1, 2... in order of addition)
    ids.npy        slot -> id (int64; -1: removed), absent while every id is its slot
    vectors.f16    with ``refine``: the exact vectors by slot (raw rows, see ``vector_store``)
    index.json     config, counts, next id, and a fingerprint of each file above

Version 1 (``index.faiss`` an ``IndexIDMap`` holding the ids) is still read. Version 2 keeps the
ids out of the FAISS file because an IVF index with removed entries has more slots than
vectors, which an ``IndexIDMap`` cannot hold, and so that both can be memory-mapped.

Saving is atomic per file and guarded across the set:

1. every file is written to a temporary name in the destination folder and fsynced;
2. the data files are renamed into place, then ``index.json``, then the folder is fsynced.

A failure in step 1 leaves the previous index untouched. A crash between the renames of
step 2 (a window of microseconds) can pair a new data file with the old ``index.json``;
``index.json`` records the size and a head/tail hash of each file, so loading detects the
mismatch and refuses with a clear message instead of serving a wrong index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from xmr.errors import XmrError
from xmr.index.faiss_utils import faiss_error_reason
from xmr.utils.io import load_json

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
CONFIG_FILE = "index.json"
FORMAT = "xmr.index"
VERSION = 2
READ_VERSIONS = (1, 2)
STORE_FILES = {"float16": "vectors.f16", "float32": "vectors.f32"}
_SAMPLE_BYTES = 1 << 20
_FILE_MODE = 0o644


def file_fingerprint(path: Path, nbytes: int | None = None) -> dict[str, object]:
    """Size and SHA-1 of the first and last MiB of ``path``: cheap even for multi-GB indexes.

    The head holds the FAISS header (type, dim, ntotal); for an ``IndexIDMap`` the tail holds
    the ids. Together with the size this tells two saves apart in practice.

    ``nbytes``: fingerprint only the file's first ``nbytes`` (a vector store, which a later
    ``add`` may extend in place: the rows this index records must not change, the rest may).
    """
    size = path.stat().st_size if nbytes is None else nbytes
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        digest.update(fh.read(min(size, _SAMPLE_BYTES)))
        if size > _SAMPLE_BYTES:
            start = max(_SAMPLE_BYTES, size - _SAMPLE_BYTES)
            fh.seek(start)
            digest.update(fh.read(size - start))
    return {"bytes": size, "sha1_head_tail": digest.hexdigest()}


def _temp_path(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; an index is meant to be shared
    return Path(tmp)


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_index_files(directory: Path, index: faiss.Index, meta: dict[str, object], *,
                      ids: np.ndarray | None = None,
                      store: tuple[str, Callable[[Path], None]] | None = None) -> None:
    """Write ``index``, ``ids``, the vector store and ``meta`` (with each file's fingerprint).

    Args:
        directory: Destination folder, created if missing.
        index: The FAISS index to serialise.
        meta: JSON-able metadata (format, version, config, counts) for ``index.json``.
        ids: slot -> id, written as ``ids.npy``; None: every id is its slot (no file).
        store: ``(file name, writer)``: the writer fills the temporary path it is given.
    """
    directory.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        temps[INDEX_FILE] = _temp_path(directory, INDEX_FILE)
        faiss.write_index(index, str(temps[INDEX_FILE]))
        _fsync_path(temps[INDEX_FILE])
        payload = {**meta, "faiss_file": file_fingerprint(temps[INDEX_FILE])}
        if ids is not None:
            temps[IDS_FILE] = _temp_path(directory, IDS_FILE)
            with open(temps[IDS_FILE], "wb") as fh:
                np.save(fh, np.ascontiguousarray(ids, dtype=np.int64))
                fh.flush()
                os.fsync(fh.fileno())
            payload["ids_file"] = file_fingerprint(temps[IDS_FILE])
        if store is not None:
            name, writer = store
            temps[name] = _temp_path(directory, name)
            writer(temps[name])
            payload["store_file"] = {"name": name, **file_fingerprint(temps[name], store_bytes(meta))}
        json_tmp = temps[CONFIG_FILE] = _temp_path(directory, CONFIG_FILE)
        with open(json_tmp, "w") as fh:
            fh.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for name, tmp in temps.items():  # index.json last: it is what commits the save
            os.replace(tmp, directory / name)
        temps.clear()
        for stale in (IDS_FILE, *STORE_FILES.values()):  # files the new index no longer has
            if stale != (store[0] if store else None) and not (stale == IDS_FILE and ids is not None):
                with contextlib.suppress(FileNotFoundError):
                    (directory / stale).unlink()
        with contextlib.suppress(OSError):  # not every filesystem lets you fsync a folder
            _fsync_path(directory, directory=True)
    except BaseException:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def read_index_meta(directory: Path) -> dict[str, object]:
    """The parsed ``index.json`` of ``directory``; missing or malformed -> XmrError naming it."""
    json_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise XmrError(f"{directory}: no such index folder")
    meta = load_json(json_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise XmrError(f"{json_path}: not an xmr index description (format {FORMAT!r} expected)")
    if meta.get("version") not in READ_VERSIONS:
        raise XmrError(f"{json_path}: unsupported index format version {meta.get('version')!r}")
    return meta


def store_bytes(meta: dict[str, object]) -> int:
    """Bytes of the vector store ``meta`` describes: ``n_slots`` rows of ``dim`` values."""
    config = meta["config"]
    assert isinstance(config, dict)
    itemsize = 2 if config.get("store_dtype", "float16") == "float16" else 4
    return int(meta["n_slots"]) * int(config["dim"]) * itemsize  # type: ignore[call-overload]


def _check_fingerprint(directory: Path, name: str, recorded: object, nbytes: int | None = None) -> Path:
    path = directory / name
    if not path.is_file():
        raise XmrError(f"{path}: file not found")
    if nbytes is not None and path.stat().st_size < nbytes:
        raise XmrError(f"{path} holds {path.stat().st_size} bytes, {directory / CONFIG_FILE} records {nbytes}; "
                       "the index folder is damaged: rebuild it")
    if not isinstance(recorded, dict) or file_fingerprint(path, nbytes) != {
            k: v for k, v in recorded.items() if k != "name"}:
        raise XmrError(
            f"{path} does not match {directory / CONFIG_FILE} (corrupt file or "
            "interrupted save); rebuild or save the index again"
        )
    return path


def read_index_file(directory: Path, meta: dict[str, object], *, mmap: bool = False) -> faiss.Index:
    """Read ``index.faiss``, after checking it is the file ``meta`` was written with.

    ``mmap``: map the vectors / inverted lists from the file instead of reading them into RAM
    (``faiss.IO_FLAG_MMAP_IFC``); such an index is read-only.
    """
    faiss_path = _check_fingerprint(directory, INDEX_FILE, meta.get("faiss_file"))
    try:
        return faiss.read_index(str(faiss_path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except RuntimeError as e:
        reason = faiss_error_reason(e)
        raise XmrError(f"{faiss_path}: not a readable FAISS index ({reason})") from None


def read_ids(directory: Path, meta: dict[str, object], *, mmap: bool = False) -> np.ndarray | None:
    """``ids.npy`` (slot -> id) when ``meta`` records one, checked against its fingerprint."""
    if "ids_file" not in meta:
        return None
    path = _check_fingerprint(directory, IDS_FILE, meta["ids_file"])
    try:
        ids = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise XmrError(f"{path}: not a readable id array ({e})") from None
    if ids.ndim != 1 or ids.dtype != np.int64:
        raise XmrError(f"{path}: expected a 1-d int64 array, got {ids.dtype} of shape {ids.shape}")
    return ids


def store_path(directory: Path, meta: dict[str, object]) -> Path | None:
    """The vector store file ``meta`` records, checked against its fingerprint; None without one."""
    recorded = meta.get("store_file")
    if recorded is None:
        return None
    name = recorded.get("name") if isinstance(recorded, dict) else None
    if name not in STORE_FILES.values():
        raise XmrError(f"{directory / CONFIG_FILE}: unknown vector store {name!r}")
    return _check_fingerprint(directory, str(name), recorded, store_bytes(meta))
