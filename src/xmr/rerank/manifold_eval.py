"""Manifold evaluation tasks of the joint-embedding-manifold paper (Sec. 3.2.1), for any dataset.

* :func:`label_retrieval`: an N-way k-shot labelled database; every other point of those classes
  is a query whose label is predicted by its nearest database point, once by Euclidean (cosine)
  distance and once by geodesic distance on an epsilon-graph (optionally with extra, unlabelled
  manifold samples such as text points). Queries with no path to the database are counted as
  unretrievable.
* :func:`count_smooth_paths`: shortest paths between image vertices that are "smooth": every two
  adjacent vertices on the path are reachable neighbours and no two non-adjacent ones are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from xmr.errors import XmrError
from xmr.rerank.geodesic import epsilon_graph, geodesic_knn


def sample_n_way_k_shot(labels: Sequence[object], n_way: int, k_shot: int, *, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Database and query indices: ``n_way`` random classes, ``k_shot`` database points each.

    Classes with fewer than ``k_shot + 1`` points are not eligible (they would have no query).
    """
    labels = np.asarray(labels, dtype=object)
    classes, counts = np.unique(labels.astype(str), return_counts=True)
    eligible = classes[counts > k_shot]
    if n_way < 1 or k_shot < 1 or len(eligible) < n_way:
        raise XmrError(f"need {n_way} classes with more than {k_shot} points each; {len(eligible)} qualify")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=n_way, replace=False)
    db, queries = [], []
    as_str = labels.astype(str)
    for c in chosen:
        idx = rng.permutation(np.flatnonzero(as_str == c))
        db.extend(idx[:k_shot])
        queries.extend(idx[k_shot:])
    return np.sort(np.array(db)), np.sort(np.array(queries))


def label_retrieval(points: np.ndarray, labels: Sequence[object], *, n_way: int, k_shot: int,
                    edges_per_vertex: float = 5.0, extra_points: np.ndarray | None = None,
                    seed: int = 0) -> dict[str, float]:
    """R@1 of label prediction by Euclidean vs geodesic nearest database point.

    Args:
        points: L2-normalised embeddings (e.g. images). Shape: (n, d).
        labels: one label per point.
        n_way, k_shot: classes in the database and labelled points per class.
        edges_per_vertex: epsilon-graph density (|E| = edges_per_vertex x |V|).
        extra_points: unlabelled manifold samples added to the graph only (e.g. text). Shape: (e, d).

    Returns:
        ``r1_euclidean``, ``r1_geodesic`` (unretrievable queries count as misses), the same two
        on retrievable queries only, ``n_queries``, ``n_retrievable`` (R in percent).
    """
    pts = np.asarray(points, dtype=np.float64)
    lab = np.asarray(labels, dtype=object).astype(str)
    if len(lab) != len(pts):
        raise XmrError(f"{len(pts)} points but {len(lab)} labels")
    db, queries = sample_n_way_k_shot(lab, n_way, k_shot, seed=seed)
    eu_nn = db[np.argmax(pts[queries] @ pts[db].T, axis=1)]
    graph_pts = pts if extra_points is None else np.vstack([pts, np.asarray(extra_points, np.float64)])
    graph, _ = epsilon_graph(graph_pts, edges_per_vertex=edges_per_vertex)
    _, geo_ids = geodesic_knn(graph, queries, db, 1)
    geo_nn = geo_ids[:, 0]
    retrievable = geo_nn >= 0
    eu_hit = lab[eu_nn] == lab[queries]
    geo_hit = retrievable & (lab[np.where(retrievable, geo_nn, 0)] == lab[queries])
    n_ret = int(retrievable.sum())
    return {
        "r1_euclidean": 100.0 * float(eu_hit.mean()),
        "r1_geodesic": 100.0 * float(geo_hit.mean()),
        "r1_euclidean_retrievable": 100.0 * float(eu_hit[retrievable].mean()) if n_ret else float("nan"),
        "r1_geodesic_retrievable": 100.0 * float(geo_hit[retrievable].mean()) if n_ret else float("nan"),
        "n_queries": float(len(queries)),
        "n_retrievable": float(n_ret),
    }


def count_smooth_paths(graph: sp.csr_matrix, image_vertices: Sequence[int],
                       reachable: Callable[[int, int], bool]) -> tuple[int, int]:
    """Count smooth shortest paths between image vertices.

    Dijkstra runs from every image vertex; each shortest path ending at another image vertex is
    smooth when consecutive vertices are reachable neighbours and non-consecutive ones are not.

    Args:
        graph: symmetric CSR of edge lengths (e.g. from :func:`epsilon_graph`). Shape: (V, V).
        image_vertices: vertices that start and end paths (other vertices, e.g. text, may lie on them).
        reachable: the oracle, ``reachable(u, v)`` True when u and v differ by one step (e.g. one
            attribute in CLEVR).

    Returns:
        ``(n_smooth, n_paths)`` over ordered (start, end) pairs with a path.
    """
    images = np.asarray(image_vertices, dtype=np.int64)
    is_image = np.zeros(graph.shape[0], dtype=bool)
    is_image[images] = True
    dist, pred = dijkstra(graph, directed=False, indices=images, return_predecessors=True)
    n_smooth = n_paths = 0
    for row, start in enumerate(images):
        for end in np.flatnonzero(is_image & np.isfinite(dist[row])):
            if end == start:
                continue
            path = [int(end)]
            while path[-1] != start:
                path.append(int(pred[row, path[-1]]))
            path.reverse()
            n_paths += 1
            n_smooth += _is_smooth(path, reachable)
    return n_smooth, n_paths


def _is_smooth(path: list[int], reachable: Callable[[int, int], bool]) -> bool:
    for i in range(len(path)):
        for j in range(i + 1, len(path)):
            if reachable(path[i], path[j]) != (j == i + 1):
                return False
    return True
