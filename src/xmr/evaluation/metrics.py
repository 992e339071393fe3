"""Retrieval metrics over score matrices and ground truth: numpy/scipy in, floats out.

The cross-modal numbers follow the protocol of VSE++ (Faghri et al., 2018, ``evaluation.py``)
and SCAN (Lee et al., 2018) used for the Karpathy-split COCO/Flickr30K tables: an image query
hits at K when any of its relevant texts is among the top K texts, a text query when its image
is among the top K images; ``medr`` is ``floor(median(rank)) + 1``; ``rsum`` sums the six
recalls. Label-level retrieval reports mAP and the cumulative match curve (CMC) as in
person re-identification and sketch-based image retrieval.

Conventions:
    * ``scores[q, g]`` is the score of gallery item ``g`` for query ``q``; higher is better.
    * ``relevance`` is a boolean ndarray or a scipy sparse matrix of the same shape.
    * Ranks are 0-based. Ties are broken pessimistically: a relevant item is ranked after
      every non-relevant item with an equal score, so a collapsed model that gives every pair
      the same score gets no credit.
    * Low-level functions (``cmc``, ``average_precision``, ``mean_average_precision``) return
      fractions in [0, 1]; functions returning a dict report recalls, mAP and CMC in percent.
    * Score matrices are processed ``chunk_rows`` queries at a time, so temporaries stay small
      (a few tens of MB) even for 25k x 5k or 5k x 25k problems.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from scipy import sparse

from xmr.errors import XmrError
from xmr.evaluation.similarity import score_fn

log = logging.getLogger(__name__)

PRIMARY_METRIC = "rsum"
"""The key to select checkpoints on: the sum of R@1/5/10 in both directions."""

Relevance: typing.TypeAlias = "np.ndarray | sparse.spmatrix | sparse.sparray"

_CHUNK_ELEMENTS = 1 << 22  # ~4M scores per chunk: tens of MB of temporaries


def _check_chunk_rows(chunk_rows: int | None, n_cols: int) -> int:
    if chunk_rows is None:
        return max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    if int(chunk_rows) < 1:
        raise XmrError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return int(chunk_rows)


def _as_scores(scores: np.ndarray, ndim: int = 2) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != ndim:
        raise XmrError(f"scores must be {ndim}-D, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    return scores


def _as_relevance(relevance: Relevance, shape: tuple[int, ...]) -> np.ndarray | sparse.csr_matrix:
    if sparse.issparse(relevance):
        rel: np.ndarray | sparse.csr_matrix = sparse.csr_matrix(relevance)
    else:
        rel = np.asarray(relevance)
    if rel.shape != shape:
        raise XmrError(f"relevance has shape {rel.shape}, scores have shape {shape}")
    return rel


def _dense_rows(rel: np.ndarray | sparse.csr_matrix, start: int, stop: int) -> np.ndarray:
    block = rel[start:stop]
    if sparse.issparse(block):
        return typing.cast(sparse.csr_matrix, block).toarray().astype(bool, copy=False)
    return np.asarray(block).astype(bool, copy=False)


def _map_row_blocks(scores: np.ndarray, relevance: Relevance, chunk_rows: int | None,
                    block_fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray], dtype: type) -> np.ndarray:
    """Apply ``block_fn(scores_block, dense_relevance_block, offset)`` to row chunks; concatenate.

    Keeps the dense relevance temporaries to about ``_CHUNK_ELEMENTS`` entries. Shape: (n_q,).
    """
    scores = _as_scores(scores)
    rel = _as_relevance(relevance, scores.shape)
    n_q, n_g = scores.shape
    step = _check_chunk_rows(chunk_rows, n_g)
    out: np.ndarray = np.empty(n_q, dtype=dtype)
    for a in range(0, n_q, step):
        b = min(a + step, n_q)
        out[a:b] = block_fn(scores[a:b], _dense_rows(rel, a, b), a)
    return out


def _check_finite_rows(scores: np.ndarray, offset: int, query_name: str) -> None:
    bad = np.isnan(scores).any(axis=1)
    if bad.any():
        raise XmrError(f"scores of {query_name} {int(np.flatnonzero(bad)[0]) + offset} contain NaN")


def _ranks_block(scores: np.ndarray, rel: np.ndarray, offset: int, query_name: str) -> np.ndarray:
    """Pessimistic first-relevant ranks of one dense block. Shape: (rows, n_g) -> (rows,)."""
    has = rel.any(axis=1)
    if not has.all():
        i = int(np.flatnonzero(~has)[0]) + offset
        raise XmrError(f"{query_name} {i} has no relevant item")
    _check_finite_rows(scores, offset, query_name)
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
    return _map_row_blocks(scores, relevance, chunk_rows,
                           lambda sc, rel, offset: _ranks_block(sc, rel, offset, "query"), np.int64)


def _two_way_ranks(
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
    step = _check_chunk_rows(chunk_rows, n_cols)
    row_ranks = np.empty(n_rows, dtype=np.int64)
    col_best = np.full(n_cols, -np.inf)
    col_has = np.zeros(n_cols, dtype=bool)
    for a in range(0, n_rows, step):
        b = min(a + step, n_rows)
        s, r = _as_scores(row_scores(a, b)), _dense_rows(rel, a, b)
        row_ranks[a:b] = _ranks_block(s, r, a, "image")
        np.maximum(col_best, np.where(r, s, -np.inf).max(axis=0), out=col_best)
        col_has |= r.any(axis=0)
    if not col_has.all():
        raise XmrError(f"text {int(np.flatnonzero(~col_has)[0])} has no relevant item")
    col_ranks = np.zeros(n_cols, dtype=np.int64)
    for a in range(0, n_rows, step):
        b = min(a + step, n_rows)
        s, r = _as_scores(row_scores(a, b)), _dense_rows(rel, a, b)
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
    sim = _as_scores(sim)
    rel = _as_relevance(relevance, sim.shape)
    return _two_way_ranks(lambda a, b: sim[a:b], rel, chunk_rows)


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
    rel = _as_relevance(relevance, (img.shape[0], txt.shape[0]))
    score = score_fn(similarity)
    return _two_way_ranks(lambda a, b: score(img[a:b], txt), rel, chunk_rows)


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10), prefix: str = "") -> dict[str, float]:
    """Recall@K (percent), median and mean rank (1-based) of first-relevant ranks.

    Args:
        ranks: 0-based ranks as from :func:`first_relevant_ranks`. Shape: (n_q,).
        ks: cut-offs K; ``R@K`` is the percentage of queries with rank < K.
        prefix: prepended to every key, e.g. ``"i2t_"``.

    Returns:
        ``{prefix}r{K}`` for each K, ``{prefix}medr`` = floor(median(rank)) + 1 and
        ``{prefix}meanr`` = mean(rank) + 1.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise XmrError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    if (ranks < 0).any():
        raise XmrError(f"ranks must be >= 0, got {ranks.min()}")
    out: dict[str, float] = {}
    for k in ks:
        if int(k) < 1:
            raise XmrError(f"cut-off K must be >= 1, got {k}")
        out[f"{prefix}r{int(k)}"] = 100.0 * float(np.mean(ranks < k))
    out[f"{prefix}medr"] = float(np.floor(np.median(ranks)) + 1)
    out[f"{prefix}meanr"] = float(np.mean(ranks) + 1)
    return out


