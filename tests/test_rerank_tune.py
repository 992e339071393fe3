"""`xmr index --rerank NAME --tune val`: parameters chosen on validation only, equal to the slow path's argmax."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from xmr.cli import main
from xmr.data import read_manifest, write_manifest
from xmr.errors import XmrError
from xmr.rerank.registry import create_reranker
from xmr.runs.config import load_run, run_encoders, run_items
from xmr.workflows.evaluate import rerank_metrics
from xmr.workflows.features import encode_items
from xmr.workflows.tune import TUNING_FILE, tune_reranker

TOY = ["--image-encoder", "toy-image", "--text-encoder", "toy-text"]


@pytest.fixture
def own_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A run of its own (its manifest may be changed by the test): (manifest, run, cache)."""
    from conftest import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=3)
    cache, run = tmp_path / "cache", tmp_path / "run"
    assert main(["-q", "train", str(manifest), "--out", str(run), "--cache-dir", str(cache), *TOY, "--embed-dim",
                 "32", "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", "--patience", "0"]) == 0
    return manifest, run, cache


def test_the_choice_is_the_argmax_of_the_slow_path_over_the_grid(toy_run: tuple[Path, Path]) -> None:
    run, cache = toy_run
    cfg, model = load_run(run)
    proto = create_reranker("diffusion", k=3)
    tuned = tune_reranker(cfg, model, proto, ["images", "texts"], fixed={"k"}, cache_dir=cache)
    fs = encode_items(run_items(cfg, split="val"), **run_encoders(cfg, model.vocab), cache_dir=cache,
                      texts_per_item=cfg.eval_texts_per_item)
    img, txt = model.embed_numpy(fs.image_feats, "image"), model.embed_numpy(fs.text_feats, "text")
    grid = {k: v for k, v in proto.params_type.TUNE_GRID.items() if k != "k"}
    for target, direction in (("images", "t2i"), ("texts", "i2t")):
        t = tuned[target]
        assert t.grid == {k: list(v) for k, v in grid.items()} and t.fixed == {"k": 3}
        slow = []
        for point in itertools.product(*grid.values()):  # every point refit from scratch, both directions
            m = rerank_metrics(proto.with_params(**dict(zip(grid, point))), fs, img, txt)
            slow.append(sum(m[f"{direction}_r{k}"] for k in (1, 5, 10)))
        assert [r["score"] for r in t.rows] == pytest.approx(slow)
        best = max(range(len(slow)), key=lambda i: (slow[i], -i))  # ties: the earlier point
        assert t.chosen_score == pytest.approx(slow[best])
        points = list(itertools.product(*grid.values()))
        assert {k: getattr(t.chosen.params, k) for k in grid} == dict(zip(grid, points[best]))
        assert t.chosen.params.k == 3 and t.n_images == len(fs.items)


def test_tuning_never_reads_test_poisoned_test_labels_change_nothing(own_run: tuple[Path, Path, Path],
                                                                    tmp_path: Path) -> None:
    manifest, run, cache = own_run
    args = ["index", str(run), "--split", "test", "--cache-dir", str(cache), "--rerank", "diffusion",
            "--rerank-param", "k=4", "--tune", "val", "--rerank-target", "both"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    before = {t: json.loads((tmp_path / "a" / "rerank" / "diffusion" / t / TUNING_FILE).read_text())
              for t in ("images", "texts")}
    items = read_manifest(manifest)
    test = [i for i, it in enumerate(items) if it.split == "test"]
    texts = [items[i].texts for i in test]
    poisoned = list(items)
    for n, i in enumerate(test):  # every test image gets another test image's texts, and a wrong label
        poisoned[i] = type(items[i])(**{**items[i].__dict__, "texts": texts[(n + 5) % len(test)], "label": "x"})
    write_manifest(poisoned, manifest)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for t in ("images", "texts"):
        after = json.loads((tmp_path / "b" / "rerank" / "diffusion" / t / TUNING_FILE).read_text())
        assert after["chosen"] == before[t]["chosen"] and after["rows"] == before[t]["rows"]
        assert after["split"] == "val" and after["n_images"] == 12  # black: 4 shapes x 3 copies
    built = json.loads((tmp_path / "b" / "index_run.json").read_text())["rerank"]["diffusion"]
    meta = json.loads((tmp_path / "b" / "rerank" / "diffusion" / "images" / "rerank.json").read_text())
    assert meta["params"] == before["images"]["chosen"] == built["tuned"]["images"]["params"]  # the choice is built


def test_tune_refuses_test_and_needs_a_method(toy_run: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run, cache = toy_run
    capsys.readouterr()
    assert main(["index", str(run), "--out", str(tmp_path / "i"), "--rerank", "diffusion", "--tune", "test"]) == 2
    assert main(["index", str(run), "--out", str(tmp_path / "i"), "--tune", "val"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "tune on the validation split" in err[0] and "--rerank NAME" in err[1]
    cfg, model = load_run(run)
    with pytest.raises(XmrError, match="no diffusion setting of the grid fits the 8 val items"):
        tune_reranker(cfg, model, create_reranker("diffusion"), ["images"], cache_dir=cache)  # k 10, 30 > 8 items
