"""Re-rankers of xmr.search against dense exact computations on small seeded inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.csgraph import floyd_warshall

from xmr.errors import XmrError
from xmr.evaluation.metrics import first_relevant_ranks
from xmr.rerank.registry import (
    RERANKERS,
    GalleryVectors,
    Reranker,
    create_reranker,
    load_reranker,
    order_shortlist,
    rerankers_from_strings,
)
from xmr.workflows.evaluate import reranked_ranks


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(n: int, d: int, seed: int, n_centres: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, d))
    return _unit(centres[rng.integers(0, n_centres, n)] + 0.4 * rng.standard_normal((n, d)))


def _gallery(seed: int = 0, n: int = 30, m: int = 20) -> GalleryVectors:
    rng = np.random.default_rng(seed)
    img = _clusters(n, 8, seed)
    txt = _unit(img[:m] + 0.3 * rng.standard_normal((m, 8)))
    return GalleryVectors(img, txt, image_feats=_clusters(n, 6, seed + 1), text_feats=_clusters(m, 5, seed + 2),
                          pairs=np.stack([np.arange(m), np.arange(m)], axis=1))


def _base(q: np.ndarray, gallery: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ gallery.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :width]
    return np.take_along_axis(sims, ids, axis=1), ids


def _dense_mutual_knn(x: np.ndarray, k: int, gamma: float) -> np.ndarray:
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    nn = np.zeros_like(sims, dtype=bool)
    np.put_along_axis(nn, np.argsort(-sims, axis=1)[:, :k], True, axis=1)
    return np.where(nn & nn.T, np.clip(sims, 0, None) ** gamma, 0.0)


def _dense_inverse(x: np.ndarray, k: int, gamma: float, alpha: float) -> np.ndarray:
    a = _dense_mutual_knn(x, k, gamma)
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.where(deg > 0, deg, 1)), 0)
    s = inv[:, None] * a * inv[None, :]
    return np.linalg.inv(np.eye(len(x)) - alpha * s)


def _kq_vector(sims: np.ndarray, ids: np.ndarray, n: int, k_q: int, gamma: float) -> np.ndarray:
    y = np.zeros((len(ids), n))
    for r in range(len(ids)):
        y[r, ids[r, :k_q]] = np.clip(sims[r, :k_q], 0, None) ** gamma
    return y


def test_diffusion_without_truncation_equals_dense_inverse() -> None:
    g = _gallery()
    q = _clusters(3, 8, seed=7)
    rr = create_reranker("diffusion", k=5, gamma=3.0, alpha=0.8, n_trunc=1000, k_q=4, shortlist=30).fit(g)
    sims, ids = _base(q, g.images, 30)
    scores, scored = rr.shortlist_scores(q, None, sims, ids)
    f = _kq_vector(sims, ids, 30, 4, 3.0) @ _dense_inverse(g.images, 5, 3.0, 0.8)
    ref = np.take_along_axis(f, ids, axis=1)
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-8)
    ref_scores, ref_ids = order_shortlist(ref, ref > 1e-12, ids)
    got_scores, got_ids = rr.rerank(q, None, sims, ids)
    np.testing.assert_array_equal(got_ids, ref_ids)
    np.testing.assert_array_equal(scored, ref > 1e-12)


def test_diffusion_truncation_keeps_neighbourhood_only() -> None:
    g = _gallery()
    rr = create_reranker("diffusion", k=5, n_trunc=6, k_q=1, shortlist=30).fit(g)
    assert np.diff(rr.inverse.indptr).max() <= 6  # type: ignore[attr-defined]


def test_bidirectional_equals_dense_eq8_online_form() -> None:
    g = _gallery(seed=3)
    q = _clusters(2, 8, seed=11)
    q_own = _clusters(2, 5, seed=12)
    k, gamma, alpha, k_q, lam = 4, 2.0, 0.7, 3, 0.3
    rr = create_reranker("bidirectional", k=k, gamma=gamma, alpha=alpha, n_trunc=1000, k_q=k_q, shortlist=30,
                         lam=lam, k_cross=3).fit(g)
    sims, ids = _base(q, g.images, 30)
    scores, _ = rr.shortlist_scores(q, q_own, sims, ids)
    m_x = _dense_inverse(g.image_feats, k, gamma, alpha)  # type: ignore[arg-type]
    m_y = _dense_inverse(g.text_feats, k, gamma, alpha)  # type: ignore[arg-type]
    yx = g.texts.astype(np.float64) @ g.images.T.astype(np.float64)
    s_yx = np.zeros_like(yx)
    for r in range(len(yx)):
        top = np.argsort(-yx[r])[:3]
        s_yx[r, top] = np.clip(yx[r, top], 0, None) ** gamma
    s_yx /= s_yx.sum(1, keepdims=True)
    f_x = _kq_vector(sims, ids, 30, k_q, gamma) @ m_x
    own = _unit(q_own) @ _unit(g.text_feats).T  # type: ignore[arg-type]
    own_ids = np.argsort(-own, axis=1)[:, :k_q]
    f_y = _kq_vector(np.take_along_axis(own, own_ids, 1), own_ids, 20, k_q, gamma) @ (m_y @ s_yx)
    b = lam * f_x / np.linalg.norm(f_x, axis=1, keepdims=True) + (1 - lam) * f_y / np.linalg.norm(f_y, axis=1,
                                                                                                 keepdims=True)
    np.testing.assert_allclose(scores, np.take_along_axis(b, ids, axis=1), rtol=1e-4, atol=1e-8)


def test_bidirectional_refuses_same_modality_queries() -> None:
    rr = create_reranker("bidirectional", k=4, hetero=False, shortlist=10).fit(_gallery())
    q = _clusters(1, 8, seed=5)
    with pytest.raises(XmrError, match="cross-modal"):
        rr.rerank(q, None, *_base(q, _gallery().images, 10), query_modality="image")


def _geodesic_reference(points: np.ndarray, eps: float, q: np.ndarray) -> np.ndarray:
    allp = np.vstack([points, q])
    d = np.arccos(np.clip(allp @ allp.T, -1, 1))
    adj = np.where((d <= eps) & ~np.eye(len(allp), dtype=bool), np.maximum(d, 1e-12), 0.0)
    adj[-1, :-1] = np.where(d[-1, :-1] <= eps, np.maximum(d[-1, :-1], 1e-12), 0.0)  # query edges: self included
    adj[:-1, -1] = adj[-1, :-1]
    return floyd_warshall(sparse.csr_matrix(adj), directed=False)[-1, :len(points)]


def test_geodesic_equals_floyd_warshall() -> None:
    g = _gallery(seed=4)
    q = _unit(g.texts[:3] + 0.05)
    rr = create_reranker("geodesic", edges_per_vertex=5.0, align=False, shortlist=30).fit(g)
    sims, ids = _base(q, g.images, 30)
    scores, scored = rr.shortlist_scores(q, None, sims, ids)
    for r in range(len(q)):
        ref = _geodesic_reference(rr.points, rr.epsilon, q[r].astype(np.float64))[:30]  # type: ignore[attr-defined]
        np.testing.assert_allclose(-scores[r], ref[ids[r]], rtol=1e-6)
        np.testing.assert_array_equal(scored[r], np.isfinite(ref[ids[r]]))


def test_geodesic_unretrievable_query_keeps_base_order() -> None:
    x = np.zeros((20, 5), np.float32)
    x[:, :4] = _clusters(20, 4, seed=2)
    g = GalleryVectors(x, np.zeros((0, 5), np.float32))
    rr = create_reranker("geodesic", edges_per_vertex=2.0, align=False, shortlist=20).fit(g)
    assert rr.epsilon < np.pi / 2  # type: ignore[attr-defined]
    q = np.array([[0, 0, 0, 0, 1]], np.float32)  # orthogonal to every point: no vertex within epsilon
    sims, ids = _base(q, x, 20)
    scores, scored = rr.shortlist_scores(q, None, sims, ids)
    assert not scored.any()
    np.testing.assert_array_equal(rr.rerank(q, None, sims, ids)[1], ids)


def test_geodesic_alignment_recovers_a_rotation() -> None:
    rng = np.random.default_rng(0)
    img = _clusters(40, 6, seed=1).astype(np.float64)
    rot, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    if np.linalg.det(rot) < 0:
        rot[:, 0] *= -1
    txt = img @ rot.T
    pairs = np.stack([np.arange(40), np.arange(40)], axis=1)
    rr = create_reranker("geodesic", with_other_modality=False).fit(GalleryVectors(img, txt, pairs=pairs))
    np.testing.assert_allclose(rr.rotation, rot, atol=1e-8)  # type: ignore[attr-defined]
    small = np.linalg.qr(np.eye(6) + 0.05 * rng.standard_normal((6, 6)))[0]
    small *= np.sign(np.diag(small))[None, :]
    icp = create_reranker("geodesic").fit(GalleryVectors(img, img @ small.T))  # no pairs: ICP
    np.testing.assert_allclose(icp.rotation, small, atol=1e-6)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", RERANKERS.names())
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    g = _gallery()
    q = _clusters(4, 8, seed=9)
    q_own = _clusters(4, 5, seed=10)
    params = {"shortlist": 25} if name == "geodesic" else {"k": 4, "n_trunc": 12, "shortlist": 25}
    rr = create_reranker(name, **params).fit(g)
    rr.fingerprint = "f" * 40
    rr.save(tmp_path / "rr")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    back = load_reranker(tmp_path / "rr", expect_fingerprint="f" * 40)
    assert type(back) is type(rr) and back.params == rr.params and back.target == "images"
    base = _base(q, g.images, 25)
    for a, b in zip(rr.rerank(q, q_own, *base), back.rerank(q, q_own, *base)):
        np.testing.assert_array_equal(a, b)
    meta = json.loads((tmp_path / "rr" / "rerank.json").read_text())
    assert meta["method"] == name and meta["params"]["shortlist"] == 25


def test_stale_fingerprint_refused(tmp_path: Path) -> None:
    rr = create_reranker("diffusion", k=4).fit(_gallery())
    rr.fingerprint = "a" * 40
    rr.save(tmp_path / "rr")
    with pytest.raises(XmrError, match="built for another index"):
        load_reranker(tmp_path / "rr", expect_fingerprint="b" * 40, rebuild_hint="rebuild with X")
    with pytest.raises(XmrError, match="no re-ranking structures"):
        load_reranker(tmp_path / "nothing")


@pytest.mark.parametrize("name,params,needle", [
    ("diffusion", {"alpha": 1.0}, "alpha must be in (0, 1)"),
    ("diffusion", {"alpha": "0"}, "alpha must be in (0, 1)"),
    ("diffusion", {"alpha": "abc"}, "alpha must be float"),
    ("diffusion", {"k": 0}, "k must be an integer >= 1"),
    ("diffusion", {"gamma": -1}, "gamma must be in (0, inf)"),
    ("diffusion", {"k_q": 20, "shortlist": 10}, "k_q (20) must not exceed shortlist (10)"),
    ("diffusion", {"lam": 0.5}, "unknown diffusion parameter 'lam'"),
    ("bidirectional", {"lam": 1.5}, "lam must be in [0, 1]"),
    ("bidirectional", {"hetero": "maybe"}, "hetero must be true or false"),
    ("geodesic", {"edges_per_vertex": 0}, "edges_per_vertex must be in (0, inf)"),
    ("nope", {}, "unknown re-ranker 'nope'"),
])
def test_invalid_params(name: str, params: dict[str, object], needle: str) -> None:
    with pytest.raises(XmrError) as e:
        create_reranker(name, **params)
    assert needle in str(e.value)


@pytest.mark.parametrize("name", RERANKERS.names())
def test_k_larger_than_gallery_and_empty_gallery(name: str) -> None:
    g = _gallery(n=8, m=6)
    if name != "geodesic":
        with pytest.raises(XmrError, match="too large for a gallery of 8 images"):
            create_reranker(name, k=8).fit(g)
    empty = GalleryVectors(np.zeros((0, 8), np.float32), g.texts)
    with pytest.raises(XmrError, match="empty gallery"):
        create_reranker(name).fit(empty)


def test_online_params_only_after_fit() -> None:
    rr = create_reranker("diffusion", k=4, shortlist=20).fit(_gallery())
    assert rr.with_params(shortlist=50, k_q="5").params.k_q == 5  # type: ignore[attr-defined]
    with pytest.raises(XmrError, match="k is fixed when the structures are built"):
        rr.with_params(k=5)


def test_rerankers_from_strings() -> None:
    d, b = rerankers_from_strings("diffusion,bidirectional", ["alpha=0.5", "lam=0.2", "diffusion.k=7"])
    assert d.params.alpha == b.params.alpha == 0.5 and d.params.k == 7 and b.params.k == 30  # type: ignore[attr-defined]
    assert b.params.lam == 0.2  # type: ignore[attr-defined]
    with pytest.raises(XmrError, match="unknown re-ranking parameter 'lam' for diffusion"):
        rerankers_from_strings("diffusion", ["lam=0.2"])
    with pytest.raises(XmrError, match="not key=value"):
        rerankers_from_strings("diffusion", ["k"])


def test_order_shortlist_keeps_base_order_for_unscored() -> None:
    ids = np.array([[5, 3, 9, 1, -1]])
    scores = np.array([[0.0, 2.0, 0.0, 1.0, -np.inf]])
    got_scores, got_ids = order_shortlist(scores, scores > 0, ids)
    np.testing.assert_array_equal(got_ids, [[3, 1, 5, 9, -1]])
    np.testing.assert_array_equal(got_scores, [[2.0, 1.0, 0.0, 0.0, -np.inf]])


class _BaseOrder(Reranker):
    """Scores the shortlist by the base scores: the re-ranked list is the plain one."""

    name = "base-order"
    params_type = create_reranker("diffusion").params_type

    def _fit(self, sides) -> None:  # type: ignore[no-untyped-def]
        pass

    def _shortlist_scores(self, query_joint, query_own, base_scores, base_ids, *, same_modality):  # type: ignore[no-untyped-def]
        return base_scores + 2.0, np.ones(base_ids.shape, dtype=bool)


def test_reranked_ranks_of_an_identity_reranker_equal_plain_ranks() -> None:
    rng = np.random.default_rng(1)
    q, g = _clusters(40, 8, seed=1), _clusters(60, 8, seed=2)
    dense = rng.random((40, 60)) < 0.05
    dense[np.arange(40), rng.integers(0, 60, 40)] = True
    rel = sparse.csr_matrix(dense)
    rr = _BaseOrder(shortlist=10, k_q=5).fit(GalleryVectors(g, q))
    ranks, unscored = reranked_ranks(rr, q, None, g, rel, modality="text", block=7)
    np.testing.assert_array_equal(ranks, first_relevant_ranks(q @ g.T, rel))
    assert unscored == 0
