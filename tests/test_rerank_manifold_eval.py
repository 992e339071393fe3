"""Label retrieval (N-way k-shot, Euclidean vs geodesic) and smooth-path counting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.errors import XmrError
from xmr.rerank import count_smooth_paths, epsilon_graph, n_way_k_shot_retrieval, sample_n_way_k_shot


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5, 8))
    x = np.repeat(centres, 12, axis=0) + 0.6 * rng.standard_normal((60, 8))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(5), 12)


def test_n_way_k_shot_sampling() -> None:
    _, labels = _clusters()
    db, q = sample_n_way_k_shot(labels, 3, 2, seed=1)
    assert len(db) == 6 and len(q) == 3 * 10 and not set(db) & set(q)
    assert len(set(labels[db])) == 3 and set(labels[q]) == set(labels[db])
    with pytest.raises(XmrError, match="need 6 classes"):
        sample_n_way_k_shot(labels, 6, 2)


def _floyd(w: np.ndarray) -> np.ndarray:
    d = np.where(w > 0, w, np.inf)
    np.fill_diagonal(d, 0.0)
    for k in range(len(w)):
        d = np.minimum(d, d[:, k:k + 1] + d[k:k + 1, :])
    return d


@pytest.mark.parametrize("extra", [False, True])
def test_label_retrieval_matches_dense_reference(extra: bool) -> None:
    x, labels = _clusters(2)
    text = _clusters(3)[0][:20] if extra else None
    out = n_way_k_shot_retrieval(x, labels, n_way=4, k_shot=2, edges_per_vertex=2.0, extra_points=text, seed=5)
    db, q = sample_n_way_k_shot(labels, 4, 2, seed=5)
    eu = np.mean([labels[db[np.argmax([x[i] @ x[j] for j in db])]] == labels[i] for i in q]) * 100
    pts = x if text is None else np.vstack([x, text])
    g, _ = epsilon_graph(pts, edges_per_vertex=2.0)
    d = _floyd(g.toarray())
    hits, ret = [], []
    for i in q:
        row = d[i, db]
        ok = np.isfinite(row.min())
        ret.append(ok)
        hits.append(ok and labels[db[np.argmin(row)]] == labels[i])
    assert out["r1_euclidean"] == pytest.approx(eu)
    assert out["r1_geodesic"] == pytest.approx(100 * np.mean(hits))
    assert out["n_retrievable"] == sum(ret) and out["n_queries"] == len(q)


def test_smooth_paths_on_a_chain() -> None:
    # 0 - 1 - 2 - 3 with unit edges; every shortest path walks the chain
    w = sp.diags([np.ones(3), np.ones(3)], [1, -1], shape=(4, 4)).tocsr()
    one_step = lambda u, v: abs(u - v) == 1  # noqa: E731
    assert count_smooth_paths(w, range(4), one_step) == (12, 12)
    always = lambda u, v: True  # noqa: E731  (every pair "reachable": only 1-edge paths stay smooth)
    assert count_smooth_paths(w, range(4), always) == (6, 12)
    # a text vertex (3) on the way: paths between images 0..2 only
    assert count_smooth_paths(w, [0, 1, 2], one_step) == (6, 6)


def _smooth_paths_reference(graph: sp.csr_matrix, images: list[int], reachable) -> tuple[int, int]:
    """The original implementation: every shortest path rebuilt and checked on all its pairs."""
    from scipy.sparse.csgraph import dijkstra

    img = np.asarray(images)
    is_image = np.zeros(graph.shape[0], dtype=bool)
    is_image[img] = True
    dist, pred = dijkstra(graph, directed=False, indices=img, return_predecessors=True)
    n_smooth = n_paths = 0
    for row, start in enumerate(img):
        for end in np.flatnonzero(is_image & np.isfinite(dist[row])):
            if end == start:
                continue
            path = [int(end)]
            while path[-1] != start:
                path.append(int(pred[row, path[-1]]))
            path.reverse()
            n_paths += 1
            n_smooth += all(reachable(path[i], path[j]) == (j == i + 1)
                            for i in range(len(path)) for j in range(i + 1, len(path)))
    return n_smooth, n_paths


@pytest.mark.parametrize("seed", range(4))
def test_smooth_paths_default_matches_the_per_path_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 3))
    g, _ = epsilon_graph(x, edges_per_vertex=2.5)
    near = rng.random((40, 40)) < 0.3
    near = near | near.T
    oracle = lambda u, v: bool(near[u, v])  # noqa: E731
    images = sorted(rng.choice(40, size=25, replace=False).tolist())
    expected = _smooth_paths_reference(g, images, oracle)
    assert expected[0] > 0
    assert count_smooth_paths(g, images, oracle) == expected
    assert count_smooth_paths(g, images, oracle, chunk=3) == expected
    assert count_smooth_paths(g, images, oracle, vertex_key=lambda v: v) == expected


def _scene_graph() -> sp.csr_matrix:
    # images 0 (scene A), 1 (B), 2 (C), 5 (D), 6 (E, isolated); 3 = text of scene B, 4 = random point
    # chain 0 - 3 - 1 - 4 - 2 - 5, so every shortest path is the chain
    edges = {(0, 3): 0.4, (3, 1): 0.1, (1, 4): 0.5, (4, 2): 0.5, (2, 5): 1.0}
    i, j = zip(*edges)
    g = sp.coo_matrix((list(edges.values()), (i, j)), shape=(7, 7))
    return (g + g.T).tocsr()


_KEYS = {0: "A", 1: "B", 2: "C", 3: "B", 4: None, 5: "D", 6: "E"}
_STEPS = {frozenset("AB"), frozenset("BC"), frozenset("CD"), frozenset("AC")}


def _scene_step(a: str, b: str) -> bool:
    return a == b or frozenset((a, b)) in _STEPS


def test_smooth_paths_on_scene_keys_through_text_and_random_vertices() -> None:
    g = _scene_graph()
    images = [0, 1, 2, 5, 6]
    # keys per path (text 3 merged into B, random 4 dropped):
    # 0-1: A,B smooth; 0-2: A,B,C not (A~C); 0-5: A,B,C,D not (A~C); 1-2: B,C smooth (via the random
    # point); 1-5: B,C,D smooth; 2-5: C,D smooth -> 4 of 6 pairs, both directions; image 6 has no path
    assert count_smooth_paths(g, images, _scene_step, vertex_key=_KEYS.get) == (8, 12)
    assert count_smooth_paths(g, images, _scene_step, vertex_key=_KEYS.get, sources=[1]) == (3, 3)
    assert count_smooth_paths(g, images, _scene_step, vertex_key=_KEYS.get, sources=[0]) == (1, 3)
    assert count_smooth_paths(g, images, _scene_step, vertex_key=_KEYS.get, sources=[6]) == (0, 0)
    # without A~C, 0-2 and 0-5 become smooth too
    loose = lambda a, b: a == b or frozenset((a, b)) in _STEPS - {frozenset("AC")}  # noqa: E731
    assert count_smooth_paths(g, images, loose, vertex_key=_KEYS.get) == (12, 12)
    # on vertex numbers (no keys) the text and random vertices are path vertices of their own:
    # with steps only between chain neighbours every path is smooth, 4 images -> 12 ordered pairs
    chain = [0, 3, 1, 4, 2, 5]
    pos = {v: i for i, v in enumerate(chain)}
    adjacent = lambda u, v: u in pos and v in pos and abs(pos[u] - pos[v]) == 1  # noqa: E731
    assert count_smooth_paths(g, images, adjacent) == (12, 12)
    # ...but with the scene oracle on vertex keys looked up per vertex, the random vertex breaks 1-2
    by_vertex = lambda u, v: _KEYS[u] is not None and _KEYS[v] is not None and _scene_step(_KEYS[u], _KEYS[v])  # noqa: E731
    assert count_smooth_paths(g, images, by_vertex, sources=[1]) == (0, 3)


def test_smooth_paths_revisited_key_and_bad_sources() -> None:
    # 0 (A) - 1 (text of B) - 2 (A again): keys A, B, A; the oracle's A~A makes it not smooth
    g = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    keys = {0: "A", 1: "B", 2: "A"}.get
    assert count_smooth_paths(g, [0, 2], _scene_step, vertex_key=keys) == (0, 2)
    assert count_smooth_paths(g, [0, 2], lambda a, b: a != b, vertex_key=keys) == (2, 2)
    with pytest.raises(XmrError, match="source"):
        count_smooth_paths(g, [0, 2], _scene_step, sources=[1])
