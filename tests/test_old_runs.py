"""Run folders made by the code before issue 26's redesign load, evaluate, index and search as they did.

``tests/data/old_runs/`` holds tiny runs of every kind the tests make (InfoNCE, VSE++ after VSE0, the
instance loss's two stages, A3VSE sparse with region attention, and with pseudo-texts + the adversarial
discriminators, GXN's two branches alone and with both generative paths, cross-style, order similarity,
TextCNN and bi-GRU, EMA, augmented views, extra training pairs, a Karpathy file, composed TIRG in the
pretrained and in a joint space), six indexes (plain, with diffusion re-ranking structures, of an image
folder, HNSW, IVF-PQ + refine built from feature shards, one edited by ``index remove`` + ``index add``)
and ``expected.json``: what commit 16399d7 printed for each (``make.py`` beside them made all of it).
Each test copies the folders, writes the copy's root where the fixture says ``@ROOT@`` and runs today's
``xmr`` on them: metrics within 1e-6, the same hits in the same order (tied scores in any order), the
same captions and imagined pixels; a finished run's own ``train`` command loads it, changing nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from xmr.cli import main

FIXTURES = Path(__file__).parent / "data" / "old_runs"
# the large set make.py --big writes outside the repository (fine-tuned tails, the composed LSTM, GXN and
# the word-level models at the CLI's sizes: megabytes of weights), tested when this names its folder
BIG = os.environ.get("XMR_OLD_RUNS_BIG")
SETS = {"small": FIXTURES, **({"big": Path(BIG)} if BIG else {})}
TOKEN = "@ROOT@"
TOL = 1e-6
EXPECTED_TEXT = {which: (folder / "expected.json").read_text() for which, folder in SETS.items()}
KINDS = {which: {name: rec["data"] for name, rec in json.loads(text).items()} for which, text in EXPECTED_TEXT.items()}
RUNS = [(which, name) for which, names in KINDS.items() for name in sorted(names)]
RETRIEVAL = [(which, name) for which, name in RUNS if KINDS[which][name] != "css"]
COMPOSED = [(which, name) for which, name in RUNS if KINDS[which][name] == "css"]
GENERATIVE = [(which, name) for which, name in RUNS if name.startswith("gxn")]
RESUMABLE = [(which, name) for which, name in RUNS if (SETS[which] / "runs" / name / "last.pt").is_file()]
STORED_INDEXES = [("infonce", "index"), ("infonce", "index_rr"), ("infonce", "index_folder"), ("infonce", "index_hnsw"),
                  ("infonce", "index_shards"), ("vsepp", "index")]
Old = Callable[[str], tuple[Path, dict[str, dict[str, Any]]]]


def case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


def relocate(folder: Path, old: str, new: str) -> None:
    """Rewrite ``old`` as ``new`` in every JSON / JSONL file and every ``gallery.sqlite``'s rows under ``folder``."""
    for path in folder.rglob("*"):
        if path.suffix in (".json", ".jsonl") and path.is_file():
            text = path.read_text()
            if old in text:
                path.write_text(text.replace(old, new))
        elif path.name == "gallery.sqlite":
            with contextlib.closing(sqlite3.connect(path)) as db, db:
                db.execute("UPDATE items SET row = replace(row, ?, ?)", (old, new))


def copy_fixture(which: str, root: Path, runs: list[str] | None = None) -> Path:
    """A set's data and ``runs`` (all by default) copied into ``root``, paths pointing there."""
    shutil.copytree(SETS[which] / "data", root / "data")
    for name in KINDS[which] if runs is None else runs:
        shutil.copytree(SETS[which] / "runs" / name, root / "runs" / name)
    relocate(root, TOKEN, str(root))
    return root


def expected_at(which: str, root: Path) -> dict[str, dict[str, Any]]:
    """expected.json of a set with its copy's root in place of ``@ROOT@``."""
    return json.loads(EXPECTED_TEXT[which].replace(TOKEN, str(root)))


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Old:
    """set -> (its copy's root, its expected.json there), each set copied once: tests read the runs, never
    change them."""
    made: dict[str, tuple[Path, dict[str, dict[str, Any]]]] = {}

    def get(which: str) -> tuple[Path, dict[str, dict[str, Any]]]:
        if which not in made:
            root = copy_fixture(which, tmp_path_factory.mktemp(f"old-runs-{which}"))
            made[which] = root, expected_at(which, root)
        return made[which]

    return get


