"""The slot -> id map of an :class:`~xmr.index.faiss_index.Index`, as plain numpy functions.

FAISS labels vectors with *slots* 0, 1, 2... in order of addition; an index keeps the id of each
slot in ``slot_ids`` (int64, ``-1`` where a vector was removed from an IVF index, whose slots stay
empty), or ``None`` while every id is its own slot, with ``ntotal`` vectors in the index.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from xmr.errors import XmrError


def live_ids(slot_ids: np.ndarray | None, ntotal: int) -> np.ndarray:
    """All ids in slot order, removed ones left out. Shape: ``(ntotal,)`` int64 (a copy)."""
    if slot_ids is None:
        return np.arange(ntotal, dtype=np.int64)
    return slot_ids[slot_ids >= 0] if ntotal < slot_ids.shape[0] else np.array(slot_ids)


def slots_of(slot_ids: np.ndarray | None, ntotal: int, ids: npt.ArrayLike) -> np.ndarray:
    """The slot of each of ``ids``. Shape: ``(n,)`` -> ``(n,)`` int64.

    Raises:
        XmrError: ``ids`` is not a 1-d integer array, or an id is not in the index (named, with
            how many are missing).
    """
    a = np.asarray(ids)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise XmrError(f"ids must be a 1-d array of integers, got {a.dtype} of shape {a.shape}")
    a = a.astype(np.int64, copy=False)
    if slot_ids is None:
        bad = a[(a < 0) | (a >= ntotal)]
        if bad.size:
            raise XmrError(f"id {int(bad[0])} is not in the index ({bad.size} of {a.size} missing)")
        return a
    live = slot_ids >= 0
    order = np.argsort(slot_ids, kind="stable")
    sorted_ids = slot_ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, a), sorted_ids.size - 1)
    found = (sorted_ids[pos] == a) & live[order[pos]] if sorted_ids.size else np.zeros(a.shape, bool)
    if not found.all():
        bad = a[~found]
        raise XmrError(f"id {int(bad[0])} is not in the index ({bad.size} of {a.size} missing)")
    return order[pos]


def check_new_ids(ids: npt.ArrayLike, n: int, slot_ids: np.ndarray | None, ntotal: int) -> np.ndarray:
    """``ids`` for ``n`` new vectors, checked: non-negative int64, unique, none in the index yet.

    Returns:
        The ids as C-contiguous int64. Shape: ``(n,)``.

    Raises:
        XmrError: a wrong shape or dtype, a negative id, a duplicate, or an id already in the
            index (named).
    """
    a = np.asarray(ids)
    if a.shape != (n,):
        raise XmrError(f"ids must have shape ({n},) to match the vectors, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise XmrError(f"ids must be integers, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.max() > np.iinfo(np.int64).max:
        raise XmrError(f"ids must fit in int64, got {a.max()}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.min() < 0:
        raise XmrError(f"ids must be >= 0 (-1 marks a missing result), got {a.min()}")
    uniq, counts = np.unique(a, return_counts=True)
    if uniq.size < n:
        raise XmrError(f"ids contain duplicates, e.g. {int(uniq[counts > 1][0])}")
    if ntotal:
        clash = (uniq[uniq < ntotal] if slot_ids is None
                 else np.intersect1d(uniq, live_ids(slot_ids, ntotal), assume_unique=True))
        if clash.size:
            raise XmrError(f"id {int(clash[0])} is already in the index "
                           f"({clash.size} clashing ids)")
    return a
