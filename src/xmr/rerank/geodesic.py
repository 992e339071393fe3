"""Geodesic retrieval in a joint space (the joint-embedding-manifold paper, Sec. 3.2, Alg. 1).

1. Align image points to their text points with one Procrustes/ICP step (centre both sets,
   SVD of the cross-covariance, rotation + translation).
2. Connect points whose great-circle distance on the unit sphere is at most epsilon, with
   epsilon chosen so the graph has ``edges_per_vertex`` x n undirected edges (|E| = O(|V|)).
3. Shortest paths (Dijkstra) give geodesic distances; geodesic kNN ranks targets by them. A query
   with no path to any target is *unretrievable*.

Text points can be added to the graph as extra manifold samples: they shorten and smooth paths
between related images without being retrieved themselves.
"""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from xmr.errors import XmrError
from xmr.utils.arrays import l2_normalize


def procrustes_align(src: np.ndarray, dst: np.ndarray, *, allow_reflection: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising ||src @ R.T + t - dst|| over paired rows (Alg. 1).

    The paper's Algorithm 1 writes t = mean(Psi) - mean(Phi); we use the least-squares
    t = mean(dst) - R mean(src), which is what maps the aligned source onto the target.

    Args:
        src: points to move (e.g. image embeddings). Shape: (n, d).
        dst: their partners (e.g. the matching text embeddings). Shape: (n, d).
        allow_reflection: if False (default) R is a proper rotation (det +1).

    Returns:
        ``(R, t)`` of shapes (d, d) and (d,).
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or len(src) < 2:
        raise XmrError(f"alignment needs paired (n >= 2, d) arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - mu_s).T @ (dst - mu_d))
    if not allow_reflection and np.linalg.det(vt.T @ u.T) < 0:
        vt[-1] *= -1
    r = vt.T @ u.T
    return r, mu_d - r @ mu_s


def icp_align(src: np.ndarray, dst: np.ndarray, *, iterations: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """Rigid alignment of ``src`` onto ``dst`` without known pairs (iterative closest point).

    Each round pairs the points that are each other's nearest neighbour (cosine, after the
    current alignment) and solves :func:`procrustes_align` on those pairs.

    Args:
        src: points to move. Shape: (n, d).
        dst: the other point cloud. Shape: (m, d).

    Returns:
        ``(R, t, n_pairs)``: rotation (d, d), translation (d,) and the pairs used last.
    """
    r, t = np.eye(src.shape[1]), np.zeros(src.shape[1])
    n_pairs = 0
    for _ in range(iterations):
        cur = src @ r.T + t
        sims = l2_normalize(cur) @ dst.T
        nn_src, nn_dst = sims.argmax(axis=1), sims.argmax(axis=0)
        mutual = np.flatnonzero(nn_dst[nn_src] == np.arange(len(src)))
        if len(mutual) < 2:
            break
        r_new, t_new = procrustes_align(src[mutual], dst[nn_src[mutual]])
        converged = n_pairs == len(mutual) and np.allclose(r_new, r) and np.allclose(t_new, t)
        r, t, n_pairs = r_new, t_new, len(mutual)
        if converged:
            break
    return r, t, n_pairs



def great_circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Angle between unit vectors, arccos(<x, y>) clipped to [0, pi]. Shape: (n, m)."""
    return np.arccos(np.clip(np.asarray(x, np.float64) @ np.asarray(y, np.float64).T, -1.0, 1.0))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise XmrError(f"points must be an (n >= 2, d) array, got shape {x.shape}")
    return l2_normalize(x)


EpsilonMethod = Literal["auto", "dense", "knn"]
DENSE_MAX_POINTS = 4000  # "auto" computes all pairs up to this many points, kNN candidates beyond


def epsilon_graph(points: np.ndarray, *, edges_per_vertex: float = 5.0, method: EpsilonMethod = "auto",
                  candidates: int | None = None) -> tuple[sp.csr_matrix, float]:
    """Great-circle epsilon-graph with about ``edges_per_vertex`` x n undirected edges.

    Points are re-normalised to the unit sphere (alignment moves them off it). Epsilon is the
    ``round(edges_per_vertex * n)``-th smallest pairwise distance; every pair at most epsilon
    apart is an edge (ties at epsilon included).

    ``"dense"`` computes all n (n - 1) / 2 distances (O(n^2) time and memory). ``"knn"`` looks
    only at each point's nearest neighbours (exact FAISS inner-product search), starting with
    ``candidates`` per point and doubling them for every point whose farthest candidate is still
    within epsilon, so no edge can be missed: the graph is the dense one (up to rounding of
    distances that tie with epsilon). ``"auto"`` is dense up to 4,000 points.

    Args:
        points: Shape: (n, d).
        edges_per_vertex: target |E| / |V|.
        method: "auto", "dense" or "knn".
        candidates: first number of neighbours per point for "knn" (None: 4 x edges_per_vertex,
            at least 16).

    Returns:
        ``(graph, epsilon)``: symmetric CSR of edge lengths (n, n) and the threshold used.
    """
    x = _unit(points)
    n = len(x)
    if edges_per_vertex <= 0:
        raise XmrError(f"edges_per_vertex must be > 0, got {edges_per_vertex}")
    if method not in ("auto", "dense", "knn"):
        raise XmrError(f"method must be 'auto', 'dense' or 'knn', got {method!r}")
    if candidates is not None and candidates < 1:
        raise XmrError(f"candidates must be >= 1, got {candidates}")
    n_edges = min(n * (n - 1) // 2, max(1, int(round(edges_per_vertex * n))))
    if method == "dense" or (method == "auto" and n <= DENSE_MAX_POINTS):
        iu, ju = np.triu_indices(n, k=1)
        dist = great_circle(x, x)[iu, ju]
    else:
        first = candidates if candidates is not None else max(16, int(np.ceil(4 * edges_per_vertex)))
        iu, ju, dist = _candidate_pairs(x, n_edges, first)
    eps = float(np.partition(dist, n_edges - 1)[n_edges - 1])
    keep = dist <= eps
    # an edge of length 0 (duplicate points) must still be an edge: store a tiny positive length
    w = np.maximum(dist[keep], 1e-12)
    g = sp.coo_matrix((w, (iu[keep], ju[keep])), shape=(n, n))
    return (g + g.T).tocsr(), eps


def _pair_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Great-circle distances of the pairs (i[p], j[p]), in float64. Shape: (len(i),)."""
    out = np.empty(len(i))
    for lo in range(0, len(i), chunk):
        a, b = x[i[lo:lo + chunk]], x[j[lo:lo + chunk]]
        out[lo:lo + chunk] = np.arccos(np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0))
    return out


def _candidate_pairs(x: np.ndarray, n_edges: int, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique pairs i < j from growing kNN lists that contain every pair within epsilon.

    Returns:
        ``(i, j, dist)`` of the candidate pairs, dist in float64.
    """
    n, dim = x.shape
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatIP(dim)
    index.add(x32)
    # float32 inner products may be off by a few ulps per dimension: a point counts as covered
    # only when its farthest candidate is farther than epsilon by more than that
    slack = 4 * dim * float(np.finfo(np.float32).eps)
    per_node = np.full(n, min(n, first + 1))  # list length, the point itself included
    floor = np.empty(n, dtype=np.float32)  # similarity of each point's farthest candidate
    src, dst = [], []
    todo = np.arange(n)
    while True:
        for k in np.unique(per_node[todo]):
            rows = todo[per_node[todo] == k]
            sims, ids = index.search(x32[rows], int(k))
            floor[rows] = -np.inf if k >= n else sims[:, -1]
            src.append(np.repeat(rows, k))
            dst.append(ids.ravel())
        i, j = np.concatenate(src), np.concatenate(dst)
        ok = (j >= 0) & (i != j)
        key = np.unique(np.minimum(i[ok], j[ok]) * n + np.maximum(i[ok], j[ok]))
        iu, ju = key // n, key % n
        if len(key) < n_edges:  # too few pairs to reach |E|: widen every list
            todo = np.flatnonzero(per_node < n)
        else:
            dist = _pair_distances(x, iu, ju)
            eps = float(np.partition(dist, n_edges - 1)[n_edges - 1])
            todo = np.flatnonzero(floor >= np.cos(eps) - slack)
            if not len(todo):
                return iu, ju, dist
        per_node[todo] = np.minimum(n, 2 * per_node[todo])


def geodesic_distances(graph: sp.csr_matrix, sources: np.ndarray) -> np.ndarray:
    """Shortest-path lengths from each source vertex to every vertex (inf if unreachable).

    Shape: (len(sources), n).
    """
    sources = np.asarray(sources, dtype=np.int64)
    if len(sources) and (sources.min() < 0 or sources.max() >= graph.shape[0]):
        raise XmrError(f"source vertex out of range [0, {graph.shape[0]})")
    return dijkstra(graph, directed=False, indices=sources)


def geodesic_knn(graph: sp.csr_matrix, queries: np.ndarray, targets: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` targets nearest to each query vertex by geodesic distance.

    Returns:
        ``(dist, ids)`` of shape (n_queries, k): ids are vertex numbers from ``targets`` (best
        first); unreachable slots have distance inf and id -1. A query whose first slot is -1 is
        unretrievable.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if not 1 <= k <= len(targets):
        raise XmrError(f"k={k} must be between 1 and the number of targets ({len(targets)})")
    d = geodesic_distances(graph, queries)[:, targets]
    q = np.asarray(queries, dtype=np.int64)
    d[targets[None, :] == q[:, None]] = np.inf  # a query is not its own neighbour
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    dist = np.take_along_axis(d, order, axis=1)
    ids = np.where(np.isfinite(dist), targets[order], -1)
    return dist, ids
