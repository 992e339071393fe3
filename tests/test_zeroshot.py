"""Batch-hard triplet, P x K sampler, identity models and the zero-shot walk evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmr.evaluation.metrics import first_relevant_ranks
from xmr.losses import batch_hard_triplet_loss, identity_ce_loss
from xmr.rerank import cross_knn_affinity, mutual_knn_affinity, row_normalize, symmetric_normalize
from xmr.zeroshot import (
    IdentityTrainConfig,
    WalkConfig,
    embed,
    fuse,
    pk_batches,
    retrieval_metrics,
    train_single_modal,
    train_two_stream,
    walk_both_ways,
    with_fallback,
)


def _loop_batch_hard(emb: torch.Tensor, labels: list[int], margin: float) -> float:
    hinges = []
    for a in range(len(labels)):
        pos = [float(torch.linalg.vector_norm(emb[a] - emb[p])) for p in range(len(labels))
               if p != a and labels[p] == labels[a]]
        neg = [float(torch.linalg.vector_norm(emb[a] - emb[n])) for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            hinges.append(max(0.0, margin + max(pos) - min(neg)))
    return sum(hinges) / len(hinges)


@pytest.mark.parametrize("normalise", [True, False])
def test_batch_hard_matches_loop(normalise: bool) -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(12, 5, generator=g, dtype=torch.float64)
    if normalise:
        emb = F.normalize(emb, dim=1)
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 5]  # 4 and 5 have no positive: left out
    out = batch_hard_triplet_loss(emb, torch.tensor(labels), margin=0.6)
    assert float(out["loss"]) == pytest.approx(_loop_batch_hard(emb, labels, 0.6), rel=1e-9)


def test_batch_hard_gradients_flow_and_edge_cases() -> None:
    emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = batch_hard_triplet_loss(F.normalize(emb, dim=1), labels, margin=2.0)  # margin 2: every anchor active
    out["loss"].backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    assert float(out["frac_active"]) == 1.0
    dup = torch.zeros(4, 3, requires_grad=True)  # identical rows: zero distances, finite gradient
    batch_hard_triplet_loss(dup, torch.tensor([0, 0, 1, 1]))["loss"].backward()
    assert torch.isfinite(dup.grad).all()
    lone = batch_hard_triplet_loss(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    assert float(lone["loss"]) == 0.0
    with pytest.raises(ValueError):
        batch_hard_triplet_loss(torch.randn(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        batch_hard_triplet_loss(torch.randn(3, 2), torch.tensor([0, 0, 1]), margin=-1.0)
    ce = identity_ce_loss(torch.tensor([[5.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1]))
    assert float(ce["accuracy"]) == 1.0 and float(ce["loss"]) < 0.01


def test_pk_sampler_yields_valid_batches() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5])
    modality = np.array([0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1])  # identity 3 has only modality 0
    batches = list(pk_batches(labels, modality, p=2, k=3, rng=rng))
    seen = np.concatenate([labels[b] for b in batches])
    assert len(batches) == 2  # 5 eligible identities, P = 2: the last lone identity is dropped
    assert set(seen.tolist()) < {0, 1, 2, 4, 5} and len(set(seen.tolist())) == 4
    for b in batches:
        assert len(b) % 3 == 0 and len(b) // 3 >= 2
        for ident in np.unique(labels[b]):
            rows = b[labels[b] == ident]
            assert len(rows) == 3 and set(modality[rows].tolist()) == {0, 1}
    with pytest.raises(ValueError):
        next(pk_batches(labels, modality, p=2, k=1, rng=rng))


def _synthetic_two_modalities(n_id: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity prototypes seen through two fixed random linear 'sensors', plus noise."""
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((n_id, 16))
    sensor_a, sensor_b = rng.standard_normal((16, dim)), rng.standard_normal((16, dim))
    a = proto @ sensor_a + 0.3 * rng.standard_normal((n_id, dim))
    b = proto @ sensor_b + 0.3 * rng.standard_normal((n_id, dim))
    return a.astype(np.float32), b.astype(np.float32)


