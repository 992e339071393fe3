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

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from xmr.errors import XmrError


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


def great_circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Angle between unit vectors, arccos(<x, y>) clipped to [0, pi]. Shape: (n, m)."""
    return np.arccos(np.clip(np.asarray(x, np.float64) @ np.asarray(y, np.float64).T, -1.0, 1.0))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise XmrError(f"points must be an (n >= 2, d) array, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def epsilon_graph(points: np.ndarray, *, edges_per_vertex: float = 5.0) -> tuple[sp.csr_matrix, float]:
    """Great-circle epsilon-graph with about ``edges_per_vertex`` x n undirected edges.

    Points are re-normalised to the unit sphere (alignment moves them off it). All pairwise
    distances are computed, so this is meant for up to some tens of thousands of points.

    Returns:
        ``(graph, epsilon)``: symmetric CSR of edge lengths (n, n) and the threshold used.
    """
    x = _unit(points)
    n = len(x)
    if edges_per_vertex <= 0:
        raise XmrError(f"edges_per_vertex must be > 0, got {edges_per_vertex}")
    iu, ju = np.triu_indices(n, k=1)
    dist = great_circle(x, x)[iu, ju]
    n_edges = min(len(dist), max(1, int(round(edges_per_vertex * n))))
    eps = float(np.partition(dist, n_edges - 1)[n_edges - 1])
    keep = dist <= eps
    # an edge of length 0 (duplicate points) must still be an edge: store a tiny positive length
    w = np.maximum(dist[keep], 1e-12)
    g = sp.coo_matrix((w, (iu[keep], ju[keep])), shape=(n, n))
    return (g + g.T).tocsr(), eps


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
