"""End to end on the synthetic shapes set with the toy encoders, through the CLI and the API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xmr.cli import main
from xmr.data import read_manifest, select_split
from xmr.search import Searcher
from xmr.workflows.demo import chance_metrics

TRAIN = ["--image-encoder", "toy-image", "--text-encoder", "toy-text", "--embed-dim", "32", "--epochs", "12",
         "--batch-size", "16", "--lr", "3e-3", "--patience", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from conftest import make_shapes_dataset

    root = tmp_path_factory.mktemp("e2e")
    manifest = make_shapes_dataset(root / "data", copies=3)
    cache, run = root / "cache", root / "run"
    assert main(["train", str(manifest), "--out", str(run), "--cache-dir", str(cache), *TRAIN]) == 0
    return manifest, cache, run


def test_eval_far_above_chance_and_written(trained: tuple[Path, Path, Path], capsys: pytest.CaptureFixture) -> None:
    manifest, cache, run = trained
    assert main(["eval", str(run), "--cache-dir", str(cache), "--texts-per-item", "1"]) == 0
    out = capsys.readouterr().out
    assert "rsum" in out
    saved = json.loads((run / "eval-test-full.json").read_text())
    m = saved["metrics"]
    # test split: 3 unseen colours x 4 shapes x 3 styles, 12 caption queries. Shapes are learnt from
    # other colours; an unseen colour word is noise to the toy text encoder, so t2i R@1 is capped
    # near 1/3. A random ranking scores rsum ~180 on this split (exact expectation, stored beside).
    chance = chance_metrics(select_split(read_manifest(manifest), "test"))
    assert saved["chance"] == pytest.approx({k: v for k, v in chance.items()})
    assert m["rsum"] >= chance["rsum"] + 100
    table = out.splitlines()
    chance_row = next(line for line in table if line.startswith("chance "))
    assert f"{chance['rsum']:.1f}" in chance_row and "random ranking" in out
    assert m["t2i_r5"] >= 40 and m["i2t_r1"] >= 20
    assert 0.0 < m["overlap_S"] < 1.0 and "overlap S" in out  # a trained space separates pairs somewhat
    assert saved["command"].startswith("xmr eval") and saved["texts_per_item"] == 1
    assert "i2i_group_map" in m and "i2i_label_map" in m


def test_index_and_search_cli_and_api(trained: tuple[Path, Path, Path], capsys: pytest.CaptureFixture) -> None:
    manifest, cache, run = trained
    assert main(["index", str(run), "--cache-dir", str(cache)]) == 0
    s = Searcher.from_run(run)
    hits = s.search_text("a red circle", k=3)
    groups = [h.group for h in hits]  # a seen caption: its group's styles come first
    assert groups[0] == "red-circle" and groups.count("red-circle") >= 2
    # exact index agrees with dense brute force over the gallery embeddings
    q = s.embed_texts(["a green cross"])
    gallery = s.model.embed_numpy(
        s.image_encoder.encode_batch([s.image_encoder.load(it.image) for it in s.items]), "image")
    scores, ids = s.search_vectors(q, k=5)
    dense = (gallery @ q[0])
    np.testing.assert_allclose(scores[0], np.sort(dense)[::-1][:5], rtol=1e-5)
    capsys.readouterr()
    img = next(it.image for it in s.items if it.id == "blue-square/0")
    assert main(["search", str(run), "--image", img, "-k", "2", "--target", "texts"]) == 0
    assert "blue square" in capsys.readouterr().out


def test_searcher_refuses_a_modality_given_as_a_target(trained: tuple[Path, Path, Path]) -> None:
    from xmr.errors import XmrError

    manifest, cache, run = trained
    if not (run / "index").is_dir():
        assert main(["-q", "index", str(run), "--cache-dir", str(cache)]) == 0
    s = Searcher.from_run(run)
    assert s.search_text("a red circle", k=2, target="texts")[0].id.startswith("text:")
    q = s.embed_texts(["a red circle"])
    for call, needle in ((lambda: s.search_text("a red circle", target="image"), "unknown search target 'image'"),
                         (lambda: s.search_vectors(q, target="text"), "unknown search target 'text'"),
                         (lambda: s.search_reranked(q, None, 2, target="images", modality="texts"),
                          "query modality must be 'image' or 'text', got 'texts'")):
        with pytest.raises(XmrError, match=needle):
            call()  # type: ignore[arg-type]


def test_index_keeps_previous_on_failure(trained: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, cache, run = trained
    assert main(["index", str(run), "--cache-dir", str(cache)]) == 0
    before = (run / "index" / "images" / "index.faiss").read_bytes()
    import xmr.workflows.index as wi

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(wi, "write_gallery", boom)
    assert main(["index", str(run), "--cache-dir", str(cache)]) == 130
    assert (run / "index" / "images" / "index.faiss").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".index") and p.name != ".index.lock"]


@pytest.mark.parametrize("argv,needle", [
    (["train", "MANIFEST", "--out", "OUT", "--loss", "hinge"], "unknown loss 'hinge'"),
    (["train", "MANIFEST", "--out", "OUT", "--then", "instance+rank"], "only loss='instance'"),
    (["train", "MANIFEST", "--out", "OUT", "--image-encoder", "clip"], "unknown encoder 'clip'"),
    (["train", "NOPE.jsonl", "--out", "OUT"], "manifest not found"),
    (["eval", "NOT_A_RUN"], "not an xmr run folder"),
    (["search", "RUN", "--text", "   "], "query text #0 is empty"),
    (["search", "RUN", "--image", "MISSING.png"], "image not found"),
    (["data", "fetch", "imagenet"], "unknown dataset 'imagenet'"),
])
def test_bad_input_is_one_line_error(trained: tuple[Path, Path, Path], tmp_path: Path, argv: list[str], needle: str,
                                     capsys: pytest.CaptureFixture) -> None:
    manifest, cache, run = trained
    if not (run / "index").exists():
        assert main(["index", str(run), "--cache-dir", str(cache)]) == 0
    subs = {"MANIFEST": str(manifest), "OUT": str(tmp_path / "o"), "RUN": str(run),
            "NOT_A_RUN": str(tmp_path), "MISSING.png": str(tmp_path / "missing.png")}
    capsys.readouterr()
    code = main([subs.get(a, a) for a in argv] + (["--cache-dir", str(cache)] if argv[0] == "train" else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if line.startswith("xmr: error:")]) == 1 and needle in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_manifest_row_without_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "image": "a.png", "texts": ["x"]}\n{"id": "b", "texts": ["y"]}\n')
    assert main(["encode", str(m), "--cache-dir", str(tmp_path)]) == 2
    assert "m.jsonl:2 (id 'b'): no image" in capsys.readouterr().err


def test_index_of_other_model_refused(trained: tuple[Path, Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    manifest, cache, run = trained
    other = tmp_path / "other"
    assert main(["train", str(manifest), "--out", str(other), "--cache-dir", str(cache), *TRAIN[:-6],
                 "--epochs", "1", "--batch-size", "16"]) == 0
    assert main(["index", str(run), "--cache-dir", str(cache)]) == 0
    code = main(["search", str(other), "--text", "a red circle", "--index", str(run / "index")])
    assert code == 2 and "model" in capsys.readouterr().err


def test_gallery_of_bare_images(trained: tuple[Path, Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    manifest, cache, run = trained
    img = manifest.parent / "img"
    gallery = tmp_path / "gallery.jsonl"
    gallery.write_text(f'{{"id": "g1", "image": "{img / "red-circle-0.png"}"}}\n'
                       f'{{"id": "g2", "image": "{img / "blue-cross-0.png"}"}}\n')
    out = tmp_path / "gidx"
    assert main(["index", str(run), "--manifest", str(gallery), "--out", str(out), "--cache-dir", str(cache)]) == 0
    s = Searcher.from_run(run, out)
    assert s.search_text("a blue cross", k=1)[0].id == "g2"
    assert main(["search", str(run), "--index", str(out), "--image", str(img / "red-circle-1.png"),
                 "--target", "texts"]) == 2
    assert "target texts: this index holds no texts" in capsys.readouterr().err


def test_list(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet-lite0" in out and "vse++" in out and "emoji" in out
    losses = next(line for line in out.splitlines() if line.startswith("losses:"))
    assert "instance" in losses.split(": ", 1)[1].split(", ")  # the dual-path instance loss trains too


def test_rerank_index_search_eval(trained: tuple[Path, Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    from xmr.rerank.registry import index_fingerprint, load_reranker, rerank_dir

    manifest, cache, run = trained
    idx = tmp_path / "idx"
    assert main(["index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache),
                 "--rerank", "diffusion", "--rerank-param", "k=5", "--rerank-target", "both"]) == 0
    for target in ("images", "texts"):
        meta = json.loads((idx / "rerank" / "diffusion" / target / "rerank.json").read_text())
        assert meta["fingerprint"] == index_fingerprint(idx) and meta["params"]["k"] == 5
    assert json.loads((idx / "index_run.json").read_text())["rerank"]["diffusion"]["params"]["k"] == 5
    capsys.readouterr()
    assert main(["search", str(run), "--index", str(idx), "--text", "a purple circle", "-k", "3",
                 "--rerank", "diffusion", "--rerank-param", "shortlist=20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # the API gives the same list: the index shortlist re-ordered by the stored structures
    s = Searcher.from_run(run, idx, rerank="diffusion", rerank_params={"shortlist": 20})
    hits = s.search_text("a purple circle", k=3)
    assert [h.id for h in hits] == [line.split()[-3] for line in lines]
    q = s.embed_texts(["a purple circle"])
    rr = load_reranker(rerank_dir(idx, "diffusion", "images"), expect_fingerprint=index_fingerprint(idx))
    _, ids = rr.rerank(q, None, *s.search_vectors(q, 20))
    assert [h.id for h in hits] == [s.items[i].id for i in ids[0, :3]]
    assert main(["search", str(run), "--index", str(idx), "--image", s.items[0].image, "--target", "texts",
                 "-k", "2", "--rerank", "diffusion"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--cache-dir", str(cache), "--texts-per-item", "1", "--rerank", "diffusion",
                 "--rerank-param", "k=5"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "plain", "diffusion", "chance"] and "t2i R@1" in out
    saved = json.loads((run / "eval-test-full.json").read_text())
    assert saved["rerank"]["diffusion"]["params"]["k"] == 5
    assert 0 <= saved["rerank"]["diffusion"]["metrics"]["rsum"] <= 600 and "rsum" in saved["metrics"]


def test_rerank_errors(trained: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    manifest, cache, run = trained
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["index", str(run), "--split", "test", "--out", str(a), "--cache-dir", str(cache),
                 "--rerank", "diffusion", "--rerank-param", "k=5"]) == 0
    assert main(["index", str(run), "--split", "val", "--out", str(b), "--cache-dir", str(cache)]) == 0
    shutil.copytree(a / "rerank", b / "rerank")  # structures of another index
    cases = [
        (["search", str(run), "--index", str(b), "--text", "x", "--rerank", "diffusion"], "built for another index"),
        (["search", str(run), "--index", str(a), "--text", "x", "--rerank", "geodesic"],
         "has no 'geodesic' re-ranking structures"),
        (["search", str(run), "--index", str(a), "--text", "x", "--target", "texts", "--rerank", "diffusion"],
         "--rerank-target both"),
        (["search", str(run), "--index", str(a), "--text", "x", "--rerank", "diffusion", "--rerank-param", "k=3"],
         "k is fixed when the structures are built"),
        (["index", str(run), "--split", "test", "--out", str(b), "--rerank", "diffusion", "--rerank-param",
          "alpha=1"], "alpha must be in (0, 1)"),
        (["index", str(run), "--split", "test", "--out", str(b), "--rerank", "diffusion", "--rerank-param", "k=40"],
         "k=40 is too large for a gallery of 36 images"),
        (["eval", str(run), "--rerank", "diffusion", "--rerank-param", "beta=2"],
         "unknown re-ranking parameter 'beta'"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main(argv + (["--cache-dir", str(cache)] if argv[0] != "search" else [])) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("xmr: error:") and needle in err[0], (argv, err)
    assert not (b / "rerank" / "diffusion" / "texts").exists()  # the failed builds left index b as it was


def test_train_two_stage_instance_cli(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, cache, _ = trained
    run = tmp_path / "inst"
    args = [a if a != "12" else "6" for a in TRAIN]
    assert main(["train", str(manifest), "--out", str(run), "--cache-dir", str(cache), *args, "--loss", "instance",
                 "--then", "instance+rank", "--stage1-epochs", "2"]) == 0
    saved = json.loads((run / "run.json").read_text())["train"]
    stages = saved["components"]["instance"]  # the instance component's own config, nested
    assert (saved["loss"], stages["then"], stages["stage1_epochs"], stages["rank_loss"]) == \
        ("instance", "instance+rank", 2, "vse++")
    hist = json.loads((run / "history.json").read_text())
    assert [h["loss_name"] for h in hist] == ["instance"] * 2 + ["instance+rank"] * 4
    model = json.loads((run / "best" / "model.json").read_text())
    assert model["config"]["n_instances"] == 4 * 4  # 4 train colours x 4 shapes, each (colour, shape) a group
