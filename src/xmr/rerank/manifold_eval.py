"""Manifold evaluation tasks of the joint-embedding-manifold paper (Sec. 3.2.1), for any dataset.

* :func:`n_way_k_shot_retrieval`: an N-way k-shot labelled database; every other point of those classes
  is a query whose label is predicted by its nearest database point, once by Euclidean (cosine)
  distance and once by geodesic distance on an epsilon-graph (optionally with extra, unlabelled
  manifold samples such as text points). Queries with no path to the database are counted as
  unretrievable.
* :func:`count_smooth_paths`: shortest paths between image vertices that are "smooth": every two
  adjacent vertices on the path are reachable neighbours and no two non-adjacent ones are;
  optionally judged on vertex keys (text vertices merged with their scene, random points dropped)
  and from a sample of source images.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from xmr.errors import XmrError
from xmr.rerank.geodesic import epsilon_graph, geodesic_knn


def sample_n_way_k_shot(labels: Sequence[object] | np.ndarray, n_way: int, k_shot: int, *, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Database and query indices: ``n_way`` random classes, ``k_shot`` database points each.

    Classes with fewer than ``k_shot + 1`` points are not eligible (they would have no query).
    """
    as_str = np.asarray(labels, dtype=object).astype(str)
    classes, counts = np.unique(as_str, return_counts=True)
    eligible = classes[counts > k_shot]
    if n_way < 1 or k_shot < 1 or len(eligible) < n_way:
        raise XmrError(f"need {n_way} classes with more than {k_shot} points each; {len(eligible)} qualify")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=n_way, replace=False)
    db: list[np.ndarray] = []
    queries: list[np.ndarray] = []
    for c in chosen:
        idx = rng.permutation(np.flatnonzero(as_str == c))
        db.extend(idx[:k_shot])
        queries.extend(idx[k_shot:])
    return np.sort(np.array(db)), np.sort(np.array(queries))


def n_way_k_shot_retrieval(points: np.ndarray, labels: Sequence[object], *, n_way: int, k_shot: int,
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
                       reachable: Callable[[Hashable, Hashable], bool], *,
                       vertex_key: Callable[[int], Hashable | None] | None = None,
                       sources: Sequence[int] | None = None, chunk: int = 64) -> tuple[int, int]:
    """Count smooth shortest paths between image vertices.

    Dijkstra runs from every image vertex (or every vertex of ``sources``); each shortest path
    ending at another image vertex is smooth when consecutive vertices are reachable neighbours
    and non-consecutive ones are not (the paper's Sec. 4.3.2: transitions between adjacent
    vertices are smooth, between non-adjacent ones not).

    With ``vertex_key`` a path is first mapped to the keys of its vertices: vertices whose key is
    None (e.g. random points) are dropped, runs of equal consecutive keys are merged into one (an
    image and its own description are one scene), and smoothness is checked on that key sequence
    with ``reachable(key_a, key_b)``. A path whose key sequence has a single key is smooth
    (nothing to check). Whether a key that comes back later on the path (A, B, A) breaks
    smoothness is up to the oracle: ``reachable(A, A)`` True makes such a path not smooth.

    Without ``vertex_key`` the key of a vertex is the vertex itself (text vertices included), so
    ``reachable`` is asked about vertex numbers, as before.

    The shortest-path tree of each source is walked from the source down; a path whose prefix
    is not smooth cannot be smooth (smoothness is a condition on all pairs of the path, and the
    prefix's pairs are a subset), so only smooth prefixes are extended. The result equals
    checking every path separately; the cost grows with the number of smooth prefixes, not of
    paths.

    Args:
        graph: symmetric CSR of edge lengths (e.g. from :func:`epsilon_graph`). Shape: (V, V).
        image_vertices: vertices that end paths (other vertices, e.g. text or random points, may
            lie on them).
        reachable: the oracle, ``reachable(a, b)`` True when a and b differ by one step (e.g. one
            attribute in CLEVR); called on vertex numbers, or on keys with ``vertex_key``, the
            earlier vertex of the path first.
        vertex_key: optional map vertex -> key (None: the vertex is ignored on paths).
        sources: optional image vertices the paths start at (default: all of
            ``image_vertices``), e.g. a seeded sample on a large graph. Every source must be an
            image vertex; paths still end at any image vertex.
        chunk: Dijkstra sources per batch (memory is about 16 x chunk x V bytes).

    Returns:
        ``(n_smooth, n_paths)`` over ordered (start, end) pairs with a path, start in
        ``sources``, end another image vertex.
    """
    images = np.asarray(image_vertices, dtype=np.int64)
    n = graph.shape[0]
    if len(images) and (images.min() < 0 or images.max() >= n):
        raise XmrError(f"image vertex out of range [0, {n})")
    is_image = np.zeros(n, dtype=bool)
    is_image[images] = True
    starts = images if sources is None else np.asarray(sources, dtype=np.int64).reshape(-1)
    if len(starts) and (starts.min() < 0 or starts.max() >= n or not is_image[starts].all()):
        raise XmrError("every source must be one of the image vertices")
    if chunk < 1:
        raise XmrError(f"chunk must be >= 1, got {chunk}")
    key: Callable[[int], Hashable | None] = vertex_key if vertex_key is not None else int
    n_smooth = n_paths = 0
    for lo in range(0, len(starts), chunk):
        block = starts[lo:lo + chunk]
        dist, pred = dijkstra(graph, directed=False, indices=block, return_predecessors=True)
        for row, start in enumerate(block):
            reached = np.isfinite(dist[row])
            n_paths += int(np.count_nonzero(is_image & reached)) - 1  # the start itself is no path
            n_smooth += _smooth_in_tree(int(start), pred[row], is_image, reachable, key)
    return n_smooth, n_paths


def _smooth_in_tree(start: int, pred: np.ndarray, is_image: np.ndarray,
                    reachable: Callable[[Hashable, Hashable], bool],
                    key: Callable[[int], Hashable | None]) -> int:
    """Smooth paths from ``start`` to other image vertices in its shortest-path tree ``pred``."""
    order = np.argsort(pred, kind="stable")  # children of v: order[lo:hi] where pred == v
    sorted_pred = pred[order]
    first = key(start)
    stack: list[tuple[int, tuple[Hashable, ...]]] = [(start, () if first is None else (first,))]
    count = 0
    while stack:
        v, seq = stack.pop()
        if v != start and is_image[v]:
            count += 1
        lo, hi = np.searchsorted(sorted_pred, [v, v + 1])
        for child in order[lo:hi]:
            nxt = _extend(seq, key(int(child)), reachable)
            if nxt is not None:
                stack.append((int(child), nxt))
    return count


def _extend(seq: tuple[Hashable, ...], k: Hashable | None,
            reachable: Callable[[Hashable, Hashable], bool]) -> tuple[Hashable, ...] | None:
    """The key sequence after one more vertex of key ``k``, or None if it stops being smooth."""
    if k is None or (seq and seq[-1] == k):
        return seq
    if seq and not reachable(seq[-1], k):
        return None
    if any(reachable(earlier, k) for earlier in seq[:-1]):
        return None
    return seq + (k,)
