"""A3VSE building blocks: gradient reversal, K-head attention pooling (Eq. 1), discriminators (Eqs. 4-8)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xmr.errors import XmrError
from xmr.models import (
    A3VSE_PAIRS,
    ContextAttentionPool,
    DomainDiscriminator,
    GradientReversal,
    adversarial_alignment_loss,
    domain_adversarial_loss,
    grad_reverse,
    grl_schedule,
    make_a3vse_discriminators,
)

# ---------------------------------------------------------------- gradient reversal


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0, 2.5])
def test_grl_forward_identity_backward_reversed_and_scaled(coeff: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, requires_grad=True)
    upstream = torch.randn(4, 3, generator=g)
    y = grad_reverse(x, coeff)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.allclose(x.grad, -coeff * upstream)


def test_grl_module_coefficient_is_settable() -> None:
    grl = GradientReversal()
    assert grl.coeff == 1.0
    grl.coeff = grl_schedule(0.5)
    x = torch.ones(2, requires_grad=True)
    (3.0 * grl(x)).sum().backward()
    assert torch.allclose(x.grad, torch.full((2,), -3.0 * grl_schedule(0.5)))
    with pytest.raises(XmrError, match="coefficient must be >= 0, got -1"):
        grl.coeff = -1
    with pytest.raises(XmrError, match="got nan"):
        grad_reverse(x, float("nan"))


def test_grl_schedule_values() -> None:
    assert grl_schedule(0.0) == 0.0
    assert grl_schedule(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_schedule(0.1) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    values = [grl_schedule(p / 10) for p in range(11)]
    assert values == sorted(values) and all(0 <= v < 1 for v in values)
    assert grl_schedule(0.2, eta=5.0) == pytest.approx(grl_schedule(0.1))
    with pytest.raises(XmrError, match="p must be in \\[0, 1\\], got 1.5"):
        grl_schedule(1.5)


# ---------------------------------------------------------------- attention pooling (A3VSE Eq. 1)


def ref_attention(pool: ContextAttentionPool, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Eq. 1 one sample, one head, one entity at a time."""
    h, kp = pool.dim, pool.context_dim
    p_w = pool.p.weight.detach().view(pool.heads, kp, h)
    q_w = pool.q.weight.detach().view(pool.heads, kp, h)
    outs = []
    for b in range(x.shape[0]):
        valid = [i for i in range(x.shape[1]) if mask is None or bool(mask[b, i])]
        heads = []
        for k in range(pool.heads):
            ctx = sum(torch.tanh(q_w[k] @ x[b, i]) for i in valid) / len(valid)  # c_k
            scores = [math.tanh(float((p_w[k] @ x[b, i]) @ ctx)) for i in valid]  # a_ik
            den = sum(math.exp(pool.scale * a) for a in scores)
            alphas = [math.exp(pool.scale * a) / den for a in scores]
            heads.append(sum(alpha * x[b, i] for alpha, i in zip(alphas, valid)))
        outs.append(torch.cat(heads) if pool.merge == "concat" else sum(heads) / pool.heads)
    return torch.stack(outs)


def _pool_and_input(seed: int = 0, **kw: object) -> tuple[ContextAttentionPool, torch.Tensor]:
    torch.manual_seed(seed)
    pool = ContextAttentionPool(6, **kw).double()  # type: ignore[arg-type]
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    return pool, x


@pytest.mark.parametrize("kw", [{}, {"scale": 4.0}, {"heads": 2, "context_dim": 3}, {"merge": "mean"}])
def test_attention_matches_per_sample_loop(kw: dict[str, object]) -> None:
    pool, x = _pool_and_input(**kw)
    out = pool(x)
    expected_dim = 6 if kw.get("merge") == "mean" else 6 * int(kw.get("heads", 3))  # type: ignore[call-overload]
    assert out.shape == (3, expected_dim) and pool.out_dim == expected_dim
    assert torch.allclose(out, ref_attention(pool, x, None), atol=1e-12)


def test_attention_mask_gives_zero_weight_and_equals_truncation() -> None:
    pool, x = _pool_and_input(seed=1, scale=3.0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 0, 1]], dtype=torch.bool)
    garbage = x.clone()
    garbage[~mask] = 1e3  # padded positions must not matter at all
    weights = pool.attention_weights(garbage, mask)
    assert torch.all(weights[~mask[:, None, :].expand_as(weights)] == 0)
    assert torch.allclose(weights.sum(dim=2), torch.ones(3, 3, dtype=torch.float64))
    out = pool(garbage, mask)
    assert torch.allclose(out, ref_attention(pool, x, mask), atol=1e-12)
    assert torch.allclose(out[0], pool(x[:1, :3])[0], atol=1e-12)


