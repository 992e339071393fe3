"""VSE-infinity's Generalized Pooling Operator (GPO) and the ``region-gpo`` head, against hand-written loops."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from xmr.cli import main
from xmr.errors import XmrError
from xmr.layers.gpo import GeneralizedPooling, gpo_pool, positional_encoding
from xmr.losses import infonce_loss
from xmr.models import HEADS, create_head


def _loop_gpo(features: torch.Tensor, weights: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """GPO by hand: for each set and dimension, sort the set's own values and sum theta_k * k-th largest."""
    b, _, d = features.shape
    out = torch.zeros(b, d, dtype=features.dtype)
    for i in range(b):
        for j in range(d):
            values = sorted(features[i, :lengths[i], j].tolist(), reverse=True)
            out[i, j] = sum(float(weights[i, k]) * v for k, v in enumerate(values))
    return out


def test_gpo_pool_against_loop_with_and_without_padding() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    w = torch.softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), dim=1)
    torch.testing.assert_close(gpo_pool(x, w), _loop_gpo(x, w, [5] * 4))
    torch.testing.assert_close(gpo_pool(x, w[0]), _loop_gpo(x, w[0].expand(4, 5), [5] * 4))  # shared (N,) weights
    lengths = torch.tensor([5, 2, 1, 4])
    padded = x.clone()
    padded[1, 2:] = 1e6  # padding holding large values must not rank first
    padded[2, 1:] = -1e6
    torch.testing.assert_close(gpo_pool(padded, w, lengths), _loop_gpo(x, w, lengths.tolist()))
    with pytest.raises(XmrError, match="weights"):
        gpo_pool(x, w[:, :3])
    with pytest.raises(XmrError, match="lengths"):
        gpo_pool(x, w, torch.tensor([5, 6, 1, 1]))


def test_gpo_special_cases_are_max_and_mean_exactly() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 6, generator=g)
    one_hot = torch.zeros(7)
    one_hot[0] = 1.0
    assert torch.equal(gpo_pool(x, one_hot), x.max(dim=1).values)
    last = torch.zeros(7)
    last[-1] = 1.0
    assert torch.equal(gpo_pool(x, last), x.min(dim=1).values)
    # uniform weights: the mean; bit for bit where every sum is exact (small integers, N = 4, theta = 1/4)
    ints = torch.randint(-50, 50, (3, 4, 6), generator=g).float()
    assert torch.equal(gpo_pool(ints, torch.full((4,), 0.25)), ints.mean(dim=1))
    x64 = x.double()
    torch.testing.assert_close(gpo_pool(x64, torch.full((7,), 1 / 7, dtype=torch.float64)), x64.mean(dim=1),
                               rtol=0, atol=1e-15)
    # K-max: uniform over the first K positions
    k_max = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0])
    torch.testing.assert_close(gpo_pool(x, k_max), x.topk(2, dim=1).values.mean(dim=1))


def _gru_direction(xs: torch.Tensor, gru: torch.nn.GRU, suffix: str) -> torch.Tensor:
    """One direction of a one-layer GRU by its equations (r, z, n gates), h0 = 0. Shape: (n, in) -> (n, H)."""
    w_ih, w_hh = getattr(gru, f"weight_ih_l0{suffix}"), getattr(gru, f"weight_hh_l0{suffix}")
    b_ih, b_hh = getattr(gru, f"bias_ih_l0{suffix}"), getattr(gru, f"bias_hh_l0{suffix}")
    hidden = gru.hidden_size
    h = torch.zeros(hidden)
    out = []
    for x in xs:
        gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
        r = torch.sigmoid(gi[:hidden] + gh[:hidden])
        z = torch.sigmoid(gi[hidden:2 * hidden] + gh[hidden:2 * hidden])
        n = torch.tanh(gi[2 * hidden:] + r * gh[2 * hidden:])
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out)


