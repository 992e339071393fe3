"""Trainer: schedule, early stopping, checkpoints, resume, collapse guard; model save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmr.errors import XmrError
from xmr.models import JointModel, ModelConfig, load_model
from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model
from xmr.training.schedule import warmup_cosine


def _toy_problem(n: int = 48, d_img: int = 12, d_txt: int = 10, seed: int = 0) -> tuple[PairSet, EvalSet]:
    """Paired features related by a fixed random linear map plus noise."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 6))
    img = (latent @ rng.standard_normal((6, d_img)) + 0.1 * rng.standard_normal((n, d_img))).astype(np.float32)
    txt = (latent @ rng.standard_normal((6, d_txt)) + 0.1 * rng.standard_normal((n, d_txt))).astype(np.float32)
    tr, va = slice(0, 36), slice(36, n)
    pairs = PairSet(img[tr], txt[tr], np.stack([np.arange(36), np.arange(36)], 1), np.arange(36))
    val = EvalSet(img[va], txt[va], sp.csr_matrix(np.eye(n - 36, dtype=bool)))
    return pairs, val


def _mc() -> ModelConfig:
    return ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=12, text_dim=10,
                       embed_dim=8, hidden_dim=16, dropout=0.0)


def test_warmup_cosine_shape() -> None:
    lrs = [warmup_cosine(s, total_steps=10, warmup_steps=2) for s in range(10)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] < 0.05


def test_training_learns_and_saves_best(tmp_path: Path) -> None:
    pairs, val = _toy_problem()
    res = train_joint_model(pairs, val, _mc(), TrainConfig(epochs=15, batch_size=12, lr=1e-2, patience=0),
                            out_dir=tmp_path)
    chance_rsum = 6 * 100 * 5 / 12  # roughly: R@1,5,10 of random ranking over 12 items
    assert res.best_metrics["rsum"] > chance_rsum + 100
    assert (tmp_path / "best" / "model.safetensors").exists()
    meta = json.loads((tmp_path / "best" / "model.json").read_text())
    assert meta["epoch"] == res.best_epoch and meta["model_id"] == res.model.model_id
    hist = json.loads((tmp_path / "history.json").read_text())
    assert len(hist) == 15 and max(h["val_rsum"] for h in hist) == pytest.approx(res.best_metrics["rsum"])


def test_resume_continues_from_last_epoch_and_matches_uninterrupted(tmp_path: Path) -> None:
    pairs, val = _toy_problem()
    cfg = TrainConfig(epochs=6, batch_size=12, lr=1e-2, patience=0)
    full = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / "a")
    # "interrupt" after 3 epochs: a run of 3 epochs, then the same folder with epochs=6 is another
    # config, so simulate the crash by truncating the state instead
    import xmr.training.trainer as trainer

    calls = {"n": 0}
    real = trainer._epoch_and_bookkeeping

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    trainer._epoch_and_bookkeeping = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / "b")
    finally:
        trainer._epoch_and_bookkeeping = real
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())) == 3
    resumed = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / "b")
    assert len(resumed.history) == 6
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    again = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path / "b")  # finished: nothing to do
    assert len(again.history) == 6


def test_other_config_in_same_folder_is_refused(tmp_path: Path) -> None:
    pairs, val = _toy_problem()
    train_joint_model(pairs, val, _mc(), TrainConfig(epochs=1, batch_size=12), out_dir=tmp_path)
    with pytest.raises(XmrError, match="another config.*pass overwrite=True"):
        train_joint_model(pairs, val, _mc(), TrainConfig(epochs=2, batch_size=12), out_dir=tmp_path)


def test_corrupt_resume_state_is_one_line_error(tmp_path: Path) -> None:
    pairs, val = _toy_problem()
    cfg = TrainConfig(epochs=2, batch_size=12)
    train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path)
    (tmp_path / "last.pt").write_bytes(b"\x00garbage")
    with pytest.raises(XmrError, match="cannot resume from .*last.pt"):
        train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path)
    res = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path, overwrite=True)  # overwrite starts over
    assert len(res.history) == 2


def test_early_stopping(tmp_path: Path) -> None:
    pairs, val = _toy_problem()
    res = train_joint_model(pairs, val, _mc(), TrainConfig(epochs=50, batch_size=12, lr=1e-2, patience=2),
                            out_dir=tmp_path)
    assert res.status == "early-stopped" and len(res.history) == res.best_epoch + 2


def test_vsepp_starts_with_vse0_warmup(tmp_path: Path) -> None:
    pairs, val = _toy_problem()
    res = train_joint_model(pairs, val, _mc(), TrainConfig.from_flat(loss="vse++", epochs=4, batch_size=12,
                                                                     vse0_warmup_epochs=2, patience=0),
                            out_dir=tmp_path)
    assert [h["loss_name"] for h in res.history] == ["vse0", "vse0", "vse++", "vse++"]
    assert res.best_epoch in (3, 4)  # the checkpoint comes from VSE++ training, not the warm-up
    with pytest.raises(ValueError, match="must exceed vse0_warmup_epochs"):
        TrainConfig.from_flat(loss="vse++", epochs=2, vse0_warmup_epochs=2)


def test_collapse_guard_stops_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pairs, val = _toy_problem()
    # constant features make every embedding the same point: VSE++ sits at exactly 2 x margin
    pairs = PairSet(np.ones_like(pairs.image_feats), np.ones_like(pairs.text_feats), pairs.pairs, pairs.image_groups)
    cfg = TrainConfig.from_flat(loss="vse++", epochs=10, batch_size=12, vse0_warmup_epochs=0, collapse_epochs=2,
                                patience=0)
    with caplog.at_level("ERROR"):
        res = train_joint_model(pairs, val, _mc(), cfg, out_dir=tmp_path)
    assert res.status == "collapsed" and len(res.history) == 2
    assert any("COLLAPSE" in r.message for r in caplog.records)


def test_model_roundtrip_and_corrupt_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = JointModel(_mc())
    mid = m.save(tmp_path)
    back = load_model(tmp_path)
    x = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32)
    np.testing.assert_array_equal(m.embed_numpy(x, "image"), back.embed_numpy(x, "image"))
    assert back.model_id == mid
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(XmrError, match="cannot load weights"):
        load_model(tmp_path)


def test_config_validation() -> None:
    with pytest.raises(XmrError, match="unknown loss"):
        TrainConfig(loss="triplet-ish")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1)
    with pytest.raises(XmrError, match="unknown head"):
        ModelConfig(image_encoder="a", text_encoder="b", image_dim=2, text_dim=2, head="transformer")
