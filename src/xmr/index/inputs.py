"""Checked inputs of an index: vectors and queries as float32 rows, and ``k``; one-line errors naming the culprit."""

from __future__ import annotations

import operator

import numpy as np
import numpy.typing as npt

from xmr.errors import XmrError

_NUMERIC_KINDS = "fiu"


def as_float32_rows(x: npt.ArrayLike, dim: int, what: str, *, allow_1d: bool) -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(n, dim)`` array, copying only when it must.

    Args:
        x: Array-like of shape ``(n, dim)`` (or ``(dim,)`` when ``allow_1d``).
        dim: Expected dimension.
        what: How to name ``x`` in errors (``"query"``, ``"vectors"``).
        allow_1d: Accept a single vector and return it as shape ``(1, dim)``.

    Raises:
        XmrError: wrong shape or dimension, non-numeric dtype, NaN or inf values.
    """
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    plural = what.endswith("s")  # "query has", "vectors have"
    if a.ndim == 1 and allow_1d:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise XmrError(f"{what} must have shape (n, {dim}), got shape {a.shape}")
    if a.shape[1] != dim:
        has = "have" if plural else "has"
        raise XmrError(f"{what} {has} dim {a.shape[1]}, index has dim {dim}")
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        if a.dtype.kind not in _NUMERIC_KINDS:
            raise XmrError(f"{what} must be a float array, got dtype {a.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range -> inf, caught below
            a = np.ascontiguousarray(a, dtype=np.float32)
    # One pass without a temporary: NaN and inf propagate through a sum. Only if it is not
    # finite (or overflowed) pay for the row-by-row check that names the culprit.
    if not np.isfinite(a.sum()):
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            more = f" and {bad.size - 1} more" if bad.size > 1 else ""
            verb = "contain" if plural else "contains"
            raise XmrError(f"{what} {verb} NaN or inf values (row {int(bad[0])}{more})")
    return a


def check_k(k: int) -> int:
    """``k`` (results per query) as an int >= 1; anything else is an XmrError."""
    try:
        k = operator.index(k)
    except TypeError:
        raise XmrError(f"k must be an integer, got {k!r}") from None
    if k < 1:
        raise XmrError(f"k must be >= 1, got {k}")
    return k