def cross_modal_metrics_from_ranks(
    i2t_ranks: np.ndarray, t2i_ranks: np.ndarray, *, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """The cross-modal table row from ranks in both directions.

    Args:
        i2t_ranks: 0-based rank of each image's best text. Shape: (n_img,).
        t2i_ranks: 0-based rank of each text's best image. Shape: (n_txt,).
        ks: recall cut-offs.

    Returns:
        ``i2t_r{K}``, ``i2t_medr``, ``i2t_meanr``, the same for ``t2i_``, ``rsum`` (sum of all
        recalls, both directions), ``n_images`` and ``n_texts``.
    """
    out = rank_metrics(i2t_ranks, ks, prefix="i2t_")
    out.update(rank_metrics(t2i_ranks, ks, prefix="t2i_"))
    out["rsum"] = sum(out[f"{d}_r{int(k)}"] for d in ("i2t", "t2i") for k in ks)
    out["n_images"] = len(i2t_ranks)
    out["n_texts"] = len(t2i_ranks)
    return out


def chance_recall(n_relevant: np.ndarray, n_gallery: int | np.ndarray, k: int) -> np.ndarray:
    """Exact probability that a uniformly random ranking of ``n_gallery`` items puts at least one
    of a query's ``n_relevant`` items in its top ``k``: ``1 - C(N - r, k) / C(N, k)``.

    Args:
        n_relevant: relevant items per query (>= 0). Shape: (n_q,).
        n_gallery: gallery size N, one for all queries or one per query. Shape: () or (n_q,).
        k: cut-off K >= 1.

    Returns:
        Probabilities in [0, 1] (0 for a query with nothing relevant). Shape: (n_q,).
    """
    r = np.asarray(n_relevant, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n_gallery, dtype=np.float64), r.shape)
    miss = np.ones_like(r)
    for j in range(int(k)):  # C(N-r, K) / C(N, K) = prod_j (N - r - j) / (N - j); 0 once N - r items are used up
        left = n - j
        miss *= np.where(left > 0, np.clip((left - r) / np.maximum(left, 1.0), 0.0, None), 1.0)
    return 1.0 - miss


