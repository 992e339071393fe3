"""Geodesic retrieval pieces against dense, obvious references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xmr.errors import XmrError
from xmr.rerank import epsilon_graph, geodesic_distances, geodesic_knn, great_circle, procrustes_align


def _unit(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_procrustes_recovers_a_known_rotation_and_translation() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    t = rng.standard_normal(5)
    src = rng.standard_normal((40, 5))
    dst = src @ q.T + t
    r, t_hat = procrustes_align(src, dst)
    np.testing.assert_allclose(r, q, atol=1e-10)
    np.testing.assert_allclose(t_hat, t, atol=1e-10)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_procrustes_reduces_pair_distance_on_noisy_pairs() -> None:
    src = _unit(50, seed=1)
    dst = _unit(50, seed=2) * 0.3 + src @ np.diag([1, -1, 1, 1, 1, 1]) * 0.7
    r, t = procrustes_align(src, dst)
    assert np.linalg.norm(src @ r.T + t - dst) < np.linalg.norm(src - dst)


def test_great_circle_matches_acos_loop() -> None:
    x, y = _unit(4, seed=3), _unit(3, seed=4)
    ref = [[math.acos(max(-1.0, min(1.0, float(a @ b)))) for b in y] for a in x]
    np.testing.assert_allclose(great_circle(x, y), ref)
    assert great_circle(x[:1], x[:1])[0, 0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("m", [1.0, 3.0])
def test_epsilon_graph_edge_count_and_threshold(m: float) -> None:
    x = _unit(40, seed=5)
    g, eps = epsilon_graph(x, edges_per_vertex=m)
    assert (g != g.T).nnz == 0
    assert g.nnz // 2 == round(m * 40)  # distinct random distances: no ties at epsilon
    d = great_circle(x, x)
    iu = np.triu_indices(40, 1)
    assert np.sort(d[iu])[round(m * 40) - 1] == pytest.approx(eps)
    np.testing.assert_allclose(g.toarray()[g.toarray() > 0], d[g.toarray() > 0])


def _floyd(w: np.ndarray) -> np.ndarray:
    n = len(w)
    d = np.where(w > 0, w, np.inf)
    np.fill_diagonal(d, 0.0)
    for k in range(n):
        d = np.minimum(d, d[:, k:k + 1] + d[k:k + 1, :])
    return d


def test_geodesic_distances_match_floyd_warshall() -> None:
    g, _ = epsilon_graph(_unit(35, seed=6), edges_per_vertex=2.0)
    np.testing.assert_allclose(geodesic_distances(g, np.arange(35)), _floyd(g.toarray()))


def test_geodesic_knn_matches_sorted_dense_and_marks_unretrievable() -> None:
    g, _ = epsilon_graph(_unit(30, seed=7), edges_per_vertex=1.0)  # sparse: some components apart
    full = _floyd(g.toarray())
    queries, targets = np.arange(0, 10), np.arange(5, 30)
    dist, ids = geodesic_knn(g, queries, targets, 3)
    for qi, q in enumerate(queries):
        row = [(full[q, t], t) for t in targets if t != q]
        row.sort(key=lambda p: p[0])
        for j in range(3):
            assert dist[qi, j] == pytest.approx(row[j][0])
            assert ids[qi, j] == (row[j][1] if math.isfinite(row[j][0]) else -1)


def test_query_without_path_to_targets_is_unretrievable() -> None:
    rng = np.random.default_rng(8)
    a = np.array([1.0, 0, 0]) + 0.01 * rng.standard_normal((10, 3))  # two tight, far-apart clusters
    b = np.array([0, 0, 1.0]) + 0.01 * rng.standard_normal((10, 3))
    g, eps = epsilon_graph(np.vstack([a, b]), edges_per_vertex=2.0)
    assert eps < 0.5
    dist, ids = geodesic_knn(g, np.array([0, 12]), np.arange(10, 20), 2)
    assert ids[0].tolist() == [-1, -1] and np.isinf(dist[0]).all()  # cluster a cannot reach b
    assert (ids[1] >= 10).all() and np.isfinite(dist[1]).all()


def test_errors() -> None:
    with pytest.raises(XmrError, match="paired"):
        procrustes_align(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(XmrError, match="edges_per_vertex"):
        epsilon_graph(_unit(5), edges_per_vertex=0)
    g, _ = epsilon_graph(_unit(5), edges_per_vertex=1)
    with pytest.raises(XmrError, match="k=9"):
        geodesic_knn(g, np.array([0]), np.arange(5), 9)
    with pytest.raises(XmrError, match="out of range"):
        geodesic_distances(g, np.array([7]))


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Five clusters from very tight to spread out: node degrees in the epsilon-graph vary a lot."""
    rng = np.random.default_rng(seed)
    centres, label = rng.standard_normal((5, d)), rng.integers(0, 5, n)
    spread = np.array([0.02, 0.05, 0.1, 0.3, 1.0])[label][:, None]
    return centres[label] + spread * rng.standard_normal((n, d))


@pytest.mark.parametrize("points", [_unit(300, seed=9), _clustered(400, 8, seed=10), _clustered(250, 3, seed=11)],
                         ids=["uniform", "clustered-8d", "clustered-3d"])
@pytest.mark.parametrize("m", [1.0, 5.0, 20.0])
@pytest.mark.parametrize("candidates", [1, None])
def test_epsilon_graph_knn_candidates_equal_the_dense_graph(points: np.ndarray, m: float,
                                                           candidates: int | None) -> None:
    dense, eps = epsilon_graph(points, edges_per_vertex=m, method="dense")
    cand, eps_c = epsilon_graph(points, edges_per_vertex=m, method="knn", candidates=candidates)
    assert eps_c == pytest.approx(eps, rel=1e-12)
    assert ((dense > 0) != (cand > 0)).nnz == 0  # the same edges
    np.testing.assert_allclose(cand.toarray(), dense.toarray(), rtol=1e-12, atol=1e-12)


def test_epsilon_graph_auto_uses_candidates_beyond_the_dense_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import xmr.rerank.geodesic as geodesic

    x = _clustered(150, 4, seed=12)
    dense, _ = epsilon_graph(x, edges_per_vertex=3.0)
    monkeypatch.setattr(geodesic, "DENSE_MAX_POINTS", 100)
    seen = []
    real = geodesic._candidate_pairs
    monkeypatch.setattr(geodesic, "_candidate_pairs", lambda *a: seen.append(a) or real(*a))
    auto, _ = epsilon_graph(x, edges_per_vertex=3.0)
    assert seen and ((dense > 0) != (auto > 0)).nnz == 0
    with pytest.raises(XmrError, match="method must be"):
        epsilon_graph(x, method="exact")
    with pytest.raises(XmrError, match="candidates must be >= 1"):
        epsilon_graph(x, method="knn", candidates=0)
