"""``xmr index --factory auto / --memory-budget / --refine`` and the cross-modal recall check (#76),
on the toy run, against the exact (flat) index of the same gallery."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from xmr.cli import main
from xmr.search import Searcher


def index(run: Path, cache: Path, out: Path, *extra: str) -> int:
    return main(["-q", "index", str(run), "--out", str(out), "--cache-dir", str(cache), *extra])


def built(out: Path) -> dict[str, object]:
    return json.loads((out / "index_run.json").read_text())


def test_a_budget_chooses_the_index_and_says_which(toy_run: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run, cache = toy_run
    assert index(run, cache, tmp_path / "auto", "--memory-budget", "1GB") == 0
    out = capsys.readouterr().out
    assert "images: Flat (64 vectors fit exactly" in out and "budget 1.00 GB" in out
    chosen = built(tmp_path / "auto")["chosen"]
    assert chosen["images"]["auto"] and chosen["images"]["factory"] == "Flat"  # type: ignore[index]


def test_refine_makes_a_compressed_index_answer_as_the_exact_one(toy_run: tuple[Path, Path], tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    run, cache = toy_run
    assert index(run, cache, tmp_path / "flat") == 0
    with caplog.at_level(logging.WARNING):
        assert index(run, cache, tmp_path / "pq", "--factory", "IVF4,PQ4x4np") == 0
    plain = built(tmp_path / "pq")["checks"]
    assert not plain["ok"] and plain["text_to_image_recall@10"] < 0.9  # type: ignore[index,operator]
    assert "rebuild with --refine 100" in caplog.text  # the warning names the better setting
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert index(run, cache, tmp_path / "refined", "--factory", "IVF4,PQ4x4np", "--refine", "64") == 0
    assert "recall" not in caplog.text
    refined = built(tmp_path / "refined")["checks"]
    # every candidate re-scored: exact up to the float16 store's rounding among tied duplicates (copies=2)
    assert refined["ok"] and refined["text_to_image_recall@10"] >= 0.99  # type: ignore[index,operator]
    assert (tmp_path / "refined" / "images" / "vectors.f16").is_file()
    flat, pq = Searcher.from_run(run, tmp_path / "flat"), Searcher.from_run(run, tmp_path / "refined")
    for text in ("a red circle", "a blue square", "a green triangle"):
        want, got = flat.search_text(text, 10), pq.search_text(text, 10)
        assert [round(h.score, 2) for h in got] == [round(h.score, 2) for h in want]  # float16 store
        exact = {h.id: h.score for h in flat.search_text(text, 64)}
        for h in got:  # each hit's score is its exact score; ties may trade places
            assert abs(exact[h.id] - h.score) < 2e-3


@pytest.mark.parametrize(("extra", "message"), [
    (["--memory-budget", "1KB"], "memory budget 1.00 KB is too small for any index of 64 vectors"),
    (["--memory-budget", "lots"], "memory budget 'lots': give a size such as 2GB"),
    (["--memory-budget", "2GB", "--factory", "HNSW32"],
     "--memory-budget chooses the index: give it with --factory auto"),
    (["--factory", "HNSW32", "--refine", "10"], "refine re-scores the shortlist of a compressed IVF index"),
])
def test_bad_budget_options_are_one_line(toy_run: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    run, cache = toy_run
    assert index(run, cache, tmp_path / "x", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xmr: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()
