"""``xmr index add`` / ``xmr index remove`` on the toy run: each equals a rebuild over the same items,
ids stay stable, bad input is one line with nothing changed, and ``kill -9`` mid-add keeps the old index."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import xmr as xmr_package
from xmr.cli import main
from xmr.data.manifest import read_manifest, write_manifest
from xmr.search import Searcher

from hostile import TRAIN, cli_error, run_process  # tests/hostile.py

QUERIES = ("a red circle", "a blue square", "a green triangle", "red", "blue")


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def halves(toy_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(run, cache, first half manifest, second half manifest) of the toy gallery."""
    run, cache = toy_run
    items = read_manifest(json.loads((run / "run.json").read_text())["manifest"])
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_manifest(items[::2], a)
    write_manifest(items[1::2], b)
    return run, cache, a, b


def xmr(*args: object) -> int:
    return main(["-q", *map(str, args)])


def hits(run: Path, index: Path, target: str = "images") -> list[list[tuple[str, float]]]:
    s = Searcher.from_run(run, index)
    return [[(h.id if target == "images" else h.text, round(h.score, 5)) for h in s.search_text(q, 8, target=target)]
            for q in QUERIES]


def same_ranking(got: list[list[tuple[str, float]]], want: list[list[tuple[str, float]]]) -> bool:
    """The same scores in order, and the same ids apart from the order among equal scores (the toy
    gallery's copies tie) and which of the tied last ones made the cut."""
    for g, w in zip(got, want, strict=True):
        if [s for _, s in g] != [s for _, s in w]:
            return False
        last = g[-1][1] if g else 0.0
        if {i for i, s in g if s > last} != {i for i, s in w if s > last}:
            return False
    return True


