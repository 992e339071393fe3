"""Sparse kNN affinity graphs and their normalisations (heterogeneous-manifolds paper, Eqs. 1-3).

Within one set X the affinity is the mutual (reciprocal) kNN graph: a_ij = max(0, <x_i, x_j>)^gamma
when x_j is among the k nearest neighbours of x_i *and* x_i among those of x_j (i != j), else 0.
Across two sets X, Y the same rule holds with neighbours looked up in the other set. Within-set
blocks are normalised symmetrically, S = D^-1/2 A D^-1/2 (Eq. 2); cross blocks by row-l1.
Vectors are assumed L2-normalised (inner product = cosine similarity).
"""

from __future__ import annotations

import faiss
import numpy as np
import scipy.sparse as sp

from xmr.errors import XmrError


def _as_rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise XmrError(f"{what} must be a non-empty (n, d) array, got shape {x.shape}")
    return x


def knn(x: np.ndarray, k: int, *, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product kNN with FAISS.

    Args:
        x: queries. Shape: (n, d).
        k: neighbours per query.
        y: the set searched; None searches ``x`` itself and leaves each point out of its own list.

    Returns:
        ``(sims, ids)``, each of shape (n, k), best first.
    """
    x = _as_rows(x, "x")
    base = x if y is None else _as_rows(y, "y")
    if base.shape[1] != x.shape[1]:
        raise XmrError(f"x has dim {x.shape[1]} but y has dim {base.shape[1]}")
    limit = len(base) - (1 if y is None else 0)
    if not 1 <= k <= limit:
        raise XmrError(f"k={k} must be between 1 and {limit} (the number of candidate neighbours)")
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    sims, ids = index.search(x, k + (1 if y is None else 0))
    if y is None:  # drop each point itself (ties may put it anywhere in the list)
        keep = ids != np.arange(len(x))[:, None]
        keep &= np.cumsum(keep, axis=1) <= k
        sims = sims[keep].reshape(len(x), k)
        ids = ids[keep].reshape(len(x), k)
    return sims, ids


def _weights(sims: np.ndarray, gamma: float) -> np.ndarray:
    if gamma <= 0:
        raise XmrError(f"gamma must be > 0, got {gamma}")
    return np.power(np.clip(sims, 0.0, None), gamma)


def _knn_matrix(sims: np.ndarray, ids: np.ndarray, n_cols: int, gamma: float) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    return sp.csr_matrix((_weights(sims, gamma).ravel(), (rows, ids.ravel())), shape=(len(ids), n_cols))


def mutual_knn_affinity(x: np.ndarray, k: int, *, gamma: float = 1.0) -> sp.csr_matrix:
    """Mutual kNN affinity within one set (Eq. 1, diagonal blocks). Shape: (n, n), symmetric."""
    sims, ids = knn(x, k)
    a = _knn_matrix(sims, ids, len(ids), gamma)
    mutual = a.multiply(a.T > 0)  # keep (i, j) only if (j, i) is an edge too; weights are symmetric
    mutual.eliminate_zeros()
    return mutual.tocsr()


def cross_knn_affinity(x: np.ndarray, y: np.ndarray, k: int, *, gamma: float = 1.0) -> sp.csr_matrix:
    """Mutual kNN affinity across two sets (Eq. 1, off-diagonal block A_xy). Shape: (m, n)."""
    sx, ix = knn(x, k, y=y)
    sy, iy = knn(y, k, y=x)
    a_xy = _knn_matrix(sx, ix, len(y), gamma)
    a_yx = _knn_matrix(sy, iy, len(x), gamma)
    mutual = a_xy.multiply(a_yx.T > 0)
    mutual.eliminate_zeros()
    return mutual.tocsr()


def symmetric_normalize(a: sp.spmatrix) -> sp.csr_matrix:
    """S = D^-1/2 A D^-1/2 with D the row sums (Eq. 2); isolated nodes keep zero rows."""
    a = sp.csr_matrix(a, dtype=np.float64)
    if a.shape[0] != a.shape[1]:
        raise XmrError(f"symmetric normalisation needs a square matrix, got {a.shape}")
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = 1.0 / np.sqrt(deg[deg > 0])
    d = sp.diags(inv)
    return (d @ a @ d).tocsr()


def row_normalize(a: sp.spmatrix) -> sp.csr_matrix:
    """Each row divided by its l1 norm (cross-modal blocks S_xy, S_yx); empty rows stay zero."""
    a = sp.csr_matrix(a, dtype=np.float64)
    norms = np.asarray(abs(a).sum(axis=1)).ravel()
    inv = np.zeros_like(norms)
    inv[norms > 0] = 1.0 / norms[norms > 0]
    return (sp.diags(inv) @ a).tocsr()
