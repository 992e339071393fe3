"""First-relevant ranks of score matrices, a block of query rows at a time: numpy/scipy in, ranks out.

The conventions of :mod:`xmr.evaluation.metrics`: ``scores[q, g]`` is gallery item ``g``'s score for
query ``q`` (higher is better); ``relevance`` is a boolean ndarray or scipy sparse matrix of the
same shape; ranks are 0-based, ties broken pessimistically (a relevant item ranks after every
non-relevant item with an equal score). Score matrices are processed ``chunk_rows`` queries at a
time, so temporaries stay near :data:`CHUNK_ELEMENTS` scores (tens of MB) even for 25k x 5k
problems; :func:`cross_modal_ranks_from_embeddings` never builds the full matrix at all.

The block helpers here (:func:`as_scores`, :func:`map_row_blocks`, :func:`ranks_block`, ...) are
shared by the label metrics (:mod:`xmr.evaluation.label_metrics`).
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import numpy as np
from scipy import sparse

from xmr.errors import XmrError
from xmr.evaluation.similarity import score_fn

Relevance: typing.TypeAlias = "np.ndarray | sparse.spmatrix | sparse.sparray"

CHUNK_ELEMENTS = 1 << 22
"""Scores per chunk by default (~4M: tens of MB of temporaries)."""


def check_chunk_rows(chunk_rows: int | None, n_cols: int) -> int:
    """Rows per block: ``chunk_rows`` checked (>= 1), or by default about :data:`CHUNK_ELEMENTS` / ``n_cols``."""
    if chunk_rows is None:
        return max(1, CHUNK_ELEMENTS // max(1, n_cols))
    if int(chunk_rows) < 1:
        raise XmrError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return int(chunk_rows)


def as_scores(scores: np.ndarray, ndim: int = 2) -> np.ndarray:
    """``scores`` as an ``ndim``-D float array (integers become float64); another rank is an XmrError."""
    scores = np.asarray(scores)
    if scores.ndim != ndim:
        raise XmrError(f"scores must be {ndim}-D, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    return scores


def as_relevance(relevance: Relevance, shape: tuple[int, ...]) -> np.ndarray | sparse.csr_matrix:
    """``relevance`` as an ndarray or a CSR matrix (rows sliced cheaply), checked to have the scores' ``shape``."""
    if sparse.issparse(relevance):
        rel: np.ndarray | sparse.csr_matrix = sparse.csr_matrix(relevance)
    else:
        rel = np.asarray(relevance)
    if rel.shape != shape:
        raise XmrError(f"relevance has shape {rel.shape}, scores have shape {shape}")
    return rel


