"""Progress bars that switch themselves off when nobody is watching (stderr not a terminal,
``$XMR_NO_PROGRESS`` set) or when told to (a quiet :class:`ProgressConfig`, ``xmr -q``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

#: set (to anything but empty) to switch progress off in this process and the processes it starts
NO_PROGRESS_ENV = "XMR_NO_PROGRESS"


@dataclass(frozen=True)
class ProgressConfig:
    """Whether long work reports its progress.

    Attributes:
        quiet: no progress bars or progress lines at all (``xmr -q``); when False, bars show on a
            terminal unless ``$XMR_NO_PROGRESS`` is set.
    """

    quiet: bool = False


_current = ProgressConfig()


def current_progress() -> ProgressConfig:
    """The progress config in force (:func:`using_progress`; by default not quiet)."""
    return _current


@contextlib.contextmanager
def using_progress(config: ProgressConfig) -> Iterator[None]:
    """Report progress as ``config`` says for the block; the previous config is restored after."""
    global _current
    previous, _current = _current, config
    try:
        yield
    finally:
        _current = previous


def progress_silenced() -> bool:
    """True when progress must not be shown anywhere: a quiet config, or ``$XMR_NO_PROGRESS`` set."""
    return _current.quiet or bool(os.environ.get(NO_PROGRESS_ENV))


def progress_enabled() -> bool:
    """True when stderr is a terminal and progress is not :func:`progress_silenced`."""
    return sys.stderr.isatty() and not progress_silenced()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             disable: bool | None = None, unit: str = "it") -> tqdm:
    """A tqdm bar, disabled unless :func:`progress_enabled` (or ``disable=False``)."""
    if disable is None:
        disable = not progress_enabled()
    return tqdm(iterable, total=total, desc=desc, disable=disable, unit=unit, leave=False,
                dynamic_ncols=True)


def epoch_eta(epoch_seconds: Sequence[float], epochs: int) -> str:
    """``12.3 s/epoch, at most 5.5 min left``: the mean of the finished epochs' times (``epoch_seconds``,
    one per epoch done) times the epochs left of ``epochs`` (at most: early stopping may end sooner)."""
    if not epoch_seconds:
        return ""
    per = sum(epoch_seconds) / len(epoch_seconds)
    left = per * max(0, epochs - len(epoch_seconds))
    when = "the last epoch" if left == 0 else f"at most {left / 60:.1f} min left" if left >= 60 else \
        f"at most {left:.0f} s left"
    return f"{per:.1f} s/epoch, {when}"
