"""Runs made from a pretrained pair with no training (``xmr pretrained``), and a bare folder searchable in one
command (``xmr index --images FOLDER``, no run, no captions), the README's first steps included.

The pairs here: a tiny random CLIP (``hf-clip:PATH``, both sides: :func:`test_hf_clip.make_clip`) and the
toy encoders given one shared space in this module only (``toy-joint-image`` / ``toy-joint-text``: the
toy encoders' features, each declaring the space ``toy-joint``). Every score is checked against the cosine
of the raw encoder features, computed here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmr.cli import main
from xmr.encoders import ENCODERS, create_image_encoder, create_text_encoder
from xmr.encoders.toy import ToyImageEncoder, ToyTextEncoder
from xmr.errors import XmrError

from hostile import cli_error, cli_ok, remount_readonly, tmpfs

README = Path(__file__).resolve().parents[1] / "README.md"
JOINT = ["--image-encoder", "toy-joint-image", "--text-encoder", "toy-joint-text"]
COS_ATOL = 1e-5  # float32 features, the same inputs: only the order of the sums differs


class JointImage(ToyImageEncoder):
    joint_space = "toy-joint"


class JointText(ToyTextEncoder):
    joint_space = "toy-joint"


@pytest.fixture
def joint_pair(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The toy encoders registered with one shared space for this test (removed after), and a fresh cache."""
    monkeypatch.setitem(ENCODERS._items, "toy-joint-image", JointImage)
    monkeypatch.setitem(ENCODERS._items, "toy-joint-text", JointText)
    monkeypatch.setenv("XMR_CACHE_DIR", str(tmp_path / "cache"))
    yield


def bare_folder(root: Path, n: int = 6) -> Path:
    """Generated pictures (coloured discs and bars) with no sidecar and no manifest, one in a sub-folder."""
    rng = np.random.default_rng(0)
    (root / "holidays").mkdir(parents=True)
    for i in range(n):
        a = np.full((40, 48, 3), rng.integers(0, 256, 3), np.uint8)
        a[8 + i:20 + i, 10:30] = rng.integers(0, 256, 3)
        Image.fromarray(a).save(root / ("holidays/rex.jpg" if i == 0 else f"pic{i}.png"))
    return root


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T


def test_a_clip_checkpoint_is_a_run_with_no_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """run.json records the space, the model keeps CLIP's own temperature, and eval / index / search score
    by the checkpoint's own cosine (R@1 both ways against loops over the raw features)."""
    transformers = pytest.importorskip("transformers")

    from xmr.bench.shapes import make_shapes_dataset
    from xmr.data.manifest import select_split
    from xmr.data.readers import read_items
    from xmr.encoders.hf_clip import checkpoint_digest
    from xmr.runs import load_run
    from xmr.search import Searcher

    from test_hf_clip import PROJECTION_DIM, make_clip

    ckpt = make_clip(tmp_path / "clip")
    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    run, name = tmp_path / "run", f"hf-clip:{ckpt}"
    out = cli_ok(["pretrained", "--out", run, "--image-encoder", name, "--text-encoder", name, "--manifest", manifest],
                 capsys)
    assert "no training" in out
    saved = json.loads((run / "run.json").read_text())
    assert saved["pretrained_space"] == f"hf-clip:{checkpoint_digest(ckpt)}"
    assert saved["head"] == "identity" and saved["embed_dim"] == PROJECTION_DIM and not (run / "last.pt").exists()
    _, model = load_run(run)
    own = transformers.CLIPModel.from_pretrained(ckpt, local_files_only=True).logit_scale.exp().item()
    assert model.logit_scale.item() == pytest.approx(min(own, 100.0), rel=1e-5)
    assert not model.log_logit_scale.requires_grad
    cache = tmp_path / "cache"
    cli_ok(["eval", run, "--cache-dir", cache], capsys)
    got = json.loads((run / "eval-test-full.json").read_text())["metrics"]
    # the reference: the raw features of the test split, R@1 by explicit loops
    items = select_split(read_items(str(manifest)), "test")
    texts = list(dict.fromkeys(t for it in items for t in it.texts))
    img_enc, txt_enc = create_image_encoder(name), create_text_encoder(name)
    gallery = img_enc.encode_batch([img_enc.load(it.image) for it in items])
    sim = _cosine(gallery, txt_enc.encode_batch(texts))
    i2t = np.mean([texts[int(np.argmax(sim[i]))] in items[i].texts for i in range(len(items))]) * 100
    t2i = np.mean([texts[j] in items[int(np.argmax(sim[:, j]))].texts for j in range(len(texts))]) * 100
    assert got["i2t_r1"] == pytest.approx(i2t, abs=1e-6) and got["t2i_r1"] == pytest.approx(t2i, abs=1e-6)
    cli_ok(["index", run, "--split", "test", "--cache-dir", cache], capsys)
    hits = Searcher.from_run(run).search_text("a red circle", k=len(items))
    q = txt_enc.encode_batch(["a red circle"])
    by_id = {it.id: float(c) for it, c in zip(items, _cosine(q, gallery)[0])}
    np.testing.assert_allclose([h.score for h in hits], [by_id[h.id] for h in hits], atol=COS_ATOL)