def xmr(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """``xmr -q ARGV`` in this process: its stdout; fails with stderr on a non-zero status."""
    capsys.readouterr()
    rc = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    assert rc == 0, f"xmr {' '.join(map(str, argv))} -> {rc}: {err}"
    return out


def canonical_hits(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hits with each run of tied scores sorted by id and the ranks left out: ties may come in any order."""
    out, i = [], 0
    while i < len(hits):
        j = i + 1
        while j < len(hits) and abs(hits[j]["score"] - hits[i]["score"]) <= TOL:
            j += 1
        out += sorted(({k: v for k, v in h.items() if k != "rank"} for h in hits[i:j]), key=lambda h: str(h["id"]))
        i = j
    return out


def differences(want: object, got: object, where: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: numbers beyond :data:`TOL`, anything else unequal, keys of
    ``want`` missing (keys only ``got`` has are new and allowed)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k, v in want.items():
            if k not in got:
                out.append(f"{where}.{k}: missing")
            elif k == "hits":
                out += differences(canonical_hits(v), canonical_hits(got[k]), f"{where}.hits")
            else:
                out += differences(v, got[k], f"{where}.{k}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        out = [f"{where}: {len(want)} entries expected, {len(got)} given"] if len(want) != len(got) else []
        return out + [d for i, (a, b) in enumerate(zip(want, got)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(want, (int, float)) and isinstance(got, (int, float)) and not isinstance(want, bool):
        return [] if math.isclose(want, got, rel_tol=TOL, abs_tol=TOL) else [f"{where}: {want!r} expected, {got!r}"]
    return [] if want == got else [f"{where}: {want!r} expected, {got!r}"]


def assert_same(want: object, got: object) -> None:
    diffs = differences(want, got)
    assert not diffs, "\n".join(diffs[:20])


def searches(capsys: pytest.CaptureFixture[str], root: Path, run: str, index: Path, data: str,
             *extra: str, texts: bool = True) -> dict[str, object]:
    """What make.py's ``searches`` recorded: the queries file against the images, its image against the texts."""
    queries = root / "data" / ("shapes" if data in ("shapes", "karpathy") else data) / "queries.txt"
    base = ["search", root / "runs" / run, "--index", index, "-k", "5", "--json", *extra]
    out: dict[str, object] = {"images": [json.loads(line) for line in
                                         xmr(capsys, *base, "--queries", queries).splitlines()]}
    if texts:
        image = [line for line in queries.read_text().splitlines() if line.startswith("image:")][0][len("image:"):]
        out["texts"] = [json.loads(xmr(capsys, *base, "--target", "texts", "--image", queries.parent / image))]
    return out


def evaluate(capsys: pytest.CaptureFixture[str], root: Path, run: str, out: Path, *extra: str,
             composed: bool = False) -> dict[str, Any]:
    """``xmr eval`` of a run as make.py ran it: the saved results."""
    if composed:  # a composed eval writes RUN/eval-composed-SPLIT.json and takes no --out
        xmr(capsys, "eval", root / "runs" / run, "--cache-dir", root / "cache", *extra)
        shutil.move(root / "runs" / run / "eval-composed-test.json", out)
    else:
        xmr(capsys, "eval", root / "runs" / run, "--cache-dir", root / "cache", "--out", out, *extra)
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", RUNS, ids=case_id)
def test_an_old_run_evaluates_as_before(case: tuple[str, str], old: Old, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (root, expected), name = old(case[0]), case[1]
    got = evaluate(capsys, root, name, tmp_path / "eval.json", composed=case in COMPOSED)
    assert_same(expected[name]["eval"], got)


@pytest.mark.parametrize("case", RETRIEVAL, ids=case_id)
def test_an_old_run_indexes_and_searches_as_before(case: tuple[str, str], old: Old, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (root, expected), name = old(case[0]), case[1]
    index = tmp_path / "index"
    xmr(capsys, "index", root / "runs" / name, "--split", "test", "--out", index, "--cache-dir", root / "cache")
    assert_same(expected[name]["search"], searches(capsys, root, name, index, expected[name]["data"]))


@pytest.mark.parametrize("run, index", STORED_INDEXES)
def test_an_old_index_searches_as_before(run: str, index: str, old: Old, capsys: pytest.CaptureFixture[str]) -> None:
    """Indexes the old code built (and edited) are searched as they are, not rebuilt."""
    root, expected = old("small")
    extra = ["--rerank", "diffusion"] if index == "index_rr" else []
    got = searches(capsys, root, run, root / "runs" / run / index, "shapes", *extra, texts=index != "index_folder")
    assert_same(expected[run]["stored_index"][index], got)


def test_an_old_run_reranked_on_the_fly_evaluates_as_before(old: Old, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    root, expected = old("small")
    got = evaluate(capsys, root, "infonce", tmp_path / "eval.json", "--rerank", "diffusion", "--rerank-param", "k=5")
    assert_same(expected["infonce"]["eval_rerank"], got)


def pixels_digest(paths: list[Path]) -> dict[str, object]:
    """SHA-1 and mean of the decoded pixels of PNGs (not of the files: the PNG encoder may change);
    ``make.py`` records the old code's with this same function."""
    stack = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return {"shape": list(stack.shape), "sha1": hashlib.sha1(stack.tobytes()).hexdigest(), "mean": float(stack.mean())}


@pytest.mark.parametrize("case", GENERATIVE, ids=case_id)
def test_an_old_gxn_run_captions_imagines_and_scores_captions_as_before(
        case: tuple[str, str], old: Old, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root, expected), name = old(case[0]), case[1]
    run = root / "runs" / name
    for image, by_beam in expected[name]["caption"].items():
        for beam, caption in by_beam.items():
            got = xmr(capsys, "caption", run, "--image", root / image, "--beam", beam).strip()
            assert got == caption, (image, beam)
    for key, digest in expected[name]["imagine"].items():
        text, seed = key.split("|")
        out = tmp_path / f"imagine-{seed}.png"
        xmr(capsys, "imagine", run, "--text", text, "--out", out, "--n", "2", "--seed", seed)
        assert pixels_digest([out.with_name(f"imagine-{seed}-{i}.png") for i in (1, 2)]) == digest, key
    # eval --captions: BLEU / CIDEr of the retrieved and the generated captions (saved beside the run)
    got = evaluate(capsys, root, name, tmp_path / "eval.json", "--captions")
    got.pop("metrics", None)
    assert_same(expected[name]["eval_captions"], got)
    assert_same(expected[name]["captions_json"], json.loads((run / "captions-test.json").read_text()))
    (run / "captions-test.json").unlink()


@pytest.mark.parametrize("case", COMPOSED, ids=case_id)
def test_an_old_composed_run_searches_as_before(case: tuple[str, str], old: Old,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (root, expected), name = old(case[0]), case[1]
    for q in expected[name]["composed_search"]:
        got = xmr(capsys, "search", root / "runs" / name, "--image", root / q["image"], "--text", q["text"], "-k", "5")
        assert got.splitlines() == q["lines"], q


@pytest.mark.parametrize("case", RESUMABLE, ids=case_id)
def test_a_finished_old_run_is_loaded_not_trained_again(case: tuple[str, str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The old run's training state (last.pt) says it is done: the same command loads it and changes nothing."""
    which, name = case
    root = copy_fixture(which, tmp_path / "root", [name])
    run, expected = root / "runs" / name, expected_at(which, root)[name]
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.json"}
    monkeypatch.chdir(root)
    xmr(capsys, *expected["train_argv"])
    changed = [str(k) for k, v in before.items() if not (run / k).is_file() or (run / k).read_bytes() != v]
    assert not changed, changed  # the weights, the history and the training state as they were
    got = evaluate(capsys, root, name, tmp_path / "eval.json", composed=KINDS[which][name] == "css")
    assert_same(expected["eval"], got)
