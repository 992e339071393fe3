"""A folder of images without a manifest: scanning, sidecar texts, splits, `xmr data manifest`, `xmr index --images`."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from xmr.cli import main
from xmr.data import read_manifest
from xmr.data.folder import parse_split_fractions, scan_folder, split_of
from xmr.errors import XmrError
from xmr.search import Searcher

TOY = ["--image-encoder", "toy-image", "--text-encoder", "toy-text"]


def _photos(root: Path) -> Path:
    """A user's folder: images at two depths, sidecars, clutter, hidden files and broken images."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".thumbs").mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    for i, (name, rgb) in enumerate(colours.items()):
        Image.new("RGB", (24, 24), rgb).save(root / f"{name}.png")
        Image.new("RGB", (20, 30), rgb).save(root / "sub" / f"{name}-photo.jpg")
    Image.new("RGB", (16, 16), (0, 0, 0)).save(root / "sub" / "deeper" / "black.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(root / ".thumbs" / "red.png")  # hidden folder: left out
    Image.new("RGB", (8, 8), (9, 9, 9)).save(root / ".hidden.png")
    (root / "red.txt").write_text("a red square\n\nsomething red\n")
    (root / "blue.json").write_text(json.dumps({"texts": ["a blue square"], "label": "square", "split": "test"}))
    (root / "sub" / "green-photo.json").write_text(json.dumps(["green photo", "a green thing"]))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.md").write_text("my pictures")
    (root / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return root


def test_a_folder_scan_lists_images_by_relative_path_with_sidecar_texts(tmp_path: Path) -> None:
    root = _photos(tmp_path / "photos")
    flat = scan_folder(root)
    assert [it.id for it in flat.items] == ["blue.png", "broken.png", "empty.jpg", "green.png", "red.png"]
    assert flat.n_ignored == 2  # notes.md, drawing.svg; the sidecars are not counted as clutter
    by_id = {it.id: it for it in scan_folder(root, recursive=True).items}
    assert sorted(by_id) == ["blue.png", "broken.png", "empty.jpg", "green.png", "red.png", "sub/blue-photo.jpg",
                             "sub/deeper/black.png", "sub/green-photo.jpg", "sub/red-photo.jpg"]
    assert by_id["red.png"].texts == ("a red square", "something red")
    assert by_id["blue.png"].texts == ("a blue square",) and by_id["blue.png"].label == "square"
    assert by_id["sub/green-photo.jpg"].texts == ("green photo", "a green thing")
    assert by_id["green.png"].texts == () and by_id["green.png"].image == str((root / "green.png").resolve())


def test_captions_csv_joins_sidecars_and_unknown_files_are_counted(tmp_path: Path) -> None:
    root = _photos(tmp_path / "photos")
    csv = tmp_path / "captions.csv"
    csv.write_text("File,Caption\nred.png,a crimson block\ngreen.png,a green square\ngreen.png,lime\n"
                   "missing.png,nothing\nsub/red-photo.jpg,a red photo\n")
    scan = scan_folder(root, recursive=True, captions=csv)
    by_id = {it.id: it for it in scan.items}
    assert by_id["red.png"].texts == ("a red square", "something red", "a crimson block")
    assert by_id["green.png"].texts == ("a green square", "lime")
    assert by_id["sub/red-photo.jpg"].texts == ("a red photo",)
    assert scan.n_captions_unmatched == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("name,words\nred.png,x\n")
    with pytest.raises(XmrError, match="bad.csv: the header must name a file column"):
        scan_folder(root, captions=bad)


def test_bad_folders_and_sidecars_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(XmrError, match="folder not found"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(XmrError, match="not a folder"):
        scan_folder(tmp_path / "file.txt")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "sub" / "a.png")
    with pytest.raises(XmrError, match="no image files.*recursive=True"):  # the library wording names the argument
        scan_folder(tmp_path / "empty")
    assert len(scan_folder(tmp_path / "empty", recursive=True).items) == 1
    (tmp_path / "empty" / "sub" / "a.json").write_text("{not json")  # a bad sidecar: its image listed, left out
    scan = scan_folder(tmp_path / "empty", recursive=True)
    assert scan.items == [] and [(s["id"], s["what"]) for s in scan.skipped] == [("sub/a.png", "sidecar")]
    assert "a.json: not valid JSON" in scan.skipped[0]["reason"]


def test_splits_come_from_a_seeded_hash_and_adding_images_moves_none() -> None:
    ids = [f"img{i:05d}.png" for i in range(3000)]
    fractions = parse_split_fractions("80/10/10")
    assert fractions == pytest.approx((0.8, 0.1, 0.1)) and parse_split_fractions("0.8,0.1,0.1") == fractions
    counts = Counter(split_of(i, fractions) for i in ids)
    assert abs(counts["train"] / 3000 - 0.8) < 0.03 and abs(counts["test"] / 3000 - 0.1) < 0.02
    before = {i: split_of(i, fractions) for i in ids[:100]}
    assert before == {i: split_of(i, fractions) for i in ids[:100]}  # per id: no other item matters
    assert before != {i: split_of(i, fractions, seed=1) for i in ids[:100]}
    for bad in ("80/20", "a/b/c", "-1/1/1"):
        with pytest.raises(XmrError, match="split '"):  # the library's wording (the CLI's: --split)
            parse_split_fractions(bad)


def test_data_manifest_writes_the_readable_images_and_lists_the_others(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = _photos(tmp_path / "photos")
    out = tmp_path / "photos.jsonl"
    assert main(["data", "manifest", str(root), "--out", str(out), "--recursive", "--split", "60/20/20"]) == 0
    report = capsys.readouterr().out
    items = read_manifest(out)
    assert len(items) == 7 and {"broken.png", "empty.jpg"}.isdisjoint(it.id for it in items)
    assert {it.split for it in items} <= {"train", "val", "test"}
    assert next(it for it in items if it.id == "blue.png").split == "test"  # the sidecar's own split is kept
    skipped = [json.loads(line) for line in (tmp_path / "photos.skipped.jsonl").read_text().splitlines()]
    assert sorted(s["id"] for s in skipped) == ["broken.png", "empty.jpg"]
    assert "7 images" in report and "2 unreadable image(s) left out" in report
    assert main(["data", "manifest", str(root), "--out", str(out)]) == 2  # never replaced unasked
    assert "--overwrite" in capsys.readouterr().err
    (root / "broken.png").unlink()
    (root / "empty.jpg").unlink()
    assert main(["data", "manifest", str(root), "--out", str(out), "--overwrite"]) == 0
    assert not (tmp_path / "photos.skipped.jsonl").exists()  # nothing left out: no stale list


def test_index_and_encode_a_folder_of_images_with_unreadable_files_mixed_in(
        toy_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, cache = toy_run
    shapes = run.parent / "data" / "img"
    folder = tmp_path / "mine"
    shutil.copytree(shapes, folder / "nested")
    for p in sorted(shapes.glob("purple-*.png"))[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "junk.png").write_text("not an image")
    (folder / "README").write_text("hello")
    n_nested = len(list(shapes.glob("*.png")))
    idx = tmp_path / "idx"
    assert main(["index", str(run), "--images", str(folder), "--out", str(idx), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "3 images" in out and "1 unreadable image(s), caption sidecar(s)" in out  # top level only: no --recursive
    assert main(["index", str(run), "--images", str(folder), "--recursive", "--out", str(idx),
                 "--cache-dir", str(cache)]) == 0
    capsys.readouterr()
    built = json.loads((idx / "index_run.json").read_text())
    assert built["n_images"] == 3 + n_nested and built["n_skipped"] == 1 and built["images"] == str(folder.resolve())
    assert [json.loads(line)["id"] for line in (idx / "skipped.jsonl").read_text().splitlines()] == ["junk.png"]
    s = Searcher.from_run(run, idx)
    assert {it.id for it in s.items} >= {"nested/red-circle-0.png", "purple-circle-0.png"}
    hit = s.search_image(folder / "nested" / "red-circle-0.png", k=1)[0]
    assert hit.id == "nested/red-circle-0.png" and hit.text is None  # bare images: found by themselves
    assert main(["encode", "--images", str(folder), "--recursive", *TOY, "--cache-dir", str(cache)]) == 0
    assert f"encoded {3 + n_nested} images" in capsys.readouterr().out
    assert main(["index", str(run), "--images", str(folder), "--manifest", str(run.parent / "data" / "manifest.jsonl"),
                 "--out", str(idx)]) == 2
    assert main(["index", str(run), "--manifest", str(folder), "--out", str(idx)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "not both" in err[0] and "--images" in err[1]