def test_pairs_that_share_no_space_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(["pretrained", "--out", tmp_path / "r", "--image-encoder", "toy-image", "--text-encoder",
                     "toy-text"], capsys)
    assert "--image-encoder toy-image and --text-encoder toy-text do not embed into one space" in err
    assert "a space of its own, 64-d" in err and "`xmr train M`" in err and not (tmp_path / "r").exists()
    err = cli_error(["pretrained", "--out", tmp_path / "r", "--image-encoder", "toy-text", "--text-encoder",
                     "toy-text"], capsys)
    assert "encodes texts, not images" in err


def test_run_configs_made_without_training_refuse_training_settings(tmp_path: Path) -> None:
    from xmr.runs import RunConfig

    with pytest.raises(XmrError, match="identity heads and no training settings; head set"):
        RunConfig(manifest="", pretrained_space="toy-joint")
    with pytest.raises(XmrError, match="head, finetune set"):
        RunConfig.from_flat(manifest="", pretrained_space="s", finetune_image_blocks=1)


def test_a_bare_folder_is_searchable_in_one_command(joint_pair: None, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``xmr index --images FOLDER``: the folder's own run (FOLDER/.xmr) made from the pair, the folder indexed;
    text queries and image -> image queries answer from it, with the frozen features' cosine as the score."""
    from xmr.serve.query import Query
    from xmr.serve.service import SearchService

    folder = bare_folder(tmp_path / "pictures")
    out = cli_ok(["index", "--images", folder, "--recursive", *JOINT], capsys)
    run = folder / ".xmr"
    assert f"run: {run} (toy-joint-image + toy-joint-text, no training; made now)" in out
    assert f"index: {run / 'index'} (6 images, 0 texts)" in out and f"xmr search {run} --text" in out
    assert json.loads((run / "run.json").read_text())["pretrained_space"] == "toy-joint"
    # image -> image: the query itself first, scores = cosine of the frozen image features
    query = folder / "holidays" / "rex.jpg"
    rows = [json.loads(line) for line in cli_ok(["search", run, "--image", query, "-k", "6", "--json"],
                                                capsys).splitlines() if line.startswith("{")]
    hits = rows[0]["hits"]
    assert hits[0]["id"] == "holidays/rex.jpg" and hits[0]["score"] == pytest.approx(1.0, abs=COS_ATOL)
    enc = JointImage()
    paths = {h["id"]: folder / h["id"] for h in hits}
    feats = enc.encode_batch([enc.load(p) for p in paths.values()])
    want = _cosine(enc.encode_batch([enc.load(query)]), feats)[0]
    np.testing.assert_allclose([h["score"] for h in hits], want, atol=COS_ATOL)
    text = cli_ok(["search", run, "--text", "a red disc", "-k", "3"], capsys)
    assert len([line for line in text.splitlines() if "pic" in line or "rex" in line]) == 3
    service = SearchService.serving(run)
    results, _ = service.search(Query(text="a red disc", k=3))
    assert len(results) == 3
    # again, with no pair: the folder's run is reused; another pair is refused in one line
    out = cli_ok(["index", "--images", folder, "--recursive"], capsys)
    assert "made now" not in out and "6 images" in out
    err = cli_error(["index", "--images", folder, "--image-encoder", "toy-image"], capsys)
    assert "holds a run of toy-joint-image + toy-joint-text, not of the pair given" in err
    assert "`xmr pretrained --out RUN --image-encoder toy-image`" in err


def test_index_without_a_run_needs_a_folder_and_a_run_takes_no_pair(toy_index: tuple[Path, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(["index"], capsys)
    assert "give the RUN to index with, or a folder with --images FOLDER" in err
    run, _ = toy_index
    err = cli_error(["index", run, "--images", tmp_path, "--out", tmp_path / "i", "--image-encoder", "toy-image"],
                    capsys)
    assert "choose the pair of a folder's own run (no RUN)" in err
    err = cli_error(["index", "--images", tmp_path / "nope"], capsys)
    assert "is not a folder of images" in err
    folder = bare_folder(tmp_path / "pictures")
    err = cli_error(["index", folder], capsys)  # --images left out
    assert f"is a folder of images, not a run (no run.json); to index it with a pretrained pair, no training: " \
           f"`xmr index --images {folder}`" in err


def test_a_read_only_folder_is_told_where_its_run_can_go(joint_pair: None, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with tmpfs(tmp_path / "ro", "4M") as ro:
        bare_folder(ro / "pictures")
        remount_readonly(ro)
        err = cli_error(["index", "--images", ro / "pictures", *JOINT], capsys)
        assert "(read-only); make a run elsewhere with `xmr pretrained --out RUN`, then index the folder with it: " \
               f"`xmr index RUN --images {ro / 'pictures'}`" in err
        cli_ok(["pretrained", "--out", tmp_path / "run", *JOINT], capsys)
        assert "6 images" in cli_ok(["index", tmp_path / "run", "--images", ro / "pictures", "--recursive"], capsys)


def test_training_on_a_folder_of_images_points_at_the_day_one_route(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = bare_folder(tmp_path / "pictures")
    err = cli_error(["train", folder, "--out", tmp_path / "r", "--image-encoder", "toy-image", "--text-encoder",
                     "toy-text"], capsys)
    assert f"to search a folder of images with no training and no captions: `xmr index --images {folder}`" in err


def test_a_run_without_a_dataset_names_one_for_eval(joint_pair: None, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cli_ok(["pretrained", "--out", tmp_path / "r", *JOINT], capsys)
    err = cli_error(["eval", tmp_path / "r"], capsys)
    assert "made from a pretrained pair without a dataset; name one with --manifest M" in err
    # the same run made again is the same run; another pair in its folder is refused
    cli_ok(["pretrained", "--out", tmp_path / "r", *JOINT], capsys)
    from xmr.bench.shapes import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    err = cli_error(["pretrained", "--out", tmp_path / "r", *JOINT, "--manifest", manifest], capsys)
    assert "holds a run with another config" in err and "--overwrite" in err
    cli_ok(["pretrained", "--out", tmp_path / "r", *JOINT, "--manifest", manifest, "--overwrite"], capsys)
    assert "t2i R@1" in cli_ok(["eval", tmp_path / "r"], capsys)


def _first_steps() -> list[str]:
    """The ``xmr`` commands of the README tour's first block, as written."""
    text = README.read_text()
    tour = text[text.index("## A tour"):]
    block = re.search(r"```bash\n(.*?)```", tour, re.S)
    assert block is not None
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.startswith("xmr ")]


def test_the_readme_tour_starts_with_a_bare_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The tour's first commands, as written, on ~/pictures (generated images, no sidecar, no manifest); the
    day-one pair's names stand for the toy pair with one space here (the real pair is tested beside its
    encoder), so the commands run in seconds."""
    from xmr.workflows.pretrained import DAY_ONE_IMAGE_ENCODER, DAY_ONE_TEXT_ENCODER

    monkeypatch.setitem(ENCODERS._items, DAY_ONE_IMAGE_ENCODER, JointImage)
    monkeypatch.setitem(ENCODERS._items, DAY_ONE_TEXT_ENCODER, JointText)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XMR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    bare_folder(tmp_path / "pictures")
    steps = _first_steps()
    assert steps[0].startswith("xmr index --images ~/pictures") and any("--image " in s for s in steps), steps
    assert not any(s.startswith(("xmr train", "xmr data manifest")) for s in steps), "training comes next, not first"
    for step in steps:
        args = [os.path.expanduser(w) for w in shlex.split(step)[1:]]
        capsys.readouterr()
        assert main(args) == 0, (step, capsys.readouterr().err)
        out = capsys.readouterr().out
        if args[0] == "search":
            assert "pictures/" in out or "pic" in out, (step, out)


def test_tuning_a_run_without_a_dataset_names_one_in_one_line(joint_pair: None, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``xmr index RUN --tune val`` on a run made with no dataset: as ``xmr eval``, it asks for ``--manifest M``, and
    with one it tunes on that manifest's val split; a folder (no pairs to score) is told to build without it."""
    from xmr.bench.shapes import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    run = tmp_path / "r"
    cli_ok(["pretrained", "--out", run, *JOINT], capsys)
    fixed = ["--rerank", "diffusion", "--rerank-param", "diffusion.k=3", "--rerank-param", "diffusion.k_q=2"]
    err = cli_error(["index", run, *fixed, "--tune", "val"], capsys)
    assert "made from a pretrained pair without a dataset; name one with --manifest M" in err
    out = cli_ok(["index", run, "--manifest", manifest, *fixed, "--tune", "val"], capsys)
    assert "tuned diffusion for images on val" in out
    tuning = json.loads((run / "index" / "rerank" / "diffusion" / "images" / "tuning.json").read_text())
    assert tuning["split"] == "val" and tuning["n_images"] == 4  # the manifest's 4 val drawings
    folder = bare_folder(tmp_path / "pictures")
    for args in (["index", run, "--images", folder, "--out", tmp_path / "i"], ["index", "--images", folder, *JOINT]):
        err = cli_error([*args, *fixed, "--tune", "val"], capsys)
        assert "--tune val chooses re-ranking parameters on a split of the run's dataset" in err
        assert "build without it (the method's defaults) or tune on a dataset's split: " \
               "`xmr index RUN --manifest M --rerank NAME --tune val`" in err


def test_a_bare_folder_index_re_ranks(joint_pair: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``xmr index --images FOLDER --rerank diffusion`` builds the structures in the folder's own run, and
    ``xmr search FOLDER/.xmr --rerank diffusion`` re-orders the index's shortlist with them (the same hits as the
    library's re-ranker over the frozen features); a folder too small for the default is refused in one line, and
    a search asking for structures the index lacks too."""
    folder = bare_folder(tmp_path / "pictures", n=8)
    err = cli_error(["index", "--images", folder, "--recursive", "--rerank", "diffusion", *JOINT], capsys)
    assert "diffusion parameter k=30 is too large for a gallery of 8 images (at most 7); lower it " \
           "(--rerank-param diffusion.k=7)" in err
    cli_ok(["index", "--images", folder, "--recursive", *JOINT], capsys)
    run = folder / ".xmr"
    err = cli_error(["search", run, "--text", "a red disc", "--rerank", "diffusion"], capsys)
    assert f"has no 'diffusion' re-ranking structures; rebuild with `xmr index {run} --images {folder} --recursive " \
           "--rerank diffusion`" in err
    out = cli_ok(["index", "--images", folder, "--recursive", "--rerank", "diffusion", "--rerank-param",
                  "diffusion.k=4"], capsys)
    assert "re-ranking structures (diffusion; images)" in out
    def hits(*extra: str) -> list[dict[str, object]]:
        out = cli_ok(["search", run, "--text", "a red disc", "-k", "8", "--json", *extra], capsys)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")][0]["hits"]  # type: ignore[no-any-return]

    plain, reranked = hits(), hits("--rerank", "diffusion")
    ids = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))
    enc_i, enc_t = JointImage(), JointText()
    want = _cosine(enc_t.encode_batch(["a red disc"]), enc_i.encode_batch([enc_i.load(folder / i) for i in ids]))[0]
    np.testing.assert_allclose([h["score"] for h in plain], sorted(want, reverse=True), atol=COS_ATOL)
    assert sorted(h["id"] for h in reranked) == ids  # the whole shortlist, re-scored by the walk
    assert not np.allclose([h["score"] for h in reranked], [h["score"] for h in plain], atol=1e-3)
