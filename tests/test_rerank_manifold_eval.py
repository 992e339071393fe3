"""Label retrieval (N-way k-shot, Euclidean vs geodesic) and smooth-path counting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.errors import XmrError
from xmr.rerank import count_smooth_paths, epsilon_graph, label_retrieval, sample_n_way_k_shot


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
    out = label_retrieval(x, labels, n_way=4, k_shot=2, edges_per_vertex=2.0, extra_points=text, seed=5)
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
