"""Composition modules and composed-query losses against hand-written references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xmr.compose import (
    COMPOSE_LOSSES,
    COMPOSERS,
    AddComposer,
    ConcatComposer,
    RelationComposer,
    TIRGComposer,
    batch_classification_loss,
    create_composer,
    soft_triplet_loss,
)
from xmr.compose.losses import infonce_compose_loss
from xmr.errors import XmrError


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _lin(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """y = W x + b for one vector x, spelled out."""
    y = layer.weight @ x
    return y + layer.bias if layer.bias is not None else y


def _relu(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, min=0)


def _composer(name: str, image_dim: int = 6, text_dim: int = 4, seed: int = 0, **kw: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_composer(name, image_dim, text_dim, **kw).double()


# ----------------------------------------------------------------------------- modules

def test_registry_and_needs_regions() -> None:
    assert COMPOSERS.names() == ["add", "concat", "relation", "tirg"]
    assert COMPOSERS.get("tirg") is TIRGComposer and COMPOSERS.get("relation") is RelationComposer
    assert RelationComposer.needs_regions is True
    assert not TIRGComposer.needs_regions and not ConcatComposer.needs_regions and not AddComposer.needs_regions
    with pytest.raises(XmrError, match="unknown composer 'nope'"):
        create_composer("nope", 4, 4)


def test_tirg_matches_formula_by_hand() -> None:
    m = _composer("tirg", 6, 4, hidden=5)
    with torch.no_grad():  # move the scalars off their initial values so a swap of w_g / w_r shows
        m.w_g.fill_(0.7)
        m.w_r.fill_(-1.3)
    img, txt = _randn(3, 6, seed=1), _randn(3, 4, seed=2)
    out = m(img, txt)
    assert out.shape == (3, 6)
    g1, g2 = m.gate_mlp[0], m.gate_mlp[2]
    r1, r2 = m.res_mlp[0], m.res_mlp[2]
    for i in range(3):
        x = torch.cat([img[i], txt[i]])
        gate = 1 / (1 + torch.exp(-_lin(g2, _relu(_lin(g1, x)))))
        res = _lin(r2, _relu(_lin(r1, x)))
        expected = 0.7 * gate * img[i] + -1.3 * res
        torch.testing.assert_close(out[i], expected, rtol=1e-10, atol=1e-12)


def test_tirg_scalar_init_and_gradients() -> None:
    m = _composer("tirg")
    assert m.w_g.item() == 1.0 and m.w_r.item() == 10.0
    assert m.w_g.shape == () and m.w_r.shape == ()
    m(_randn(3, 6), _randn(3, 4, seed=1)).pow(2).sum().backward()
    for p in (m.w_g, m.w_r, m.gate_mlp[0].weight, m.res_mlp[2].weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    # default hidden width is image_dim + text_dim, as in the authors' code
    assert m.gate_mlp[0].weight.shape == (10, 10) and m.res_mlp[2].weight.shape == (6, 10)


def test_tirg_does_not_mix_batch_rows() -> None:
    # no BatchNorm: a row's output must not depend on the other rows of the batch
    m = _composer("tirg")
    img, txt = _randn(4, 6), _randn(4, 4, seed=1)
    torch.testing.assert_close(m(img, txt)[1:2], m(img[1:2], txt[1:2]))


def test_relation_matches_double_loop_over_region_pairs() -> None:
    m = _composer("relation", 5, 4, region_dim=3, hidden=7)
    local, txt = _randn(2, 4, 3, seed=3), _randn(2, 4, seed=4)
    out = m(local, txt)
    assert out.shape == (2, 5)
    for b in range(2):
        total = torch.zeros(7, dtype=torch.float64)
        for i in range(4):
            for j in range(4):  # all ordered pairs, i == j included
                x = torch.cat([local[b, i], local[b, j], txt[b]])
                total = total + _relu(_lin(m.g2, _relu(_lin(m.g1, x))))
        expected = _lin(m.f[2], _relu(_lin(m.f[0], total)))
        torch.testing.assert_close(out[b], expected, rtol=1e-10, atol=1e-12)


def test_relation_is_order_sensitive_within_pairs_but_not_across_regions() -> None:
    m = _composer("relation", 5, 4, region_dim=3, hidden=7)
    local, txt = _randn(2, 4, 3, seed=3), _randn(2, 4, seed=4)
    # the sum runs over every pair, so permuting the regions leaves the output unchanged...
    torch.testing.assert_close(m(local[:, [2, 0, 3, 1]], txt), m(local, txt))
    # ...while the text does matter
    assert not torch.allclose(m(local, txt), m(local, txt.flip(0)))


def test_add_identity_when_dims_equal() -> None:
    m = _composer("add", 6, 6)
    assert m.proj is None and sum(p.numel() for p in m.parameters()) == 0
    img, txt = _randn(3, 6), _randn(3, 6, seed=1)
    torch.testing.assert_close(m(img, txt), img + txt, rtol=0, atol=0)


def test_add_projects_text_when_dims_differ() -> None:
    m = _composer("add", 6, 4)
    assert m.proj.bias is None and m.proj.weight.shape == (6, 4)
    assert sum(p.numel() for p in m.parameters()) == 24
    img, txt = _randn(3, 6), _randn(3, 4, seed=1)
    out = m(img, txt)
    for i in range(3):
        torch.testing.assert_close(out[i], img[i] + m.proj.weight @ txt[i], rtol=1e-12, atol=1e-12)


def test_concat_shape_formula_and_gradient() -> None:
    m = _composer("concat", 6, 4, hidden=3)
    img = _randn(3, 6).requires_grad_(True)
    txt = _randn(3, 4, seed=1).requires_grad_(True)
    out = m(img, txt)
    assert out.shape == (3, 6)
    x = torch.cat([img[0], txt[0]])
    torch.testing.assert_close(out[0], _lin(m.mlp[2], _relu(_lin(m.mlp[0], x))))
    out.sum().backward()
    assert float(img.grad.abs().sum()) > 0 and float(txt.grad.abs().sum()) > 0
    assert float(m.mlp[0].weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", ["tirg", "concat", "add"])
@pytest.mark.parametrize("shapes", [((3, 5), (3, 4)), ((3, 6), (3, 3)), ((3, 6), (2, 4)), ((3, 6, 1), (3, 4))])
def test_vector_composers_reject_bad_shapes(name: str, shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    m = _composer(name, 6, 4)
    img_shape, txt_shape = shapes
    with pytest.raises(XmrError) as err:
        m(torch.zeros(img_shape, dtype=torch.float64), torch.zeros(txt_shape, dtype=torch.float64))
    msg = str(err.value)
    assert str(img_shape) in msg and str(txt_shape) in msg and "\n" not in msg


@pytest.mark.parametrize("shapes", [((2, 6), (2, 4)), ((2, 4, 5), (2, 4)), ((2, 4, 3), (2, 5)), ((2, 4, 3), (3, 4))])
def test_relation_rejects_bad_shapes(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    m = _composer("relation", 5, 4, region_dim=3, hidden=7)
    with pytest.raises(XmrError) as err:
        m(torch.zeros(shapes[0], dtype=torch.float64), torch.zeros(shapes[1], dtype=torch.float64))
    assert str(shapes[0]) in str(err.value) and str(shapes[1]) in str(err.value)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(XmrError, match="image_dim"):
        TIRGComposer(0, 4)
    with pytest.raises(XmrError, match="region_dim"):
        RelationComposer(4, 4, region_dim=0)
    with pytest.raises(TypeError):
        create_composer("relation", 4, 4)  # region_dim is required


# ----------------------------------------------------------------------------- losses

def _sqdist(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))


def ref_soft_triplet(q: torch.Tensor, t: torch.Tensor, groups: list[int] | None = None) -> float:
    terms = []
    for i in range(q.shape[0]):
        for j in range(q.shape[0]):
            if j == i or (groups is not None and groups[i] == groups[j]):
                continue
            terms.append(math.log(1 + math.exp(_sqdist(q[i], t[i]) - _sqdist(q[i], t[j]))))
    return sum(terms) / len(terms)


def ref_batch_classification(q: torch.Tensor, t: torch.Tensor, scale: float, groups: list[int] | None = None) -> float:
    qn = [row / math.sqrt(sum(float(x) ** 2 for x in row)) for row in q]
    tn = [row / math.sqrt(sum(float(x) ** 2 for x in row)) for row in t]
    total = 0.0
    for i in range(q.shape[0]):
        logits = {j: scale * sum(float(x) * float(y) for x, y in zip(qn[i], tn[j])) for j in range(q.shape[0])
                  if j == i or groups is None or groups[i] != groups[j]}
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits.values())))
    return total / q.shape[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_soft_triplet_matches_double_loop(seed: int) -> None:
    q, t = _randn(5, 4, seed=seed), _randn(5, 4, seed=seed + 10) * 0.5
    out = soft_triplet_loss(q, t)
    assert float(out["loss"]) == pytest.approx(ref_soft_triplet(q, t), rel=1e-10)
    assert float(out["d_pos"]) == pytest.approx(sum(_sqdist(q[i], t[i]) for i in range(5)) / 5, rel=1e-10)


def test_soft_triplet_groups_remove_exactly_same_group_negatives() -> None:
    q, t = _randn(5, 4, seed=2), _randn(5, 4, seed=3) * 0.5
    groups = [0, 0, 1, 2, 1]
    out = soft_triplet_loss(q, t, groups=torch.tensor(groups))
    assert float(out["loss"]) == pytest.approx(ref_soft_triplet(q, t, groups), rel=1e-10)
    assert float(out["loss"]) != pytest.approx(ref_soft_triplet(q, t), rel=1e-6)
    # all-distinct groups are the same as no groups
    plain = soft_triplet_loss(q, t)["loss"]
    torch.testing.assert_close(soft_triplet_loss(q, t, groups=torch.arange(5))["loss"], plain)
    # two rows of one group: neither is the other's negative, nothing is left, the loss is exactly zero
    zero = soft_triplet_loss(q[:2], t[:2], groups=torch.tensor([7, 7]))
    assert float(zero["loss"]) == 0.0 and math.isnan(float(zero["d_neg"]))


def test_soft_triplet_gradient_pulls_query_to_target() -> None:
    q = _randn(4, 3).requires_grad_(True)
    t = _randn(4, 3, seed=1)
    soft_triplet_loss(q, t)["loss"].backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and float(q.grad.abs().sum()) > 0
    q2 = t.clone().requires_grad_(True)  # distance 0 to the positive: still a finite gradient
    soft_triplet_loss(q2, t)["loss"].backward()
    assert torch.isfinite(q2.grad).all()


@pytest.mark.parametrize("scale", [1.0, 16.0])
def test_batch_classification_matches_log_softmax_loop(scale: float) -> None:
    q, t = _randn(5, 4, seed=4), _randn(5, 4, seed=5)
    out = batch_classification_loss(q, t, scale=scale)
    assert float(out["loss"]) == pytest.approx(ref_batch_classification(q, t, scale), rel=1e-10)
    # inputs are L2-normalised inside: rescaling rows changes nothing
    rescaled = batch_classification_loss(q * 3.0, t * torch.arange(1, 6, dtype=torch.float64)[:, None], scale=scale)
    torch.testing.assert_close(rescaled["loss"], out["loss"])


def test_batch_classification_groups_and_learnable_scale() -> None:
    q, t = _randn(5, 4, seed=6), _randn(5, 4, seed=7)
    groups = [3, 1, 3, 1, 0]
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    out = batch_classification_loss(q, t, scale=scale, groups=torch.tensor(groups))
    assert out["loss"].item() == pytest.approx(ref_batch_classification(q, t, 4.0, groups), rel=1e-10)
    assert out["loss"].item() != pytest.approx(ref_batch_classification(q, t, 4.0), rel=1e-6)
    out["loss"].backward()
    assert scale.grad is not None and float(scale.grad) != 0.0
    # all-distinct groups mask nothing; one group for all leaves only the positive: loss exactly 0
    plain = batch_classification_loss(q, t, scale=4.0)["loss"]
    torch.testing.assert_close(batch_classification_loss(q, t, scale=4.0, groups=torch.arange(5))["loss"], plain)
    assert float(batch_classification_loss(q, t, scale=4.0, groups=torch.zeros(5, dtype=torch.long))["loss"]) == 0.0


def test_batch_classification_accuracy() -> None:
    t = _randn(4, 3)
    assert float(batch_classification_loss(t.clone(), t)["accuracy"]) == 1.0
    assert float(batch_classification_loss(t.roll(1, dims=0), t)["accuracy"]) == 0.0


@pytest.mark.parametrize("fn", [soft_triplet_loss, batch_classification_loss])
def test_losses_reject_bad_shapes(fn) -> None:
    with pytest.raises(XmrError) as err:
        fn(torch.zeros(3, 4), torch.zeros(3, 5))
    assert "(3, 4)" in str(err.value) and "(3, 5)" in str(err.value)
    with pytest.raises(XmrError, match=r"\(3,\).*\(2,\)"):
        fn(torch.zeros(3, 4), torch.zeros(3, 4), groups=torch.tensor([0, 1]))


def test_compose_losses_table() -> None:
    assert COMPOSE_LOSSES == {"soft_triplet": soft_triplet_loss, "batch_classification": batch_classification_loss,
                              "infonce": infonce_compose_loss}
    from xmr.losses import LOSSES
    assert "soft_triplet" not in LOSSES and "batch_classification" not in LOSSES


def test_in_joint_composition_end_to_end() -> None:
    # Eq. 2's second term: compose g(psi_x) with g(phi_t) and score against g(psi_target)
    torch.manual_seed(0)
    g = nn.Linear(5, 6).double()
    comp = create_composer("tirg", 6, 6).double()
    ref, txt, tgt = _randn(4, 5), _randn(4, 5, seed=1), _randn(4, 5, seed=2)
    loss = batch_classification_loss(comp(g(ref), g(txt)), g(tgt))["loss"]
    loss.backward()
    assert float(g.weight.grad.abs().sum()) > 0 and comp.w_r.grad is not None


def test_infonce_compose_loss_matches_a_hand_written_loop() -> None:
    from xmr.compose.losses import COMPOSE_LOSSES

    g = torch.Generator().manual_seed(3)
    q, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    qn, tn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(t, dim=1)
    total = 0.0
    for i in range(5):  # symmetric: query -> targets and target -> queries, scale 7
        row = [7.0 * float(qn[i] @ tn[j]) for j in range(5)]
        col = [7.0 * float(qn[j] @ tn[i]) for j in range(5)]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    got = COMPOSE_LOSSES["infonce"](q, t, scale=7.0)["loss"]
    assert float(got) == pytest.approx(total / 10, rel=1e-5)
