"""Label-level retrieval: average precision, mAP and the cumulative match curve (CMC), as in person
re-identification and sketch-based image retrieval; numpy/scipy in, floats out.

The conventions of :mod:`xmr.evaluation.metrics` (pessimistic ties, ``chunk_rows`` blocks);
:func:`average_precisions`, :func:`average_precision`, :func:`mean_average_precision` and
:func:`cmc` return fractions in [0, 1], :func:`label_retrieval_metrics` percent.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

import numpy as np

from xmr.errors import XmrError
from xmr.evaluation.ranks import (
    Relevance,
    as_scores,
    check_chunk_rows,
    check_finite_rows,
    check_ranks,
    map_row_blocks,
    ranks_block,
)

log = logging.getLogger(__name__)


def _average_precisions_block(scores: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Non-interpolated AP per row, pessimistic ties; NaN for rows with no relevant item."""
    order = np.lexsort((rel, -scores), axis=-1)  # score descending, then non-relevant first
    hits = np.take_along_axis(rel, order, axis=1)
    precision = np.cumsum(hits, axis=1) / np.arange(1, rel.shape[1] + 1)
    n_rel = hits.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(hits, precision, 0.0).sum(axis=1) / n_rel


def average_precisions(
    scores: np.ndarray, relevance: Relevance, *, chunk_rows: int | None = None
) -> np.ndarray:
    """Average precision of every query; NaN for queries with no relevant item.

    Args:
        scores: Shape: (n_q, n_g).
        relevance: Shape: (n_q, n_g).
        chunk_rows: queries processed per step.

    Returns:
        AP in [0, 1] (NaN where undefined). Shape: (n_q,).
    """
    def block(sc: np.ndarray, rel: np.ndarray, offset: int) -> np.ndarray:
        check_finite_rows(sc, offset, "query")
        return _average_precisions_block(sc, rel)

    return map_row_blocks(scores, relevance, chunk_rows, block, np.float64)


def average_precision(scores: np.ndarray, relevance: np.ndarray) -> float:
    """Non-interpolated average precision of one ranked list.

    AP = mean over relevant items of (relevant items ranked at or above it) / (its 1-based
    position), with ties broken pessimistically (non-relevant first among equal scores).

    Args:
        scores: gallery scores of one query. Shape: (n_g,).
        relevance: True for relevant gallery items. Shape: (n_g,).

    Returns:
        AP in [0, 1].

    Raises:
        ValueError: no item is relevant.
    """
    scores = as_scores(scores, ndim=1)
    rel = np.asarray(relevance).astype(bool)
    if rel.shape != scores.shape:
        raise XmrError(f"relevance has shape {rel.shape}, scores have shape {scores.shape}")
    if not rel.any():
        raise XmrError("no relevant item: average precision is undefined")
    return float(average_precisions(scores[None], rel[None])[0])


def mean_average_precision(
    scores: np.ndarray, relevance: Relevance, *, chunk_rows: int | None = None
) -> float:
    """Mean of :func:`average_precisions` over queries that have at least one relevant item.

    Queries without a relevant item are left out of the mean (their count is logged at DEBUG
    level; :func:`label_retrieval_metrics` reports it as ``n_skipped``).

    Args:
        scores: Shape: (n_q, n_g).
        relevance: Shape: (n_q, n_g).
        chunk_rows: queries processed per step.

    Returns:
        mAP in [0, 1].

    Raises:
        ValueError: no query has a relevant item.
    """
    aps = average_precisions(scores, relevance, chunk_rows=chunk_rows)
    defined = ~np.isnan(aps)
    if not defined.any():
        raise XmrError("no query has a relevant item: mAP is undefined")
    if not defined.all():
        log.debug("mAP: %d of %d queries have no relevant item and are excluded",
                  int((~defined).sum()), aps.size)
    return float(aps[defined].mean())


