"""read_items: one entry point for manifests and Karpathy files; the CLI trains on either."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmr.cli import main
from xmr.data import read_items, read_manifest
from xmr.data.readers import detect_format
from xmr.errors import XmrError


def _karpathy_from_manifest(manifest: Path, out: Path) -> Path:
    """The shapes fixture rewritten in Karpathy's format (filename + 5 sentences + split)."""
    images = []
    for i, it in enumerate(read_manifest(manifest)):
        sents = [f"{it.texts[0]} number {k} of image {i}" for k in range(5)]  # unique, like COCO
        images.append({"filepath": "img", "filename": Path(it.image).name, "imgid": i, "split": it.split,
                       "sentences": [{"raw": s, "tokens": s.split()} for s in sents]})
    out.write_text(json.dumps({"dataset": "shapes", "images": images}, indent=1))
    return out


def test_detects_both_formats(shapes_manifest: Path, tmp_path: Path) -> None:
    kp = _karpathy_from_manifest(shapes_manifest, tmp_path / "dataset_shapes.json")
    assert detect_format(kp) == "karpathy" and detect_format(shapes_manifest) == "manifest"
    items = read_items(kp, image_root=shapes_manifest.parent)
    assert len(items) == len(read_manifest(shapes_manifest)) and len(items[0].texts) == 5
    assert Path(items[0].image).is_file()
    with pytest.raises(XmrError, match="Karpathy files only"):
        read_items(shapes_manifest, image_root=tmp_path)


def test_cli_trains_and_evaluates_on_a_karpathy_file(shapes_manifest: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    kp = _karpathy_from_manifest(shapes_manifest, tmp_path / "dataset_shapes.json")
    common = ["--cache-dir", str(tmp_path / "c")]
    assert main(["train", str(kp), "--image-root", str(shapes_manifest.parent), "--out", str(tmp_path / "run"),
                 "--image-encoder", "toy-image", "--text-encoder", "toy-text", "--embed-dim", "16",
                 "--epochs", "2", "--batch-size", "16", *common]) == 0
    assert main(["eval", str(tmp_path / "run"), *common]) == 0
    saved = json.loads((tmp_path / "run" / "eval-test-full.json").read_text())
    assert saved["metrics"]["n_texts"] == 5 * saved["metrics"]["n_images"]  # 5 captions per image
