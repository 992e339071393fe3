"""Registered index families and :func:`create_index`, the one way to build an index by name.

    index = create_index("flat", dim=256, model_id="clip-b32")          # exact
    index = create_index("hnsw", dim=256, ef_search=128)                 # graph, HNSW32
    index = create_index("faiss", dim=256, factory="IVF1024,PQ32", nprobe=32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from xmr.errors import XmrError
from xmr.index.config import IndexConfig
from xmr.index.faiss_index import Index
from xmr.registry import Registry

INDEXES: Registry[Callable[..., Index]] = Registry("index")


@INDEXES.register("flat")
def flat_index(*, dim: int, metric: Literal["ip", "l2"] = "ip",
               model_id: str | None = None) -> Index:
    """Exact search by brute force (FAISS ``IndexFlatIP`` / ``IndexFlatL2``); recall is 1."""
    return Index(IndexConfig(dim=dim, factory="Flat", metric=metric, model_id=model_id))


@INDEXES.register("faiss")
def faiss_factory_index(*, dim: int, factory: str, metric: Literal["ip", "l2"] = "ip",
                        model_id: str | None = None, nprobe: int = 16,
                        ef_search: int = 64, refine: int = 0,
                        store_dtype: Literal["float16", "float32"] = "float16") -> Index:
    """Any FAISS ``index_factory`` string, e.g. ``"IVF1024,Flat"``, ``"OPQ32,IVF4096,PQ32"``;
    ``refine``: re-score that many candidates exactly from a stored copy of the vectors (IVF)."""
    return Index(IndexConfig(dim=dim, factory=factory, metric=metric, model_id=model_id,
                             nprobe=nprobe, ef_search=ef_search, refine=refine, store_dtype=store_dtype))


@INDEXES.register("hnsw")
def hnsw_index(*, dim: int, m: int = 32, metric: Literal["ip", "l2"] = "ip",
               model_id: str | None = None, ef_search: int = 64) -> Index:
    """HNSW graph with ``m`` links per node (``"HNSW32"`` by default); no training needed."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise XmrError(f"m must be an integer >= 2, got {m!r}")
    return Index(IndexConfig(dim=dim, factory=f"HNSW{m}", metric=metric, model_id=model_id,
                             ef_search=ef_search))


def create_index(name: str = "flat", *, dim: int, **kwargs: object) -> Index:
    """Build an empty index of the registered family ``name``.

    Args:
        name: One of ``INDEXES.names()``: ``"flat"``, ``"faiss"``, ``"hnsw"``.
        dim: Vector dimension.
        **kwargs: Family options (``metric``, ``model_id``, ``factory``, ``nprobe``,
            ``ef_search``, ``refine``, ``store_dtype``, ``m``), see each family's function.

    Raises:
        XmrError: unknown ``name``.
        ValueError: an invalid option value.
    """
    return INDEXES.get(name)(dim=dim, **kwargs)