def test_add_equals_a_rebuild_over_both_halves(halves: tuple[Path, Path, Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run, cache, a, b = halves
    both = tmp_path / "both.jsonl"
    write_manifest(read_manifest(a) + read_manifest(b), both)
    assert xmr("index", run, "--manifest", both, "--out", tmp_path / "rebuilt", "--cache-dir", cache) == 0
    assert xmr("index", run, "--manifest", a, "--out", tmp_path / "grown", "--cache-dir", cache) == 0
    before = Searcher.from_run(run, tmp_path / "grown")
    first_ids = {h.id: h.score for h in before.search_text("a red circle", 64)}
    capsys.readouterr()
    assert xmr("index", "add", run, b, "--index", tmp_path / "grown", "--cache-dir", cache) == 0
    assert "added 32 images and 0 new texts; now 64 images, 40 texts" in capsys.readouterr().out
    for target in ("images", "texts"):
        assert same_ranking(hits(run, tmp_path / "grown", target), hits(run, tmp_path / "rebuilt", target))
    after = Searcher.from_run(run, tmp_path / "grown")
    again = {h.id: h.score for h in after.search_text("a red circle", 64)}
    assert all(abs(again[i] - s) < 1e-6 for i, s in first_ids.items())  # the first half kept its place
    edits = json.loads((tmp_path / "grown" / "index_run.json").read_text())["edits"]
    assert edits[0]["add"] == str(b) and edits[0]["images"] == 32


def test_remove_equals_a_rebuild_without_the_items(halves: tuple[Path, Path, Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run, cache, a, b = halves
    items = read_manifest(a) + read_manifest(b)
    gone = [it.id for it in items if it.label == "circle"]
    kept = tmp_path / "kept.jsonl"
    write_manifest([it for it in items if it.id not in gone], kept)
    assert xmr("index", run, "--manifest", kept, "--out", tmp_path / "rebuilt", "--cache-dir", cache) == 0
    for factory in ("Flat", "HNSW16"):
        out = tmp_path / factory
        assert xmr("index", run, "--out", out, "--cache-dir", cache, "--factory", factory) == 0
        capsys.readouterr()
        assert xmr("index", "remove", run, *gone, "--index", out) == 0
        said = capsys.readouterr().out
        assert f"removed {len(gone)} images" in said
        assert same_ranking(hits(run, out), hits(run, tmp_path / "rebuilt"))
        s = Searcher.from_run(run, out)
        shown = [h.text for h in s.search_text("a red circle", 40, target="texts")]
        assert not any("circle" in t for t in shown)  # texts only circles carried went with them
        assert "red" in shown  # a text other items carry stays


def test_add_and_remove_refuse_bad_input_and_change_nothing(halves: tuple[Path, Path, Path, Path],
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, cache, a, b = halves
    out = tmp_path / "idx"
    assert xmr("index", run, "--manifest", a, "--out", out, "--cache-dir", cache) == 0
    before = tree(out)
    first = read_manifest(a)[0].id
    capsys.readouterr()
    cases = [
        (["index", "add", run, a, "--index", out, "--cache-dir", cache],
         f"item {first!r} and 31 more of {a} is already in the index"),
        (["index", "remove", run, "no/such", "--index", out], "item 'no/such' is not in the index"),
        (["index", "remove", run, first, "no/such", "also/not", "--index", out], "(2 of 3 are not)"),
        (["index", "remove", run, first, first, "--index", out], f"item {first!r} is named twice"),
        (["index", "add", run, b, "--index", tmp_path / "none", "--cache-dir", cache], "no index at"),
    ]
    for argv, message in cases:
        assert xmr(*argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("xmr: error: ") and "\n" not in err and message in err, err
    assert tree(out) == before


def test_kill_9_during_add_leaves_the_previous_index_loadable(halves: tuple[Path, Path, Path, Path],
                                                              tmp_path: Path) -> None:
    run, cache, a, b = halves
    out = tmp_path / "idx"
    assert xmr("index", run, "--manifest", a, "--out", out, "--cache-dir", cache, "--factory", "IVF4,PQ4x4np",
               "--refine", "32") == 0
    before, want = tree(out), hits(run, out)
    proc = run_process(["-q", "index", "add", run, b, "--index", out, "--cache-dir", cache],
                       env={"XMR_CRASH_AT": "index-edit-before-swap"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    now = tree(out)
    assert now.keys() == before.keys()
    store = "images/vectors.f16"  # hard-linked into the killed add's folder and extended there
    assert all(now[k] == v for k, v in before.items() if k != store)
    assert now[store].startswith(before[store]) and len(now[store]) > len(before[store])
    assert hits(run, out) == want  # the old index answers as before
    # the store the killed add extended in place (a hard link) is cut back by the next add, which succeeds
    assert xmr("index", "add", run, b, "--index", out, "--cache-dir", cache) == 0
    assert Searcher.from_run(run, out).indexes["images"].__len__() == 64
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".idx.tmp-")]


def test_add_to_a_refined_index_extends_its_store(halves: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    run, cache, a, b = halves
    out = tmp_path / "idx"
    assert xmr("index", run, "--manifest", a, "--out", out, "--cache-dir", cache, "--factory", "IVF4,PQ4x4np",
               "--refine", "64") == 0
    assert xmr("index", "add", run, b, "--index", out, "--cache-dir", cache) == 0
    assert (out / "images" / "vectors.f16").stat().st_size == 64 * 32 * 2
    assert xmr("index", run, "--out", tmp_path / "flat", "--cache-dir", cache) == 0
    # every vector re-scored from the store: the exact ranking, up to float16 ties among the copies
    got, want = hits(run, out), hits(run, tmp_path / "flat")
    assert [[round(s, 2) for _, s in row] for row in got] == [[round(s, 2) for _, s in row] for row in want]


def test_re_ranking_structures_are_left_out_and_named(halves: tuple[Path, Path, Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run, cache, a, b = halves
    out = tmp_path / "idx"
    assert xmr("index", run, "--manifest", a, "--out", out, "--cache-dir", cache, "--rerank", "diffusion",
               "--rerank-param", "k=4", "--rerank-param", "n_trunc=8") == 0
    capsys.readouterr()
    assert xmr("index", "add", run, b, "--index", out, "--cache-dir", cache) == 0
    said = capsys.readouterr().out
    assert "re-ranking structures (diffusion) described the old gallery" in said and "--rerank diffusion" in said
    built = json.loads((out / "index_run.json").read_text())
    assert built["rerank_stale"] == ["diffusion"] and built["rerank"] == {} and not (out / "rerank").exists()


def test_a_removed_item_is_gone_from_the_service(halves: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    from xmr.serve.service import NotFound, SearchService

    run, cache, a, _ = halves
    out = tmp_path / "idx"
    assert xmr("index", run, "--manifest", a, "--out", out, "--cache-dir", cache) == 0
    first = read_manifest(a)[0].id
    assert xmr("index", "remove", run, first, "--index", out) == 0
    service = SearchService(Searcher.from_run(run, out), run_dir=run)
    with pytest.raises(NotFound):
        service.item(first)
    mask = service.item_mask({"style": "s0"})
    assert mask is not None and not mask[0]  # the hole passes no filter
    assert os.path.exists(out / "gallery.sqlite") and not (out / "gallery.jsonl").exists()
    assert service.items[0] is None and len(service.items) == 32  # the hole keeps every other id in place


def test_an_order_space_searched_after_a_remove_scores_the_remaining_vectors(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``xmr search`` of an order-violation run reads the gallery back from the index by id (issue 25, 2.1): an
    IVF index after a remove (slots with holes) answers exactly as brute force over the items left."""
    from xmr.bench.shapes import make_shapes_dataset
    from xmr.evaluation.similarity import order_scores

    manifest = make_shapes_dataset(tmp_path / "data", copies=2)
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert xmr("train", manifest, "--out", run, "--cache-dir", cache, "--image-encoder", "toy-image", "--text-encoder",
               "toy-text", "--embed-dim", "32", "--epochs", "3", "--batch-size", "16", "--lr", "3e-3", "--patience",
               "0", "--loss", "vse0", "--margin", "0.05", "--similarity", "order") == 0
    assert xmr("index", run, "--split", "test", "--factory", "IVF4,Flat", "--cache-dir", cache) == 0
    s = Searcher.from_run(run)
    items = [it for it in s.items if it is not None]
    gone = [it.id for it in items[:3]]
    assert xmr("index", "remove", run, *gone) == 0
    left = [it for it in items if it.id not in gone]
    want = order_scores(s.embed_images([it.image for it in left]), s.embed_texts(["a purple circle"]))[:, 0]
    capsys.readouterr()
    assert xmr("search", run, "--text", "a purple circle", "-k", "5", "--json") == 0
    hits = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["hits"]
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(want)[::-1][:5], rtol=1e-5)
    by_id = dict(zip([it.id for it in left], want, strict=True))
    assert all(abs(by_id[h["id"]] - h["score"]) < 1e-5 for h in hits)


def _split_items(run: Path, split: str) -> list:
    return [it for it in read_manifest(json.loads((run / "run.json").read_text())["manifest"]) if it.split == split]


def test_add_racing_a_full_rebuild_describes_the_index_it_wrote(toy_run: tuple[Path, Path], tmp_path: Path) -> None:
    """``xmr index add`` reads ``index_run.json`` and the gallery under the lock it writes under (issue 25, 2.3): a
    full ``xmr index`` (another process) that ends just before the add takes the lock is what the add extends."""
    run, cache = toy_run
    out, more = tmp_path / "idx", tmp_path / "more.jsonl"
    assert xmr("index", run, "--split", "test", "--out", out, "--cache-dir", cache) == 0
    write_manifest(_split_items(run, "train")[:3], more)
    rebuild = ["-q", "index", str(run), "--split", "val", "--out", str(out), "--cache-dir", str(cache)]
    race = ("import os, subprocess, sys\n"
            "import xmr.workflows.index_edit as edit\n"
            "real = edit.exclusive_lock\n"
            "def lock(path, what):  # the other process's full rebuild ends just before the add takes the lock\n"
            "    done = subprocess.run([sys.executable, '-m', 'xmr', *os.environ['REBUILD'].split('\\n')])\n"
            "    assert done.returncode == 0\n"
            "    return real(path, what)\n"
            "edit.exclusive_lock = lock\n"
            "from xmr.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    src = str(Path(xmr_package.__file__).resolve().parents[1])  # both processes run the code this test imports
    proc = run_process(["-q", "index", "add", run, more, "--index", out, "--cache-dir", cache], code=race,
                       env={"REBUILD": "\n".join(rebuild), "PYTHONPATH": src})
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = json.loads((out / "index_run.json").read_text())
    n_val = len(_split_items(run, "val"))
    assert built["split"] == "val" and "--split val" in built["command"]  # the build that is there, not the first
    assert built["n_images"] == n_val + 3 == len(Searcher.from_run(run, out).indexes["images"])
    assert [e.get("add") for e in built["edits"]] == [str(more)]
    ids = {it.id for it in Searcher.from_run(run, out).items if it is not None}
    assert ids == {it.id for it in _split_items(run, "val")} | {it.id for it in read_manifest(more)}


def test_following_the_rerank_hint_after_an_add_keeps_the_added_items(toy_run: tuple[Path, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The stale re-ranker's hint rebuilds the index as it is (issue 25, 2.4); a plain rebuild is refused."""
    run, cache = toy_run
    out, more = tmp_path / "idx", tmp_path / "more.jsonl"
    params = ["--rerank-param", "k=4", "--rerank-param", "n_trunc=8", "--cache-dir", cache]
    assert xmr("index", run, "--split", "test", "--out", out, "--rerank", "diffusion", *params) == 0
    write_manifest(_split_items(run, "val")[:3], more)
    assert xmr("index", "add", run, more, "--index", out, "--cache-dir", cache) == 0
    capsys.readouterr()
    assert xmr("search", run, "--index", out, "--text", "a red circle", "--rerank", "diffusion") == 2
    hint = re.search(r"`xmr (index [^`]*)`", capsys.readouterr().err)
    assert hint is not None
    before = tree(out)
    assert xmr("index", run, "--split", "test", "--out", out, "--rerank", "diffusion", *params) == 2  # would drop
    assert "--keep-edits" in capsys.readouterr().err and tree(out) == before
    assert xmr(*shlex.split(hint.group(1)), *params) == 0  # the hint as printed, the small gallery's parameters
    s = Searcher.from_run(run, out)
    want = {it.id for it in _split_items(run, "test")} | {it.id for it in read_manifest(more)}
    assert {it.id for it in s.items if it is not None} == want
    built = json.loads((out / "index_run.json").read_text())
    assert [e.get("add") for e in built["edits"]] == [str(more)] and built["split"] == "test"
    assert "diffusion" in built["rerank"] and not built.get("rerank_stale")
    assert xmr("search", run, "--index", out, "--text", "a red circle", "--rerank", "diffusion") == 0
    assert xmr("index", run, "--split", "test", "--out", out, "--drop-edits", "--cache-dir", cache) == 0
    assert len(Searcher.from_run(run, out).indexes["images"]) == len(_split_items(run, "test"))


def test_add_skip_bad_lists_the_skipped_items(halves: tuple[Path, Path, Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``xmr index add --skip-bad`` lists what it left out in ``skipped.jsonl`` after the build's own, and counts it
    in ``n_skipped`` (issue 25, 2.5); the previous folder's list (a hard link) is not touched."""
    run, cache, a, b = halves
    out = tmp_path / "idx"
    first, second = read_manifest(a), read_manifest(b)
    bad1 = replace(first[0], id="bad/1", image=str(tmp_path / "gone-1.png"))
    bad2 = replace(second[0], id="bad/2", image=str(tmp_path / "gone-2.png"))
    write_manifest([*first, bad1], a)
    write_manifest([*second, bad2], b)
    assert xmr("index", run, "--manifest", a, "--out", out, "--cache-dir", cache, "--skip-bad") == 0
    old = out / "skipped.jsonl"
    old_bytes = old.read_bytes()
    capsys.readouterr()
    assert xmr("index", "add", run, b, "--index", out, "--cache-dir", cache, "--skip-bad") == 0
    said = capsys.readouterr().out
    assert "1 unreadable image(s) left out" in said and "skipped.jsonl" in said
    rows = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["bad/1", "bad/2"] and "not found" in rows[1]["reason"]
    built = json.loads((out / "index_run.json").read_text())
    assert built["n_skipped"] == 2 and built["n_images"] == len(first) + len(second)
    assert built["edits"][-1]["skipped"] == 1
    assert old_bytes.count(b"\n") == 1  # what the build listed, before the add


def test_remove_checks_the_run_it_is_given(halves: tuple[Path, Path, Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``xmr index remove RUN`` refuses a run that does not exist or whose model did not build the index
    (issue 25, 2.6), changing nothing."""
    run, cache, a, _ = halves
    out = tmp_path / "idx"
    assert xmr("index", run, "--manifest", a, "--out", out, "--cache-dir", cache) == 0
    other = tmp_path / "other"
    manifest = json.loads((run / "run.json").read_text())["manifest"]
    assert xmr("train", manifest, "--out", other, "--cache-dir", cache, *TRAIN, "--seed", "7", "--epochs", "1") == 0
    before, first = tree(out), read_manifest(a)[0].id
    assert "not an xmr run folder" in cli_error(["index", "remove", tmp_path / "no-run", first, "--index", out],
                                                capsys)
    said = cli_error(["index", "remove", other, first, "--index", out], capsys)
    assert "was built with model" in said and str(other) in said
    assert tree(out) == before
    assert xmr("index", "remove", run, first, "--index", out) == 0
