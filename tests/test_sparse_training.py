"""A3VSE inside xmr train: region heads, the Eq. 9 objective, sparse corpora with pseudo-texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmr.cli import main
from xmr.errors import XmrError
from xmr.models import HEADS, create_head, load_model, make_a3vse_discriminators
from xmr.objectives import epoch_order
from xmr.objectives.sparse import PAIR_NAMES, PAPER_WEIGHTS, sparse_alignment_loss
from xmr.runs.config import RunConfig
from xmr.semantics.labeller import ImageNetLabeller
from xmr.training import TrainConfig
from xmr.workflows.train import train_run

D = 8


def _emb(seed: int, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {d: F.normalize(torch.randn(n, D, generator=g), dim=-1).requires_grad_() for d in ("v", "t", "vu", "s")}


def _hardest_hinge_loop(a: torch.Tensor, b: torch.Tensor, margin: float) -> float:
    """VSE++ (Eq. 2) by hand: for each pair, the hardest negative in each direction."""
    s = (a @ b.T).detach().numpy()
    total = 0.0
    for i in range(len(s)):
        hardest_b = max(s[i, j] for j in range(len(s)) if j != i)
        hardest_a = max(s[j, i] for j in range(len(s)) if j != i)
        total += max(0.0, margin - s[i, i] + hardest_b) + max(0.0, margin - s[i, i] + hardest_a)
    return total / len(s)


def test_sparse_alignment_loss_matches_hand_written_eq9() -> None:
    emb = _emb(0)
    pair_loss = torch.tensor(0.7)
    discs = make_a3vse_discriminators(D, hidden_dim=4)
    out = sparse_alignment_loss(emb, pair_loss, beta=0.8, pseudo_margin=0.3, discriminators=discs, coeff=0.4)
    tri_vs = _hardest_hinge_loop(emb["vu"], emb["s"], 0.3)
    assert float(out["triplet_vs"].detach()) == pytest.approx(tri_vs, abs=1e-5)
    adv = 0.0
    for name, w in zip(PAIR_NAMES, PAPER_WEIGHTS):
        a, b = name.split("_")
        la, lb = discs[name](emb[a]).detach(), discs[name](emb[b]).detach()
        bce = -(torch.log(torch.sigmoid(la)).mean() + torch.log(1 - torch.sigmoid(lb)).mean())
        assert float(out[f"loss_{name}"].detach()) == pytest.approx(float(bce), rel=1e-5)
        adv += w * float(bce)
    assert float(out["adversarial"].detach()) == pytest.approx(adv, rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(0.8 * 0.7 + 0.2 * tri_vs + adv, rel=1e-5)


def test_sparse_alignment_loss_gradient_is_reversed_and_scaled() -> None:
    emb = _emb(1)
    discs = make_a3vse_discriminators(D, hidden_dim=4)
    only_vt = {"v_t": discs["v_t"]}
    e = {k: emb[k].detach().clone().requires_grad_() for k in ("v", "t")}
    out = sparse_alignment_loss(e, torch.tensor(0.0), discriminators=only_vt, weights={"v_t": 1.0}, coeff=0.5)
    out["loss"].backward()
    # reference: the plain BCE of the discriminator, no reversal, differentiated by hand-built autograd
    v = emb["v"].detach().clone().requires_grad_()
    la, lb = discs["v_t"](v), discs["v_t"](emb["t"].detach())
    bce = -(torch.log(torch.sigmoid(la)).mean() + torch.log(1 - torch.sigmoid(lb)).mean())
    bce.backward()
    torch.testing.assert_close(e["v"].grad, -0.5 * v.grad)  # reversed sign, scaled by gamma


def test_sparse_alignment_loss_without_pseudo_is_the_pair_loss() -> None:
    emb = _emb(2)
    out = sparse_alignment_loss({"v": emb["v"], "t": emb["t"]}, torch.tensor(0.3), beta=0.8)
    assert float(out["loss"]) == pytest.approx(0.3) and "triplet_vs" not in out
    # the discriminators only see pairs whose domains are present
    out = sparse_alignment_loss({k: emb[k] for k in ("v", "t", "vu")}, torch.tensor(0.3),
                                discriminators=make_a3vse_discriminators(D, hidden_dim=4))
    assert {k for k in out if k.startswith("loss_")} == {"loss_v_vu", "loss_v_t", "loss_vu_t"}


def test_region_heads_against_manual_pooling() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4 * 6)  # 4 regions of 6 channels, region-major
    mean_head = create_head("region-mean", 24, 5, regions=4, dropout=0.0).eval()
    h = mean_head.region_fc(x.view(3, 4, 6))
    torch.testing.assert_close(mean_head(x), F.normalize(h.mean(dim=1), dim=-1))
    att = create_head("region-attention", 24, 5, regions=4, hidden_dim=3).eval()
    h = att.region_fc(x.view(3, 4, 6))
    w = att.attention.attention_weights(h)  # (B, K, R), each head sums to 1 over regions
    torch.testing.assert_close(w.sum(dim=2), torch.ones(3, 3))
    pooled = torch.einsum("bkr,brh->bkh", w, h).flatten(1)
    torch.testing.assert_close(att(x), F.normalize(att.attention.proj(pooled), dim=-1))
    with pytest.raises(XmrError, match="equal regions"):
        create_head("region-mean", 25, 5, regions=4)
    assert getattr(HEADS.get("region-attention"), "needs_regions", False)


def test_epoch_order_covers_everything_before_repeating() -> None:
    order = epoch_order(7, steps=5, batch_size=4, rng=np.random.default_rng(0))
    assert len(order) == 20
    for start in range(0, 14, 7):
        assert sorted(order[start:start + 7]) == list(range(7))


def _colour_labeller() -> ImageNetLabeller:
    """A fake 'ImageNet' labeller: four colour classes scored from the mean RGB of the crop."""
    names = ["ruby", "emerald", "sapphire", "canary"]

    def logits(images: np.ndarray) -> np.ndarray:
        rgb = images.reshape(len(images), -1, 3).mean(axis=1) / 25.0
        rgb = rgb - rgb.mean(axis=1, keepdims=True)  # the hue, whatever the white background adds
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        return np.stack([r, g, b, (r + g) / 2 - b], axis=1)

    return ImageNetLabeller(class_names=names, logits_fn=logits, model_id="fake-colours", image_size=32)


ARGS = dict(image_encoder="toy-image-regions", text_encoder="toy-text", embed_dim=16, head="linear",
            hidden_dim=8, image_head="region-attention", sparse="0.5x1", pseudo_texts="regional")


def test_train_run_with_pseudo_texts_and_adversarial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=2)
    train = TrainConfig.from_flat(loss="vse++", epochs=4, vse0_warmup_epochs=1, batch_size=8, steps_per_epoch=3,
                                  lr=3e-3, patience=0, adversarial=True, grad_clip=2.0)
    cfg = RunConfig.from_flat(manifest=str(manifest), train=train, **ARGS)
    run, cache = tmp_path / "run", tmp_path / "cache"
    res = train_run(cfg, run, cache_dir=cache, labeller=_colour_labeller())
    sparse = json.loads((run / "sparse.json").read_text())
    assert (sparse["spec"], sparse["annotated"], sparse["unannotated"]) == ("0.5x1", 16, 16)  # by group: 8 of 16
    pseudo = [json.loads(line) for line in (run / "pseudo_texts.jsonl").read_text().splitlines()]
    assert len(pseudo) == 16 and all(p["texts"][0].split()[0] in {"ruby", "emerald", "sapphire", "canary"}
                                     for p in pseudo)
    assert any(p["id"].startswith("red-") and p["texts"][0].startswith("ruby") for p in pseudo)
    hist = res.history
    assert len(hist) == 4 and all(
        {"train_triplet_vs", "train_adversarial", "train_pair_loss", "train_loss_v_t", "train_loss_vu_s"} <= set(h)
        for h in hist)
    # gamma(p) = 2 / (1 + exp(-10 p)) - 1 at every step, p = step / (4 epochs x 3 steps); the history keeps epoch means
    for e, h in enumerate(hist):
        want = np.mean([2 / (1 + np.exp(-10 * step / 12)) - 1 for step in range(3 * e, 3 * e + 3)])
        assert h["train_grl_gamma"] == pytest.approx(want, rel=1e-6)
    state = torch.load(run / "last.pt", weights_only=False)
    assert set(PAIR_NAMES) <= {k.split(".")[1] for k in state["model"] if k.startswith("discriminators.")}
    model = load_model(run / "best")
    assert model.config.image_head == "region-attention" and model.config.image_regions == 4
    assert not any(k.startswith("discriminators") for k in model.state_dict())  # kept out of the served model
    # the served model works through the usual commands
    assert main(["eval", str(run), "--cache-dir", str(cache), "--texts-per-item", "1"]) == 0
    assert main(["index", str(run), "--split", "test", "--cache-dir", str(cache)]) == 0
    # a finished run is loaded, not retrained; a fresh run of the same config is identical (seeded)
    again = train_run(cfg, run, cache_dir=cache, labeller=_colour_labeller())
    assert again.best_epoch == res.best_epoch and len(again.history) == 4
    twin = train_run(cfg, tmp_path / "twin", cache_dir=cache, labeller=_colour_labeller())
    assert [h["train_loss"] for h in twin.history] == [h["train_loss"] for h in hist]


def test_pseudo_pairs_change_training(tmp_path: Path) -> None:
    """With beta = 1 and no discriminators the pseudo pairs are drawn but weigh nothing: the
    run equals plain sparse VSE++; with beta = 0.8 it differs."""
    from conftest import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=2)
    cache = tmp_path / "cache"
    rows = {}
    for name, beta, pseudo in (("plain", 0.8, None), ("beta1", 1.0, "regional"), ("beta08", 0.8, "regional")):
        train = TrainConfig.from_flat(loss="vse++", epochs=3, vse0_warmup_epochs=1, batch_size=8, steps_per_epoch=3,
                                      patience=0, pseudo_beta=beta)
        # dropout off: the pseudo batch's forward pass would otherwise draw other dropout masks
        cfg = RunConfig.from_flat(manifest=str(manifest), train=train, dropout=0.0,
                                  **{**ARGS, "pseudo_texts": pseudo})
        rows[name] = train_run(cfg, tmp_path / name, cache_dir=cache, labeller=_colour_labeller()).history
    assert rows["plain"][-1]["train_loss"] == pytest.approx(rows["beta1"][-1]["train_pair_loss"], rel=1e-6)
    assert rows["beta08"][-1]["train_pair_loss"] != pytest.approx(rows["plain"][-1]["train_loss"], rel=1e-6)


@pytest.mark.parametrize("argv, needle", [
    (["--pseudo-texts", "regional"], "need un-annotated training images"),
    (["--sparse", "0.5y1"], "bad sparse spec '0.5y1'"),
    (["--image-head", "region-attention", "--image-encoder", "toy-image"], "needs a region image encoder"),
    (["--sparse", "0.5x1", "--pseudo-texts", "regional", "--similarity", "order", "--loss", "vse++"],
     "need the cosine similarity"),
])
def test_sparse_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                        needle: str) -> None:
    from conftest import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    code = main(["train", str(manifest), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"),
                 "--image-encoder", "toy-image-regions", "--text-encoder", "toy-text", "--epochs", "3", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
