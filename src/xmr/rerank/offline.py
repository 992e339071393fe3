"""Diffusion split into an offline and an online part (Yang et al. 2019; Iscen et al. 2018).

Offline, for every gallery node i: solve the diffusion restricted to its ``n_trunc`` nearest
neighbours T_i, (I - alpha S[T_i, T_i]) f = e_i, and keep f as row i of a sparse "truncated
inverse" M (n, n) with at most n_trunc entries per row. Online, a new query with similarities
s_j to its ``k_q`` nearest gallery items j gets the scores f_q = sum_j s_j^gamma M[j, :] — a
sparse row combination, no solve. With n_trunc = n (no truncation) and a symmetric S this is
exactly (I - alpha S)^-1 y for y = the query's kNN vector.

The offline solves are independent, small (n_trunc unknowns) and many (n); solved one by one
(``method="per-node"``), Python and scipy call overheads per node and per CG iteration cost as
much as the arithmetic. The default ``"batched"`` method stacks the subgraphs of
``batch_size`` nodes into one block-diagonal sparse matrix (gathered with vectorised row
slices and a column lookup) and runs conjugate gradient on all blocks at once, with per-block
step sizes and per-block stopping. Batches are formed in reverse Cuthill-McKee order (graph
neighbours together: their rows of S stay in cache) and run on a thread pool (scipy's sparse
products and numpy's gathers release the GIL). Every block is computed on its own, so the
result does not depend on ``batch_size``, the order or the number of threads.

Cost knobs: CG needs about sqrt((1 + alpha) / (1 - alpha)) * log(2 / tol) iterations, so
alpha close to 1 costs more (the default 0.99 takes about 3x the iterations of alpha = 0.9),
as does a small ``tol``. ``dtype=np.float32`` halves the memory traffic and is accurate enough
for ``tol`` >= 1e-5.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import DTypeLike
from scipy.sparse.csgraph import reverse_cuthill_mckee
from scipy.sparse.linalg import cg

from xmr.errors import XmrError
from xmr.rerank.diffusion import check_alpha
from xmr.utils.progress import progress

logger = logging.getLogger(__name__)

InverseMethod = Literal["batched", "per-node"]


def _check_inputs(s: sp.spmatrix, neighbours: np.ndarray, dtype: np.dtype) -> tuple[sp.csr_matrix, np.ndarray]:
    """Validated CSR copy of ``s`` and the (n, n_trunc) integer neighbour table."""
    if dtype not in (np.float32, np.float64):
        raise XmrError(f"dtype must be float32 or float64, got {dtype}")
    s = sp.csr_matrix(s, dtype=dtype)
    n = s.shape[0]
    if s.shape != (n, n):
        raise XmrError(f"S must be square, got {s.shape}")
    neighbours = np.asarray(neighbours)
    if neighbours.dtype.kind not in "iu":
        raise XmrError(f"neighbours must hold integer node ids, got dtype {neighbours.dtype}")
    if neighbours.ndim != 2 or len(neighbours) != n or neighbours.shape[1] == 0:
        raise XmrError(f"neighbours must be ({n}, n_trunc), got {neighbours.shape}")
    if neighbours.shape[1] > n:
        raise XmrError(f"n_trunc={neighbours.shape[1]} exceeds the number of nodes {n}")
    if neighbours.min() < 0 or neighbours.max() >= n:
        raise XmrError(f"neighbour ids must lie in [0, {n})")
    for lo in range(0, n, 1 << 14):  # in chunks: the comparison is n x n_trunc booleans
        own = (neighbours[lo:lo + (1 << 14)] == np.arange(lo, min(n, lo + (1 << 14)))[:, None]).any(axis=1)
        if not own.all():
            raise XmrError(f"node {lo + int(np.argmin(own))} is missing from its own truncation set")
    return s, neighbours


def _duplicate_error(tt_sorted: np.ndarray, nodes: np.ndarray) -> XmrError | None:
    dup = (np.diff(tt_sorted, axis=1) == 0).any(axis=1)
    if dup.any():
        return XmrError(f"node {int(nodes[np.argmax(dup)])} has a repeated id in its truncation set")
    return None


def truncated_inverse(s: sp.spmatrix, neighbours: np.ndarray, *, alpha: float = 0.99, tol: float = 1e-6,
                      maxiter: int = 100, method: InverseMethod = "batched", batch_size: int = 32,
                      n_threads: int | None = None, dtype: DTypeLike = np.float64,
                      show_progress: bool | None = None) -> sp.csr_matrix:
    """Row i = the diffusion from node i solved on its truncated neighbourhood.

    Row i is f solving (I - alpha S[T_i, T_i]) f = e_i by conjugate gradient (stopped at
    ||residual|| < tol, as ``scipy.sparse.linalg.cg`` with ``rtol=tol``), scattered to the
    columns T_i. Both methods compute the same rows up to rounding.

    Args:
        s: symmetric normalised gallery graph. Shape: (n, n).
        neighbours: each node's truncation set, its own id included once, no id repeated (e.g.
            the node and its n_trunc - 1 nearest neighbours). Shape: (n, n_trunc).
        alpha: restart parameter in (0, 1); closer to 1 walks further and needs more iterations.
        tol: relative residual at which CG stops (the right-hand side has norm 1).
        maxiter: CG iterations per node; nodes not converged by then keep their last iterate
            (logged as a warning).
        method: ``"batched"`` (block-diagonal CG over ``batch_size`` nodes at a time, on
            ``n_threads`` threads) or ``"per-node"`` (one scipy CG call per node: the reference).
        batch_size: nodes solved together by the batched method.
        n_threads: threads for the batched method; None uses every core this process may run on.
        dtype: float64, or float32 (about 1.5x faster; use with ``tol`` >= 1e-5).
        show_progress: progress bar over batches (None: only on a terminal).

    Returns:
        CSR (n, n) with exactly n_trunc stored entries per row (sorted column ids; entries the
        walk cannot reach within T_i are stored zeros), of the given dtype.
    """
    check_alpha(alpha)
    dtype = np.dtype(dtype)
    if tol <= 0 or maxiter < 1:
        raise XmrError(f"tol must be > 0 and maxiter >= 1, got tol={tol}, maxiter={maxiter}")
    s, neighbours = _check_inputs(s, neighbours, dtype)
    disable = None if show_progress is None else not show_progress
    if method == "per-node":
        return _per_node(s, neighbours, alpha, tol, maxiter, dtype, disable)
    if method != "batched":
        raise XmrError(f"method must be 'batched' or 'per-node', got {method!r}")
    if batch_size < 1:
        raise XmrError(f"batch_size must be >= 1, got {batch_size}")
    return _batched(s, neighbours, alpha, tol, maxiter, batch_size, n_threads, dtype, disable)


def _per_node(s: sp.csr_matrix, neighbours: np.ndarray, alpha: float, tol: float, maxiter: int,
              dtype: np.dtype, disable: bool | None) -> sp.csr_matrix:
    """One scipy CG call per node on ``s[t][:, t]`` (the simple reference)."""
    n = s.shape[0]
    rows, cols, vals = [], [], []
    unconverged = 0
    for i in progress(range(n), desc="truncated inverse", disable=disable):
        t = np.asarray(neighbours[i], dtype=np.int64)
        if len(np.unique(t)) < len(t):
            raise XmrError(f"node {i} has a repeated id in its truncation set")
        sub = sp.identity(len(t), dtype=dtype, format="csr") - alpha * s[t][:, t]
        e = (t == i).astype(dtype)
        f, info = cg(sub, e, rtol=tol, maxiter=maxiter)
        if info < 0:
            raise XmrError(f"conjugate gradient failed for node {i}")
        unconverged += info > 0
        rows.append(np.full(len(t), i))
        cols.append(t)
        vals.append(f)
    _warn_unconverged(unconverged, maxiter, tol)
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n),
                      dtype=dtype)
    m.sum_duplicates()
    return m


def _warn_unconverged(count: int, maxiter: int, tol: float) -> None:
    if count:
        logger.warning("%d truncated solves did not reach tol=%g within maxiter=%d; their last iterates are kept",
                       count, tol, maxiter)


def _batched(s: sp.csr_matrix, neighbours: np.ndarray, alpha: float, tol: float, maxiter: int,
             batch_size: int, n_threads: int | None, dtype: np.dtype, disable: bool | None) -> sp.csr_matrix:
    """Block-diagonal CG over batches of nodes, batches spread over a thread pool."""
    n, n_trunc = neighbours.shape
    s_alpha = (s * alpha).astype(dtype).tocsr()  # alpha folded in once: A = I - s_alpha
    s_alpha.sort_indices()
    # int32 ids when they fit: scipy would otherwise upcast (and copy) the n * n_trunc indices
    index_dtype = np.int32 if n * n_trunc < 2**31 else np.int64
    out_indices = np.empty(n * n_trunc, dtype=index_dtype)
    out_data = np.empty(n * n_trunc, dtype=dtype)
    # batches of graph neighbours (reverse Cuthill-McKee order) share rows of S: fewer cache
    # misses while gathering. Each node's solve is independent, so the order changes no result.
    order = reverse_cuthill_mckee(s_alpha, symmetric_mode=False).astype(np.int64)
    starts = range(0, n, batch_size)
    if n_threads is None:
        n_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_threads = max(1, min(n_threads, len(starts)))

    scratch = threading.local()  # one column lookup table per thread, reused by its batches

    def run(start: int) -> int:
        if not hasattr(scratch, "lookup"):
            scratch.lookup = np.full(n, -1, dtype=np.int32)
        nodes = order[start:start + batch_size]
        tt = np.sort(neighbours[nodes], axis=1)
        err = _duplicate_error(tt, nodes)
        if err is not None:
            raise err
        block = _block_diagonal(s_alpha, tt, scratch.lookup)
        f, unconverged = _batched_cg(block, (tt == nodes[:, None]).astype(dtype), tol, maxiter)
        out_indices.reshape(n, n_trunc)[nodes] = tt
        out_data.reshape(n, n_trunc)[nodes] = f
        return unconverged

    bar = progress(total=len(starts), desc="truncated inverse", disable=disable, unit="batch")
    unconverged = 0
    try:
        if n_threads == 1:
            for start in starts:
                unconverged += run(start)
                bar.update()
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                for count in pool.map(run, starts):
                    unconverged += count
                    bar.update()
    finally:
        bar.close()
    _warn_unconverged(unconverged, maxiter, tol)
    indptr = np.arange(0, n * n_trunc + 1, n_trunc, dtype=index_dtype)
    m = sp.csr_matrix((out_data, out_indices, indptr), shape=(n, n), copy=False)
    m.has_sorted_indices = True
    return m


def _block_diagonal(s: sp.csr_matrix, tt: np.ndarray, lookup: np.ndarray) -> sp.csr_matrix:
    """The subgraphs S[T_b, T_b] of a batch as one block-diagonal CSR matrix.

    Args:
        s: the (alpha-scaled) graph. Shape: (n, n).
        tt: each block's node ids, sorted. Shape: (B, n_trunc).
        lookup: int32 scratch, all -1 (and left so). Shape: (n,).

    Returns:
        CSR (B * n_trunc, B * n_trunc); block b holds S[T_b, T_b] in the order of ``tt[b]``.
    """
    n_blocks, n_trunc = tt.shape
    rows = s[tt.ravel()]  # the rows of every T_b, stacked (scipy's C++ row gather)
    bounds = rows.indptr[::n_trunc]
    # map each entry's column to its position within its own block, -1 if outside T_b
    local = np.empty(rows.nnz, dtype=np.int32)
    for b in range(n_blocks):
        lookup[tt[b]] = np.arange(b * n_trunc, (b + 1) * n_trunc, dtype=np.int32)
        # mode='wrap' skips numpy's bounds checks (about 2x faster); CSR column ids are in range
        np.take(lookup, rows.indices[bounds[b]:bounds[b + 1]], out=local[bounds[b]:bounds[b + 1]], mode='wrap')
        lookup[tt[b]] = -1
    kept = np.flatnonzero(local >= 0)
    indptr = np.searchsorted(kept, rows.indptr)
    return sp.csr_matrix((rows.data[kept], local[kept], indptr), shape=(n_blocks * n_trunc,) * 2)


def _batched_cg(block: sp.csr_matrix, rhs: np.ndarray, tol: float, maxiter: int) -> tuple[np.ndarray, int]:
    """CG on (I - block) x = rhs, independently per block, each stopped at ||r_b|| < tol.

    The same iteration as ``scipy.sparse.linalg.cg`` from x = 0, with per-block step sizes.
    Converged blocks leave the vector arrays at once and the matrix once half of it is idle.

    Args:
        block: block-diagonal CSR (B * m, B * m).
        rhs: one right-hand side per block. Shape: (B, m).

    Returns:
        ``(x, unconverged)``: solutions of shape (B, m) and the number of blocks still at or
        above ``tol`` after ``maxiter`` iterations.
    """
    m = rhs.shape[1]
    x = np.zeros_like(rhs)
    rho = np.einsum("ij,ij->i", rhs, rhs)
    live = np.flatnonzero(rho >= tol * tol)  # blocks still iterating (positions in the batch)
    in_block = live  # their positions among the blocks of ``block``
    if len(live) < len(rhs):
        block, in_block = _select_blocks(block, live, m), np.arange(len(live))
    xl, r, p, rho = x[live], rhs[live], rhs[live].copy(), rho[live]
    padded = np.zeros(block.shape[0], dtype=rhs.dtype).reshape(-1, m)
    for _ in range(maxiter):
        if not len(live):
            break
        if len(in_block) == len(padded):
            q = p - (block @ p.ravel()).reshape(p.shape)
        else:  # rows of finished blocks are ignored: the matrix is block-diagonal
            padded[in_block] = p
            q = p - (block @ padded.ravel()).reshape(padded.shape)[in_block]
        step = rho / np.einsum("ij,ij->i", p, q)
        xl += step[:, None] * p
        r -= step[:, None] * q
        rho_new = np.einsum("ij,ij->i", r, r)
        p *= (rho_new / rho)[:, None]
        p += r
        rho = rho_new
        going = rho >= tol * tol
        if not going.all():
            x[live] = xl
            keep = np.flatnonzero(going)
            live, in_block, xl, r, p, rho = live[keep], in_block[keep], xl[keep], r[keep], p[keep], rho[keep]
            if 0 < len(live) <= len(padded) // 2:
                block, in_block = _select_blocks(block, in_block, m), np.arange(len(live))
                padded = np.zeros_like(p)
    x[live] = xl
    return x, len(live)


def _select_blocks(block: sp.csr_matrix, keep: np.ndarray, m: int) -> sp.csr_matrix:
    """The diagonal blocks ``keep`` (sorted positions) of a block-diagonal CSR with blocks of size m."""
    rows = (keep[:, None] * m + np.arange(m)).ravel()
    sub = block[rows]
    shift = (keep - np.arange(len(keep))) * m  # each kept block moves up by this many columns
    sub.indices -= np.repeat(shift, np.diff(sub.indptr[::m])).astype(sub.indices.dtype)
    return sp.csr_matrix((sub.data, sub.indices, sub.indptr), shape=(len(rows), len(rows)))


def _query_vectors(n: int, query_sims: np.ndarray, query_ids: np.ndarray, gamma: float) -> sp.csr_matrix:
    """Sparse kNN vectors y of the queries, y[q, j] = max(0, s_qj)^gamma. Shape: (q, n)."""
    query_sims, query_ids = np.atleast_2d(query_sims), np.atleast_2d(query_ids)
    if query_sims.shape != query_ids.shape:
        raise XmrError(f"query_sims {query_sims.shape} and query_ids {query_ids.shape} must match")
    if query_ids.size and (query_ids.min() < 0 or query_ids.max() >= n):
        raise XmrError(f"query neighbour ids must lie in [0, {n}); was the inverse built for another index?")
    w = np.power(np.clip(query_sims, 0.0, None), gamma)
    rows = np.repeat(np.arange(len(query_ids)), query_ids.shape[1])
    return sp.csr_matrix((w.ravel(), (rows, query_ids.ravel())), shape=(len(query_ids), n))


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
    return (_query_vectors(m.shape[0], query_sims, query_ids, gamma) @ m).toarray()


def online_topk(m: sp.csr_matrix, query_sims: np.ndarray, query_ids: np.ndarray, k: int, *,
                gamma: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best diffusion scores of each query, without a dense (q, n) score matrix.

    The same scores as :func:`online_scores`, kept sparse: only gallery items in the union of
    the query's neighbours' truncation sets can score, and only those are ranked.

    Args:
        m: the offline :func:`truncated_inverse`. Shape: (n, n).
        query_sims: similarities of each query to its k_q nearest gallery items. Shape: (q, k_q).
        query_ids: those items' ids. Shape: (q, k_q).
        k: results per query.
        gamma: similarities are clipped at 0 and raised to gamma (as in the graph).

    Returns:
        ``(scores, ids)``, each of shape (q, k), best first, ties by ascending id. Slots beyond
        the items a query can reach have score -inf and id -1.
    """
    if k < 1:
        raise XmrError(f"k must be >= 1, got {k}")
    z = (_query_vectors(m.shape[0], query_sims, query_ids, gamma) @ m).tocsr()
    n_q = z.shape[0]
    scores = np.full((n_q, k), -np.inf)
    ids = np.full((n_q, k), -1, dtype=np.int64)
    for q in range(n_q):
        lo, hi = z.indptr[q], z.indptr[q + 1]
        vals, cols = z.data[lo:hi], z.indices[lo:hi]
        if len(vals) > k:  # keep everything tied with the k-th value so ties resolve by id
            kth = -np.partition(-vals, k - 1)[k - 1]
            sel = vals >= kth
            vals, cols = vals[sel], cols[sel]
        order = np.lexsort((cols, -vals))[:k]
        scores[q, :len(order)] = vals[order]
        ids[q, :len(order)] = cols[order]
    return scores, ids
