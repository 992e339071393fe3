"""The scene-captions dataset: five different true captions per 64 x 64 scene, split by scene."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from xmr.data import DATASETS
from xmr.data.manifest import read_manifest
from xmr.data.scene_captions import (
    CELL_PHRASES,
    COLOUR_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    make_scene_captions,
    scene_captions,
)
from xmr.data.scenes import Scene, SceneObject, random_scene
from xmr.errors import XmrError


def _mentions(caption: str, o: SceneObject) -> bool:
    """The caption names this object: some size, colour and shape word for it, followed by its cell's phrase."""
    return any(f"{z} {c} {s} {p}" in caption for z in SIZE_WORDS[o.size]
               for c in COLOUR_WORDS.get(o.colour, (o.colour,)) for s in SHAPE_WORDS[o.shape]
               for p in CELL_PHRASES[o.cell])


def test_every_caption_is_true_to_its_scene_and_the_five_differ() -> None:
    rng = random.Random(0)
    for _ in range(200):
        scene = random_scene(rng, min_objects=1, max_objects=3)
        caps = scene_captions(scene, rng)
        assert len(caps) == 5 and len(set(caps)) == 5
        for cap in caps:
            assert all(_mentions(cap, o) for o in scene.objects), (scene.key(), cap)
    with pytest.raises(XmrError, match="empty scene"):
        scene_captions(Scene(), rng)


def test_a_caption_never_names_an_object_the_scene_lacks() -> None:
    scene = Scene((SceneObject("circle", "red", "small", 0),))
    for cap in scene_captions(scene, random.Random(1), n=6):
        assert not any(w in cap.split() for w in ("square", "block", "triangle", "blue", "large", "big"))


def test_the_dataset_is_deterministic_split_by_scene_and_64_pixels(tmp_path: Path) -> None:
    sizes = {"train": 30, "val": 5, "test": 5}
    a = make_scene_captions(tmp_path / "a", seed=3, sizes=sizes)
    b = make_scene_captions(tmp_path / "b", seed=3, sizes=sizes)
    assert a.read_text() == b.read_text()
    items = read_manifest(a)
    assert [sum(it.split == s for it in items) for s in sizes] == list(sizes.values())
    by_split = {s: {it.group for it in items if it.split == s} for s in sizes}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    assert all(len(it.texts) == 5 for it in items)
    assert Image.open(items[0].image).size == (64, 64)
    assert "scene-captions" in DATASETS.names()
    with pytest.raises(XmrError, match="positive scene count"):
        make_scene_captions(tmp_path / "c", sizes={"train": 0})
