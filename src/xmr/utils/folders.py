"""Folders written as one unit: build beside the target, swap in atomically, clean up after the dead.

* :func:`atomic_folder` builds a checkpoint, an index or re-ranking structures in a hidden
  temporary folder next to its target and swaps it in on success (:func:`swap_in_folder`);
  a crash at any point leaves the previous folder whole.
* Temporary folders carry an owner file (process id + boot id); the next writer of the same
  target removes those whose process is gone (:func:`remove_stale_temp_folders`).
* :func:`exclusive_lock`: one writer of a run folder or an index at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from xmr.errors import XmrError
from xmr.utils.faults import crash_point
from xmr.utils.io import current_umask, ensure_folder, is_write_failure, os_error_reason

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


def make_temp_folder(beside: str | os.PathLike[str]) -> Path:
    """A new hidden folder next to ``beside`` (``.<name>.<random>``) to build it in, then swap in.

    It gets the permissions a plain ``mkdir`` would (not mkdtemp's 0700) and an owner file with
    this process's id, so :func:`remove_stale_temp_folders` can tell a dead run's leftovers
    from a live one's.
    """
    beside = Path(beside)
    remove_stale_temp_folders(beside)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.tmp-", dir=beside.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        (tmp / OWNER_FILE).write_text(f"{os.getpid()} {_boot_id()}\n")
    except BaseException:  # a disk too full for even the owner file
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        # judged before the finally clause frees the space the temporary folder holds
        failure = is_write_failure(e, target.parent) and not isinstance(e, XmrError)
        reason = os_error_reason(e, target.parent) if failure else ""
        if failure:
            raise XmrError(f"cannot write {target}: {reason}") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
