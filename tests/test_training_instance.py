"""Trainer with the dual-path instance loss and its two-stage schedule; config compatibility."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from xmr.errors import XmrError
from xmr.losses import vse_loss
from xmr.models import JointModel, ModelConfig, load_model
from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model
from xmr.training.trainer import objective_for_epoch
from xmr.utils.io import matches_saved, to_jsonable


def _problem(n_groups: int = 12, per_group: int = 3, seed: int = 0) -> tuple[PairSet, EvalSet]:
    """Groups of images sharing a latent; each image paired with one text of its group."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    groups = np.repeat(np.arange(n_groups), per_group)
    latent = rng.standard_normal((n_groups, 6))[groups] + 0.2 * rng.standard_normal((n, 6))
    img = (latent @ rng.standard_normal((6, 12))).astype(np.float32)
    txt = (latent @ rng.standard_normal((6, 10))).astype(np.float32)
    pairs = PairSet(img, txt, np.stack([np.arange(n), np.arange(n)], 1), groups)
    val = EvalSet(img[:12], txt[:12], sp.csr_matrix(np.eye(12, dtype=bool)))
    return pairs, val


def _mc(n_instances: int = 12) -> ModelConfig:
    return ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=12, text_dim=10,
                       embed_dim=8, hidden_dim=16, dropout=0.0, n_instances=n_instances)


def test_instance_objective_equals_hand_written_cross_entropy() -> None:
    torch.manual_seed(0)
    model = JointModel(_mc(5))
    img = F.normalize(torch.randn(6, 8), dim=-1)
    txt = F.normalize(torch.randn(6, 8), dim=-1)
    groups = torch.tensor([0, 1, 2, 3, 4, 0])
    fn, name = objective_for_epoch(TrainConfig(loss="instance"), 0)
    out = fn(model, img, txt, groups, torch.arange(6))
    w = model.classifier.weight
    expect = 0.0
    for emb in (img, txt):  # one shared W for both branches (Eqs. 5-8), mean CE per branch
        expect += sum(-torch.log_softmax(w @ emb[i], 0)[groups[i]] for i in range(6)) / 6
    assert name == "instance"
    torch.testing.assert_close(out["loss"], expect)


def test_stage_two_adds_the_ranking_loss() -> None:
    torch.manual_seed(0)
    model = JointModel(_mc(5))
    img = F.normalize(torch.randn(6, 8), dim=-1)
    txt = F.normalize(torch.randn(6, 8), dim=-1)
    groups, ids = torch.tensor([0, 1, 2, 3, 4, 0]), torch.arange(6)
    cfg = TrainConfig(loss="instance", then="instance+rank", stage1_epochs=2, epochs=4, margin=0.3)
    stage1, n1 = objective_for_epoch(cfg, 1)
    stage2, n2 = objective_for_epoch(cfg, 2)
    assert (n1, n2) == ("instance", "instance+rank")
    rank = vse_loss(img, txt, margin=0.3, max_violation=True, groups=groups, text_ids=ids)["loss"]
    torch.testing.assert_close(stage2(model, img, txt, groups, ids)["loss"],
                               stage1(model, img, txt, groups, ids)["loss"] + rank)


def test_two_stage_training_learns_and_picks_a_stage_two_epoch(tmp_path: Path) -> None:
    pairs, val = _problem()
    cfg = TrainConfig(loss="instance", then="instance+rank", stage1_epochs=3, epochs=8, batch_size=12,
                      lr=1e-2, patience=0)
    res = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path)
    hist = json.loads((tmp_path / "history.json").read_text())
    assert [h["loss_name"] for h in hist] == ["instance"] * 3 + ["instance+rank"] * 5
    assert res.best_epoch > 3
    assert res.best_metrics["rsum"] > 6 * 100 * 5 / 12 + 100  # far above chance over 12 items
    loaded = load_model(tmp_path / "best")
    assert loaded.classifier is not None and loaded.classifier.weight.shape == (12, 8)


def test_instance_only_training_beats_chance(tmp_path: Path) -> None:
    pairs, val = _problem()
    res = train_joint_model(pairs, val, _mc(), TrainConfig(loss="instance", epochs=6, batch_size=12, lr=1e-2,
                                                           patience=0), out_dir=tmp_path)
    assert res.best_metrics["rsum"] > 6 * 100 * 5 / 12 + 100


def test_instance_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only loss='instance'"):
        TrainConfig(loss="vse++", then="instance+rank", stage1_epochs=1)
    with pytest.raises(ValueError, match="stage1_epochs"):
        TrainConfig(loss="instance", then="instance+rank", stage1_epochs=0)
    with pytest.raises(XmrError, match="unknown loss"):
        TrainConfig(loss="instance", rank_loss="nope")
    pairs, val = _problem()
    with pytest.raises(XmrError, match="n_instances=4"):
        train_joint_model(pairs, val, _mc(4), TrainConfig(loss="instance", epochs=1), out_dir=tmp_path)


def test_configs_saved_before_a_field_existed_still_match() -> None:
    cfg = TrainConfig(loss="vse++")
    saved = to_jsonable({"train": cfg, "n": 3})
    for key in ("then", "stage1_epochs", "rank_loss"):  # as written by an older xmr
        del saved["train"][key]
    assert matches_saved(saved, {"train": cfg, "n": 3})
    assert not matches_saved(saved, {"train": dataclasses.replace(cfg, rank_loss="vse0"), "n": 3})
    assert not matches_saved(saved, {"train": cfg, "n": 4})
