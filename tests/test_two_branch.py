"""GXN's two-branch model: the joined embedding scores pairs by s* (Eq. 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xmr.cli import main
from xmr.errors import XmrError
from xmr.losses import cosine_similarity, order_similarity, two_branch_similarity, vse_loss
from xmr.models import JointModel, ModelConfig, load_model


def _model(lam: float | None = 0.3) -> JointModel:
    torch.manual_seed(0)
    return JointModel(ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=6, text_dim=5,
                                  embed_dim=8, hidden_dim=16, dropout=0.0, two_branch=lam)).eval()


@pytest.mark.parametrize("sim", [cosine_similarity, order_similarity])
def test_joined_embedding_scores_pairs_by_s_star(sim) -> None:
    model, lam = _model(0.3), 0.3
    x_img, x_txt = torch.randn(4, 6), torch.randn(5, 5)
    with torch.no_grad():
        img, txt = model.embed_images(x_img), model.embed_texts(x_txt)
        s_h = sim(model.image_head(x_img), model.text_head(x_txt))
        s_l = sim(model.embed_grounded(x_img, "image"), model.embed_grounded(x_txt, "text"))
        expect = two_branch_similarity(s_h, s_l, lam)
        got = img @ txt.T if sim is cosine_similarity else order_similarity(img, txt)
    torch.testing.assert_close(got, expect)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(4))  # unit norm: FAISS inner product works


def test_ranking_loss_on_joined_embeddings_is_the_eq3_loss() -> None:
    model = _model(0.5)
    x_img, x_txt = torch.randn(6, 6), torch.randn(6, 5)
    with torch.no_grad():
        s_star = two_branch_similarity(model.image_head(x_img) @ model.text_head(x_txt).T,
                                       model.embed_grounded(x_img, "image") @ model.embed_grounded(x_txt, "text").T,
                                       0.5)
        joined = vse_loss(model.embed_images(x_img), model.embed_texts(x_txt), margin=0.05, max_violation=True)
        given = vse_loss(None, None, scores=s_star, margin=0.05, max_violation=True)
    torch.testing.assert_close(joined["loss"], given["loss"])


def test_two_branch_validation_and_single_branch_error() -> None:
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        _model(1.0)
    with pytest.raises(XmrError, match="one branch"):
        _model(None).embed_grounded(torch.randn(1, 6), "image")


def test_two_branch_cli_round_trip(tmp_path: Path) -> None:
    from conftest import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=2)
    run = tmp_path / "run"
    assert main(["train", str(manifest), "--out", str(run), "--cache-dir", str(tmp_path / "c"), "--image-encoder",
                 "toy-image", "--text-encoder", "toy-text", "--embed-dim", "16", "--epochs", "3", "--batch-size",
                 "16", "--patience", "0", "--loss", "vse0", "--margin", "0.05", "--two-branch", "0.5"]) == 0
    assert json.loads((run / "best" / "model.json").read_text())["config"]["two_branch"] == 0.5
    model = load_model(run / "best")
    out = model.embed_numpy(np.zeros((2, model.config.image_dim), np.float32), "image")
    assert out.shape == (2, 16)
