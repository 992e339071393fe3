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
from xmr.objectives import Batch, EpochData, ObjectiveComponent, Setup, Step, build_components
from xmr.runs.base import config_from_json
from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model
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


def _instance(cfg: TrainConfig, model: JointModel) -> ObjectiveComponent:
    """The run's one component, the instance objective (it owns W_share)."""
    setup = Setup(model, cfg, np.arange(model.config.n_instances), steps_per_epoch=1, total_steps=cfg.epochs)
    (component,) = build_components(cfg, cfg.components, setup)
    return component


def _terms(component: ObjectiveComponent, epoch: int, img: torch.Tensor, txt: torch.Tensor, groups: torch.Tensor,
           ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The component's objective in 0-based ``epoch`` on embedded pairs (the batch's features are not read)."""
    component.begin_epoch(EpochData(epoch, 1, img, txt, groups))
    return component.add_terms(Step(Batch(0, torch.arange(len(groups)), ids, groups, img, txt), img, txt, 0), {})


def test_instance_objective_equals_hand_written_cross_entropy() -> None:
    torch.manual_seed(0)
    model = JointModel(_mc(5))
    img = F.normalize(torch.randn(6, 8), dim=-1)
    txt = F.normalize(torch.randn(6, 8), dim=-1)
    groups = torch.tensor([0, 1, 2, 3, 4, 0])
    instance = _instance(TrainConfig(loss="instance"), model)
    out = _terms(instance, 0, img, txt, groups, torch.arange(6))
    w = instance.modules()["classifier"].weight  # W_share is the component's, not the model's
    expect = 0.0
    for emb in (img, txt):  # one shared W for both branches (Eqs. 5-8), mean CE per branch
        expect += sum(-torch.log_softmax(w @ emb[i], 0)[groups[i]] for i in range(6)) / 6
    assert instance.objective_name == "instance"
    torch.testing.assert_close(out["loss"], expect)


def test_stage_two_adds_the_ranking_loss() -> None:
    torch.manual_seed(0)
    model = JointModel(_mc(5))
    img = F.normalize(torch.randn(6, 8), dim=-1)
    txt = F.normalize(torch.randn(6, 8), dim=-1)
    groups, ids = torch.tensor([0, 1, 2, 3, 4, 0]), torch.arange(6)
    cfg = TrainConfig.from_flat(loss="instance", then="instance+rank", stage1_epochs=2, epochs=4, margin=0.3)
    instance = _instance(cfg, model)
    stage1 = _terms(instance, 1, img, txt, groups, ids)["loss"]
    n1 = instance.objective_name
    stage2 = _terms(instance, 2, img, txt, groups, ids)["loss"]
    assert (n1, instance.objective_name) == ("instance", "instance+rank")
    rank = vse_loss(img, txt, margin=0.3, max_violation=True, groups=groups, text_ids=ids)["loss"]
    torch.testing.assert_close(stage2, stage1 + rank)


def test_two_stage_training_learns_and_picks_a_stage_two_epoch(tmp_path: Path) -> None:
    pairs, val = _problem()
    cfg = TrainConfig.from_flat(loss="instance", then="instance+rank", stage1_epochs=3, epochs=8, batch_size=12,
                                lr=1e-2, patience=0)
    res = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path)
    hist = json.loads((tmp_path / "history.json").read_text())
    assert [h["loss_name"] for h in hist] == ["instance"] * 3 + ["instance+rank"] * 5
    assert res.best_epoch > 3
    assert res.best_metrics["rsum"] > 6 * 100 * 5 / 12 + 100  # far above chance over 12 items
    loaded = load_model(tmp_path / "best")  # W_share trains with the heads but is not the served model's
    assert not any(k.startswith("classifier") for k in loaded.state_dict())
    assert torch.load(tmp_path / "last.pt", weights_only=True)["model"]["classifier.weight"].shape == (12, 8)


def test_instance_only_training_beats_chance(tmp_path: Path) -> None:
    pairs, val = _problem()
    res = train_joint_model(pairs, val, _mc(), TrainConfig(loss="instance", epochs=6, batch_size=12, lr=1e-2,
                                                           patience=0), out_dir=tmp_path)
    assert res.best_metrics["rsum"] > 6 * 100 * 5 / 12 + 100


def test_instance_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only loss='instance'"):
        TrainConfig.from_flat(loss="vse++", then="instance+rank", stage1_epochs=1)
    with pytest.raises(ValueError, match="stage1_epochs"):
        TrainConfig.from_flat(loss="instance", then="instance+rank", stage1_epochs=0)
    with pytest.raises(XmrError, match="unknown loss"):
        TrainConfig.from_flat(loss="instance", rank_loss="nope")
    pairs, val = _problem()
    with pytest.raises(XmrError, match="n_instances=4"):
        train_joint_model(pairs, val, _mc(4), TrainConfig(loss="instance", epochs=1), out_dir=tmp_path)


def test_configs_saved_before_a_field_existed_still_match() -> None:
    cfg = TrainConfig(loss="instance")
    saved = to_jsonable({"train": cfg, "n": 3})
    for key in ("then", "stage1_epochs", "rank_loss"):  # as written by an older xmr
        del saved["train"]["components"]["instance"][key]
    assert matches_saved(saved, {"train": cfg, "n": 3})
    other = dataclasses.replace(cfg.components.instance, rank_loss="vse0")
    assert not matches_saved(saved, {"train": dataclasses.replace(
        cfg, components=dataclasses.replace(cfg.components, instance=other)), "n": 3})
    assert not matches_saved(saved, {"train": cfg, "n": 4})


def test_flat_configs_of_older_runs_match_the_nested_config() -> None:
    """A train object as older xmr wrote it, every setting flat (and without the fields added later),
    matches the nested config of the same settings, and loads as it."""
    flat = {"loss": "vse++", "margin": 0.2, "epochs": 30, "batch_size": 128, "lr": 0.001, "weight_decay": 0.01,
            "warmup_epochs": 1.0, "patience": 5, "vse0_warmup_epochs": 1, "collapse_epochs": 2, "seed": 0,
            "pseudo_beta": 0.8, "pseudo_margin": 0.3, "adversarial": False, "grl_eta": 10.0, "disc_hidden": 256,
            "adv_weights": [0.2, 0.1, 0.5, 0.5, 0.3, 0.3], "grad_clip": 0.0, "steps_per_epoch": None}
    cfg = TrainConfig.from_flat(loss="vse++", vse0_warmup_epochs=1)
    assert cfg.components.hardest is not None and cfg.components.sparse is None
    assert matches_saved({"train": flat}, {"train": cfg})
    assert not matches_saved({"train": flat}, {"train": TrainConfig(loss="vse++")})  # the warm-up differs
    assert TrainConfig.from_flat(flat) == cfg == config_from_json(TrainConfig, flat, "train.json")
