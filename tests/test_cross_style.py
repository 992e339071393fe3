"""The cross-style image-image term (xmr.losses.cross_style, TrainConfig.cross_style)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from xmr.errors import XmrError
from xmr.evaluation.metrics import label_retrieval_metrics
from xmr.losses.cross_style import cross_style_loss
from xmr.models import ModelConfig
from xmr.objectives import group_partners
from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model

from hostile import interrupt_at_epoch


def _hand_loss(v: torch.Tensor, p: torch.Tensor, groups: list[int], scale: float) -> float:
    """Symmetric InfoNCE written as loops: same-group off-diagonal rows are not negatives."""
    b = len(groups)
    total = 0.0
    for a, c in ((v, p), (p, v)):
        for i in range(b):
            denom = sum(math.exp(scale * float(a[i] @ c[j])) for j in range(b) if j == i or groups[j] != groups[i])
            total += -(scale * float(a[i] @ c[i]) - math.log(denom))
    return total / (2 * b)


def test_the_loss_matches_a_hand_written_loop() -> None:
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(7, 5, generator=g), dim=-1)
    p = F.normalize(torch.randn(7, 5, generator=g), dim=-1)
    groups = [0, 1, 1, 2, 3, 3, 3]
    got = float(cross_style_loss(v, p, torch.tensor(groups), logit_scale=4.0))
    assert got == pytest.approx(_hand_loss(v, p, groups, 4.0), rel=1e-5)
    assert got != pytest.approx(_hand_loss(v, p, list(range(7)), 4.0), rel=1e-3)  # the mask matters here


def test_partners_are_other_members_of_the_group_drawn_uniformly() -> None:
    groups = np.array([5, 2, 5, 9, 5, 2, 7])
    draws = np.stack([group_partners(groups, np.random.default_rng(s)) for s in range(300)])
    assert np.all(draws[:, [3, 6]] == -1)  # alone in their group
    for i in (0, 1, 2, 4, 5):
        seen = set(draws[:, i].tolist())
        assert seen == {j for j in range(len(groups)) if j != i and groups[j] == groups[i]}, (i, seen)
    counts = np.bincount(draws[:, 0], minlength=7)
    assert abs(counts[2] - counts[4]) < 60  # 300 draws of two: about 150 each
    np.testing.assert_array_equal(group_partners(groups, np.random.default_rng(1)),
                                  group_partners(groups, np.random.default_rng(1)))


def _styled(n_train: int, n_val: int, seed: int = 0) -> tuple[PairSet, EvalSet, np.ndarray]:
    """Two images per item: one latent drawn in two 'styles' (each its own map and offset); one text.

    Returns the training pairs, the validation set of other items in the same two styles, and the
    validation images' groups.
    """
    rng = np.random.default_rng(seed)
    w_img, w_txt = [rng.standard_normal((4, 12)) for _ in range(2)], rng.standard_normal((4, 10))
    style = 3.0 * rng.standard_normal((2, 12))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        latent = rng.standard_normal((n, 4))
        img = np.concatenate([latent @ w_img[s] + style[s] + 0.3 * rng.standard_normal((n, 12)) for s in (0, 1)])
        txt = latent @ w_txt + 0.1 * rng.standard_normal((n, 10))
        return img.astype(np.float32), txt.astype(np.float32), np.tile(np.arange(n), 2)

    img, txt, groups = draw(n_train)
    pairs = PairSet(img, txt, np.stack([np.arange(2 * n_train), groups], 1), groups)
    vimg, vtxt, vgroups = draw(n_val)
    return pairs, EvalSet(vimg, vtxt, sp.csr_matrix(np.tile(np.eye(n_val, dtype=bool), (2, 1)))), vgroups


MC = ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=12, text_dim=10, embed_dim=8,
                 hidden_dim=32, dropout=0.0)


def test_the_term_pulls_the_styles_of_unseen_items_together(tmp_path: Path) -> None:
    pairs, val, vgroups = _styled(80, 30)

    def held_out_map(weight: float) -> tuple[float, list[dict[str, object]]]:
        cfg = TrainConfig.from_flat(epochs=15, batch_size=32, lr=1e-2, patience=0, cross_style=weight)
        res = train_joint_model(pairs, val, MC, cfg, out_dir=tmp_path / f"w{weight}")
        with torch.no_grad():
            emb = res.model.embed_images(torch.from_numpy(val.image_feats)).numpy()
        return label_retrieval_metrics(emb, vgroups, emb, vgroups, exclude_self=True)["map"], res.history

    plain, plain_hist = held_out_map(0.0)
    crossed, hist = held_out_map(1.0)
    assert crossed > plain + 10, (plain, crossed)  # mAP in percent, over unseen items (here 24 -> 51)
    assert "train_cross_style" in hist[0] and "train_cross_style" not in plain_hist[0]
    assert hist[-1]["train_cross_style"] < hist[0]["train_cross_style"]


def test_a_negative_weight_is_refused() -> None:
    with pytest.raises(XmrError, match="invalid cross_style"):
        TrainConfig.from_flat(cross_style=-1.0)


def test_a_resumed_run_with_the_term_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    pairs, val, _ = _styled(40, 10)
    cfg = TrainConfig.from_flat(epochs=4, batch_size=16, lr=1e-2, patience=0, cross_style=1.0)
    full = train_joint_model(pairs, val, MC, cfg, out_dir=tmp_path / "a")
    with interrupt_at_epoch(3), pytest.raises(KeyboardInterrupt):
        train_joint_model(pairs, val, MC, cfg, out_dir=tmp_path / "b")
    resumed = train_joint_model(pairs, val, MC, cfg, out_dir=tmp_path / "b")
    assert [r["train_cross_style"] for r in resumed.history] == pytest.approx(
        [r["train_cross_style"] for r in full.history])
    assert resumed.model.model_id == full.model.model_id