def cmc(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """Cumulative match curve: fraction of queries whose first match is within the top r.

    Args:
        ranks: 0-based first-relevant ranks. Shape: (n_q,).
        max_rank: length of the curve.

    Returns:
        ``curve[r - 1]`` = fraction of queries with 1-based rank <= r, for r = 1..max_rank.
        Shape: (max_rank,).
    """
    ranks = check_ranks(ranks)
    if int(max_rank) < 1:
        raise XmrError(f"max_rank must be >= 1, got {max_rank}")
    counts = np.bincount(np.minimum(ranks, max_rank).astype(np.int64), minlength=max_rank + 1)
    return np.cumsum(counts[:max_rank]) / ranks.size


def _label_codes(labels: Sequence[Hashable] | np.ndarray, mapping: dict[Hashable, int], what: str) -> np.ndarray:
    codes = np.empty(len(labels), dtype=np.int64)
    for i, label in enumerate(labels):
        if label is None:
            raise XmrError(f"{what} {i} has no label")
        codes[i] = mapping.setdefault(label, len(mapping))
    return codes


def label_retrieval_metrics(
    query_emb: np.ndarray,
    query_labels: Sequence[Hashable] | np.ndarray,
    gallery_emb: np.ndarray,
    gallery_labels: Sequence[Hashable] | np.ndarray,
    *,
    exclude_self: bool = False,
    ks: Sequence[int] = (1, 5, 10),
    chunk_rows: int | None = None,
) -> dict[str, float]:
    """Label-level retrieval: a gallery item is relevant when it has the query's label.

    Scores are inner products (cosine similarity for L2-normalised embeddings). Queries with
    no relevant gallery item are skipped and counted.

    Args:
        query_emb: Shape: (n_q, d).
        query_labels: one hashable label per query. Shape: (n_q,).
        gallery_emb: Shape: (n_g, d).
        gallery_labels: Shape: (n_g,).
        exclude_self: the query set is the gallery set (same order); query ``i`` is removed
            from its own gallery.
        ks: CMC cut-offs.
        chunk_rows: queries processed per step.

    Returns:
        ``map`` and ``cmc{K}`` in percent, ``n_queries`` (queries evaluated) and ``n_skipped``
        (queries with no relevant gallery item).
    """
    q, g = np.asarray(query_emb), np.asarray(gallery_emb)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise XmrError(f"embedding shapes {q.shape} and {g.shape} do not match")
    if len(query_labels) != q.shape[0] or len(gallery_labels) != g.shape[0]:
        raise XmrError(f"{len(query_labels)} query labels for {q.shape[0]} queries or "
                         f"{len(gallery_labels)} gallery labels for {g.shape[0]} items")
    if exclude_self and q.shape[0] != g.shape[0]:
        raise XmrError(f"exclude_self needs query set == gallery set, got {q.shape[0]} and {g.shape[0]}")
    if not ks or min(int(k) for k in ks) < 1:
        raise XmrError(f"cut-offs K must be >= 1, got {tuple(ks)}")
    mapping: dict[Hashable, int] = {}
    q_codes = _label_codes(query_labels, mapping, "query")
    g_codes = _label_codes(gallery_labels, mapping, "gallery item")
    step = check_chunk_rows(chunk_rows, g.shape[0])
    ranks, aps = [], []
    for a in range(0, q.shape[0], step):
        b = min(a + step, q.shape[0])
        s = as_scores(q[a:b] @ g.T)
        r = q_codes[a:b, None] == g_codes[None, :]
        if exclude_self:
            keep = np.ones_like(r)
            keep[np.arange(b - a), np.arange(a, b)] = False
            s, r = s[keep].reshape(b - a, -1), r[keep].reshape(b - a, -1)
        check_finite_rows(s, a, "query")
        has = r.any(axis=1)  # queries with no match are skipped, as in re-identification
        s, r = s[has], r[has]
        ranks.append(ranks_block(s, r, a, "query"))
        aps.append(_average_precisions_block(s, r))
    all_ranks = np.concatenate(ranks)
    if all_ranks.size == 0:
        raise XmrError("no query has a relevant gallery item")
    curve = cmc(all_ranks, max(int(k) for k in ks))
    out = {"map": 100.0 * float(np.concatenate(aps).mean())}
    out.update({f"cmc{int(k)}": 100.0 * float(curve[int(k) - 1]) for k in ks})
    out["n_queries"] = int(all_ranks.size)
    out["n_skipped"] = int(q.shape[0] - all_ranks.size)
    return out
