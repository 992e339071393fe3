"""Input files checked with ``stat`` before they are opened.

Opening a FIFO blocks until someone writes to it, reading ``/dev/zero`` or ``/dev/urandom``
never ends, and reading a folder fails with an OS error; none of that may reach a user as a hang
or a traceback. Every file xmr reads that a user names or places (query files, captions CSVs,
caption sidecars, triplet files, JSON configs, manifests, images) is first checked here without
being opened: it must exist and be a regular file, and some kinds have a size limit
(:class:`InputLimits`) because they are read whole.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from xmr.errors import XmrError


@dataclass(frozen=True)
class InputLimits:
    """The largest input files of each kind that xmr reads whole into memory, in bytes.

    Attributes:
        sidecar_bytes: a caption sidecar (``photo.txt`` / ``photo.json`` beside an image).
        json_bytes: a JSON file xmr reads (``run.json``, ``model.json``, ``index_run.json``, a
            vocabulary, a Karpathy split file ...).
        text_bytes: a query file or a triplets file.
    """

    sidecar_bytes: int = 1 << 20
    json_bytes: int = 1 << 30
    text_bytes: int = 1 << 30


LIMITS = InputLimits()


class InputFileError(XmrError):
    """An input file that cannot be used; ``path`` is the file, ``reason`` says why (no path in it)."""

    def __init__(self, path: str | os.PathLike[str], reason: str, *, is_folder: bool = False) -> None:
        self.path, self.reason, self.is_folder = str(path), reason, is_folder
        super().__init__(f"{path}: {reason}")


def _size(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_input_file(path: str | os.PathLike[str], what: str = "file", *,
                     max_bytes: int | None = None) -> os.stat_result:
    """Stat ``path`` without opening it: it must exist, be a regular file (not a folder, FIFO,
    socket or device) and hold at most ``max_bytes`` (None: no limit).

    Args:
        path: the file.
        what: what it is, for the message (``"query file"``, ``"captions CSV"`` ...).
        max_bytes: the largest size allowed.

    Returns:
        Its ``stat`` result (symlinks followed).

    Raises:
        InputFileError: naming the file and the reason.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(path, f"{what} not found") from None
    except OSError as e:
        raise InputFileError(path, f"cannot read {what} ({(e.strerror or str(e)).lower()})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(path, f"a folder, not a {what}", is_folder=True)
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(path, f"not a regular file (a FIFO, socket or device), refused as a {what}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputFileError(path, f"{what} too large ({_size(st.st_size)}; at most {_size(max_bytes)} is read), "
                                   "refused")
    return st


def is_input_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an existing regular file (symlinks followed); never opens it, never raises."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False