def test_pool_weights_follow_the_paper_by_hand() -> None:
    torch.manual_seed(0)
    gpo = GeneralizedPooling(pe_dim=8, hidden_dim=5, temperature=0.1)
    n = 6
    pe = torch.zeros(n, 8)
    for k in range(n):
        for i in range(4):
            pe[k, 2 * i] = math.sin(k / 10000 ** (2 * i / 8))
            pe[k, 2 * i + 1] = math.cos(k / 10000 ** (2 * i / 8))
    torch.testing.assert_close(positional_encoding(n, 8), pe)
    with torch.no_grad():
        fwd = _gru_direction(pe, gpo.gru, "")
        bwd = _gru_direction(pe.flip(0), gpo.gru, "_reverse").flip(0)
        scores = ((fwd + bwd) / 2) @ gpo.score.weight[0]
        want = torch.exp(scores / 0.1) / torch.exp(scores / 0.1).sum()
        torch.testing.assert_close(gpo.pool_weights(n), want)
        x = torch.randn(2, n, 3)
        torch.testing.assert_close(gpo(x), _loop_gpo(x, want.expand(2, n), [n, n]))
    with pytest.raises(XmrError, match="even"):
        GeneralizedPooling(pe_dim=7)


def test_variable_set_sizes_pool_each_set_as_if_alone() -> None:
    torch.manual_seed(2)
    gpo = GeneralizedPooling().eval()
    x = torch.randn(3, 9, 4)
    lengths = torch.tensor([9, 4, 1])
    padded = x.clone()
    padded[1, 4:] = 99.0
    with torch.no_grad():
        got = gpo(padded, lengths)
        for i, size in enumerate(lengths.tolist()):
            torch.testing.assert_close(got[i], gpo(x[i:i + 1, :size])[0])
        assert torch.equal(gpo(x[2:3, :1])[0], x[2, 0])  # one vector: theta = [1]
        weights = gpo.set_weights(lengths, 9)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert bool((weights[1, 4:] == 0).all()) and bool((weights[1, :4] > 0).all())


def test_region_gpo_head_against_manual_pooling() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4 * 6)  # 4 regions of 6 channels, region-major
    head = create_head("region-gpo", 24, 5, regions=4, hidden_dim=1024, dropout=0.0).eval()
    assert getattr(HEADS.get("region-gpo"), "needs_regions", False)
    with torch.no_grad():
        h = head.region_fc(x.view(3, 4, 6))
        theta = head.gpo.pool_weights(4)
        want = F.normalize(_loop_gpo(h, theta.expand(3, 4), [4] * 3), dim=-1)
        torch.testing.assert_close(head(x), want)
    with pytest.raises(XmrError, match="equal regions"):
        create_head("region-gpo", 25, 5, regions=4)


def test_region_gpo_head_trains() -> None:
    """The head and a linear text head learn to match 16 seeded region sets to their texts."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    regions, texts = torch.randn(16, 5 * 8, generator=g), torch.randn(16, 12, generator=g)
    image_head = create_head("region-gpo", 40, 16, regions=5)
    text_head = create_head("linear", 12, 16)
    params = [*image_head.parameters(), *text_head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    gru_before = image_head.gpo.gru.weight_hh_l0.detach().clone()
    losses = []
    for _ in range(40):
        loss = infonce_loss(image_head(regions), text_head(texts), logit_scale=10.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert not torch.equal(image_head.gpo.gru.weight_hh_l0, gru_before)  # the pooling itself learns


def test_region_gpo_is_listed_and_runs_through_xmr_train(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import make_shapes_dataset

    assert main(["list"]) == 0
    assert "region-gpo" in capsys.readouterr().out
    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    run, cache = tmp_path / "run", tmp_path / "c"
    assert main(["train", str(manifest), "--out", str(run), "--cache-dir", str(cache), "--image-encoder",
                 "toy-image-regions", "--text-encoder", "toy-text", "--image-head", "region-gpo", "--epochs", "2",
                 "--embed-dim", "8"]) == 0
    assert main(["eval", str(run), "--cache-dir", str(cache), "--texts-per-item", "1"]) == 0
    capsys.readouterr()
    code = main(["train", str(manifest), "--out", str(tmp_path / "bad"), "--cache-dir", str(cache),
                 "--image-encoder", "toy-image", "--text-encoder", "toy-text", "--image-head", "region-gpo"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs a region image encoder" in err[0], err


def test_the_7x7_region_encoder_keeps_the_whole_map() -> None:
    from xmr.encoders import create_image_encoder
    from xmr.encoders.regions import RegionEncoder

    enc = create_image_encoder("efficientnet-lite0-regions7x7")  # weights load on first use: none here
    base = create_image_encoder("efficientnet-lite0-regions")
    assert isinstance(enc, RegionEncoder) and isinstance(base, RegionEncoder)
    assert (enc.n_regions, enc.dim, base.n_regions) == (49, 49 * 1280, 9)
    assert enc.encoder_id.endswith("/regions7x7") and enc.encoder_id != base.encoder_id
