"""A3VSE trainer on tiny synthetic features, and region pooling (xmr.encoders.regions)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from xmr.encoders.regions import RegionEncoder, encode_regions, pool_regions
from xmr.errors import XmrError
from xmr.losses import vse_loss
from xmr.models.discriminator import A3VSE_PAIRS, domain_adversarial_loss, make_a3vse_discriminators
from xmr.models.grl import grl_schedule
from xmr.training.a3vse import (
    A3VSEConfig,
    A3VSEModel,
    PairedFeatures,
    RetrievalFeatures,
    a3vse_loss,
    grl_coeff,
    load_a3vse,
    train_a3vse,
)

D = 16


def _emb(seed: int, n: int = 6, domains: tuple[str, ...] = ("v", "t", "vu", "s")) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {d: F.normalize(torch.randn(n, D, generator=g), dim=-1) for d in domains}


# --- loss composition ---------------------------------------------------------------------------


def test_loss_is_the_hand_computed_sum_of_its_parts() -> None:
    torch.manual_seed(0)
    cfg = A3VSEConfig(embed_dim=D, disc_hidden=8)
    discs = make_a3vse_discriminators(D, hidden_dim=8)
    emb = _emb(1)
    out = a3vse_loss(emb, cfg, discriminators=discs, coeff=0.7)
    tri_vt = vse_loss(emb["v"], emb["t"], margin=0.2, max_violation=True)["loss"]
    tri_vs = vse_loss(emb["vu"], emb["s"], margin=0.3, max_violation=True)["loss"]
    adv = sum(p.weight * domain_adversarial_loss(discs[p.name], emb[p.a], emb[p.b])["loss"] for p in A3VSE_PAIRS)
    expected = 0.8 * tri_vt + 0.2 * tri_vs + adv
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["triplet"], 0.8 * tri_vt + 0.2 * tri_vs)
    torch.testing.assert_close(out["adversarial"], adv)
    assert [p.weight for p in A3VSE_PAIRS] == [0.2, 0.1, 0.5, 0.5, 0.3, 0.3]


def test_hardest_negative_triplet_matches_a_hand_written_loop() -> None:
    emb = _emb(2, n=5)
    cfg = A3VSEConfig(embed_dim=D, adversarial=False, pseudo_texts=False)
    s = (emb["v"] @ emb["t"].T).numpy()
    total = 0.0
    for i in range(5):
        neg = [j for j in range(5) if j != i]
        total += max(0.0, 0.2 - s[i, i] + max(s[i, j] for j in neg))  # hardest text for image i
        total += max(0.0, 0.2 - s[i, i] + max(s[j, i] for j in neg))  # hardest image for text i
    assert float(a3vse_loss(emb, cfg)["loss"]) == pytest.approx(total / 5, rel=1e-5)


def test_without_adversarial_and_pseudo_weight_it_is_vsepp_on_annotated_pairs() -> None:
    emb = _emb(3)
    ref = vse_loss(emb["v"], emb["t"], margin=0.2, max_violation=True)["loss"]
    # Eq. 3 weights the annotated term by beta: beta = 1 leaves VSE++ alone
    out = a3vse_loss(emb, A3VSEConfig(embed_dim=D, adversarial=False, beta=1.0))
    torch.testing.assert_close(out["loss"], ref)
    # pseudo-texts off: the vanilla model, VSE++ at weight 1 whatever beta is
    out = a3vse_loss({k: emb[k] for k in ("v", "t")}, A3VSEConfig(embed_dim=D, adversarial=False, pseudo_texts=False))
    torch.testing.assert_close(out["loss"], ref)


def test_ablation_flags_change_what_is_computed() -> None:
    emb = _emb(4)
    discs = make_a3vse_discriminators(D, hidden_dim=8)
    full = a3vse_loss(emb, A3VSEConfig(embed_dim=D), discriminators=discs, coeff=0.5)
    assert {"triplet_vs", "adversarial", *(f"loss_{p.name}" for p in A3VSE_PAIRS)} <= set(full)
    no_pseudo = a3vse_loss({k: emb[k] for k in ("v", "t", "vu")}, A3VSEConfig(embed_dim=D, pseudo_texts=False),
                           discriminators=discs, coeff=0.5)
    assert "triplet_vs" not in no_pseudo
    assert {k for k in no_pseudo if k.startswith("loss_")} == {"loss_v_vu", "loss_v_t", "loss_vu_t"}
    no_adv = a3vse_loss(emb, A3VSEConfig(embed_dim=D, adversarial=False))
    assert "adversarial" not in no_adv and not any(k.startswith("loss_") for k in no_adv)
    with pytest.raises(XmrError, match="discriminators"):
        a3vse_loss(emb, A3VSEConfig(embed_dim=D))
    # attention off: mean pooling of the projected regions, no attention parameters
    model = A3VSEModel(12, 10, A3VSEConfig(embed_dim=D, attention=False))
    assert model.attention is None
    x = torch.randn(3, 4, 12)
    torch.testing.assert_close(model.embed_images(x), F.normalize(model.region_fc(x).mean(1), dim=-1))
    assert A3VSEModel(12, 10, A3VSEConfig(embed_dim=D)).attention is not None


def test_config_validates() -> None:
    with pytest.raises(XmrError, match="beta"):
        A3VSEConfig(beta=1.5)
    with pytest.raises(XmrError, match="adv_weights"):
        A3VSEConfig(adv_weights=(0.1, 0.2))
    with pytest.raises(XmrError, match="batch_size"):
        A3VSEConfig(batch_size=1)


# --- training ----------------------------------------------------------------------------------


def _synthetic(n_classes: int, per_class: int, seed: int, *, regions: int = 4, rdim: int = 12,
               tdim: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images whose regions carry their class prototype in noise; texts = class prototype + noise."""
    rng = np.random.default_rng(seed)
    proto_r = rng.standard_normal((n_classes, rdim))
    proto_t = rng.standard_normal((n_classes, tdim))
    labels = np.repeat(np.arange(n_classes), per_class)
    reg = proto_r[labels][:, None, :] + 0.8 * rng.standard_normal((len(labels), regions, rdim))
    txt = proto_t[labels] + 0.3 * rng.standard_normal((len(labels), tdim))
    return reg.astype(np.float32), txt.astype(np.float32), labels


