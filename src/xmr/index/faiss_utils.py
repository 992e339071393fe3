"""Small FAISS helpers: readable error messages and search-time parameters of nested indexes."""

from __future__ import annotations

import logging
import re

import faiss

logger = logging.getLogger(__name__)


def faiss_error_reason(error: BaseException) -> str:
    """The human part of a FAISS C++ error, on one line.

    FAISS messages look like ``Error in <signature> at <file>:<line>: Error: '<cond>' failed:
    <reason>``; only ``<reason>`` helps a user.
    """
    text = " ".join(str(error).split())
    for marker in ("failed: ", "Error: "):
        if marker in text:
            return text.rsplit(marker, 1)[1]
    if text.startswith("Error in ") and ": " in text:
        return text.rsplit(": ", 1)[1]
    return text


def ivf_nlist(index: faiss.Index) -> int | None:
    """Number of inverted lists of the IVF index inside ``index`` (through IDMap/PreTransform)."""
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:  # FAISS's way of saying "no IVF in here"
        return None


def has_hnsw(factory: str) -> bool:
    """Whether a factory string builds an HNSW graph (as the index or as an IVF quantizer)."""
    return "HNSW" in factory.upper()


def apply_search_params(index: faiss.Index, *, nprobe: int, ef_search: int, factory: str) -> None:
    """Set ``nprobe`` on an IVF index and ``efSearch`` on an HNSW graph, wherever they are nested.

    Parameters that do not apply to ``index`` are skipped. ``nprobe`` is clipped to ``nlist``.
    """
    space = faiss.ParameterSpace()
    nlist = ivf_nlist(index)
    if nlist is not None:
        space.set_index_parameter(index, "nprobe", min(nprobe, nlist))
    if has_hnsw(factory):
        try:  # covers HNSW indexes and IVF indexes with an HNSW quantizer
            space.set_index_parameter(index, "efSearch", ef_search)
        except RuntimeError:
            logger.warning("could not set efSearch on %r; FAISS's default is used", factory)


def suggest_factory(factory: str, n_train: int) -> str:
    """``factory`` with fewer IVF lists, so ``n_train`` vectors train it well (~39 per list)."""
    nlist = max(1, n_train // 39)
    nlist = 1 << (nlist.bit_length() - 1)  # round down to a power of two, FAISS folklore
    return re.sub(r"IVF\d+", f"IVF{nlist}", factory, count=1)
