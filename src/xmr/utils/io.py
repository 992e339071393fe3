"""Atomic file writes and JSON config helpers.

Every artefact xmr writes goes through :func:`atomic_write`: data is written to a temporary
file in the destination folder, flushed, fsynced and renamed over the target, so a crash never
leaves a half-written index, cache shard or checkpoint where a good one was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from xmr.errors import XmrError


@contextlib.contextmanager
def _temp_beside(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary path in ``path``'s folder, renamed over ``path`` on success, removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        _default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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


def swap_in_folder(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Replace the folder ``target`` by the finished folder ``new`` with two renames.

    The old folder is moved aside first and removed last, so a crash leaves either the old or
    the new folder in place (plus, at worst, a hidden ``.<name>.old``), never a half-written one.
    """
    new, target = Path(new), Path(target)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


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
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise XmrError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise XmrError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def sha1_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Content hash of a file (hex SHA-1), streamed."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
