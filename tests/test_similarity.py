"""Similarity matrices (cosine, GXN order-violation, two-branch) and vse_loss over them, against loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmr.errors import XmrError
from xmr.evaluation.similarity import SIMILARITIES as SCORED
from xmr.evaluation.similarity import Similarity
from xmr.losses import SIMILARITIES, cosine_similarity, order_similarity, two_branch_similarity, vse_loss
from xmr.losses.similarity import resolve_similarity


def _emb(b: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=torch.float64)


def ref_cosine(v, t):
    dot = sum(float(x) * float(y) for x, y in zip(v, t))
    return dot / math.sqrt(sum(float(x) ** 2 for x in v)) / math.sqrt(sum(float(y) ** 2 for y in t))


def ref_order(v, t, abstract_side="image"):
    # GXN: s(t, v) = -||max(0, v - t)||^2; Vendrov's captions-above-images: -||max(0, t - v)||^2
    if abstract_side == "image":
        return -sum(max(0.0, float(x) - float(y)) ** 2 for x, y in zip(v, t))
    return -sum(max(0.0, float(y) - float(x)) ** 2 for x, y in zip(v, t))


def ref_vse_scores(s, margin, hardest):
    """Bidirectional hinge over a plain nested list of scores s[i][j] = s(image i, text j)."""
    b = len(s)
    total_i2t = total_t2i = 0.0
    for i in range(b):
        ci = [max(0.0, margin - s[i][i] + s[i][j]) for j in range(b) if j != i]
        ct = [max(0.0, margin - s[i][i] + s[j][i]) for j in range(b) if j != i]
        total_i2t += max(ci) if hardest else sum(ci)
        total_t2i += max(ct) if hardest else sum(ct)
    return total_i2t / b + total_t2i / b


def test_cosine_matches_loop_on_raw_features() -> None:
    img, txt = _emb(4, 6, 0), _emb(5, 6, 1)
    out = cosine_similarity(img, txt)
    assert out.shape == (4, 5)
    for i in range(4):
        for j in range(5):
            assert float(out[i, j]) == pytest.approx(ref_cosine(img[i], txt[j]), rel=1e-12)


@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("absolute", [False, True])
def test_order_similarity_matches_loop(side: str, absolute: bool) -> None:
    img, txt = _emb(5, 7, 2), _emb(3, 7, 3)
    out = order_similarity(img, txt, abstract_side=side, absolute=absolute)
    assert out.shape == (5, 3)
    for i in range(5):
        for j in range(3):
            v, t = (img[i].abs(), txt[j].abs()) if absolute else (img[i], txt[j])
            assert float(out[i, j]) == pytest.approx(ref_order(v, t, side), rel=1e-12, abs=1e-15)


def test_order_similarity_is_zero_exactly_when_the_order_holds() -> None:
    v = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    above = v + 0.5  # the text dominates the image in every coordinate
    assert float(order_similarity(v, above)) == 0.0  # GXN: penalise v - t
    assert float(order_similarity(v, above, abstract_side="text")) == pytest.approx(-3 * 0.25)
    assert float(order_similarity(above, v)) == pytest.approx(-3 * 0.25)


def test_order_similarity_gradient() -> None:
    img = _emb(3, 4, 4).requires_grad_(True)
    txt = _emb(3, 4, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: order_similarity(a, b), (img, txt))


def test_two_branch_matches_loop_and_validates() -> None:
    hi, lo = _emb(4, 4, 6), _emb(4, 4, 7)
    out = two_branch_similarity(hi, lo, lam=0.3)
    for i in range(4):
        for j in range(4):
            assert float(out[i, j]) == pytest.approx(0.3 * float(hi[i, j]) + 0.7 * float(lo[i, j]), rel=1e-12)
    assert torch.equal(two_branch_similarity(hi, lo, lam=1.0), hi)
    with pytest.raises(XmrError, match="lam must be in"):
        two_branch_similarity(hi, lo, lam=1.5)
    with pytest.raises(XmrError, match="one shape"):
        two_branch_similarity(hi, lo[:3])


def test_registry_and_errors() -> None:
    assert {"cosine", "order"} <= set(SIMILARITIES.names())
    assert resolve_similarity("order") is order_similarity
    fn = lambda a, b: a @ b.t()  # noqa: E731
    assert resolve_similarity(fn) is fn
    with pytest.raises(XmrError, match="unknown similarity 'nope'"):
        resolve_similarity("nope")
    with pytest.raises(XmrError, match="abstract_side"):
        order_similarity(_emb(2, 3, 0), _emb(2, 3, 1), abstract_side="caption")
    with pytest.raises(XmrError, match=r"\(2, 3\) and \(2, 4\)"):
        order_similarity(_emb(2, 3, 0), _emb(2, 4, 1))


@pytest.mark.parametrize("hardest", [False, True])
def test_vse_with_order_similarity_matches_loop(hardest: bool) -> None:
    img, txt = F.normalize(_emb(6, 5, 8), dim=-1).abs(), F.normalize(_emb(6, 5, 9), dim=-1).abs()
    out = vse_loss(img, txt, margin=0.05, max_violation=hardest, similarity="order")
    s = [[ref_order(img[i], txt[j]) for j in range(6)] for i in range(6)]
    assert float(out["loss"]) == pytest.approx(ref_vse_scores(s, 0.05, hardest), rel=1e-9)
    by_fn = vse_loss(img, txt, margin=0.05, max_violation=hardest, similarity=order_similarity)
    assert float(by_fn["loss"]) == float(out["loss"])


@pytest.mark.parametrize("hardest", [False, True])
def test_vse_on_precomputed_two_branch_scores_matches_loop(hardest: bool) -> None:
    # GXN Eq. 3: rank s* = lam s(t_h, v_h) + (1 - lam) s(t_l, v_l), margin 0.05, lam 0.5
    v_h, t_h = F.normalize(_emb(5, 6, 10), dim=-1), F.normalize(_emb(5, 6, 11), dim=-1)
    v_l, t_l = F.normalize(_emb(5, 6, 12), dim=-1).abs(), F.normalize(_emb(5, 6, 13), dim=-1).abs()
    s_star = two_branch_similarity(cosine_similarity(v_h, t_h), order_similarity(v_l, t_l), lam=0.5)
    out = vse_loss(None, None, scores=s_star, margin=0.05, max_violation=hardest)
    ref = [[0.5 * ref_cosine(v_h[i], t_h[j]) + 0.5 * ref_order(v_l[i], t_l[j]) for j in range(5)] for i in range(5)]
    assert float(out["loss"]) == pytest.approx(ref_vse_scores(ref, 0.05, hardest), rel=1e-9)


def test_vse_scores_path_equals_embedding_path_and_default_is_unchanged() -> None:
    img, txt = F.normalize(_emb(6, 8, 14), dim=-1), F.normalize(_emb(6, 8, 15), dim=-1)
    plain = vse_loss(img, txt, margin=0.2, max_violation=True)
    via_scores = vse_loss(None, None, scores=img @ txt.t(), margin=0.2, max_violation=True)
    assert float(plain["loss"]) == float(via_scores["loss"])
    via_registry = vse_loss(img, txt, margin=0.2, max_violation=True, similarity=cosine_similarity)
    assert float(via_registry["loss"]) == pytest.approx(float(plain["loss"]), rel=1e-12)
    s = [[float(img[i] @ txt[j]) for j in range(6)] for i in range(6)]
    assert float(plain["loss"]) == pytest.approx(ref_vse_scores(s, 0.2, True), rel=1e-9)


def test_vse_scores_gradient_reaches_both_branches() -> None:
    hi = _emb(4, 4, 16).requires_grad_(True)
    lo = _emb(4, 4, 17).requires_grad_(True)
    vse_loss(None, None, scores=two_branch_similarity(hi, lo, lam=0.25), margin=1.0)["loss"].backward()
    assert hi.grad is not None and lo.grad is not None
    # s* is linear in each branch: the gradients differ exactly by the weights
    assert torch.allclose(hi.grad * 3.0, lo.grad)


def test_vse_scores_argument_errors() -> None:
    img = F.normalize(_emb(3, 4, 18), dim=-1)
    with pytest.raises(XmrError, match="not both"):
        vse_loss(img, img, scores=img @ img.t())
    with pytest.raises(XmrError, match=r"square \(B, B\)"):
        vse_loss(None, None, scores=torch.zeros(3, 4))
    with pytest.raises(XmrError, match="or scores="):
        vse_loss(img, None)


# ---------------------------------------------------------------- one similarity, two scores


def test_torch_and_numpy_registries_hold_the_same_similarities() -> None:
    assert SIMILARITIES.names() == SCORED.names()
    for name in SCORED.names():
        assert SCORED.get(name).name == name


@pytest.mark.parametrize("name", SCORED.names())
def test_torch_and_numpy_scores_agree(name: str) -> None:
    # seeded, L2-normalised (the numpy cosine takes normalised embeddings, as the model gives them)
    img, txt = F.normalize(_emb(7, 5, 20), dim=-1), F.normalize(_emb(4, 5, 21), dim=-1)
    entry = SCORED.get(name)
    by_numpy = entry.score(img.numpy(), txt.numpy())
    by_torch = SIMILARITIES.get(name)(img, txt).numpy()
    assert by_numpy.shape == by_torch.shape == (7, 4)
    np.testing.assert_allclose(by_torch, by_numpy, rtol=1e-10, atol=1e-12)
    # is_inner_product is what both scores do: the inner product of the embeddings, or not
    inner = (img @ txt.t()).numpy()
    assert np.allclose(by_numpy, inner) == entry.is_inner_product
    assert np.allclose(by_torch, inner) == entry.is_inner_product


def test_a_similarity_on_one_side_only_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr.losses import similarity as sim
    from xmr.registry import Registry

    with pytest.raises(XmrError, match="unknown similarity 'l1'"):
        sim.torch_score("l1")(lambda a, b: a @ b.t())
    numpy_side: Registry[Similarity] = Registry("similarity")
    for name in SCORED.names():
        numpy_side.add(name, SCORED.get(name))
    numpy_side.add("l1", Similarity("l1", lambda a, b: a @ b.T, is_inner_product=False))
    monkeypatch.setattr(sim, "SCORED_SIMILARITIES", numpy_side)
    with pytest.raises(XmrError, match="'l1' has a numpy score but no torch one"):
        sim.check_similarities()
    with pytest.raises(XmrError, match="'l1' has a numpy score but no torch one"):
        resolve_similarity("l1")
