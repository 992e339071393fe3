"""Trainable word-level text encoders inside xmr train / eval / index / search."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from xmr.cli import main
from xmr.errors import XmrError
from xmr.models import load_model
from xmr.runs.config import RunConfig, load_run_config
from xmr.search import Searcher
from xmr.text import PAD_ID, Vocabulary, encode_ids, shift_positions
from xmr.text.word_ids import WordIdsEncoder

TRAIN = ["--image-encoder", "toy-image", "--embed-dim", "32", "--epochs", "20", "--batch-size", "16",
         "--lr", "3e-3", "--patience", "0", "--word-vectors", "random"]


def _reference_shift_ok(before: np.ndarray, after: np.ndarray) -> int:
    """Hand check of one row: same tokens, contiguous, padding elsewhere; returns the shift."""
    tokens = before[before != PAD_ID]
    nz = np.flatnonzero(after != PAD_ID)
    assert len(nz) == len(tokens) and (np.diff(nz) == 1).all()
    assert (after[nz] == tokens).all()
    return int(nz[0])


def test_shift_positions_matches_encode_ids_distribution() -> None:
    vocab = Vocabulary.build(["a red circle on a big square", "blue"])
    texts = ["a red circle on a big square", "blue", "red blue"]
    left = torch.from_numpy(encode_ids(texts, vocab, length=8))
    gen = torch.Generator().manual_seed(0)
    seen: list[Counter[int]] = [Counter() for _ in texts]
    for _ in range(400):
        out = shift_positions(left, gen).numpy()
        for r in range(len(texts)):
            seen[r][_reference_shift_ok(left[r].numpy(), out[r])] += 1
    lengths = [7, 1, 2]
    for r, n in enumerate(lengths):
        assert set(seen[r]) == set(range(8 - n + 1))  # every shift 0..L-n reachable, nothing else
        counts = np.array([seen[r][s] for s in range(8 - n + 1)])
        assert counts.min() > 0.5 * counts.mean()  # roughly uniform, like encode_ids(position_shift=True)


def test_word_ids_encoder_rows_and_id() -> None:
    v1 = Vocabulary.build(["a red circle", "a blue square"])
    v2 = Vocabulary.build(["a red circle"])
    enc = WordIdsEncoder(v1, length=6)
    rows = enc.encode_batch(["a green circle", "square"])
    assert rows.dtype == np.float32 and rows.shape == (2, 6)
    np.testing.assert_array_equal(rows.astype(np.int64), encode_ids(["a green circle", "square"], v1, 6))
    assert enc.encoder_id != WordIdsEncoder(v2, 6).encoder_id != WordIdsEncoder(v1, 7).encoder_id
    assert enc.encoder_id == WordIdsEncoder(Vocabulary.build(["a blue square", "a red circle"]), 6).encoder_id


def test_run_config_text_model_validation(tmp_path: Path) -> None:
    cfg = RunConfig(manifest="m.jsonl", text_encoder="textcnn")
    assert cfg.text_model is not None and cfg.text_model.kind == "textcnn"
    with pytest.raises(ValueError, match="unknown text encoder 'nope'"):
        RunConfig(manifest="m.jsonl", text_encoder="nope")
    with pytest.raises(ValueError, match="need a word-level text encoder"):
        RunConfig(manifest="m.jsonl", text_encoder="toy-text", text_model=cfg.text_model)


@pytest.fixture(scope="module")
def textcnn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from conftest import make_shapes_dataset

    root = tmp_path_factory.mktemp("textcnn")
    manifest = make_shapes_dataset(root / "data", copies=3)
    cache, run = root / "cache", root / "run"
    assert main(["train", str(manifest), "--out", str(run), "--cache-dir", str(cache), "--text-encoder", "textcnn",
                 *TRAIN]) == 0
    return manifest, cache, run


def test_textcnn_run_saves_vocab_and_config(textcnn_run: tuple[Path, Path, Path]) -> None:
    _, _, run = textcnn_run
    cfg = load_run_config(run, RunConfig)
    assert cfg.text_model is not None and cfg.text_model.init == "random" and cfg.text_model.position_shift
    vocab = Vocabulary.load(run / "best" / "vocab.json")
    assert "circle" in vocab and "red" in vocab and "purple" not in vocab  # test colours never seen in training
    model_cfg = json.loads((run / "best" / "model.json").read_text())["config"]
    assert model_cfg["text_model"]["kind"] == "textcnn" and model_cfg["text_dim"] == cfg.text_model.out_dim


def test_textcnn_reload_gives_same_embeddings(textcnn_run: tuple[Path, Path, Path]) -> None:
    _, _, run = textcnn_run
    a, b = load_model(run / "best"), load_model(run / "best")
    ids = WordIdsEncoder(a.vocab, 32).encode_batch(["a red circle", "a blue cross", "purple"])  # type: ignore[arg-type]
    ea = a.embed_numpy(ids, "text")
    np.testing.assert_allclose(ea, b.embed_numpy(ids, "text"), rtol=0, atol=0)
    assert np.allclose(np.linalg.norm(ea, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(ea[0], ea[1])
    # eval mode never shifts: embedding the same rows twice is deterministic, and padding is not a word
    np.testing.assert_array_equal(ea, a.embed_numpy(ids, "text"))


def test_textcnn_trains_and_serves(textcnn_run: tuple[Path, Path, Path], capsys: pytest.CaptureFixture) -> None:
    manifest, cache, run = textcnn_run
    hist = json.loads((run / "history.json").read_text())
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"]  # the text CNN learns
    assert main(["eval", str(run), "--split", "train", "--cache-dir", str(cache), "--texts-per-item", "1"]) == 0
    m = json.loads((run / "eval-train-full.json").read_text())["metrics"]
    # 48 train images x 16 captions; chance t2i R@1 is 3/48 = 6 %; seen words are learnt
    assert m["t2i_r1"] >= 30, m
    assert main(["index", str(run), "--split", "train", "--cache-dir", str(cache)]) == 0
    s = Searcher.from_run(run)
    hits = s.search_text("a red circle", k=3)
    # the colour word is learnt firmly (all three hits red); the toy image features separate shapes less well
    assert all(h.id.startswith("red-") for h in hits) and any(h.id.startswith("red-circle/") for h in hits), hits


def test_load_model_without_its_vocab_is_refused(textcnn_run: tuple[Path, Path, Path],
                                                             tmp_path: Path) -> None:
    _, _, run = textcnn_run
    broken = tmp_path / "best"
    broken.mkdir()
    for name in ("model.json", "model.safetensors"):
        (broken / name).write_bytes((run / "best" / name).read_bytes())
    with pytest.raises(XmrError, match="vocab.json"):
        load_model(broken)


def test_bigru_no_shift_cli_records_options(textcnn_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, cache, _ = textcnn_run
    run = tmp_path / "gru"
    args = [a if a != "20" else "2" for a in TRAIN]
    assert main(["train", str(manifest), "--out", str(run), "--cache-dir", str(cache), "--text-encoder", "bigru",
                 "--no-position-shift", "--text-length", "12", "--text-pool", "attention", *args]) == 0
    saved = json.loads((run / "run.json").read_text())["text_model"]
    assert (saved["kind"], saved["length"], saved["position_shift"], saved["init"], saved["pool"]) == \
        ("bigru", 12, False, "random", "attention")
    model = load_model(run / "best")
    assert model.text_model is not None and type(model.text_model).__name__ == "BiGRUTextEncoder"
