"""Numbers from outside xmr, checked in one place: finite, whole where a count is asked, in range.

Every number a user hands xmr — a CLI option (``--epochs``, ``--max-upload-mb``), an environment
variable (``$XMR_MAX_IMAGE_PIXELS``), the parts of ``--split 80/10/10``, a field of a config
dataclass (also when read back from ``run.json``, where JSON's ``Infinity`` and ``NaN`` parse) —
goes through a :class:`NumberRange`: ``inf``, ``nan`` and out-of-range values are refused with
one :class:`~xmr.errors.XmrError` saying what was expected. The CLI's option types wrap
:meth:`NumberRange.parse`; the config dataclasses call :func:`check_finite_fields` in their
``__post_init__`` (their own ranges stay beside the fields they bound).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from xmr.errors import XmrError

#: the largest whole number any option takes unless its range says less (fits a C ``int64``)
MAX_WHOLE = 2**63 - 1


@dataclass(frozen=True)
class NumberRange:
    """The numbers a setting accepts.

    Attributes:
        lo, hi: the bounds (None: unbounded on that side; whole numbers are always <= :data:`MAX_WHOLE`).
        lo_open, hi_open: the bound itself is excluded (``> lo`` rather than ``>= lo``).
        whole: a whole number (an ``int``); otherwise any finite real number.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    whole: bool = False

    def describe(self) -> str:
        """``>= 1 (a whole number)``, ``in (0, 1] (a finite number)``, ``a finite number`` ..."""
        kind = "a whole number" if self.whole else "a finite number"

        def shown(v: float) -> str:
            return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"

        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"in {left}{shown(self.lo)}, {shown(self.hi)}{right} ({kind})"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {shown(self.lo)} ({kind})"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {shown(self.hi)} ({kind})"
        return kind

    def contains(self, value: float) -> bool:
        """True for a finite number (a whole one if asked, never beyond :data:`MAX_WHOLE`) in the bounds."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, int):  # exact: a 400-digit int does not fit a float
            if abs(value) > MAX_WHOLE:
                return False
        elif not math.isfinite(value) or (self.whole and (not value.is_integer() or abs(value) > MAX_WHOLE)):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def check(self, value: float, name: str) -> float:
        """``value`` if this range holds it, else an XmrError naming ``name``."""
        if not self.contains(value):
            raise XmrError(f"{name} must be {self.describe()}, got {value!r}")
        return int(value) if self.whole else value

    def parse(self, text: str, name: str | None = None) -> float:
        """``text`` as a number of this range (``int`` when whole, else ``float``); XmrError otherwise.

        ``inf``, ``nan``, ``1e999`` (which overflows to inf) and, for a whole number, ``1.5`` or
        ``1e3`` are refused; ``1_000`` is a thousand.
        """
        raw = text.strip()
        try:
            value: float = int(raw) if self.whole else float(raw)
        except (ValueError, OverflowError):
            value = math.nan
        if not self.contains(value):
            where = f"{name} " if name else ""
            shown = repr(text if len(text) <= 40 else text[:37] + "...")
            big = " (too large)" if isinstance(value, int) and abs(value) > MAX_WHOLE else ""
            raise XmrError(f"{where}must be {self.describe()}, got {shown}{big}")
        return value


#: the ranges most options use
POSITIVE_WHOLE = NumberRange(lo=1, whole=True)
NON_NEGATIVE_WHOLE = NumberRange(lo=0, whole=True)
POSITIVE = NumberRange(lo=0, lo_open=True)
NON_NEGATIVE = NumberRange(lo=0)
FINITE = NumberRange()


def _numbers(value: object) -> list[float]:
    """The floats inside a field's value (itself, or the items of a tuple / list), for the finiteness check."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, float)]
    return []


def check_finite_fields(config: object) -> None:
    """Refuse a config dataclass holding ``inf`` or ``nan`` in any float field (or tuple of floats).

    Called from each config's ``__post_init__``: the fields' own range checks then only compare
    finite numbers (``inf > 0`` and every comparison with ``nan`` would otherwise slip through).
    """
    for f in dataclasses.fields(config):  # type: ignore[arg-type]  # called with dataclass instances only
        value = getattr(config, f.name)
        if any(not math.isfinite(v) for v in _numbers(value)):
            raise XmrError(f"invalid {f.name}: {value!r} (must be finite: no inf or nan)")
