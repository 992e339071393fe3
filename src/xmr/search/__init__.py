"""Searching a learned space: a model plus an index of gallery images and texts."""

from __future__ import annotations

from xmr.search.searcher import SearchHit, Searcher

__all__ = ["SearchHit", "Searcher"]
