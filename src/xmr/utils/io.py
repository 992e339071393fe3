"""Atomic file writes, JSON config helpers, and write failures as one-line errors.

Every artefact xmr writes goes through :func:`atomic_write`: data is written to a temporary
file in the destination folder, flushed, fsynced and renamed over the target, so a crash never
leaves a half-written index, cache shard or checkpoint where a good one was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from xmr.errors import XmrError
from xmr.utils.faults import crash_point
from xmr.utils.files import LIMITS, check_input_file

_LOW_SPACE = 1 << 20  # bytes: a failed write with less than this free is reported as a full disk


def os_error_reason(e: BaseException, folder: str | os.PathLike[str] | None = None) -> str:
    """A short reason for a failed write: ``no space left on device``, ``permission denied`` ...

    Libraries that wrap the OS error in their own type (torch, FAISS, safetensors) are told
    apart by the free space left in ``folder`` at the moment of failure.
    """
    if isinstance(e, OSError) and e.errno is not None:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left on device"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if e.errno == errno.EROFS:
            return "read-only file system"
        return (e.strerror or str(e)).lower()
    text = str(e)
    if "No space left" in text or "ENOSPC" in text or "errno 28" in text.lower():
        return "no space left on device"
    if folder is not None:
        with contextlib.suppress(OSError):
            st = os.statvfs(folder)
            if st.f_bavail * st.f_frsize < _LOW_SPACE:
                return "no space left on device"
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def is_write_failure(e: BaseException, folder: str | os.PathLike[str]) -> bool:
    """True for an OS-level write failure (an OSError, or a library error on a full disk)."""
    if isinstance(e, OSError):
        return True
    return isinstance(e, Exception) and os_error_reason(e, folder) == "no space left on device"


def ensure_folder(path: str | os.PathLike[str], what: str = "folder") -> Path:
    """``mkdir -p path``; a permission problem or a file in the way is a one-line XmrError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise XmrError(f"cannot create {what} {path}: a file is in the way") from None
    except OSError as e:
        raise XmrError(f"cannot create {what} {path}: {os_error_reason(e)}") from None
    return path


def check_writable(folder: str | os.PathLike[str], what: str = "folder") -> Path:
    """Refuse early (before hours of work) when nothing can be written into ``folder``."""
    folder = Path(folder)
    probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), folder)
    if not probe.is_dir():
        raise XmrError(f"cannot write into {what} {folder}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        read_only = False
        with contextlib.suppress(OSError):
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        reason = "read-only file system" if read_only else "permission denied"
        raise XmrError(f"cannot write into {what} {folder}: {reason}")
    return folder


@contextlib.contextmanager
def _temp_beside(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary path in ``path``'s folder, renamed over ``path`` on success, removed on error.

    A failed write (full disk, no permission) becomes an XmrError naming ``path``; the previous
    file at ``path`` is untouched either way.
    """
    path = Path(path)
    ensure_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise XmrError(f"cannot write {path}: {os_error_reason(e, path.parent)}") from None
    os.close(fd)
    try:
        yield tmp
        _default_mode(tmp)
        os.replace(tmp, path)
        crash_point(f"replaced:{path.name}")
    except BaseException as e:
        failure = is_write_failure(e, path.parent) and not isinstance(e, XmrError)
        reason = os_error_reason(e, path.parent) if failure else ""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if failure:
            raise XmrError(f"cannot write {path}: {reason}") from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on clean exit fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    with _temp_beside(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


@functools.cache
def current_umask() -> int:
    umask = os.umask(0)  # the only way to read it; read once, not per file (threads)
    os.umask(umask)
    return umask


def _default_mode(path: str) -> None:
    """Give a mkstemp file (mode 0600) the permissions a plain ``open`` would have."""
    os.chmod(path, 0o666 & ~current_umask())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_save_file(path: str | os.PathLike[str], writer: Callable[[str], object]) -> None:
    """Call ``writer(tmp_path)`` for libraries that only write to a path, then rename atomically."""
    with _temp_beside(path) as tmp:
        writer(tmp)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and paths turned into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def matches_saved(saved: Any, current: Any) -> bool:
    """True when a config saved as JSON equals ``current`` (dataclasses allowed).

    Dataclass fields missing from the saved file count as holding their defaults: a run
    written before a field existed still matches a config that leaves the field at its default.
    Saved fields the dataclass no longer has are ignored when they hold nothing (``{}``, ``[]``,
    ``None``): a run written before an unused field was removed still matches.
    """
    return _fill_defaults(saved, current) == to_jsonable(current)


def without_removed_fields(cls: Any, saved: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` less the keys of fields dataclass ``cls`` no longer has that held nothing (``{}``,
    ``[]``, ``None``): what older files carry for a field that was removed unused. A removed field
    that held something stays, so the caller still sees the difference.

    A dataclass whose saved form changed shape says how to read the old one: its classmethod
    ``upgrade_saved(saved) -> dict`` is applied first (``TrainConfig``: flat settings -> nested).
    """
    upgrade = getattr(cls, "upgrade_saved", None)
    if upgrade is not None:
        saved = upgrade(saved)
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in saved.items() if k in names or v not in ({}, [], None)}


def _fill_defaults(saved: Any, obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and isinstance(saved, dict):
        out = without_removed_fields(obj, saved)
        for f in dataclasses.fields(obj):
            if f.name in out:
                out[f.name] = _fill_defaults(out[f.name], getattr(obj, f.name))
            elif f.default is not dataclasses.MISSING:
                out[f.name] = to_jsonable(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = to_jsonable(f.default_factory())
        return out
    if isinstance(obj, dict) and isinstance(saved, dict):
        return {k: _fill_defaults(v, obj[k]) if k in obj else v for k, v in saved.items()}
    return saved


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` (dataclasses allowed) as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON; a missing or corrupt file (or a folder, FIFO, device, one over
    :attr:`~xmr.utils.files.InputLimits.json_bytes`: never opened) raises XmrError naming it."""
    path = Path(path)
    check_input_file(path, "JSON file", max_bytes=LIMITS.json_bytes)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XmrError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise XmrError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise XmrError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise XmrError(f"cannot read {path}: {os_error_reason(e)}") from None


def load_json_object(path: str | os.PathLike[str], what: str = "file") -> dict[str, Any]:
    """:func:`load_json` that also refuses anything but a JSON object (a list, a number ...)."""
    obj = load_json(path)
    if not isinstance(obj, dict):
        raise XmrError(f"{path}: not a valid {what} (a JSON object expected, found {type(obj).__name__})")
    return obj


def sha1_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Content hash of a file (hex SHA-1), streamed."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()

