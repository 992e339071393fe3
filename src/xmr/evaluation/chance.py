"""What a uniformly random ranking scores, exactly (no sampling): the chance level of the recall tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from xmr.errors import XmrError
from xmr.evaluation.ranks import Relevance


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
