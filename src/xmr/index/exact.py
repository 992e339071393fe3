"""Exact inner-product top-k over vectors that come in chunks, and the recall of an index against it.

The reference every approximate index is measured by: at build time (``xmr index``'s cross-modal
check, over RAM or over shards) and in the benchmarks (ground truth over generated streams).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class TopK:
    """The running exact top-``k`` inner products of ``queries`` (shape ``(nq, dim)``) over added chunks."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
        self.ids = np.full((queries.shape[0], k), -1, dtype=np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Merge a chunk in. ``vectors`` shape ``(n, dim)``, ``ids`` shape ``(n,)``."""
        s = self.queries @ vectors.T
        kk = min(self.k, s.shape[1])
        if kk == 0:
            return
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([self.scores, np.take_along_axis(s, top, axis=1)], axis=1)
        cand_i = np.concatenate([self.ids, ids[top]], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :self.k]
        self.scores = np.take_along_axis(cand_s, order, axis=1)
        self.ids = np.take_along_axis(cand_i, order, axis=1)


def exact_top_k(chunks: Iterable[tuple[np.ndarray, np.ndarray]], queries: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of the exact top-``k`` over every ``(vectors, ids)`` chunk, best first."""
    top = TopK(queries, k)
    for vectors, ids in chunks:
        top.add(vectors, ids)
    return top.scores, top.ids


def recall_at_k(got: np.ndarray, want: np.ndarray) -> float:
    """Mean share of each row of ``want`` (the exact ids) found in the same row of ``got``."""
    return float(np.mean([len(set(g.tolist()) & set(w.tolist())) / len(w) for g, w in zip(got, want, strict=True)]))
