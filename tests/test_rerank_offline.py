"""Offline truncated inverse (batched and per-node) and online top-k against dense exact solves."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.errors import XmrError
from xmr.rerank import knn, mutual_knn_affinity, online_scores, online_topk, symmetric_normalize, truncated_inverse


def _unit(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _graph_and_truncation(n: int, n_trunc: int, seed: int, n_isolated: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """S of a mutual kNN graph whose last ``n_isolated`` nodes have no edges, and T_i = i + its
    n_trunc - 1 nearest neighbours in feature space (in shuffled order, so T_i is not sorted)."""
    x = _unit(n, seed=seed)
    a = mutual_knn_affinity(x, 6, gamma=3.0).tolil()
    a[n - n_isolated:, :] = 0
    a[:, n - n_isolated:] = 0
    s = symmetric_normalize(a.tocsr())
    _, nn = knn(x, n_trunc - 1)
    t = np.hstack([np.arange(n)[:, None], nn])
    return s, np.random.default_rng(seed).permuted(t, axis=1)


def _dense_rows(s: sp.csr_matrix, t: np.ndarray, alpha: float) -> np.ndarray:
    """Row i = the exact solution of (I - alpha S[T_i, T_i]) f = e_i, scattered to T_i."""
    dense, n = s.toarray(), s.shape[0]
    out = np.zeros((n, n))
    for i, ti in enumerate(t):
        out[i, ti] = np.linalg.solve(np.eye(len(ti)) - alpha * dense[np.ix_(ti, ti)], (ti == i).astype(float))
    return out


@pytest.mark.parametrize("batch_size,n_threads", [(1, 1), (7, 2), (32, 1), (500, 2)])
def test_batched_equals_per_node_equals_dense_restricted_solve(batch_size: int, n_threads: int) -> None:
    s, t = _graph_and_truncation(90, 20, seed=1, n_isolated=5)
    kw = {"alpha": 0.9, "tol": 1e-10, "maxiter": 500}
    per_node = truncated_inverse(s, t, method="per-node", **kw)
    batched = truncated_inverse(s, t, batch_size=batch_size, n_threads=n_threads, **kw)
    exact = _dense_rows(s, t, 0.9)
    np.testing.assert_allclose(batched.toarray(), exact, atol=1e-9)
    np.testing.assert_allclose(batched.toarray(), per_node.toarray(), atol=1e-9)
    np.testing.assert_array_equal(batched.indptr, np.arange(0, 90 * 20 + 1, 20))
    np.testing.assert_array_equal(batched.indices.reshape(90, 20), np.sort(t, axis=1))
    assert batched.dtype == np.float64 and batched.has_sorted_indices


def test_batched_result_does_not_depend_on_batch_size_or_threads() -> None:
    s, t = _graph_and_truncation(70, 15, seed=7, n_isolated=4)
    kw = {"alpha": 0.95, "tol": 1e-6}
    ref = truncated_inverse(s, t, batch_size=1, n_threads=1, **kw)
    for batch_size, n_threads in [(5, 2), (64, 1), (70, 2)]:
        got = truncated_inverse(s, t, batch_size=batch_size, n_threads=n_threads, **kw)
        np.testing.assert_array_equal(got.data, ref.data)
        np.testing.assert_array_equal(got.indices, ref.indices)


def test_float32_batched_is_within_tolerance_of_the_dense_solve() -> None:
    s, t = _graph_and_truncation(80, 25, seed=2)
    m = truncated_inverse(s, t, alpha=0.9, tol=1e-5, dtype=np.float32, batch_size=16)
    assert m.dtype == np.float32
    np.testing.assert_allclose(m.toarray(), _dense_rows(s, t, 0.9), atol=1e-4)


def test_same_iterates_when_stopped_by_maxiter(caplog: pytest.LogCaptureFixture) -> None:
    # both methods run the same CG iteration, so they agree even before convergence
    s, t = _graph_and_truncation(60, 30, seed=3, n_isolated=3)
    kw = {"alpha": 0.99, "tol": 1e-12, "maxiter": 3}
    with caplog.at_level(logging.WARNING, logger="xmr.rerank.offline"):
        batched = truncated_inverse(s, t, batch_size=8, **kw)
    assert "did not reach tol" in caplog.text
    per_node = truncated_inverse(s, t, method="per-node", **kw)
    np.testing.assert_allclose(batched.toarray(), per_node.toarray(), atol=1e-12)


@pytest.mark.parametrize("method", ["batched", "per-node"])
def test_untruncated_rows_are_the_exact_inverse(method: str) -> None:
    s, _ = _graph_and_truncation(40, 2, seed=4)
    everyone = np.tile(np.arange(40), (40, 1))
    m = truncated_inverse(s, everyone, alpha=0.9, tol=1e-12, maxiter=1000, method=method, batch_size=16)
    inv = np.linalg.inv(np.eye(40) - 0.9 * s.toarray())
    np.testing.assert_allclose(m.toarray(), inv, rtol=1e-6, atol=1e-9)


def test_online_topk_matches_dense_online_scores() -> None:
    x = _unit(70, seed=5)
    s, t = _graph_and_truncation(70, 15, seed=5)
    m = truncated_inverse(s, t, alpha=0.9, tol=1e-8)
    q = _unit(6, seed=6)
    sims, ids = knn(q, 3, y=x)
    dense = online_scores(m, sims, ids, gamma=3.0)
    scores, top = online_topk(m, sims, ids, 10, gamma=3.0)
    order = np.argsort(-dense, axis=1, kind="stable")[:, :10]  # ties by ascending id, as online_topk
    np.testing.assert_array_equal(top, order)
    np.testing.assert_array_equal(scores, np.take_along_axis(dense, order, axis=1))
    # more slots than reachable items: padded with -1 / -inf after the reachable ones
    scores, top = online_topk(m, sims[:1, :1], ids[:1, :1], 20)
    assert (top[0, 15:] == -1).all() and np.isneginf(scores[0, 15:]).all()
    assert set(top[0, :15].tolist()) == set(m[ids[0, 0]].indices.tolist())


@pytest.mark.parametrize("kwargs,needle", [
    ({"alpha": 1.0}, "alpha must be in"),
    ({"alpha": 0.0}, "alpha must be in"),
    ({"neighbours": np.array([[1, 2], [1, 0], [2, 0], [3, 0]])}, "node 0 is missing from its own truncation set"),
    ({"neighbours": np.array([[0, 4]] * 4)}, r"must lie in \[0, 4\)"),
    ({"neighbours": np.array([[0, -1]] * 4)}, r"must lie in \[0, 4\)"),
    ({"neighbours": np.tile(np.arange(5) % 4, (4, 1))}, "n_trunc=5 exceeds the number of nodes 4"),
    ({"neighbours": np.array([[0, 1], [1, 0], [2, 2], [3, 0]])}, "node 2 has a repeated id"),
    ({"neighbours": np.array([[0, 1], [1, 0], [2, 2], [3, 0]]), "method": "per-node"}, "node 2 has a repeated id"),
    ({"neighbours": np.zeros((3, 2), dtype=int)}, r"must be \(4, n_trunc\)"),
    ({"neighbours": np.zeros((4, 2))}, "integer node ids"),
    ({"method": "dense"}, "method must be"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"tol": 0.0}, "tol must be > 0"),
    ({"dtype": np.float16}, "dtype must be float32 or float64"),
])
def test_invalid_input_is_a_clear_error(kwargs: dict, needle: str) -> None:
    args = {"neighbours": np.array([[0, 1], [1, 0], [2, 3], [3, 2]]), **kwargs}
    with pytest.raises(XmrError, match=needle):
        truncated_inverse(sp.identity(4, format="csr") * 0.5, **args)


def test_online_errors() -> None:
    m = sp.identity(4, format="csr")
    with pytest.raises(XmrError, match="another index"):
        online_topk(m, np.ones((1, 2)), np.array([[0, 9]]), 2)
    with pytest.raises(XmrError, match="must match"):
        online_topk(m, np.ones((1, 3)), np.array([[0, 1]]), 2)
    with pytest.raises(XmrError, match="k must be >= 1"):
        online_topk(m, np.ones((1, 2)), np.array([[0, 1]]), 0)
