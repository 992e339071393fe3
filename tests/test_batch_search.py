"""Batch search (`xmr search --queries FILE`, `--json`), text hits naming their item, and contact sheets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from xmr.cli import main
from xmr.errors import XmrError
from xmr.plots import SheetRow, SheetTile, contact_sheet
from xmr.search import Query, Searcher, read_queries
from xmr.search.queries import parse_query_line


@pytest.fixture(scope="module")
def indexed(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run, index folder, images folder) of the shapes test split."""
    run, cache = toy_run
    idx = tmp_path_factory.mktemp("batch") / "idx"
    assert main(["index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache)]) == 0
    return run, idx, run.parent / "data" / "img"


def test_query_lines_are_texts_unless_they_name_an_image_file(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    (tmp_path / "notes.txt").write_text("x")
    assert parse_query_line("  a red circle ", tmp_path, 1) == Query("text", "a red circle", 1)
    assert parse_query_line("cat.png", tmp_path, 2) == Query("image", str(tmp_path / "cat.png"), 2)
    missing = parse_query_line("dog.png", tmp_path, 3)  # no such file: an error on its line, not a text
    assert missing is not None and missing.kind == "image" and "looked for" in str(missing.error)
    assert parse_query_line("notes.txt", tmp_path, 4) == Query("text", "notes.txt", 4)  # not an image suffix
    assert parse_query_line("text: cat.png", tmp_path, 5) == Query("text", "cat.png", 5)
    assert parse_query_line("IMAGE: missing.jpg", tmp_path, 6).kind == "image"  # forced: fails when searched
    assert parse_query_line("# a comment", tmp_path) is None and parse_query_line("   ", tmp_path) is None
    (tmp_path / "q.txt").write_text("# mine\n\na red circle\ncat.png\n")
    assert [q.kind for q in read_queries(tmp_path / "q.txt")] == ["text", "image"]
    (tmp_path / "none.txt").write_text("# only comments\n")
    with pytest.raises(XmrError, match="no queries"):
        read_queries(tmp_path / "none.txt")


def test_a_batch_gives_each_query_the_hits_it_gets_alone(indexed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run, idx, img = indexed
    s = Searcher.from_run(run, idx)
    texts = ["a purple circle", "an orange square", "a cyan triangle", "a purple cross"]
    images = sorted(img.glob("orange-*.png"))[:3]
    queries = [Query("text", t) for t in texts] + [Query("image", str(p)) for p in images]
    queries.insert(2, Query("image", str(tmp_path / "missing.png")))
    for target in ("images", "texts"):
        results = s.search_batch(queries, k=4, target=target, chunk=2)  # chunks split both kinds
        assert [r.query for r in results] == queries
        assert results[2].error is not None and "missing.png" in results[2].error and results[2].hits == []
        for r in results:
            if r.error is None:
                alone = s.search_text(r.query.value, 4, target=target) if r.query.kind == "text" else \
                    s.search_image(r.query.value, 4, target=target)
                assert [(h.id, round(h.score, 5)) for h in r.hits] == [(h.id, round(h.score, 5)) for h in alone]


def test_text_hits_name_the_item_they_came_from(indexed: tuple[Path, Path, Path]) -> None:
    run, idx, img = indexed
    s = Searcher.from_run(run, idx)
    hits = s.search_image(img / "purple-circle-0.png", k=5, target="texts")
    for h in hits:
        owner = next(it for it in s.items if h.text in it.texts)  # the first item carrying the text
        assert h.item == owner.id and h.image == owner.image and h.id.startswith("text:")


def test_batch_search_cli_json_is_parsed_back(indexed: tuple[Path, Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run, idx, img = indexed
    shutil.copy(img / "cyan-cross-1.png", tmp_path / "query.png")
    qfile = tmp_path / "queries.txt"
    qfile.write_text("# two texts and an image\na purple circle\nan orange square\nquery.png\n")
    capsys.readouterr()
    assert main(["search", str(run), "--index", str(idx), "--queries", str(qfile), "--json", "-k", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r["line"]) for r in rows] == [("text", 2), ("text", 3), ("image", 4)]
    s = Searcher.from_run(run, idx)
    assert [h["id"] for h in rows[0]["hits"]] == [h.id for h in s.search_text("a purple circle", 3)]
    assert all(len(r["hits"]) == 3 and {"rank", "score", "id", "image"} <= set(r["hits"][0]) for r in rows)
    assert main(["search", str(run), "--index", str(idx), "--queries", str(qfile), "--target", "texts",
                 "--json", "-k", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all("item" in h and h["id"].startswith("text:") for r in rows for h in r["hits"])
    # one bad query: the others are answered, the command says which failed and exits 2
    qfile.write_text("a purple circle\nimage: nowhere.png\n")
    assert main(["search", str(run), "--index", str(idx), "--queries", str(qfile), "--json"]) == 2
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert "hits" in rows[0] and "nowhere.png" in rows[1]["error"]
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xmr: error: 1 of 2 queries") and "line 2" in err[0]
    assert main(["search", str(run), "--index", str(idx), "--queries", str(qfile), "--text", "x"]) == 2


def test_search_sheet_has_a_row_per_query_and_a_tile_per_hit(indexed: tuple[Path, Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run, idx, img = indexed
    qfile = tmp_path / "q.txt"
    qfile.write_text(f"a purple circle\n{img / 'orange-square-0.png'}\na cyan cross\n")
    sheet = tmp_path / "out" / "sheet.png"
    assert main(["search", str(run), "--index", str(idx), "--queries", str(qfile), "-k", "4", "--sheet",
                 str(sheet)]) == 0
    from xmr.plots.sheet import DPI, TILE_INCHES

    with Image.open(sheet) as im:
        assert im.format == "PNG"
        assert im.size == (round(TILE_INCHES * 5 * DPI), round((TILE_INCHES + 0.45) * 3 * DPI + 0.4 * DPI))


def test_contact_sheet_counts_tiles_and_survives_unreadable_images(tmp_path: Path) -> None:
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_text("no")
    rows = [SheetRow(text="a red thing", tiles=[SheetTile(str(tmp_path / "a.png"), "red", 0.9, True),
                                                SheetTile(str(tmp_path / "bad.png"), "broken", 0.5)]),
            SheetRow(image=str(tmp_path / "a.png"), tiles=[SheetTile(None, "a text hit", 0.7)] * 3)]
    layout = contact_sheet(rows, tmp_path / "s.png", title="t")
    assert (layout.n_rows, layout.n_cols, layout.n_tiles) == (2, 4, 5)
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == (layout.width_px, layout.height_px)
    with pytest.raises(XmrError, match="at least one query"):
        contact_sheet([], tmp_path / "none.png")


def test_the_demo_draws_its_example_queries_on_a_sheet(indexed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import io

    from xmr.data import read_manifest, select_split
    from xmr.workflows.demo import _example_queries

    run, idx, img = indexed
    test = select_split(read_manifest(run.parent / "data" / "manifest.jsonl"), "test")
    report = io.StringIO()
    _example_queries(Searcher.from_run(run, idx), test, report, sheet=tmp_path / "queries.png")
    text = report.getvalue()
    assert text.count("text query") == 3 and "contact sheet of these queries" in text
    with Image.open(tmp_path / "queries.png") as im:
        from xmr.plots.sheet import DPI, TILE_INCHES

        assert im.size == (round(TILE_INCHES * 6 * DPI), round((TILE_INCHES + 0.45) * 3 * DPI + 0.4 * DPI))
