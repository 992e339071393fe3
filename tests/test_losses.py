"""Each loss against a hand-written loop on small seeded inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xmr.errors import XmrError
from xmr.losses import LOSSES, create_loss, infonce_loss, vse_loss


def _pair(b: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    return img, txt


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def ref_infonce(img, txt, scale, groups=None):
    b = img.shape[0]

    def neg_ok(i, j):
        return i == j or groups is None or groups[i] != groups[j]

    i2t = t2i = 0.0
    for i in range(b):
        den = sum(math.exp(scale * _dot(img[i], txt[j])) for j in range(b) if neg_ok(i, j))
        i2t += -math.log(math.exp(scale * _dot(img[i], txt[i])) / den)
        den = sum(math.exp(scale * _dot(img[j], txt[i])) for j in range(b) if neg_ok(i, j))
        t2i += -math.log(math.exp(scale * _dot(img[i], txt[i])) / den)
    return (i2t / b + t2i / b) / 2


def ref_vse(img, txt, margin, hardest, groups=None):
    b = img.shape[0]
    total_i2t = total_t2i = 0.0
    for i in range(b):
        pos = _dot(img[i], txt[i])
        ci = [max(0.0, margin - pos + _dot(img[i], txt[j])) for j in range(b)
              if j != i and (groups is None or groups[i] != groups[j])]
        ct = [max(0.0, margin - pos + _dot(img[j], txt[i])) for j in range(b)
              if j != i and (groups is None or groups[i] != groups[j])]
        total_i2t += (max(ci) if ci else 0.0) if hardest else sum(ci)
        total_t2i += (max(ct) if ct else 0.0) if hardest else sum(ct)
    return total_i2t / b + total_t2i / b


@pytest.mark.parametrize("scale", [1.0, 14.3, 50.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_infonce_matches_loop(scale: float, seed: int) -> None:
    img, txt = _pair(seed=seed)
    out = infonce_loss(img, txt, logit_scale=scale)
    assert float(out["loss"]) == pytest.approx(ref_infonce(img, txt, scale), rel=1e-9)


def test_infonce_groups_mask_matches_loop() -> None:
    img, txt = _pair(b=7, seed=3)
    groups = torch.tensor([0, 1, 0, 2, 1, 3, 4])
    out = infonce_loss(img, txt, logit_scale=10.0, groups=groups)
    assert float(out["loss"]) == pytest.approx(ref_infonce(img, txt, 10.0, groups.tolist()), rel=1e-9)
    plain = infonce_loss(img, txt, logit_scale=10.0)
    assert float(plain["loss"]) != pytest.approx(float(out["loss"]))


def test_text_ids_mask_like_groups() -> None:
    img, txt = _pair(b=6, seed=4)
    ids = torch.tensor([0, 1, 2, 1, 3, 4])
    for fn, kw in ((infonce_loss, {"logit_scale": 7.0}), (vse_loss, {"margin": 0.2})):
        a = fn(img, txt, text_ids=ids, **kw)["loss"]
        b = fn(img, txt, groups=ids, **kw)["loss"]
        assert float(a) == pytest.approx(float(b), rel=1e-12)
        assert float(a) != pytest.approx(float(fn(img, txt, **kw)["loss"]))


def test_infonce_gradient_flows_to_learnable_scale() -> None:
    img, txt = _pair()
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    infonce_loss(img, txt, logit_scale=scale)["loss"].backward()
    assert scale.grad is not None and float(scale.grad) != 0.0


@pytest.mark.parametrize("hardest", [False, True])
@pytest.mark.parametrize("margin", [0.05, 0.2, 1.0])
def test_vse_matches_loop(hardest: bool, margin: float) -> None:
    img, txt = _pair(seed=2)
    out = vse_loss(img, txt, margin=margin, max_violation=hardest)
    assert float(out["loss"]) == pytest.approx(ref_vse(img, txt, margin, hardest), rel=1e-9)


@pytest.mark.parametrize("hardest", [False, True])
def test_vse_groups_mask_matches_loop(hardest: bool) -> None:
    img, txt = _pair(b=6, seed=5)
    groups = [0, 0, 1, 2, 2, 3]
    out = vse_loss(img, txt, margin=0.3, max_violation=hardest, groups=torch.tensor(groups))
    assert float(out["loss"]) == pytest.approx(ref_vse(img, txt, 0.3, hardest, groups), rel=1e-9)


def test_vsepp_collapse_value_is_two_margins() -> None:
    # every embedding the same point: all scores equal, each direction costs exactly the margin
    v = F.normalize(torch.ones(5, 4), dim=-1)
    out = vse_loss(v, v, margin=0.2, max_violation=True)
    assert float(out["loss"]) == pytest.approx(0.4)


def test_registry_names_and_binding() -> None:
    assert {"infonce", "vse", "vse0", "vse++"} <= set(LOSSES.names())
    img, txt = _pair()
    pp = create_loss("vse++", margin=0.2)(img, txt)["loss"]
    assert float(pp) == pytest.approx(ref_vse(img, txt, 0.2, True), rel=1e-9)
    v0 = create_loss("vse0", margin=0.2)(img, txt)["loss"]
    assert float(v0) == pytest.approx(ref_vse(img, txt, 0.2, False), rel=1e-9)
    with pytest.raises(XmrError, match="unknown loss 'nope'"):
        create_loss("nope")


def test_shape_mismatch_is_value_error() -> None:
    img, txt = _pair()
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        infonce_loss(img, txt[:3])
