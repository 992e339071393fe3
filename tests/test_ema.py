"""The moving average of the weights (xmr.training.ema): the update rule, validation on it, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmr.errors import XmrError
from xmr.models import ModelConfig, load_model
from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model
from xmr.training.ema import WeightAverage

from hostile import interrupt_at_epoch


def test_the_average_follows_the_update_rule_and_swaps_in_and_out() -> None:
    model = torch.nn.Linear(3, 2)
    avg = WeightAverage(model, 0.9)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = {n: v.clone() for n, v in start.items()}
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (step + 1))
        avg.update(model)
        for n, p in model.named_parameters():  # by hand: e = d e + (1 - d) p
            expected[n] = 0.9 * expected[n] + 0.1 * p.detach()
    for n in expected:
        torch.testing.assert_close(avg.shadow[n], expected[n])
    raw = {n: p.detach().clone() for n, p in model.named_parameters()}
    with avg.applied(model):
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), expected[n])
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), raw[n])  # the model's own weights come back


def _toy(n: int = 48, seed: int = 0) -> tuple[PairSet, EvalSet]:
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 6))
    img = (latent @ rng.standard_normal((6, 12)) + 0.1 * rng.standard_normal((n, 12))).astype(np.float32)
    txt = (latent @ rng.standard_normal((6, 10)) + 0.1 * rng.standard_normal((n, 10))).astype(np.float32)
    pairs = PairSet(img[:36], txt[:36], np.stack([np.arange(36), np.arange(36)], 1), np.arange(36))
    return pairs, EvalSet(img[36:], txt[36:], sp.csr_matrix(np.eye(n - 36, dtype=bool)))


MC = ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=12, text_dim=10, embed_dim=8,
                 hidden_dim=16, dropout=0.0)


def test_the_best_checkpoint_holds_the_averaged_weights_and_resume_matches(tmp_path: Path) -> None:
    pairs, val = _toy()
    cfg = TrainConfig(epochs=4, batch_size=12, lr=1e-2, patience=0, ema_decay=0.9)
    full = train_joint_model(pairs, val, MC, cfg, out_dir=tmp_path / "a")
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    best = load_model(tmp_path / "a" / "best")
    from xmr.training.trainer import validate

    # the saved best is the model that was validated: the averaged weights of its epoch
    assert validate(best, val)["rsum"] == pytest.approx(full.best_metrics["rsum"])
    raw = dict(last["model"])
    assert any(not torch.equal(raw[n], last["ema"][n]) for n in last["ema"])  # the average is not the weights
    plain = train_joint_model(pairs, val, MC, TrainConfig(epochs=4, batch_size=12, lr=1e-2, patience=0),
                              out_dir=tmp_path / "plain")
    assert [r["val_rsum"] for r in plain.history] != [r["val_rsum"] for r in full.history]
    with interrupt_at_epoch(3), pytest.raises(KeyboardInterrupt):
        train_joint_model(pairs, val, MC, cfg, out_dir=tmp_path / "b")
    resumed = train_joint_model(pairs, val, MC, cfg, out_dir=tmp_path / "b")
    assert [r["val_rsum"] for r in resumed.history] == pytest.approx([r["val_rsum"] for r in full.history])
    assert json.loads((tmp_path / "b" / "best" / "model.json").read_text())["model_id"] == full.model.model_id


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_bad_decay_is_refused(decay: float) -> None:
    with pytest.raises(XmrError, match="ema_decay"):
        TrainConfig(ema_decay=decay)
