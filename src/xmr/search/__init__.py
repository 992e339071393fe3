"""Searching a learned space: a model plus an index of gallery images and texts.

:class:`Searcher` answers text and image queries; the re-rankers of
:mod:`xmr.search.rerankers` (``diffusion``, ``bidirectional``, ``geodesic``) re-order its
shortlist on the data manifold, from structures built beside the index.
"""

from __future__ import annotations

from xmr.search.rerankers import (
                                  RERANKERS,
                                  GalleryVectors,
                                  Reranker,
                                  create_reranker,
                                  load_reranker,
                                  rerankers_from_strings,
)
from xmr.search.searcher import Searcher, SearchHit

__all__ = ["RERANKERS", "GalleryVectors", "Reranker", "SearchHit", "Searcher", "create_reranker", "load_reranker",
           "rerankers_from_strings"]
