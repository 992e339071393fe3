"""Nearest-neighbour indexes over embeddings (FAISS), numpy in and numpy out; never torch.

See :class:`Index` for the API and :func:`create_index` for the registered families.
"""

from __future__ import annotations

from xmr.index.config import IndexConfig
from xmr.index.faiss_index import Index, load_index
from xmr.index.registry import INDEXES, create_index

__all__ = ["INDEXES", "Index", "IndexConfig", "create_index", "load_index"]
