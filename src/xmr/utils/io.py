"""Atomic file writes and JSON config helpers.

Every artefact xmr writes goes through :func:`atomic_write`: data is written to a temporary
file in the destination folder, flushed, fsynced and renamed over the target, so a crash never
leaves a half-written index, cache shard or checkpoint where a good one was.
"""

from __future__ import annotations

import collections.abc
import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from xmr.errors import XmrError


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
        raise XmrError(f"cannot write into {what} {folder}: {'read-only file system' if read_only else 'permission denied'}")
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
def _umask() -> int:
    umask = os.umask(0)  # the only way to read it; read once, not per file (threads)
    os.umask(umask)
    return umask


def _default_mode(path: str) -> None:
    """Give a mkstemp file (mode 0600) the permissions a plain ``open`` would have."""
    os.chmod(path, 0o666 & ~_umask())


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


_EXCHANGE = 2  # RENAME_EXCHANGE of renameat2(2): swap two paths in one atomic step
_AT_FDCWD = -100
OWNER_FILE = ".xmr-owner"


def _rename_exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically (Linux ``renameat2``); False where the system cannot."""
    if os.environ.get("XMR_NO_RENAME_EXCHANGE"):  # tests of the portable fallback
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # filesystem or kernel without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _old_aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def recover_folder(target: str | os.PathLike[str]) -> None:
    """Finish a folder swap that a crash interrupted between its two renames.

    Only the portable fallback of :func:`swap_in_folder` has that window: the old folder was
    moved aside to ``.<name>.old`` and the new one was not yet in place. The old one is put back.
    """
    target = Path(target)
    old = _old_aside(target)
    if not os.path.lexists(target) and old.is_dir():
        with contextlib.suppress(FileNotFoundError):
            old.rename(target)


def swap_in_folder(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Replace the folder ``target`` by the finished folder ``new``; ``new`` is consumed.

    Where the system has ``renameat2(RENAME_EXCHANGE)`` (Linux) the two folders trade places in
    one atomic step and the old one is then removed: at every instant ``target`` is whole, old
    or new. Elsewhere the old folder is moved aside to ``.<name>.old`` first and removed last;
    :func:`recover_folder` (called by every loader) puts it back if a crash fell in between.

    ``target`` must be a folder or absent: callers decide what may be replaced (see
    :func:`xmr.workflows.index.index_run`); a file there is refused, never moved.
    """
    new, target = Path(new), Path(target)
    recover_folder(target)
    if os.path.lexists(target) and (target.is_symlink() or not target.is_dir()):
        raise XmrError(f"{target} exists and is not a folder; not replacing it")
    if target.is_dir():
        if _rename_exchange(new, target):
            _fsync_dir(target.parent)
            shutil.rmtree(new, ignore_errors=True)  # now the old folder
            return
        old = _old_aside(target)
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        crash_point("swap-between-renames")
        new.rename(target)
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    new.rename(target)
    _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets you fsync a folder
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def crash_point(name: str) -> None:
    """Signal this process here when ``$XMR_CRASH_AT`` is ``name`` (atomicity tests).

    The signal is SIGKILL, or the one ``$XMR_CRASH_SIGNAL`` names (e.g. ``TERM``).
    """
    if os.environ.get("XMR_CRASH_AT") == name:
        sig = getattr(signal, "SIG" + os.environ.get("XMR_CRASH_SIGNAL", "KILL").upper().removeprefix("SIG"))
        os.kill(os.getpid(), sig)


def make_temp_folder(beside: str | os.PathLike[str]) -> Path:
    """A new hidden folder next to ``beside`` (``.<name>.<random>``) to build it in, then swap in.

    It gets the permissions a plain ``mkdir`` would (not mkdtemp's 0700) and an owner file with
    this process's id, so :func:`remove_stale_temp_folders` can tell a dead run's leftovers
    from a live one's.
    """
    beside = Path(beside)
    remove_stale_temp_folders(beside)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.tmp-", dir=beside.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    (tmp / OWNER_FILE).write_text(f"{os.getpid()} {_boot_id()}\n")
    return tmp


