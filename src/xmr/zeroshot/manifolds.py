"""Bi-directional random walks between two modalities, homogeneous or heterogeneous (numpy/scipy).

Heterogeneous-manifolds paper (Yang et al., AAAI 2020), Eqs. 1-8 and Sec. 3.4, built from the
primitives in :mod:`xmr.rerank`. Two sets, A (m items) and B (n items), each with

* an *own-space* embedding, used for its within-set graph (Eq. 1 diagonal blocks, Eq. 2): the
  single-modal model's space for "hetero", the cross-modal space for "homo";
* a *cross-modal* embedding (both sets in one space), used for the cross block A_ab (Eq. 1)
  and for the seeds of gallery-guided truncation (Sec. 3.4).

:func:`walk_both_ways` returns the two one-directional walks (Eq. 7): ``w_ab[i, j]`` is the
score of b_j when the walk starts from a_i and runs on B's graph, and ``w_ba`` the converse.
For queries A and gallery B, Eq. 8 is then ``lam * w_ab + (1 - lam) * w_ba.T`` (:func:`fuse`):
lam = 1 is the query's own walk on the gallery manifold, lam = 0 the gallery items' walks on
the query manifold. No vector here is assumed to come from a torch model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from xmr.errors import XmrError
from xmr.evaluation.metrics import cmc, first_relevant_ranks, mean_average_precision
from xmr.rerank import (
    cross_knn_affinity,
    gallery_guided_ranges,
    knn,
    mutual_knn_affinity,
    random_walk_scores,
    row_normalize,
    symmetric_normalize,
    truncated_walk_scores,
)


@dataclass(frozen=True)
class WalkConfig:
    """Graph and walk hyper-parameters.

    Attributes:
        k: neighbours of the mutual kNN graph within each set (Eq. 1, A_aa and A_bb).
        k_cross: neighbours of the mutual kNN graph across the sets (Eq. 1, A_ab).
        alpha: restart parameter of the walk, in (0, 1) (Eq. 4).
        gamma: affinity exponent, a_ij = max(0, <u, v>)^gamma.
        n_seeds: gallery-guided truncation (Sec. 3.4): each walk may visit only its n_seeds
            nearest items of the other set in the cross-modal space and their ``k_trunc``
            own-space neighbours; 0 turns truncation off (the walk sees the whole set).
        k_trunc: own-space neighbours per seed.
    """

    k: int = 10
    k_cross: int = 10
    alpha: float = 0.9
    gamma: float = 1.0
    n_seeds: int = 0
    k_trunc: int = 30

    def __post_init__(self) -> None:
        if self.k < 1 or self.k_cross < 1 or self.k_trunc < 1 or self.n_seeds < 0:
            raise XmrError(f"need k, k_cross, k_trunc >= 1 and n_seeds >= 0; got {self}")
        if not 0.0 < self.alpha < 1.0:
            raise XmrError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.gamma <= 0:
            raise XmrError(f"gamma must be > 0, got {self.gamma}")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _own_graph(x: np.ndarray, cfg: WalkConfig) -> sp.csr_matrix:
    return symmetric_normalize(mutual_knn_affinity(x, min(cfg.k, len(x) - 1), gamma=cfg.gamma))


def _one_way(s_target: sp.csr_matrix, s_cross: sp.csr_matrix, start_cross: np.ndarray, target_cross: np.ndarray,
             target_own: np.ndarray, cfg: WalkConfig) -> np.ndarray:
    """Walks from every start item over the target set's graph. Shape: (n_start, n_target)."""
    if cfg.n_seeds == 0:
        return random_walk_scores(s_target, s_cross, alpha=cfg.alpha).T
    _, seeds = knn(start_cross, min(cfg.n_seeds, len(target_cross)), y=target_cross)
    _, neigh = knn(target_own, min(cfg.k_trunc, len(target_own) - 1))
    ranges = gallery_guided_ranges(seeds, neigh)
    return truncated_walk_scores(s_target, s_cross, ranges, alpha=cfg.alpha)


