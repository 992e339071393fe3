"""Tests for the Karpathy split reader, on small hand-made files in the real format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from xmr.data import read_karpathy
from xmr.errors import XmrError


def _sent(raw: str) -> dict[str, object]:
    return {"raw": raw, "tokens": raw.lower().strip(" .").split(), "imgid": 0, "sentid": 0}


def _coco() -> dict[str, object]:
    return {
        "dataset": "coco",
        "images": [
            {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "split": "test",
             "imgid": 0, "cocoid": 391895, "sentids": [0, 1],
             "sentences": [_sent("A man riding a bike. "), _sent(" Someone on a bicycle.")]},
            {"filepath": "val2014", "filename": "COCO_val2014_000000522418.jpg",
             "split": "restval", "imgid": 1, "cocoid": 522418, "sentids": [2],
             "sentences": [_sent("A woman cutting a cake.")]},
            {"filepath": "train2014", "filename": "COCO_train2014_000000318556.jpg",
             "split": "train", "imgid": 2, "cocoid": 318556, "sentids": [3],
             "sentences": [_sent("A kitchen with a stove.")]},
            {"filepath": "val2014", "filename": "COCO_val2014_000000184613.jpg", "split": "val",
             "imgid": 3, "cocoid": 184613, "sentids": [4],
             "sentences": [_sent("Two dogs play.")]},
        ],
    }


def _flickr() -> dict[str, object]:
    return {
        "dataset": "flickr30k",
        "images": [
            {"filename": "1000092795.jpg", "split": "train", "imgid": 0, "sentids": [0],
             "sentences": [_sent("Two young guys with shaggy hair.")]},
            {"filename": "10002456.jpg", "split": "test", "imgid": 1, "sentids": [1],
             "sentences": [_sent("Several men in hard hats.")]},
        ],
    }


def _write(tmp_path: Path, data: object, name: str = "dataset.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_coco_fields_paths_and_splits(tmp_path: Path) -> None:
    path = _write(tmp_path, _coco(), "dataset_coco.json")
    items = read_karpathy(path, image_root=tmp_path / "coco")
    assert [it.id for it in items] == ["391895", "522418", "318556", "184613"]
    first = items[0]
    assert first.image == str((tmp_path / "coco" / "val2014" /
                               "COCO_val2014_000000391895.jpg").resolve())
    assert first.texts == ("A man riding a bike.", "Someone on a bicycle.")
    assert [it.split for it in items] == ["test", "train", "train", "val"]  # restval -> train
    assert items[2].image.endswith("train2014/COCO_train2014_000000318556.jpg")


def test_flickr_ids_from_imgid_and_default_root(tmp_path: Path) -> None:
    path = _write(tmp_path, _flickr(), "dataset_flickr30k.json")
    items = read_karpathy(path)
    # imgid 0 is a valid id, not "missing"
    assert [it.id for it in items] == ["0", "1"]
    assert items[0].image == str(tmp_path.resolve() / "1000092795.jpg")
    assert items[1].split == "test"


def test_id_falls_back_to_filename_and_tokens_to_text(tmp_path: Path) -> None:
    data = {"images": [{"filename": "a.jpg", "split": "train",
                        "sentences": [{"tokens": ["a", "red", "car"]}]}]}
    items = read_karpathy(_write(tmp_path, data))
    assert items[0].id == "a.jpg"
    assert items[0].texts == ("a red car",)


@pytest.mark.parametrize("sentences, message", [
    ([], "has no sentences"),
    ([_sent("ok"), {"raw": "   ", "tokens": []}], "has an empty sentence"),
])
def test_bad_image_raises_naming_it(tmp_path: Path, sentences: list[object],
                                    message: str) -> None:
    data = _flickr()
    data["images"][1]["sentences"] = sentences  # type: ignore[index]
    with pytest.raises(XmrError, match=rf"'10002456.jpg' {message}"):
        read_karpathy(_write(tmp_path, data))


def test_skip_bad_logs_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _coco()
    data["images"][0]["sentences"] = []  # type: ignore[index]
    data["images"][3]["sentences"] = [{"raw": ""}]  # type: ignore[index]
    with caplog.at_level(logging.WARNING, logger="xmr.data.karpathy"):
        items = read_karpathy(_write(tmp_path, data), skip_bad=True)
    assert [it.id for it in items] == ["522418", "318556"]
    assert "skipped 2 bad image(s)" in caplog.text
    assert "COCO_val2014_000000391895.jpg" in caplog.text


def test_duplicate_id_raises(tmp_path: Path) -> None:
    data = _flickr()
    data["images"][1]["imgid"] = 0  # type: ignore[index]
    with pytest.raises(XmrError, match="duplicate id '0'"):
        read_karpathy(_write(tmp_path, data))


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"dataset": "coco"}), "no 'images' list"),
    (json.dumps({"images": []}), "no usable images"),
])
def test_bad_file_raises(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(content)
    with pytest.raises(XmrError, match=message):
        read_karpathy(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(XmrError, match="file not found"):
        read_karpathy(tmp_path / "nope.json")


def test_missing_filename_raises(tmp_path: Path) -> None:
    data = {"images": [{"split": "train", "sentences": [_sent("x")]}]}
    with pytest.raises(XmrError, match="image #0 has no 'filename'"):
        read_karpathy(_write(tmp_path, data))
