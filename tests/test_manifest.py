"""The generic manifest: JSONL and CSV, relative paths, validation, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmr.data.manifest import Item, read_manifest, select_split, write_manifest
from xmr.errors import XmrError


def _items(root: Path) -> list[Item]:
    return [Item(id="a", image=str(root / "img" / "a.png"), texts=("a red circle", "red"), label="circle",
                 group="g1", style="s0", split="train"),
            Item(id="b", image=str(root / "img" / "b.png"), texts=("a blue square",), split="test")]


@pytest.mark.parametrize("name", ["m.jsonl", "m.csv"])
def test_round_trip_with_relative_paths(tmp_path: Path, name: str) -> None:
    items = _items(tmp_path)
    path = write_manifest(items, tmp_path / name)
    text = path.read_text()
    assert str(tmp_path) not in text and "img/a.png" in text  # stored relative to the manifest
    assert read_manifest(path) == items


def test_csv_written_by_hand(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("id,image,texts,label\nx,pics/x.jpg,one|two,cat\ny,/abs/y.jpg,,\n")
    a, b = read_manifest(tmp_path / "m.csv")
    assert a.texts == ("one", "two") and a.image == str(tmp_path / "pics" / "x.jpg") and a.label == "cat"
    assert b.texts == () and b.image == "/abs/y.jpg" and b.label is None


@pytest.mark.parametrize("line,needle", [
    ('{"id": "b", "texts": ["y"]}', "m.jsonl:2 (id 'b'): no image"),
    ('{"id": "b", "image": "b.png", "texts": ["ok", " "]}', "m.jsonl:2 (id 'b'): empty text"),
    ('{"id": "b", "image": "b.png", "texts": 5}', "m.jsonl:2 (id 'b'): 'texts' must be a list"),
    ('[1, 2]', "m.jsonl:2: each line must be a JSON object"),
    ('{"image": "b.png"}', "m.jsonl:2: no 'id'"),
    ('{"id": "a", "image": "b.png"}', "duplicate id 'a'"),
    ('{"id": "b", "image": ', "m.jsonl:2: not valid JSON"),
])
def test_bad_rows_name_the_line(tmp_path: Path, line: str, needle: str) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "image": "a.png", "texts": ["x"]}\n' + line + "\n")
    with pytest.raises(XmrError) as e:
        read_manifest(m)
    assert needle in str(e.value) and "\n" not in str(e.value)
    kept = read_manifest(m, skip_bad=True)  # skipping keeps the good row
    assert [it.id for it in kept] == ["a"]


def test_jsonl_bare_string_is_one_text(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"id": "a", "image": "a.png", "texts": "a | b"}\n')
    assert read_manifest(tmp_path / "m.jsonl")[0].texts == ("a | b",)


def test_missing_and_empty_manifest(tmp_path: Path) -> None:
    with pytest.raises(XmrError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(XmrError, match="no usable rows"):
        read_manifest(tmp_path / "e.jsonl")


def test_select_split(tmp_path: Path) -> None:
    items = _items(tmp_path)
    assert [it.id for it in select_split(items, "test")] == ["b"]
    assert select_split(items, None) == items
    with pytest.raises(XmrError, match="splits present: test, train"):
        select_split(items, "val")