def test_attention_is_permutation_invariant_and_empty_rows_are_zero() -> None:
    pool, x = _pool_and_input(seed=2)
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    perm = torch.tensor([4, 2, 0, 3, 1])
    assert torch.allclose(pool(x, mask), pool(x[:, perm], mask[:, perm]), atol=1e-12)
    out = pool(x, mask)
    assert torch.all(out[1] == 0) and torch.isfinite(out).all()


def test_attention_gradient_and_projection() -> None:
    pool, x = _pool_and_input(seed=3, out_dim=4)
    x.requires_grad_(True)
    out = pool(x)
    assert out.shape == (3, 4)
    out.sum().backward()
    assert x.grad is not None and pool.p.weight.grad is not None and pool.q.weight.grad is not None
    with pytest.raises(XmrError, match=r"local features must be \(B, N, 6\)"):
        pool(torch.randn(2, 6))
    with pytest.raises(XmrError, match="merge must be"):
        ContextAttentionPool(6, merge="max")


# ---------------------------------------------------------------- discriminators (A3VSE Eqs. 4-8)


def ref_neg_ld(disc: DomainDiscriminator, a: torch.Tensor, b: torch.Tensor) -> float:
    """-l_d of Eq. 4: -(mean log D(a) + mean log(1 - D(b))), D = sigmoid of the logit."""
    with torch.no_grad():
        la = [float(disc(a[i : i + 1])) for i in range(len(a))]
        lb = [float(disc(b[j : j + 1])) for j in range(len(b))]
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    return -(sum(math.log(sig(z)) for z in la) / len(la) + sum(math.log(1.0 - sig(z)) for z in lb) / len(lb))


def test_domain_loss_matches_eq4_and_reverses_the_encoder_gradient() -> None:
    torch.manual_seed(4)
    disc = DomainDiscriminator(5, hidden_dim=7).double()
    a = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = (torch.randn(3, 5, dtype=torch.float64) + 1.0).requires_grad_(True)
    out = domain_adversarial_loss(disc, a, b, coeff=0.7)
    assert out["loss"].item() == pytest.approx(ref_neg_ld(disc, a, b), rel=1e-10)
    out["loss"].backward()
    grad_a, grad_d = a.grad.clone(), disc.net[0].weight.grad.clone()
    # the same loss without the GRL: discriminator gradient unchanged, feature gradient -1/0.7 times
    a.grad = None
    disc.zero_grad()
    plain = (F.binary_cross_entropy_with_logits(disc(a), torch.ones(4, dtype=torch.float64))
             + F.binary_cross_entropy_with_logits(disc(b), torch.zeros(3, dtype=torch.float64)))
    plain.backward()
    assert torch.allclose(disc.net[0].weight.grad, grad_d)
    assert torch.allclose(a.grad * -0.7, grad_a)


def test_adversarial_alignment_weights_and_pairs() -> None:
    weights = {p.name: p.weight for p in A3VSE_PAIRS}
    assert weights == {"v_vu": 0.2, "t_s": 0.1, "v_t": 0.5, "vu_s": 0.5, "v_s": 0.3, "vu_t": 0.3}
    assert {(p.a, p.b) for p in A3VSE_PAIRS} == {("v", "vu"), ("t", "s"), ("v", "t"), ("vu", "s"), ("v", "s"),
                                                  ("vu", "t")}
    torch.manual_seed(5)
    discs = make_a3vse_discriminators(4, hidden_dim=6).double()
    feats = {d: torch.randn(3, 4, dtype=torch.float64) + i for i, d in enumerate(("v", "t", "vu", "s"))}
    out = adversarial_alignment_loss(discs, feats, coeff=0.5)
    total = 0.0
    for p in A3VSE_PAIRS:
        part = ref_neg_ld(discs[p.name], feats[p.a], feats[p.b])  # type: ignore[arg-type]
        assert out[f"loss_{p.name}"].item() == pytest.approx(part, rel=1e-10)
        total += p.weight * part
    assert out["loss"].item() == pytest.approx(total, rel=1e-10)
    only = adversarial_alignment_loss({"v_t": discs["v_t"]}, {"v": feats["v"], "t": feats["t"]},
                                      weights={"v_t": 2.0})
    assert only["loss"].item() == pytest.approx(2.0 * out["loss_v_t"].item(), rel=1e-10)


def test_adversarial_alignment_errors() -> None:
    discs = make_a3vse_discriminators(4, hidden_dim=6)
    feats = {"v": torch.randn(2, 4), "t": torch.randn(2, 4)}
    with pytest.raises(XmrError, match="unknown domain pair 'v_x'"):
        adversarial_alignment_loss({"v_x": discs["v_t"]}, feats)
    with pytest.raises(XmrError, match="pair 'v_s' needs the 's' batch"):
        adversarial_alignment_loss({"v_s": discs["v_s"]}, feats)
    with pytest.raises(XmrError, match="at least one"):
        adversarial_alignment_loss({}, feats)
