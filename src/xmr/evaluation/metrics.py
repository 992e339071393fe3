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

The pieces live in their own modules and are re-exported here, where callers import them:
:mod:`xmr.evaluation.ranks` (first-relevant ranks, one direction or both),
:mod:`xmr.evaluation.chance` (the exact chance level), :mod:`xmr.evaluation.label_metrics`
(AP, mAP, CMC, label retrieval). This module turns ranks into the table row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmr.errors import XmrError
from xmr.evaluation.chance import chance_cross_modal_metrics, chance_recall
from xmr.evaluation.label_metrics import (
    average_precision,
    average_precisions,
    cmc,
    label_retrieval_metrics,
    mean_average_precision,
)
from xmr.evaluation.ranks import (
    Relevance,
    check_ranks,
    cross_modal_ranks,
    cross_modal_ranks_from_embeddings,
    first_relevant_ranks,
)

__all__ = [
    "PRIMARY_METRIC", "Relevance", "average_precision", "average_precisions", "chance_cross_modal_metrics",
    "chance_recall", "cmc", "cross_modal_metrics", "cross_modal_metrics_from_ranks", "cross_modal_ranks",
    "cross_modal_ranks_from_embeddings", "first_relevant_ranks", "label_retrieval_metrics",
    "mean_average_precision", "rank_metrics",
]

PRIMARY_METRIC = "rsum"
"""The key to select checkpoints on: the sum of R@1/5/10 in both directions."""


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
    ranks = check_ranks(ranks)
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
