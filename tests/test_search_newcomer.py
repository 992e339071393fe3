"""A newcomer's `xmr search` (issue 25, section 5): image queries decoded and encoded one bounded
batch at a time, an image path that does not exist is an error on its line, a folder without
captions is told what to do, query texts through the declared stand-in with true load times, and
bare images printed without ``None``."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from xmr.cli import main
from xmr.encoders import ENCODERS
from xmr.encoders.toy import ToyTextEncoder
from xmr.search import Query, Searcher
from xmr.search.queries import parse_query_line

from hostile import TOY, cli_error, cli_ok

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def indexed(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run, index of the shapes test split, images folder)."""
    run, cache = toy_run
    idx = tmp_path_factory.mktemp("newcomer") / "idx"
    assert main(["-q", "index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache)]) == 0
    return run, idx, run.parent / "data" / "img"


@pytest.fixture(scope="module")
def bare(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run, index of a folder of bare images -- no captions --, that folder), built as the README route says."""
    run, cache = toy_run
    root = tmp_path_factory.mktemp("bare")
    folder = root / "drawings"
    folder.mkdir()
    for p in sorted((run.parent / "data" / "img").glob("*-0.png"))[:8]:
        shutil.copy(p, folder / p.name)
    assert main(["-q", "index", str(run), "--images", str(folder), "--out", str(root / "idx"), "--cache-dir",
                 str(cache)]) == 0
    return run, root / "idx", folder


def test_image_queries_are_decoded_and_encoded_one_bounded_batch_at_a_time(
        indexed: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    run, idx, img = indexed
    s = Searcher.from_run(run, idx)
    enc = s.image_encoder
    decoded, most, batches = [0], [0], []  # images decoded and not yet encoded; the most at once; batch sizes
    real_load, real_encode = enc.load, enc.encode_batch

    def load(path: object) -> object:
        decoded[0] += 1
        most[0] = max(most[0], decoded[0])
        return real_load(path)  # type: ignore[arg-type]  # a query path

    def encode(inputs: list[object]) -> object:
        batches.append(len(inputs))
        decoded[0] -= len(inputs)
        return real_encode(inputs)

    monkeypatch.setattr(enc, "load", load)
    monkeypatch.setattr(enc, "encode_batch", encode)
    images = sorted(img.glob("*.png"))
    n = 3 * enc.default_batch_size + 5  # memory must not grow with this number
    queries = [Query("image", str(images[i % len(images)]), i + 1) for i in range(n)]
    results = s.search_batch(queries, 3)
    assert most[0] <= enc.default_batch_size and max(batches) <= enc.default_batch_size and sum(batches) == n
    assert [r.query for r in results] == queries and all(r.error is None for r in results)
    for r in results[:3]:  # a batch answers as one query alone does
        assert [h.id for h in r.hits] == [h.id for h in s.search_image(r.query.value, 3)]
    # streamed (the CLI's path): the same bound
    decoded[0], most[0] = 0, 0
    first = next(iter(s.iter_search_batch(queries, 3)))
    assert first.query == queries[0] and most[0] <= enc.default_batch_size


def test_a_line_that_looks_like_a_missing_image_path_is_an_error_naming_where_it_was_looked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "q" / "sub").mkdir(parents=True)
    (tmp_path / "q" / "sub" / "cat.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "q"
    q = parse_query_line("holidays/rex.jpg", base, 2)
    assert q is not None and q.kind == "image" and q.error is not None
    assert str(base / "holidays" / "rex.jpg") in q.error and str(tmp_path / "holidays" / "rex.jpg") in q.error
    assert "text: holidays/rex.jpg" in q.error  # how to mean it as a text
    for line in ("dog.png", "scans/0042", "image: nowhere.jpg"):
        q = parse_query_line(line, base, 3)
        assert q is not None and q.kind == "image" and q.error is not None and "looked for" in q.error, line
    assert parse_query_line("sub/cat.png", base, 4) == Query("image", str(base / "sub" / "cat.png"), 4)
    for text in ("a cat and/or a dog", "notes.txt", "text: holidays/rex.jpg"):
        q = parse_query_line(text, base, 5)
        assert q is not None and q.kind == "text" and q.error is None, text


def test_batch_search_reports_the_missing_image_on_its_line_and_answers_the_others(
        indexed: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, idx, _ = indexed
    qfile = tmp_path / "queries.txt"
    qfile.write_text("a purple circle\nholidays/rex.jpg\n")  # the README's example, relative to another folder
    capsys.readouterr()
    assert main(["search", str(run), "--index", str(idx), "--queries", str(qfile), "--json", "-k", "3"]) == 2
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows[0]["hits"]) == 3 and rows[1]["kind"] == "image" and "hits" not in rows[1]
    assert str(tmp_path / "holidays" / "rex.jpg") in rows[1]["error"]
    err = [line for line in captured.err.splitlines() if line.startswith("xmr: error:")]
    assert len(err) == 1 and "1 of 2 queries" in err[0] and "line 2: no such image file" in err[0]


def test_a_folder_without_captions_is_told_how_to_search_it(toy_run: tuple[Path, Path], bare: tuple[Path, Path, Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, idx, folder = bare
    _, cache = toy_run
    out = cli_ok(["data", "manifest", folder, "--out", tmp_path / "d.jsonl", "--split", "60/20/20"], capsys)
    assert "no texts at all" in out and f"xmr index RUN --images {folder}" in out
    err = cli_error(["train", tmp_path / "d.jsonl", "--out", tmp_path / "r", *TOY, "--cache-dir", cache], capsys)
    assert "none of the 8 images" in err and "Your own folder of images" in err
    assert f"with no training and no captions: `xmr index --images {folder}` (a pretrained pair), then " \
           f"`xmr search {folder / '.xmr'}`" in err
    assert f"`xmr index RUN --images {folder} --out NEW_INDEX`" in err
    assert "### Your own folder of images" in README.read_text()  # where the hint points
    # the route it names works: the folder indexed with an existing run, then searched
    out = cli_ok(["search", run, "--index", idx, "--text", "a red circle", "-k", "3"], capsys)
    assert len([line for line in out.splitlines() if line.strip()]) == 3


def test_cli_text_queries_go_through_the_declared_stand_in_and_its_load_is_logged(
        indexed: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    run, idx, _ = indexed
    events: list[str] = []

    class Faster(ToyTextEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.encoder_id = "toy-text/faster"

        def encode_batch(self, inputs: object) -> object:  # type: ignore[override]  # records, then encodes
            events.append("encode")
            return super().encode_batch(inputs)  # type: ignore[arg-type]

    class Events(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append(record.getMessage())

    monkeypatch.setitem(ENCODERS._items, "toy-text-faster", Faster)  # registered for this test only
    monkeypatch.setattr(ToyTextEncoder, "query_stand_in", "toy-text-faster")
    handler = Events()
    logging.getLogger("xmr.tasks.retrieval").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="xmr.tasks.retrieval"):
            fast = cli_ok(["search", run, "--index", idx, "--text", "a red circle", "-k", "4"], capsys)
            loaded = next(i for i, e in enumerate(events) if e.startswith("loaded the run"))
            assert "the text encoder (toy-text/faster) in" in events[loaded]
            assert "encode" in events[:loaded]  # loaded before the line says so, not during the first query
            events.clear()
            exact = cli_ok(["search", run, "--index", idx, "--text", "a red circle", "-k", "4", "--exact-text"],
                           capsys)
            assert "encode" not in events and any("the text encoder (toy-text-" in e for e in events)
    finally:
        logging.getLogger("xmr.tasks.retrieval").removeHandler(handler)
    assert fast == exact and len(fast.strip().splitlines()) == 4  # the same features: the same hits


def test_bare_images_print_no_none_and_a_texts_search_says_there_are_none(
        bare: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, idx, folder = bare
    out = cli_ok(["search", run, "--index", idx, "--text", "a red circle", "-k", "5"], capsys)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 5 and "None" not in out
    assert all(re.search(r"\(no text\)  \S+\.png  /\S+\.png$", line) for line in lines), lines  # id, then image
    for args in (["--text", "a red circle"], ["--image", folder / "red-circle-0.png"]):
        err = cli_error(["search", run, "--index", idx, *args, "--target", "texts"], capsys)
        assert "target texts: this index holds no texts" in err and f"xmr index {run} --manifest" in err
    qfile = tmp_path / "q.txt"
    qfile.write_text("a red circle\n")
    err = cli_error(["search", run, "--index", idx, "--queries", qfile, "--target", "texts"], capsys)
    assert "this index holds no texts" in err
