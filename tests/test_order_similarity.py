"""GXN order-violation similarity end to end: numpy scorer, evaluation, training, search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmr.cli import main
from xmr.errors import XmrError
from xmr.evaluation.metrics import cross_modal_ranks_from_embeddings
from xmr.evaluation.similarity import order_scores
from xmr.losses import order_similarity
from xmr.runs.config import RunConfig
from xmr.search import Searcher

TRAIN = ["--image-encoder", "toy-image", "--text-encoder", "toy-text", "--embed-dim", "32", "--epochs", "6",
         "--batch-size", "16", "--lr", "3e-3", "--patience", "0"]


def test_numpy_order_scores_equal_the_torch_loss_similarity() -> None:
    rng = np.random.default_rng(0)
    img, txt = rng.standard_normal((7, 5)), rng.standard_normal((4, 5))
    np.testing.assert_allclose(order_scores(img, txt),
                               order_similarity(torch.from_numpy(img), torch.from_numpy(txt)).numpy(), rtol=1e-12)
    # a hand-written loop over pairs
    for i in range(7):
        for j in range(4):
            assert order_scores(img, txt)[i, j] == pytest.approx(-np.sum(np.maximum(img[i] - txt[j], 0) ** 2))


def test_order_ranks_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    img, txt = rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    rel = sp.csr_matrix(np.eye(9, dtype=bool))
    i2t, t2i = cross_modal_ranks_from_embeddings(img, txt, rel, similarity="order")
    s = order_scores(img, txt)
    # pessimistic ties: rank = number of wrong items scoring at least as high as the true one
    np.testing.assert_array_equal(i2t, [(np.delete(s[i], i) >= s[i, i]).sum() for i in range(9)])
    np.testing.assert_array_equal(t2i, [(np.delete(s[:, j], j) >= s[j, j]).sum() for j in range(9)])


def test_order_needs_a_ranking_loss(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a ranking loss"):
        RunConfig(manifest=str(tmp_path / "m.jsonl"), similarity="order")
    with pytest.raises(XmrError, match="unknown similarity"):
        RunConfig(manifest=str(tmp_path / "m.jsonl"), similarity="l1")


def test_order_run_trains_evaluates_and_searches(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=2)
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["train", str(manifest), "--out", str(run), "--cache-dir", str(cache), *TRAIN, "--loss", "vse0",
                 "--margin", "0.05", "--similarity", "order"]) == 0
    assert json.loads((run / "best" / "model.json").read_text())["config"]["similarity"] == "order"
    assert main(["eval", str(run), "--cache-dir", str(cache), "--texts-per-item", "1"]) == 0
    assert main(["index", str(run), "--cache-dir", str(cache)]) == 0
    s = Searcher.from_run(run)
    q = s.embed_texts(["a purple circle"])
    scores, ids = s.search_reranked(q, None, 5, target="images", modality="text")
    gallery = s.indexes["images"].reconstruct(s.indexes["images"].ids())
    brute = order_scores(gallery, q)[:, 0]
    np.testing.assert_allclose(scores[0], np.sort(brute)[::-1][:5], rtol=1e-5)
    assert set(ids[0]) == set(np.argsort(-brute, kind="stable")[:5])
    hits = s.search_text("a purple circle", k=3)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and len(hits) == 3
    capsys.readouterr()
    assert main(["eval", str(run), "--cache-dir", str(cache), "--rerank", "diffusion"]) == 2
    assert "cosine spaces" in capsys.readouterr().err
