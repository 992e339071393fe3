"""Composed-query retrieval metrics (the CSS / TIRG protocol).

A query (reference image + modification text) ranks every gallery image except its own reference
image; it is a hit at K when an image of the target's identity (the same scene / emoji, see
:func:`xmr.data.triplets.target_identity`) is among the first K. Ties are pessimistic: a target
ranks after every non-target image with an equal score, like :mod:`xmr.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmr.errors import XmrError
from xmr.evaluation.metrics import chance_recall, rank_metrics

COMPOSED_KS = (1, 10, 50)


def composed_ranks(queries: np.ndarray, gallery: np.ndarray, target_identity: np.ndarray,
                   gallery_identity: np.ndarray, exclude: np.ndarray | None = None, *,
                   chunk_rows: int = 1024) -> np.ndarray:
    """0-based rank of the first target-identity image for every query.

    Args:
        queries: composed query embeddings. Shape: (n_q, d).
        gallery: gallery image embeddings (same space). Shape: (n_g, d).
        target_identity: identity code of each query's target. Shape: (n_q,), int.
        gallery_identity: identity code of each gallery image. Shape: (n_g,), int.
        exclude: gallery index of each query's reference image (left out of its ranking), or
            -1 for none. Shape: (n_q,), int.
        chunk_rows: queries scored per block (memory: chunk_rows x n_g floats).

    Returns:
        Ranks; ``n_g`` when no gallery image has the target identity. Shape: (n_q,).
    """
    q, g = np.asarray(queries, np.float32), np.asarray(gallery, np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise XmrError(f"query and gallery embeddings must be (n, d) with one d, got {q.shape} and {g.shape}")
    t_id, g_id = np.asarray(target_identity), np.asarray(gallery_identity)
    if t_id.shape != (len(q),) or g_id.shape != (len(g),):
        raise XmrError("one target identity per query and one identity per gallery image are needed")
    excl = np.full(len(q), -1) if exclude is None else np.asarray(exclude)
    ranks = np.empty(len(q), dtype=np.int64)
    for a in range(0, len(q), chunk_rows):
        b = min(a + chunk_rows, len(q))
        s = q[a:b] @ g.T  # (c, n_g)
        rows = np.arange(b - a)
        has_excl = excl[a:b] >= 0
        s[rows[has_excl], excl[a:b][has_excl]] = -np.inf  # the reference image is not a candidate
        hit = g_id[None, :] == t_id[a:b, None]
        hit[rows[has_excl], excl[a:b][has_excl]] = False
        best = np.where(hit, s, -np.inf).max(axis=1)  # the best-scored target image
        others = np.where(hit, -np.inf, s)
        r = (others >= best[:, None]).sum(axis=1)  # non-targets scoring at least as high
        ranks[a:b] = np.where(hit.any(axis=1), r, len(g))
    return ranks


def composed_metrics(queries: np.ndarray, gallery: np.ndarray, target_identity: np.ndarray,
                     gallery_identity: np.ndarray, exclude: np.ndarray | None = None, *,
                     ks: Sequence[int] = COMPOSED_KS) -> dict[str, float]:
    """R@K (percent) for ``ks``, their sum ``rsum``, median / mean rank of :func:`composed_ranks`."""
    ranks = composed_ranks(queries, gallery, target_identity, gallery_identity, exclude)
    out = rank_metrics(ranks, ks)
    out["rsum"] = float(sum(out[f"r{int(k)}"] for k in ks))
    out["n_queries"] = float(len(ranks))
    return out


def composed_chance(target_identity: np.ndarray, gallery_identity: np.ndarray, exclude: np.ndarray | None = None,
                    *, ks: Sequence[int] = COMPOSED_KS) -> dict[str, float]:
    """The exact expected R@K (percent) and ``rsum`` of a random ranking under :func:`composed_ranks`'
    protocol: each query's gallery is every image but its reference, its relevant ones those of
    the target identity (shapes as in :func:`composed_ranks`)."""
    t_id, g_id = np.asarray(target_identity), np.asarray(gallery_identity)
    codes, counts = np.unique(g_id, return_counts=True)
    pos = np.searchsorted(codes, t_id).clip(0, len(codes) - 1)
    relevant = np.where(codes[pos] == t_id, counts[pos], 0).astype(np.int64)
    n_gallery = np.full(len(t_id), len(g_id), dtype=np.int64)
    if exclude is not None:
        excl = np.asarray(exclude)
        has = excl >= 0
        n_gallery[has] -= 1
        relevant[has] -= (g_id[excl[has]] == t_id[has]).astype(np.int64)  # the reference is not a candidate
    out = {f"r{int(k)}": 100.0 * float(np.mean(chance_recall(relevant, n_gallery, int(k)))) for k in ks}
    out["rsum"] = float(sum(out[f"r{int(k)}"] for k in ks))
    return out
