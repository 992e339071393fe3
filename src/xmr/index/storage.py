"""On-disk layout of an index: ``index.faiss`` (FAISS binary) + ``index.json`` (config and checks).

Saving is atomic per file and guarded across the pair:

1. both files are written to temporary names in the destination folder and fsynced;
2. ``index.faiss`` is renamed into place, then ``index.json``, then the folder is fsynced.

A failure in step 1 leaves the previous index untouched. A crash between the two renames of
step 2 (a window of microseconds) can pair a new ``index.faiss`` with the old ``index.json``;
``index.json`` records the size and a head/tail hash of its ``index.faiss``, so loading detects
the mismatch and refuses with a clear message instead of serving a wrong index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import faiss

from xmr.errors import XmrError
from xmr.index.faiss_utils import faiss_error_reason
from xmr.utils.io import load_json

INDEX_FILE = "index.faiss"
CONFIG_FILE = "index.json"
FORMAT = "xmr.index"
VERSION = 1
_SAMPLE_BYTES = 1 << 20
_FILE_MODE = 0o644


def file_fingerprint(path: Path) -> dict[str, object]:
    """Size and SHA-1 of the first and last MiB of ``path``: cheap even for multi-GB indexes.

    The head holds the FAISS header (type, dim, ntotal); for an ``IndexIDMap`` the tail holds
    the ids. Together with the size this tells two saves apart in practice.
    """
    size = path.stat().st_size
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        digest.update(fh.read(_SAMPLE_BYTES))
        if size > _SAMPLE_BYTES:
            fh.seek(max(_SAMPLE_BYTES, size - _SAMPLE_BYTES))
            digest.update(fh.read())
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


def write_index_files(directory: Path, index: faiss.Index, meta: dict[str, object]) -> None:
    """Write ``index`` and ``meta`` (plus a fingerprint of the FAISS file) into ``directory``.

    Args:
        directory: Destination folder, created if missing.
        index: The FAISS index to serialise.
        meta: JSON-able metadata (format, version, config, ntotal) for ``index.json``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    faiss_tmp = _temp_path(directory, INDEX_FILE)
    json_tmp = _temp_path(directory, CONFIG_FILE)
    try:
        faiss.write_index(index, str(faiss_tmp))
        _fsync_path(faiss_tmp)
        payload = {**meta, "faiss_file": file_fingerprint(faiss_tmp)}
        with open(json_tmp, "w") as fh:
            fh.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(faiss_tmp, directory / INDEX_FILE)
        os.replace(json_tmp, directory / CONFIG_FILE)
        with contextlib.suppress(OSError):  # not every filesystem lets you fsync a folder
            _fsync_path(directory, directory=True)
    except BaseException:
        for tmp in (faiss_tmp, json_tmp):
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
    if meta.get("version") != VERSION:
        raise XmrError(f"{json_path}: unsupported index format version {meta.get('version')!r}")
    return meta


def read_index_file(directory: Path, meta: dict[str, object]) -> faiss.Index:
    """Read ``index.faiss``, after checking it is the file ``meta`` was written with."""
    faiss_path = directory / INDEX_FILE
    if not faiss_path.is_file():
        raise XmrError(f"{faiss_path}: file not found")
    if file_fingerprint(faiss_path) != meta.get("faiss_file"):
        raise XmrError(
            f"{faiss_path} does not match {directory / CONFIG_FILE} (corrupt file or "
            "interrupted save); rebuild or save the index again"
        )
    try:
        return faiss.read_index(str(faiss_path))
    except RuntimeError as e:
        reason = faiss_error_reason(e)
        raise XmrError(f"{faiss_path}: not a readable FAISS index ({reason})") from None
