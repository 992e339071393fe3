"""kNN graphs, normalisation, diffusion and the bi-directional walk against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.errors import XmrError
from xmr.rerank import (
    bidirectional_scores,
    cross_knn_affinity,
    diffuse,
    knn,
    mutual_knn_affinity,
    random_walk_scores,
    row_normalize,
    symmetric_normalize,
)


def _unit(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_knn(q: np.ndarray, base: np.ndarray, k: int, exclude_self: bool) -> list[set[int]]:
    sims = q.astype(np.float64) @ base.T.astype(np.float64)
    out = []
    for i, row in enumerate(sims):
        order = [j for j in np.argsort(-row, kind="stable") if not (exclude_self and j == i)]
        out.append(set(order[:k]))
    return out


def test_knn_matches_brute_force() -> None:
    x = _unit(40)
    _, ids = knn(x, 5)
    assert [set(r) for r in ids.tolist()] == _brute_knn(x, x, 5, True)
    y = _unit(30, seed=1)
    _, ids = knn(x, 4, y=y)
    assert [set(r) for r in ids.tolist()] == _brute_knn(x, y, 4, False)


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_mutual_knn_affinity_matches_loop(gamma: float) -> None:
    x = _unit(30, seed=2)
    k = 6
    nn = _brute_knn(x, x, k, True)
    ref = np.zeros((30, 30))
    for i in range(30):
        for j in range(30):
            if i != j and j in nn[i] and i in nn[j]:
                ref[i, j] = max(0.0, float(x[i].astype(np.float64) @ x[j])) ** gamma
    a = mutual_knn_affinity(x, k, gamma=gamma).toarray()
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a, a.T)


def test_cross_knn_affinity_matches_loop() -> None:
    x, y = _unit(25, seed=3), _unit(20, seed=4)
    nx, ny = _brute_knn(x, y, 5, False), _brute_knn(y, x, 5, False)
    ref = np.zeros((25, 20))
    for i in range(25):
        for j in range(20):
            if j in nx[i] and i in ny[j]:
                ref[i, j] = max(0.0, float(x[i].astype(np.float64) @ y[j]))
    np.testing.assert_allclose(cross_knn_affinity(x, y, 5).toarray(), ref, rtol=1e-5, atol=1e-7)


def test_normalisations_match_dense_formulas() -> None:
    a = mutual_knn_affinity(_unit(30, seed=5), 5).toarray().astype(np.float64)
    a[3, :] = a[:, 3] = 0.0  # an isolated node keeps a zero row
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        dinv = np.where(deg > 0, 1 / np.sqrt(deg), 0.0)
    np.testing.assert_allclose(symmetric_normalize(sp.csr_matrix(a)).toarray(), dinv[:, None] * a * dinv[None, :])
    c = cross_knn_affinity(_unit(10, seed=6), _unit(12, seed=7), 3).toarray().astype(np.float64)
    rs = c.sum(1, keepdims=True)
    np.testing.assert_allclose(row_normalize(sp.csr_matrix(c)).toarray(), np.divide(c, rs, out=np.zeros_like(c),
                                                                                   where=rs > 0))


@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.99])
def test_diffusion_matches_dense_inverse(alpha: float) -> None:
    s = symmetric_normalize(mutual_knn_affinity(_unit(50, seed=8), 8, gamma=3.0))
    y = np.zeros((50, 3))
    y[[0, 7, 20], [0, 1, 2]] = 1.0
    dense = np.linalg.inv(np.eye(50) - alpha * s.toarray()) @ y
    np.testing.assert_allclose(diffuse(s, y, alpha=alpha, tol=1e-10, maxiter=1000), dense, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(diffuse(s, y[:, 0], alpha=alpha, tol=1e-10, maxiter=1000), dense[:, 0],
                               rtol=1e-6, atol=1e-8)


def test_random_walk_is_the_iteration_fixed_point() -> None:
    # f <- alpha S f + (1 - alpha) f0 converges to (1 - alpha) (I - alpha S)^-1 f0 (Eq. 4)
    s = symmetric_normalize(mutual_knn_affinity(_unit(30, seed=9), 6))
    f0 = np.zeros(30)
    f0[4] = 1.0
    f = f0.copy()
    for _ in range(2000):
        f = 0.8 * (s @ f) + 0.2 * f0
    np.testing.assert_allclose(0.2 * diffuse(s, f0, alpha=0.8, tol=1e-12, maxiter=1000), f, atol=1e-9)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_bidirectional_scores_match_eq8(lam: float) -> None:
    x, y = _unit(20, seed=10), _unit(15, seed=11)
    s_xx = symmetric_normalize(mutual_knn_affinity(x, 5))
    s_yy = symmetric_normalize(mutual_knn_affinity(y, 5))
    a_xy = cross_knn_affinity(x, y, 6)
    s_xy, s_yx = row_normalize(a_xy), row_normalize(a_xy.T)
    alpha = 0.9
    lxx = np.linalg.inv(np.eye(20) - alpha * s_xx.toarray())
    lyy = np.linalg.inv(np.eye(15) - alpha * s_yy.toarray())
    ref = lam * lxx @ s_xy.toarray() + (1 - lam) * (lyy @ s_yx.toarray()).T
    got = bidirectional_scores(s_xx, s_xy, s_yy, s_yx, alpha=alpha, lam=lam, tol=1e-12, maxiter=1000)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(random_walk_scores(s_xx, s_xy, alpha=alpha, tol=1e-12, maxiter=1000),
                               lxx @ s_xy.toarray(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("call,needle", [
    (lambda: diffuse(sp.identity(4), np.ones(4), alpha=1.0), "alpha must be in"),
    (lambda: diffuse(sp.identity(4), np.ones(4), alpha=0.0), "alpha must be in"),
    (lambda: knn(_unit(5), 5), "k=5 must be between 1 and 4"),
    (lambda: knn(np.zeros((0, 4)), 1), "non-empty"),
    (lambda: mutual_knn_affinity(_unit(5), 2, gamma=0), "gamma must be > 0"),
    (lambda: diffuse(sp.identity(4), np.ones(3)), "y must have shape"),
    (lambda: bidirectional_scores(sp.identity(3), sp.identity(3), sp.identity(3), sp.identity(3), lam=2),
     "lambda must be in"),
])
def test_invalid_parameters_are_clear_errors(call, needle: str) -> None:
    with pytest.raises(XmrError, match=needle):
        call()


def test_rerank_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, xmr.rerank; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_untruncated_offline_inverse_is_the_exact_inverse_and_online_matches_diffusion() -> None:
    from xmr.rerank import online_scores, truncated_inverse

    x = _unit(40, seed=12)
    s = symmetric_normalize(mutual_knn_affinity(x, 6, gamma=3.0))
    everyone = np.tile(np.arange(40), (40, 1))
    m = truncated_inverse(s, everyone, alpha=0.9, tol=1e-12, maxiter=1000)
    inv = np.linalg.inv(np.eye(40) - 0.9 * s.toarray())
    np.testing.assert_allclose(m.toarray(), inv, rtol=1e-6, atol=1e-9)
    q = _unit(3, seed=13)
    sims, ids = knn(q, 5, y=x)
    y = np.zeros((3, 40))
    for r in range(3):
        y[r, ids[r]] = np.clip(sims[r], 0, None) ** 3.0
    np.testing.assert_allclose(online_scores(m, sims, ids, gamma=3.0), y @ inv, rtol=1e-6, atol=1e-9)


def test_truncated_rows_are_dense_solves_on_the_subgraph() -> None:
    from xmr.rerank import truncated_inverse

    x = _unit(30, seed=14)
    s = symmetric_normalize(mutual_knn_affinity(x, 5))
    _, nn = knn(x, 9)
    trunc = np.hstack([np.arange(30)[:, None], nn])  # self + 9 neighbours
    m = truncated_inverse(s, trunc, alpha=0.95, tol=1e-12, maxiter=1000).toarray()
    dense = s.toarray()
    for i in (0, 11, 29):
        t = trunc[i]
        e = (t == i).astype(float)
        f = np.linalg.solve(np.eye(10) - 0.95 * dense[np.ix_(t, t)], e)
        np.testing.assert_allclose(m[i, t], f, rtol=1e-6, atol=1e-9)
        assert np.count_nonzero(m[i]) <= 10


def test_offline_online_errors() -> None:
    from xmr.rerank import online_scores, truncated_inverse

    s = sp.identity(4, format="csr") * 0.5
    with pytest.raises(XmrError, match="missing from its own truncation set"):
        truncated_inverse(s, np.array([[1, 2]] * 4))
    with pytest.raises(XmrError, match="another index"):
        online_scores(sp.identity(4, format="csr"), np.ones((1, 2)), np.array([[0, 9]]))


def test_gallery_guided_truncation_matches_dense_restricted_solve() -> None:
    from xmr.rerank import gallery_guided_ranges, truncated_walk_scores

    gallery_own, gallery_joint = _unit(30, seed=15), _unit(30, d=5, seed=16)
    queries_joint = _unit(4, d=5, seed=17)
    s_xx = symmetric_normalize(mutual_knn_affinity(gallery_own, 5))
    s_xy = row_normalize(cross_knn_affinity(gallery_joint, queries_joint, 3))
    _, seeds = knn(queries_joint, 2, y=gallery_joint)
    _, own_nn = knn(gallery_own, 6)
    ranges = gallery_guided_ranges(seeds, own_nn)
    for r, sd in zip(ranges, seeds):
        assert set(sd) | set(own_nn[sd].ravel()) == set(r.tolist())
    got = truncated_walk_scores(s_xx, s_xy, ranges, alpha=0.9, tol=1e-12, maxiter=1000)
    dense, cross = s_xx.toarray(), s_xy.toarray()
    for j, t in enumerate(ranges):
        ref = np.zeros(30)
        ref[t] = np.linalg.solve(np.eye(len(t)) - 0.9 * dense[np.ix_(t, t)], cross[t, j])
        np.testing.assert_allclose(got[j], ref, rtol=1e-6, atol=1e-9)
    full = truncated_walk_scores(s_xx, s_xy, [np.arange(30)] * 4, alpha=0.9, tol=1e-12, maxiter=1000)
    np.testing.assert_allclose(full, random_walk_scores(s_xx, s_xy, alpha=0.9, tol=1e-12, maxiter=1000).T,
                               rtol=1e-6, atol=1e-9)
    with pytest.raises(XmrError, match="seed ids"):
        gallery_guided_ranges(np.array([[40]]), own_nn)


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0])
def test_truncated_bidirectional_equals_eq8_without_truncation_and_respects_ranges(lam: float) -> None:
    from xmr.rerank import truncated_bidirectional_scores

    x, y = _unit(18, seed=18), _unit(14, seed=19)
    s_xx, s_yy = symmetric_normalize(mutual_knn_affinity(x, 5)), symmetric_normalize(mutual_knn_affinity(y, 5))
    a = cross_knn_affinity(x, y, 6)
    s_xy, s_yx = row_normalize(a), row_normalize(a.T)
    kw = {"alpha": 0.9, "lam": lam, "tol": 1e-12, "maxiter": 1000}
    full = truncated_bidirectional_scores(s_xx, s_xy, s_yy, s_yx, [np.arange(18)] * 14, [np.arange(14)] * 18, **kw)
    np.testing.assert_allclose(full, bidirectional_scores(s_xx, s_xy, s_yy, s_yx, **kw), rtol=1e-6, atol=1e-9)
    rx = [np.arange(0, 9)] * 14  # Y-queries may only reach the first half of X
    ry = [np.arange(0, 7)] * 18  # X-queries only the first half of Y
    part = truncated_bidirectional_scores(s_xx, s_xy, s_yy, s_yx, rx, ry, **kw)
    assert not part[9:, 7:].any()  # outside both ranges nothing can score
    if lam == 1.0:
        assert not part[9:].any() and part[:9].any()
    if lam == 0.0:
        assert not part[:, 7:].any() and part[:, :7].any()
