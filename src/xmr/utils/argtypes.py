"""The checked argparse types of numeric options, shared by the CLI and the tasks' own options.

Each is a :class:`Number`: a number of a :class:`~xmr.utils.numbers.NumberRange` (finite, whole
where a count is asked, in range), else argparse's one-line error naming the option. A task adds
its options with them (:meth:`xmr.tasks.Task.add_arguments`) without importing the CLI.
"""

from __future__ import annotations

import argparse

from xmr.errors import XmrError
from xmr.utils.numbers import NumberRange


class Number:
    """argparse type of every numeric option: a number of a :class:`~xmr.utils.numbers.NumberRange`
    (finite, whole where a count is asked, in range), else the option's one-line error naming it."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, whole: bool = True,
                 lo_open: bool = False, hi_open: bool = False) -> None:
        self.range = NumberRange(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, whole=whole)
        self.__name__ = "whole number" if whole else "number"  # argparse names the type in some messages

    def __call__(self, text: str) -> float:
        try:
            return self.range.parse(text)
        except XmrError as e:
            raise argparse.ArgumentTypeError(str(e)) from None


positive_int = Number(1)  # ``--texts-per-item 0`` is refused by name
count = Number(0)  # a whole number >= 0 (0 = off)
seed = Number(0, 2**32, hi_open=True)  # what numpy and torch both accept as a seed
positive = Number(0, whole=False, lo_open=True)  # a real number > 0
non_negative = Number(0, whole=False)  # a real number >= 0


def count_or_all(text: str) -> int | str:
    """argparse type of a depth option: a whole number >= 0, or ``all`` (the whole network)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(count(text))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be >= 0 (a whole number) or 'all', got {text!r}") from None
