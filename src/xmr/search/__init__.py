"""Searching a learned space: a model plus an index of gallery images and texts.

:class:`Searcher` answers text and image queries; the re-rankers of :mod:`xmr.rerank`
(``diffusion``, ``bidirectional``, ``geodesic``) re-order its shortlist on the data manifold,
from structures built beside the index.
"""

from __future__ import annotations

from xmr.search.queries import Query, read_queries
from xmr.search.searcher import QueryResult, Searcher, SearchHit

__all__ = ["Query", "QueryResult", "SearchHit", "Searcher", "read_queries"]