def test_two_stream_beats_chance_on_separable_data() -> None:
    torch.set_num_threads(1)
    a, b = _synthetic_two_modalities(80, 24, seed=0)
    train, test = slice(0, 50), slice(50, 80)  # 30 identities never trained on
    labels = np.arange(50)
    cfg = IdentityTrainConfig(embed_dim=16, stream_dim=32, epochs=40, p_identities=10, lr=3e-3, seed=0)
    model, parts = train_two_stream(np.concatenate([a[train], b[train]]), np.concatenate([labels, labels]),
                                    np.repeat([0, 1], 50), cfg)
    assert parts["accuracy"] > 0.5
    ea, eb = embed(model, a[test], modality=0), embed(model, b[test], modality=1)
    assert np.allclose(np.linalg.norm(ea, axis=1), 1.0, atol=1e-5)
    r1 = retrieval_metrics(ea @ eb.T, np.eye(30, dtype=bool))["rank1"]
    assert r1 > 3 * 100 / 30  # chance is 1 in 30
    single = train_single_modal(a[train], labels, cfg)
    assert embed(single, a[test]).shape == (30, 16)
    with pytest.raises(ValueError):
        embed(model, a[test])
    with pytest.raises(ValueError):
        IdentityTrainConfig(k_per_identity=1)


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_walk_both_ways_matches_dense_inverse() -> None:
    a_own, b_own, a_x, b_x = _unit(25, 6, 0), _unit(30, 5, 1), _unit(25, 4, 2), _unit(30, 4, 3)
    cfg = WalkConfig(k=5, k_cross=6, alpha=0.7, gamma=2.0)
    w_ab, w_ba = walk_both_ways(a_own, b_own, a_x, b_x, cfg)
    s_aa = symmetric_normalize(mutual_knn_affinity(a_own, 5, gamma=2.0)).toarray()
    s_bb = symmetric_normalize(mutual_knn_affinity(b_own, 5, gamma=2.0)).toarray()
    a_ab = cross_knn_affinity(a_x, b_x, 6, gamma=2.0).toarray()
    s_ab, s_ba = row_normalize(a_ab).toarray(), row_normalize(a_ab.T).toarray()
    ref_ab = (np.linalg.inv(np.eye(30) - 0.7 * s_bb) @ s_ba).T  # (25, 30): from a_i over B
    ref_ba = (np.linalg.inv(np.eye(25) - 0.7 * s_aa) @ s_ab).T
    np.testing.assert_allclose(w_ab, ref_ab, atol=1e-5)
    np.testing.assert_allclose(w_ba, ref_ba, atol=1e-5)
    np.testing.assert_allclose(fuse(w_ab, w_ba, 0.3), 0.3 * ref_ab + 0.7 * ref_ba.T, atol=1e-5)
    # truncation: scores vanish outside the range and match the dense inverse on it
    t_ab, _ = walk_both_ways(a_own, b_own, a_x, b_x, WalkConfig(k=5, k_cross=6, alpha=0.7, n_seeds=2, k_trunc=3))
    assert ((t_ab > 0).sum(axis=1) <= 2 + 2 * 3).all()


def test_with_fallback_orders_lexicographically() -> None:
    rng = np.random.default_rng(0)
    primary = np.where(rng.random((6, 9)) < 0.4, rng.random((6, 9)), 0.0)
    fallback = rng.standard_normal((6, 9))
    out = with_fallback(primary, fallback)
    for i in range(6):
        want = sorted(range(9), key=lambda j: (primary[i, j], fallback[i, j]), reverse=True)
        assert np.argsort(-out[i], kind="stable").tolist() == want


def test_retrieval_metrics_vs_brute_force() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(40, 30)).astype(float)  # many ties: pessimistic counting
    rel = np.zeros((40, 30), dtype=bool)
    rel[np.arange(40), rng.integers(0, 30, 40)] = True
    m = retrieval_metrics(scores, rel)
    ranks = []
    for q in range(40):
        g = int(np.flatnonzero(rel[q])[0])
        ranks.append(sum(1 for j in range(30) if j != g and scores[q, j] >= scores[q, g]))
    ranks_arr = np.array(ranks)
    np.testing.assert_array_equal(first_relevant_ranks(scores, rel), ranks_arr)
    for k in (1, 5, 10, 20):
        assert m[f"rank{k}"] == pytest.approx(100 * np.mean(ranks_arr < k))
    assert m["mAP"] == pytest.approx(100 * np.mean(1.0 / (ranks_arr + 1)))  # one relevant item per query
