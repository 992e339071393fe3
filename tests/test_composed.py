"""Composed queries end to end: metric vs brute force, model, trainer, workflow, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xmr.cli import main
from xmr.compose.model import ComposedModel, ComposedModelConfig, load_composed_model
from xmr.errors import XmrError
from xmr.evaluation.composed import composed_ranks
from xmr.tasks.composed.config import ComposedRunConfig
from xmr.tasks.composed.jobs import evaluate_composed_run, train_composed_run
from xmr.tasks.composed.searcher import ComposedSearcher
from xmr.tasks.composed.train import ComposedData, ComposedTrainConfig, evaluate_composed, train_composed


def _brute_rank(q: np.ndarray, g: np.ndarray, t: int, gid: np.ndarray, excl: int) -> int:
    order = sorted((i for i in range(len(g)) if i != excl), key=lambda i: (-(q @ g[i]), gid[i] == t))
    ranks = [r for r, i in enumerate(order) if gid[i] == t]
    return ranks[0] if ranks else len(g)


def test_composed_ranks_match_brute_force_with_ties_and_exclusion() -> None:
    rng = np.random.default_rng(0)
    g = np.round(rng.standard_normal((30, 4)), 1).astype(np.float32)  # rounding makes ties
    g[7] = g[3]  # an exact tie between two gallery images
    gid = rng.integers(0, 12, 30)
    q = np.round(rng.standard_normal((25, 4)), 1).astype(np.float32)
    t = rng.integers(0, 14, 25)  # identities 12, 13 have no gallery image
    excl = rng.integers(-1, 30, 25)
    got = composed_ranks(q, g, t, gid, excl, chunk_rows=7)
    want = [_brute_rank(q[i], g, int(t[i]), gid, int(excl[i])) for i in range(25)]
    np.testing.assert_array_equal(got, want)


def test_composed_chance_equals_the_mean_over_every_ranking() -> None:
    import itertools

    from xmr.evaluation.composed import composed_chance

    gid = np.array([0, 0, 1, 2, 2, 2])
    t = np.array([0, 0, 2, 1, 3, 1])  # identity 3 has no gallery image: never a hit
    excl = np.array([0, 3, 4, -1, 2, 2])  # a query's reference may be of its target identity
    for k in (1, 2, 4):
        hits = []
        for i in range(len(t)):
            cand = [g for g in range(len(gid)) if g != excl[i]]
            hits.append(np.mean([any(gid[g] == t[i] for g in perm[:k]) for perm in itertools.permutations(cand)]))
        assert composed_chance(t, gid, excl, ks=(k,))[f"r{k}"] == pytest.approx(100 * np.mean(hits), abs=1e-9)


def _synthetic(n_colours: int = 6, n_shapes: int = 4) -> tuple[ComposedData, ComposedData]:
    """Items = (colour, shape) one-hots + noise; text = "make it <colour>" one-hots; target = recoloured item."""
    rng = np.random.default_rng(0)
    items = [(c, s) for c in range(n_colours) for s in range(n_shapes)]
    feats = np.zeros((len(items), n_colours + n_shapes + 4), np.float32)
    for i, (c, s) in enumerate(items):
        feats[i, c] = feats[i, n_colours + s] = 1.0
    feats += 0.05 * rng.standard_normal(feats.shape).astype(np.float32)
    texts = np.eye(n_colours, 8, dtype=np.float32) + 0.01
    trip = np.array([[i, c2, items.index((c2, s))] for i, (c, s) in enumerate(items) for c2 in range(n_colours)
                     if c2 != c], dtype=np.int64)
    pick = rng.permutation(len(trip))
    ident = np.arange(len(items))
    data = ComposedData(feats, None, texts, trip[pick[:-30]], ident, np.full(len(items), -1))
    return data, data.with_triplets(trip[pick[-30:]])


@pytest.mark.parametrize("composer, joint", [("tirg", False), ("add", True), ("concat", False)])
def test_trainer_learns_a_simple_edit(tmp_path: Path, composer: str, joint: bool) -> None:
    train, val = _synthetic()
    cfg = ComposedModelConfig(composer=composer, in_joint=joint, image_dim=train.image_feats.shape[1], text_dim=8,
                              embed_dim=16)
    torch.manual_seed(0)
    before = evaluate_composed(ComposedModel(cfg), val)
    res = train_composed(train, val, cfg, ComposedTrainConfig(epochs=40, batch_size=16, lr=3e-3, patience=0),
                         out_dir=tmp_path / "run")
    # 30 held-out edits over 24 gallery images (chance R@1 ~ 4 %)
    assert res.best_metrics["r1"] >= 70 and res.best_metrics["r1"] > before["r1"] + 40, (before, res.best_metrics)


def test_bad_composed_options_fail_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv, needle in ((["--compose", "nope"], "unknown composer 'nope'"),
                         (["--compose-loss", "hinge"], "unknown composed loss 'hinge'")):
        assert main(["train", str(tmp_path / "m.jsonl"), "--task", "composed", "--out", str(tmp_path / "r"),
                     *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_model_save_load_and_errors(tmp_path: Path) -> None:
    cfg = ComposedModelConfig(composer="relation", in_joint=True, image_dim=6, text_dim=5, embed_dim=4, region_dim=6)
    torch.manual_seed(0)
    m = ComposedModel(cfg)
    regions, text = np.random.default_rng(0).standard_normal((2, 3, 3, 6)).astype(np.float32)[0], \
        np.ones((3, 5), np.float32)
    q = m.numpy("compose", regions, text)
    assert q.shape == (3, 4) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    m.save(tmp_path / "best")
    np.testing.assert_array_equal(load_composed_model(tmp_path / "best").numpy("compose", regions, text), q)
    with pytest.raises(XmrError, match="region features"):
        m.compose(torch.zeros(3, 6), torch.zeros(3, 5))
    with pytest.raises(XmrError, match="region_dim"):
        ComposedModelConfig(composer="relation", in_joint=True, image_dim=6, text_dim=5, region_dim=4)
    with pytest.raises(XmrError, match="joint space only"):
        ComposedModel(ComposedModelConfig(composer="tirg", image_dim=6, text_dim=5)).embed_captions(torch.zeros(1, 5))
    with pytest.raises(XmrError, match="no composed model"):
        load_composed_model(tmp_path)


@pytest.fixture(scope="module")
def css_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from xmr.data.scenes import make_css_dataset

    root = tmp_path_factory.mktemp("css")
    manifest, triplets = make_css_dataset(root / "data", n_train=120, n_test=30, seed=0)
    cache, run = root / "cache", root / "run"
    assert main(["train", str(manifest), "--task", "composed", "--in-joint", "--image-encoder", "toy-image",
                 "--embed-dim", "32", "--epochs", "2", "--batch-size", "16", "--out", str(run),
                 "--cache-dir", str(cache)]) == 0
    return manifest, cache, run


def test_composed_run_saves_config_evaluates_and_resumes(css_run: tuple[Path, Path, Path],
                                                         capsys: pytest.CaptureFixture) -> None:
    manifest, cache, run = css_run
    saved = json.loads((run / "run.json").read_text())
    assert (saved["task"], saved["composer"], saved["in_joint"], saved["text_encoder"]) == \
        ("composed", "tirg", True, "lstm")
    assert (run / "best" / "vocab.json").is_file() and (run / "gallery.npz").is_file()
    assert main(["eval", str(run), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    m = json.loads((run / "eval-composed-test.json").read_text())["metrics"]
    assert m["n_queries"] == 30 and 0 <= m["r1"] <= m["r10"] <= m["r50"] <= 100 and "R@50" in out
    cfg = ComposedRunConfig(**{**saved, "train": ComposedTrainConfig(**saved["train"])})
    again = train_composed_run(cfg, run, cache_dir=cache)  # finished: loaded, not retrained
    assert len(again.history) == 2
    again_m = evaluate_composed_run(run, cache_dir=cache)
    assert {k: v for k, v in again_m.items() if not k.startswith("chance/")} == pytest.approx(m)
    chance = json.loads((run / "eval-composed-test.json").read_text())["chance"]
    assert chance["r1"] == pytest.approx(again_m["chance/r1"]) and 0 < chance["r1"] < chance["r10"] < m["r10"]
    assert f"chance (a random ranking, exact): R@1 {chance['r1']:.1f}" in out


def test_composed_search_cli_and_errors(css_run: tuple[Path, Path, Path], capsys: pytest.CaptureFixture,
                                        tmp_path: Path) -> None:
    manifest, cache, run = css_run
    s = ComposedSearcher.from_run(run)
    src = s.items[0].image
    hits = s.search(src, "make the circle red", k=4)
    assert [h.rank for h in hits] == [1, 2, 3, 4] and hits[0].score >= hits[-1].score
    capsys.readouterr()
    assert main(["search", str(run), "--image", src, "--text", "make the circle red", "-k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    (tmp_path / "broken.png").write_bytes(b"not an image")
    for argv, needle in ((["--image", src, "--text", "  "], "modification text is empty"),
                         (["--image", str(tmp_path / "broken.png"), "--text", "make it red"], "broken.png"),
                         (["--image", str(tmp_path / "nope.png"), "--text", "make it red"], "nope.png"),
                         (["--text", "make it red"], "both --image")):
        assert main(["search", str(run), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    # a gallery built by another model is refused
    data = dict(np.load(run / "gallery.npz"))
    other = tmp_path / "other"
    for f in ("run.json",):
        (other).mkdir(exist_ok=True)
        (other / f).write_text((run / f).read_text())
    import shutil
    shutil.copytree(run / "best", other / "best")
    with open(other / "gallery.npz", "wb") as fh:
        np.savez(fh, **{**data, "model_id": np.array("0123456789abcdef")})
    with pytest.raises(XmrError, match="built by model"):
        ComposedSearcher.from_run(other)
    assert main(["index", str(run)]) == 2  # a composed run has no joint-space index
    assert "composed-query run" in capsys.readouterr().err


def test_the_service_answers_composed_queries_with_the_learnt_composition(css_run: tuple[Path, Path, Path]) -> None:
    from fastapi.testclient import TestClient

    from xmr.serve.app import create_app
    from xmr.tasks import load_service

    manifest, cache, run = css_run
    service = load_service(run)
    assert service.task == "composed"
    c = TestClient(create_app(service))
    s = ComposedSearcher.from_run(run)
    src = s.items[0]
    want = [h.id for h in s.search_composed(src.image, "make the circle red", k=6)]
    upload = c.post("/search/image", files={"file": ("q.png", Path(src.image).read_bytes(), "image/png")},
                    data={"text": "make the circle red", "k": "6"}).json()
    assert [h["id"] for h in upload["results"]] == want and upload["query"] == "composed"
    by_id = c.post("/search", json={"image_id": src.id, "text": "make the circle red", "k": 5}).json()
    assert [h["id"] for h in by_id["results"]] == [i for i in want if i != src.id][:5]  # never the reference
    assert c.get("/info").json()["composed"] == "learnt"
    r = c.post("/search", json={"text": "a red circle"})
    assert r.status_code == 400 and "image + text" in r.json()["error"]
