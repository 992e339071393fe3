"""Gallery-guided truncation (heterogeneous-manifolds paper, Sec. 3.4).

The query lives in another modality, so its neighbourhood cannot be searched in the gallery's
own feature space directly. Instead its few nearest gallery items in the *cross-modal* space
(the seeds) each contribute their neighbourhood in the gallery's *own* space; the union is the
range the random walk runs on. Outside the range scores are 0.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from xmr.errors import XmrError
from xmr.rerank.diffusion import check_alpha


def gallery_guided_ranges(seed_ids: np.ndarray, gallery_neighbours: np.ndarray) -> list[np.ndarray]:
    """Per query: sorted union of its seeds and the seeds' own-space neighbours.

    Args:
        seed_ids: each query's nearest gallery items in the cross-modal space. Shape: (q, n_seeds).
        gallery_neighbours: each gallery item's neighbours in its own space. Shape: (m, k_g).
    """
    seed_ids = np.atleast_2d(np.asarray(seed_ids, dtype=np.int64))
    gallery_neighbours = np.asarray(gallery_neighbours, dtype=np.int64)
    m = len(gallery_neighbours)
    if seed_ids.size and (seed_ids.min() < 0 or seed_ids.max() >= m):
        raise XmrError(f"seed ids must lie in [0, {m}) (the gallery size)")
    return [np.union1d(seeds, gallery_neighbours[seeds].ravel()) for seeds in seed_ids]


def truncated_walk_scores(s_gallery: sp.spmatrix, s_cross: sp.spmatrix, ranges: list[np.ndarray], *,
                          alpha: float = 0.99, tol: float = 1e-6, maxiter: int = 100) -> np.ndarray:
    """L_T^-1 S_xy restricted to each query's range T (Eq. 7 on the truncated graph).

    Args:
        s_gallery: normalised gallery graph S_xx. Shape: (m, m).
        s_cross: row-normalised cross block S_xy (gallery rows, query columns). Shape: (m, q).
        ranges: per query, the gallery ids to walk on (see :func:`gallery_guided_ranges`).

    Returns:
        Scores of every gallery item for every query, 0 outside the range. Shape: (q, m).
    """
    check_alpha(alpha)
    s_gallery = sp.csr_matrix(s_gallery, dtype=np.float64)
    s_cross = sp.csc_matrix(s_cross, dtype=np.float64)
    m, q = s_cross.shape
    if s_gallery.shape != (m, m) or len(ranges) != q:
        raise XmrError(f"need S_xx ({m}, {m}) and one range per query ({q}); got {s_gallery.shape} and "
                       f"{len(ranges)} ranges")
    out = np.zeros((q, m))
    for j, t in enumerate(ranges):
        rhs = s_cross[:, j].toarray().ravel()[t]
        if not rhs.any():
            continue
        lap = sp.identity(len(t), format="csr") - alpha * s_gallery[t][:, t]
        f, info = cg(lap, rhs, rtol=tol, maxiter=maxiter)
        if info < 0:
            raise XmrError(f"conjugate gradient failed for query {j}")
        out[j, t] = f
    return out


def truncated_bidirectional_scores(s_xx: sp.spmatrix, s_xy: sp.spmatrix, s_yy: sp.spmatrix, s_yx: sp.spmatrix,
                                   ranges_x: list[np.ndarray], ranges_y: list[np.ndarray], *,
                                   alpha: float = 0.99, lam: float = 0.5, tol: float = 1e-6,
                                   maxiter: int = 100) -> np.ndarray:
    """Eq. 8 with each direction's walk truncated: B = lam F_x + (1 - lam) F_y. Shape: (m, n).

    Args:
        s_xx, s_yy: normalised own-space graphs of X (m) and Y (n).
        s_xy, s_yx: row-normalised cross blocks, shapes (m, n) and (n, m).
        ranges_x: per Y item, the X ids its walk over X may visit (n lists).
        ranges_y: per X item, the Y ids its walk over Y may visit (m lists).
    """
    if not 0.0 <= lam <= 1.0:
        raise XmrError(f"lambda must be in [0, 1], got {lam}")
    m, n = sp.csr_matrix(s_xy).shape
    out = np.zeros((m, n))
    if lam > 0:
        out += lam * truncated_walk_scores(s_xx, s_xy, ranges_x, alpha=alpha, tol=tol, maxiter=maxiter).T
    if lam < 1:
        out += (1.0 - lam) * truncated_walk_scores(s_yy, s_yx, ranges_y, alpha=alpha, tol=tol, maxiter=maxiter)
    return out