def walk_both_ways(a_own: np.ndarray, b_own: np.ndarray, a_cross: np.ndarray, b_cross: np.ndarray,
                   cfg: WalkConfig) -> tuple[np.ndarray, np.ndarray]:
    """The two one-directional walks of Eq. 7 between sets A and B.

    Args:
        a_own, b_own: L2-normalised own-space embeddings. Shapes: (m, d_a), (n, d_b).
        a_cross, b_cross: L2-normalised cross-modal embeddings. Shapes: (m, d), (n, d).
        cfg: graph and walk hyper-parameters.

    Returns:
        ``(w_ab, w_ba)``: walks from A over B's graph, shape (m, n), and from B over A's graph,
        shape (n, m); non-negative, 0 where a walk never arrives.
    """
    if len(a_own) != len(a_cross) or len(b_own) != len(b_cross):
        raise XmrError(f"own and cross embeddings must have the same rows: {len(a_own)} vs {len(a_cross)}, "
                         f"{len(b_own)} vs {len(b_cross)}")
    s_aa, s_bb = _own_graph(a_own, cfg), _own_graph(b_own, cfg)
    a_ab = cross_knn_affinity(a_cross, b_cross, min(cfg.k_cross, len(a_cross), len(b_cross)), gamma=cfg.gamma)
    s_ab, s_ba = row_normalize(a_ab), row_normalize(a_ab.T)  # Sec. 3.3: cross blocks l1 by row
    # a walk starting at a_i enters B through column i of S_ba (B rows, A columns)
    w_ab = _one_way(s_bb, s_ba, a_cross, b_cross, b_own, cfg)
    w_ba = _one_way(s_aa, s_ab, b_cross, a_cross, a_own, cfg)
    return np.clip(w_ab, 0.0, None), np.clip(w_ba, 0.0, None)


def fuse(w_qg: np.ndarray, w_gq: np.ndarray, lam: float) -> np.ndarray:
    """Eq. 8 for queries Q and gallery G: lam * w_qg + (1 - lam) * w_gq.T. Shape: (n_q, n_g).

    Args:
        w_qg: walks from each query over the gallery graph. Shape: (n_q, n_g).
        w_gq: walks from each gallery item over the query graph. Shape: (n_g, n_q).
        lam: weight of the query-side walk, in [0, 1].
    """
    if not 0.0 <= lam <= 1.0:
        raise XmrError(f"lambda must be in [0, 1], got {lam}")
    if w_gq.shape != w_qg.shape[::-1]:
        raise XmrError(f"w_gq must have shape {w_qg.shape[::-1]}, got {w_gq.shape}")
    return lam * w_qg + (1.0 - lam) * w_gq.T


def with_fallback(primary: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rank by ``primary``; items it leaves at 0 (never reached by a walk) go after, by ``fallback``.

    The walk scores of a query whose cross-block row is empty, or of gallery items outside its
    truncation range, are all exactly 0; the evaluation counts ties against the query, so
    without this those items would all rank last together. Ties inside ``primary`` (equal
    non-zero scores) are also broken by ``fallback``.

    Args:
        primary: walk scores, >= 0. Shape: (n_q, n_g).
        fallback: e.g. cross-modal cosine similarities. Shape: (n_q, n_g).

    Returns:
        Scores whose row order is lexicographic (primary, then fallback): each row holds the
        positions 0..n_g-1, higher is better. Shape: (n_q, n_g), float64.
    """
    primary, fallback = np.asarray(primary, dtype=np.float64), np.asarray(fallback, dtype=np.float64)
    if primary.shape != fallback.shape or primary.ndim != 2:
        raise XmrError(f"primary and fallback must be equal 2-D shapes, got {primary.shape} and {fallback.shape}")
    order = np.lexsort((fallback, np.clip(primary, 0.0, None)), axis=-1)  # ascending; last key is primary
    out = np.empty_like(primary)
    np.put_along_axis(out, order, np.broadcast_to(np.arange(primary.shape[1], dtype=np.float64), primary.shape),
                      axis=1)
    return out


def retrieval_metrics(scores: np.ndarray, relevance: np.ndarray, *, ranks: Sequence[int] = (1, 5, 10, 20)
                      ) -> dict[str, float]:
    """CMC Rank-K and mAP in percent, ties counted against the query.

    Args:
        scores: query-gallery scores, higher is better. Shape: (n_q, n_g).
        relevance: True where gallery item g shows the query's identity. Shape: (n_q, n_g).
        ranks: the K of Rank-K.

    Returns:
        ``{"rank1", "rank5", ..., "mAP"}``.
    """
    first = first_relevant_ranks(scores, relevance)
    curve = cmc(first, max(ranks))
    out = {f"rank{k}": 100.0 * float(curve[k - 1]) for k in ranks}
    out["mAP"] = 100.0 * mean_average_precision(scores, relevance)
    return out