def dense_rows(rel: np.ndarray | sparse.csr_matrix, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``rel`` as a dense boolean block. Shape: (stop - start, n_g)."""
    block = rel[start:stop]
    if sparse.issparse(block):
        return typing.cast(sparse.csr_matrix, block).toarray().astype(bool, copy=False)
    return np.asarray(block).astype(bool, copy=False)


def map_row_blocks(scores: np.ndarray, relevance: Relevance, chunk_rows: int | None,
                   block_fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray], dtype: type) -> np.ndarray:
    """Apply ``block_fn(scores_block, dense_relevance_block, offset)`` to row chunks; concatenate.

    Keeps the dense relevance temporaries to about ``CHUNK_ELEMENTS`` entries. Shape: (n_q,).
    """
    scores = as_scores(scores)
    rel = as_relevance(relevance, scores.shape)
    n_q, n_g = scores.shape
    step = check_chunk_rows(chunk_rows, n_g)
    out: np.ndarray = np.empty(n_q, dtype=dtype)
    for a in range(0, n_q, step):
        b = min(a + step, n_q)
        out[a:b] = block_fn(scores[a:b], dense_rows(rel, a, b), a)
    return out


def check_ranks(ranks: np.ndarray) -> np.ndarray:
    """``ranks`` as an array, checked: 0-based first-relevant ranks, non-empty. Shape: (n_q,)."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise XmrError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    if (ranks < 0).any():
        raise XmrError(f"ranks must be >= 0, got {ranks.min()}")
    return ranks


def check_finite_rows(scores: np.ndarray, offset: int, query_name: str) -> None:
    """Refuse a block with NaN scores, naming the first such row as ``query_name offset + row``."""
    bad = np.isnan(scores).any(axis=1)
    if bad.any():
        raise XmrError(f"scores of {query_name} {int(np.flatnonzero(bad)[0]) + offset} contain NaN")


def ranks_block(scores: np.ndarray, rel: np.ndarray, offset: int, query_name: str) -> np.ndarray:
    """Pessimistic first-relevant ranks of one dense block. Shape: (rows, n_g) -> (rows,)."""
    has = rel.any(axis=1)
    if not has.all():
        i = int(np.flatnonzero(~has)[0]) + offset
        raise XmrError(f"{query_name} {i} has no relevant item")
    check_finite_rows(scores, offset, query_name)
    best = np.where(rel, scores, -np.inf).max(axis=1)
    return np.count_nonzero((scores >= best[:, None]) & ~rel, axis=1)


def first_relevant_ranks(
    scores: np.ndarray, relevance: Relevance, *, chunk_rows: int | None = None
) -> np.ndarray:
    """0-based rank of the best-ranked relevant gallery item of each query.

    The rank is the number of non-relevant items scoring at least as high as the best relevant
    item (ties broken pessimistically).

    Args:
        scores: query-gallery scores, higher is better. Shape: (n_q, n_g).
        relevance: True where gallery item ``g`` is relevant to query ``q``; a boolean ndarray
            or scipy sparse matrix. Shape: (n_q, n_g).
        chunk_rows: queries scored per step; default keeps each step near 4M scores.

    Returns:
        Integer ranks. Shape: (n_q,).

    Raises:
        ValueError: a query has no relevant item (its index is named), scores contain NaN,
            or shapes disagree.
    """
    return map_row_blocks(scores, relevance, chunk_rows,
                           lambda sc, rel, offset: ranks_block(sc, rel, offset, "query"), np.int64)


def two_way_ranks(
    row_scores: Callable[[int, int], np.ndarray],
    rel: np.ndarray | sparse.csr_matrix,
    chunk_rows: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row-query and column-query ranks of one score matrix, produced a block of rows at a time.

    Both directions see exactly the same score values, and the full matrix never exists.
    Pass 1 ranks the row queries and finds each column's best relevant score; pass 2 counts,
    per column, the non-relevant rows scoring at least that much.
    """
    n_rows, n_cols = rel.shape
    if n_rows == 0 or n_cols == 0:
        raise XmrError(f"empty score matrix of shape {rel.shape}")
    step = check_chunk_rows(chunk_rows, n_cols)
    row_ranks = np.empty(n_rows, dtype=np.int64)
    col_best = np.full(n_cols, -np.inf)
    col_has = np.zeros(n_cols, dtype=bool)
    for a in range(0, n_rows, step):
        b = min(a + step, n_rows)
        s, r = as_scores(row_scores(a, b)), dense_rows(rel, a, b)
        row_ranks[a:b] = ranks_block(s, r, a, "image")
        np.maximum(col_best, np.where(r, s, -np.inf).max(axis=0), out=col_best)
        col_has |= r.any(axis=0)
    if not col_has.all():
        raise XmrError(f"text {int(np.flatnonzero(~col_has)[0])} has no relevant item")
    col_ranks = np.zeros(n_cols, dtype=np.int64)
    for a in range(0, n_rows, step):
        b = min(a + step, n_rows)
        s, r = as_scores(row_scores(a, b)), dense_rows(rel, a, b)
        col_ranks += np.count_nonzero((s >= col_best) & ~r, axis=0)
    return row_ranks, col_ranks


def cross_modal_ranks(
    sim: np.ndarray, relevance: Relevance, *, chunk_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """First-relevant ranks in both directions of an image-text similarity matrix.

    Args:
        sim: image-text similarities. Shape: (n_img, n_txt).
        relevance: True where text ``t`` describes image ``i``. Shape: (n_img, n_txt).
        chunk_rows: images processed per step.

    Returns:
        ``(i2t_ranks, t2i_ranks)``: for each image the rank of its best text among all texts,
        shape (n_img,); for each text the rank of its best image among all images, shape (n_txt,).
    """
    sim = as_scores(sim)
    rel = as_relevance(relevance, sim.shape)
    return two_way_ranks(lambda a, b: sim[a:b], rel, chunk_rows)


def cross_modal_ranks_from_embeddings(
    img_emb: np.ndarray, txt_emb: np.ndarray, relevance: Relevance, *, chunk_rows: int | None = None,
    similarity: str = "cosine",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cross_modal_ranks` of ``img_emb @ txt_emb.T`` without building the full matrix.

    Args:
        img_emb: image embeddings. Shape: (n_img, d).
        txt_emb: text embeddings. Shape: (n_txt, d).
        relevance: Shape: (n_img, n_txt).
        chunk_rows: images scored per step.
        similarity: a registered :data:`xmr.evaluation.similarity.SIMILARITIES` name (``cosine`` is the
            inner product above; ``order`` is GXN's order-violation score).

    Returns:
        ``(i2t_ranks, t2i_ranks)`` of shapes (n_img,) and (n_txt,).
    """
    img, txt = np.asarray(img_emb), np.asarray(txt_emb)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise XmrError(f"embedding shapes {img.shape} and {txt.shape} do not match")
    rel = as_relevance(relevance, (img.shape[0], txt.shape[0]))
    score = score_fn(similarity)
    return two_way_ranks(lambda a, b: score(img[a:b], txt), rel, chunk_rows)