def _data(seed: int = 0) -> tuple[PairedFeatures, PairedFeatures, RetrievalFeatures]:
    reg, txt, lab = _synthetic(8, 12, seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(lab))
    ann, un, val = order[:24], order[24:72], order[72:]
    annotated = PairedFeatures.one_to_one(reg[ann], txt[ann])
    pseudo = PairedFeatures.one_to_one(reg[un], txt[un] + 0.5 * rng.standard_normal(txt[un].shape).astype(np.float32))
    relevance = lab[val][:, None] == lab[val][None, :]
    return annotated, pseudo, RetrievalFeatures(reg[val], txt[val], relevance)


def test_grl_coefficient_follows_the_schedule_over_steps() -> None:
    annotated, pseudo, _ = _data()
    cfg = A3VSEConfig(embed_dim=8, context_dim=8, disc_hidden=8, epochs=2, steps_per_epoch=3, batch_size=8)
    res = train_a3vse(annotated, pseudo, None, cfg)
    assert res.coeffs == pytest.approx([grl_schedule(s / 6) for s in range(6)])
    assert res.coeffs[0] == 0.0 and res.coeffs == sorted(res.coeffs)
    assert grl_coeff(6, 6) == pytest.approx(grl_schedule(1.0))
    with pytest.raises(XmrError):
        grl_coeff(7, 6)


def test_tiny_training_beats_chance_and_is_seeded(tmp_path: Path) -> None:
    annotated, pseudo, val = _data()
    cfg = A3VSEConfig(embed_dim=16, context_dim=16, disc_hidden=16, epochs=6, steps_per_epoch=6, batch_size=16,
                      lr=3e-3)
    res = train_a3vse(annotated, pseudo, val, cfg, tmp_path / "run")
    n_val = len(val.texts)
    chance_r1 = 100.0 * 3 / n_val  # 3 relevant of n_val per query (8 classes in 24 val items)
    assert res.best_val["i2t_r1"] > 2 * chance_r1 and res.best_val["t2i_r1"] > 2 * chance_r1
    assert 1 <= res.best_epoch <= 6 and len(res.history) == 6
    assert {"triplet_vt", "triplet_vs", "adversarial", "val_rsum"} <= set(res.history[0])
    # the checkpoint reloads to the same embeddings; a second run with the seed is identical
    reloaded = load_a3vse(tmp_path / "run")
    np.testing.assert_allclose(reloaded.encode_images(val.regions), res.model.encode_images(val.regions), atol=1e-6)
    again = train_a3vse(annotated, pseudo, val, cfg)
    np.testing.assert_array_equal(again.model.encode_texts(val.texts), res.model.encode_texts(val.texts))


def test_training_without_pseudo_texts_ignores_the_unannotated_set() -> None:
    annotated, _, val = _data()
    cfg = A3VSEConfig(embed_dim=8, context_dim=8, epochs=1, steps_per_epoch=2, batch_size=8,
                      pseudo_texts=False, adversarial=False, attention=False)
    res = train_a3vse(annotated, None, val, cfg)
    assert "triplet_vs" not in res.history[0] and "adversarial" not in res.history[0]
    with pytest.raises(XmrError, match="pseudo"):
        train_a3vse(annotated, None, val, dataclasses.replace(cfg, pseudo_texts=True))


# --- region features ---------------------------------------------------------------------------


def test_pool_regions_averages_grid_cells() -> None:
    fmap = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = pool_regions(fmap, 3)
    assert out.shape == (2, 9, 3)
    torch.testing.assert_close(out[1, 5], fmap[1, :, 2:4, 4:6].mean(dim=(1, 2)))  # cell (row 1, col 2)
    torch.testing.assert_close(pool_regions(fmap, 1)[:, 0], fmap.mean(dim=(2, 3)))


class _ToySpatial:
    """A fixed 'CNN': the image's 8x8 mean-pooled RGB as a (3, 4, 4) map."""

    dim = 3
    encoder_id = "toy-spatial"
    image_size = 16
    default_batch_size = 4

    def load(self, path: str | Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB").resize((16, 16)))

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4)


def test_encode_regions_caches_under_its_own_id(tmp_path: Path) -> None:
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        im = Image.new("RGB", (16, 16), colour)
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    to_input = lambda arrs: torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    enc = RegionEncoder(_ToySpatial(), grid=2, to_input=to_input)
    assert enc.encoder_id == "toy-spatial/regions2x2" and enc.dim == 12
    feats = encode_regions(paths, enc, cache_dir=tmp_path / "cache")
    assert feats.shape == (2, 4, 3)
    np.testing.assert_allclose(feats[0], np.tile([1.0, 0.0, 0.0], (4, 1)), atol=1e-6)
    np.testing.assert_allclose(feats[1], np.tile([0.0, 0.0, 1.0], (4, 1)), atol=1e-6)
    assert (tmp_path / "cache" / "toy-spatial_regions2x2" / "encoder.json").exists()
    again = encode_regions(paths, enc, cache_dir=tmp_path / "cache", dtype=np.float16)
    assert again.dtype == np.float16
    with pytest.raises(XmrError, match="spatial_features"):
        RegionEncoder(object())  # type: ignore[arg-type]
