"""Progress bars that switch themselves off when nobody is watching."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
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