def remove_stale_temp_folders(beside: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary folders of ``beside`` left by processes that died; returns them.

    A folder counts as stale when its owner file names a process that no longer runs (or ran
    before the last boot), or it has no owner file and is over a day old.
    """
    beside = Path(beside)
    removed = []
    with contextlib.suppress(OSError):
        for p in beside.parent.glob(f".{glob_escape(beside.name)}.tmp-*"):
            if p.is_dir() and not p.is_symlink() and _is_stale(p):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def _is_stale(folder: Path) -> bool:
    try:
        pid_s, _, boot = (folder / OWNER_FILE).read_text().strip().partition(" ")
        pid = int(pid_s)
    except (OSError, ValueError):
        try:
            return time.time() - folder.stat().st_mtime > 86400
        except OSError:
            return False
    if boot and boot != _boot_id():
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary place beside ``target`` and swap it in on a clean exit.

    On any exception (Ctrl-C included) the temporary folder is removed and ``target`` is left
    as it was; a failed write (full disk, no permission) becomes an XmrError naming ``target``.
    The owner file is removed right after the swap.
    """
    target = Path(target)
    ensure_folder(target.parent)
    try:
        tmp = make_temp_folder(target)
    except OSError as e:
        raise XmrError(f"cannot write {target}: {os_error_reason(e, target.parent)}") from None
    try:
        yield tmp
        swap_in_folder(tmp, target)  # the owner file goes along: a crash just before is cleaned as stale
        (target / OWNER_FILE).unlink(missing_ok=True)
    except BaseException as e:
        failure = is_write_failure(e, target.parent) and not isinstance(e, XmrError)
        reason = os_error_reason(e, target.parent) if failure else ""
        shutil.rmtree(tmp, ignore_errors=True)
        if failure:
            raise XmrError(f"cannot write {target}: {reason}") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def matches_saved(saved: Any, current: Any) -> bool:
    """True when a config saved as JSON equals ``current`` (dataclasses allowed).

    Dataclass fields missing from the saved file count as holding their defaults: a run
    written before a field existed still matches a config that leaves the field at its default.
    """
    return _fill_defaults(saved, current) == to_jsonable(current)


def _fill_defaults(saved: Any, obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and isinstance(saved, dict):
        out = dict(saved)
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
    """Read JSON; a missing or corrupt file raises XmrError naming it."""
    path = Path(path)
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


def check_json_types(cls: type, raw: dict[str, Any], where: str | os.PathLike[str]) -> None:
    """Refuse JSON values whose type does not fit the field of dataclass ``cls`` they are for.

    ``{"manifest": 5}`` for a ``str`` field, ``"3"`` for an ``int``, a list for a nested
    config ...: a one-line XmrError naming the file and the field, instead of a failure far
    away. Unknown keys are left to the caller; nested dataclass fields are checked as objects
    (their own fields are the caller's to check with their class).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in raw and not _fits(raw[f.name], hints.get(f.name, Any)):
            shown = json.dumps(raw[f.name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise XmrError(f"{where}: field {f.name!r} is {shown}, expected {_type_name(hints.get(f.name, Any))}")


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list, collections.abc.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "an object"
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "an object"
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(hint, str(hint))


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path`` for the block; another holder -> one-line XmrError.

    Two ``xmr train`` runs into one folder (or two index builds of one target) would each write
    consistent files, but interleaved: the second one is refused instead. The lock goes with the
    process, so a killed run never leaves a stale lock behind.
    """
    lock_path = Path(lock_path)
    ensure_folder(lock_path.parent)
    try:
        fh = open(lock_path, "a")
    except OSError as e:
        raise XmrError(f"cannot write {lock_path}: {os_error_reason(e, lock_path.parent)}") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise XmrError(f"another xmr process is writing {what} (lock {lock_path} is held); wait for it to "
                           "finish or pick another folder") from None
        yield