def chance_cross_modal_metrics(relevance: Relevance, *, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """What a random ranking scores in expectation on ``relevance``, exactly (no sampling).

    Recall@K per direction is the mean over queries of :func:`chance_recall`; ``meanr`` is the
    mean of the expected first-relevant rank ``(N + 1) / (r + 1)`` (1-based); ``rsum`` sums the
    recalls. (``medr`` has no closed form per query set and is left out.)

    Args:
        relevance: True where text ``t`` describes image ``i``. Shape: (n_img, n_txt).
        ks: recall cut-offs.

    Returns:
        ``i2t_r{K}``, ``i2t_meanr``, ``t2i_r{K}``, ``t2i_meanr`` and ``rsum``, recalls in percent.
    """
    rel = sparse.csr_matrix(relevance, dtype=bool) if sparse.issparse(relevance) else \
        sparse.csr_matrix(np.asarray(relevance, dtype=bool))
    n_img, n_txt = rel.shape
    if n_img == 0 or n_txt == 0:
        raise XmrError(f"empty relevance matrix of shape {rel.shape}")
    out: dict[str, float] = {}
    for direction, per_query, n_gallery in (("i2t", rel.getnnz(axis=1), n_txt), ("t2i", rel.getnnz(axis=0), n_img)):
        for k in ks:
            if int(k) < 1:
                raise XmrError(f"cut-off K must be >= 1, got {k}")
            out[f"{direction}_r{int(k)}"] = 100.0 * float(np.mean(chance_recall(per_query, n_gallery, int(k))))
        out[f"{direction}_meanr"] = float(np.mean((n_gallery + 1) / (per_query + 1.0)))
    out["rsum"] = sum(out[f"{d}_r{int(k)}"] for d in ("i2t", "t2i") for k in ks)
    return out


def cross_modal_metrics(
    sim: np.ndarray, relevance: Relevance, *, ks: Sequence[int] = (1, 5, 10), chunk_rows: int | None = None
) -> dict[str, float]:
    """Image->text and text->image retrieval metrics of a similarity matrix.

    Example:
        >>> sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.1, 0.2, 0.3]])
        >>> m = cross_modal_metrics(sim, np.eye(3, dtype=bool))
        >>> round(m["i2t_r1"], 2), m["i2t_medr"]
        (66.67, 1.0)

    Args:
        sim: image-text similarities. Shape: (n_img, n_txt).
        relevance: True where text ``t`` describes image ``i``. Shape: (n_img, n_txt).
        ks: recall cut-offs.
        chunk_rows: images processed per step.

    Returns:
        See :func:`cross_modal_metrics_from_ranks`; ``PRIMARY_METRIC`` is ``"rsum"``.
    """
    i2t, t2i = cross_modal_ranks(sim, relevance, chunk_rows=chunk_rows)
    return cross_modal_metrics_from_ranks(i2t, t2i, ks=ks)


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
        _check_finite_rows(sc, offset, "query")
        return _average_precisions_block(sc, rel)

    return _map_row_blocks(scores, relevance, chunk_rows, block, np.float64)


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
    scores = _as_scores(scores, ndim=1)
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
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise XmrError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    if (ranks < 0).any():
        raise XmrError(f"ranks must be >= 0, got {ranks.min()}")
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
    step = _check_chunk_rows(chunk_rows, g.shape[0])
    ranks, aps = [], []
    for a in range(0, q.shape[0], step):
        b = min(a + step, q.shape[0])
        s = _as_scores(q[a:b] @ g.T)
        r = q_codes[a:b, None] == g_codes[None, :]
        if exclude_self:
            keep = np.ones_like(r)
            keep[np.arange(b - a), np.arange(a, b)] = False
            s, r = s[keep].reshape(b - a, -1), r[keep].reshape(b - a, -1)
        _check_finite_rows(s, a, "query")
        has = r.any(axis=1)  # queries with no match are skipped, as in re-identification
        s, r = s[has], r[has]
        ranks.append(_ranks_block(s, r, a, "query"))
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
