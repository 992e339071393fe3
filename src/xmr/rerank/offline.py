"""Diffusion split into an offline and an online part (Yang et al. 2019; Iscen et al. 2018).

Offline, for every gallery node i: solve the diffusion restricted to its ``n_trunc`` nearest
neighbours T_i, (I - alpha S[T_i, T_i]) f = e_i, and keep f as row i of a sparse "truncated
inverse" M (n, n) with at most n_trunc entries per row. Online, a new query with similarities
s_j to its ``k_q`` nearest gallery items j gets the scores f_q = sum_j s_j^gamma M[j, :] — a
sparse row combination, no solve. With n_trunc = n (no truncation) and a symmetric S this is
exactly (I - alpha S)^-1 y for y = the query's kNN vector.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from xmr.errors import XmrError
from xmr.rerank.diffusion import _check_alpha
from xmr.utils.progress import progress


def truncated_inverse(s: sp.spmatrix, neighbours: np.ndarray, *, alpha: float = 0.99, tol: float = 1e-6,
                      maxiter: int = 100, show_progress: bool | None = None) -> sp.csr_matrix:
    """Row i = the diffusion from node i solved on its truncated neighbourhood.

    Args:
        s: symmetric normalised gallery graph. Shape: (n, n).
        neighbours: each node's truncation set, its own id included (e.g. from
            :func:`xmr.rerank.knn` plus the node itself). Shape: (n, n_trunc).
        alpha: restart parameter in (0, 1).

    Returns:
        CSR (n, n) with at most n_trunc non-zeros per row.
    """
    _check_alpha(alpha)
    s = sp.csr_matrix(s, dtype=np.float64)
    n = s.shape[0]
    neighbours = np.asarray(neighbours, dtype=np.int64)
    if neighbours.ndim != 2 or len(neighbours) != n:
        raise XmrError(f"neighbours must be ({n}, n_trunc), got {neighbours.shape}")
    if neighbours.min() < 0 or neighbours.max() >= n:
        raise XmrError(f"neighbour ids must lie in [0, {n})")
    rows, cols, vals = [], [], []
    for i in progress(range(n), desc="truncated inverse", disable=None if show_progress is None else not show_progress):
        t = neighbours[i]
        where = np.flatnonzero(t == i)
        if not len(where):
            raise XmrError(f"node {i} is missing from its own truncation set")
        sub = sp.identity(len(t), format="csr") - alpha * s[t][:, t]
        e = np.zeros(len(t))
        e[where[0]] = 1.0
        f, info = cg(sub, e, rtol=tol, maxiter=maxiter)
        if info < 0:
            raise XmrError(f"conjugate gradient failed for node {i}")
        rows.append(np.full(len(t), i))
        cols.append(t)
        vals.append(f)
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    m.sum_duplicates()
    return m


def online_scores(m: sp.csr_matrix, query_sims: np.ndarray, query_ids: np.ndarray, *, gamma: float = 3.0
                  ) -> np.ndarray:
    """Diffusion scores of new queries from their gallery kNN, without a solve.

    Args:
        m: the offline :func:`truncated_inverse`. Shape: (n, n).
        query_sims: similarities of each query to its k_q nearest gallery items. Shape: (q, k_q).
        query_ids: those items' ids. Shape: (q, k_q).
        gamma: similarities are clipped at 0 and raised to gamma (as in the graph).

    Returns:
        Dense scores over the gallery. Shape: (q, n).
    """
    query_sims, query_ids = np.atleast_2d(query_sims), np.atleast_2d(query_ids)
    if query_sims.shape != query_ids.shape:
        raise XmrError(f"query_sims {query_sims.shape} and query_ids {query_ids.shape} must match")
    n = m.shape[0]
    if query_ids.size and (query_ids.min() < 0 or query_ids.max() >= n):
        raise XmrError(f"query neighbour ids must lie in [0, {n}); was the inverse built for another index?")
    w = np.power(np.clip(query_sims, 0.0, None), gamma)
    rows = np.repeat(np.arange(len(query_ids)), query_ids.shape[1])
    y = sp.csr_matrix((w.ravel(), (rows, query_ids.ravel())), shape=(len(query_ids), n))
    return (y @ m).toarray()
