"""Progress bars that switch themselves off when nobody is watching."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """True when stderr is a terminal and ``XMR_NO_PROGRESS`` is unset."""
    return sys.stderr.isatty() and not os.environ.get("XMR_NO_PROGRESS")


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
