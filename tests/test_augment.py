"""Augmented training views (xmr.encoders.augment): each kind, determinism, caching, training with views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmr.bench.shapes import make_shapes_dataset
from xmr.cli import main
from xmr.encoders import create_image_encoder
from xmr.encoders.augment import AugmentConfig, AugmentedView, augment, line_art, view_rng
from xmr.encoders.image_io import load_rgb, resize_center_crop
from xmr.errors import XmrError
from xmr.training.data import PairSet, epoch_views

from hostile import TRAIN

KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def drawing(tmp_path: Path) -> Path:
    """A red disc with a black outline and a blue bar on white, like a colour emoji."""
    im = Image.new("RGB", (64, 64), "white")
    from PIL import ImageDraw

    d = ImageDraw.Draw(im)
    d.ellipse((8, 8, 48, 48), fill=(220, 30, 30), outline=(0, 0, 0), width=3)
    d.rectangle((40, 20, 60, 30), fill=(30, 60, 220))
    path = tmp_path / "drawing.png"
    im.save(path)
    return path


def _views(path: Path, cfg: AugmentConfig, n: int = 12, size: int = 32) -> list[np.ndarray]:
    im = load_rgb(path)
    return [augment(im, size, cfg, view_rng(cfg, v, KEY)) for v in range(1, n + 1)]


def test_each_kind_alone(drawing: Path) -> None:
    plain = np.asarray(resize_center_crop(load_rgb(drawing), 32))
    crops = _views(drawing, AugmentConfig(views=1, kinds=("crop",)))
    assert all(v.shape == (32, 32, 3) for v in crops) and any(not np.array_equal(v, plain) for v in crops)
    greys = _views(drawing, AugmentConfig(views=1, kinds=("grey",), p_grey=1.0))
    assert all((v[..., 0] == v[..., 1]).all() and (v[..., 1] == v[..., 2]).all() for v in greys)
    lines = _views(drawing, AugmentConfig(views=1, kinds=("lineart",), p_lineart=1.0))
    assert all(set(np.unique(v)) <= {0, 255} for v in lines)
    assert 0.02 < (lines[0] == 0).mean() < 0.5  # outlines, not a filled silhouette nor nothing
    jittered = _views(drawing, AugmentConfig(views=1, kinds=("jitter",)))
    page = np.all(plain == 255, axis=2)
    assert all((v[page] == 255).all() for v in jittered)  # the white page stays white
    assert any(not np.array_equal(v[~page], plain[~page]) for v in jittered)  # the drawing changes
    flips = _views(drawing, AugmentConfig(views=1, kinds=("hflip",)))
    assert {np.array_equal(v, plain[:, ::-1]) for v in flips} == {True, False}
    assert all(np.array_equal(v, plain) or np.array_equal(v, plain[:, ::-1]) for v in flips)
    assert not any(np.array_equal(v, plain[:, ::-1]) for v in _views(drawing, AugmentConfig(views=1)))  # opt-in


def test_line_art_keeps_dark_outlines_and_colour_borders() -> None:
    a = np.full((20, 20, 3), 255, np.uint8)
    a[5:15, 5:15] = (200, 40, 40)  # a red square, no outline
    a[:, 18] = 0  # a black line
    out = line_art(Image.fromarray(a))
    assert (out[:, 18] == 0).all() and (out[10, 10] == 255).all()  # the line stays, the inside is white
    assert (out[10, 4:6] == 0).any() and (out[2, 2] == 255).all()  # the square's border is drawn, the page not


def test_views_are_fixed_by_content_and_view_and_cached_apart(drawing: Path, tmp_path: Path) -> None:
    toy = create_image_encoder("toy-image")
    cfg = AugmentConfig(views=3)
    v1, v2 = AugmentedView(toy, cfg, 1), AugmentedView(toy, cfg, 2)
    copy = tmp_path / "renamed.png"
    copy.write_bytes(drawing.read_bytes())
    np.testing.assert_array_equal(v1.load(drawing), v1.load(copy))  # same bytes, same view
    assert not np.array_equal(v1.load(drawing), v2.load(drawing))
    assert v1.encoder_id != v2.encoder_id and v1.encoder_id.startswith(toy.encoder_id + "+aug-")
    assert AugmentConfig(views=1).settings_id == AugmentConfig(views=5).settings_id
    assert AugmentConfig(views=1).settings_id != AugmentConfig(views=1, kinds=("crop",)).settings_id
    with pytest.raises(XmrError, match="cannot be augmented"):
        AugmentedView(create_image_encoder("toy-image-regions"), cfg, 1)


@pytest.mark.parametrize("kwargs,needle", [({"kinds": ("blur",)}, "unknown augmentation 'blur'"),
                                           ({"kinds": ()}, "must not be empty"), ({"views": -1}, "views"),
                                           ({"p_grey": 2.0}, "p_grey"), ({"crop_side": 100}, "crop_side")])
def test_bad_settings_are_one_line(kwargs: dict, needle: str) -> None:
    with pytest.raises(XmrError, match=needle):
        AugmentConfig(**kwargs)


def test_each_epoch_draws_one_view_per_image() -> None:
    feats = np.arange(12, dtype=np.float32).reshape(6, 2)
    views = np.stack([feats, feats + 100, feats + 200])
    ps = PairSet(feats, np.zeros((6, 2), np.float32), np.array([[i, i] for i in range(6)]), np.arange(6),
                 image_views=views)
    e0, e1 = ps.epoch_image_feats(0, 0), ps.epoch_image_feats(0, 1)
    pick0 = epoch_views(3, 6, 0, 0)
    np.testing.assert_array_equal(e0, views[pick0, np.arange(6)])
    assert not np.array_equal(e0, e1)
    counts = np.bincount(np.concatenate([epoch_views(3, 6, 0, e) for e in range(300)]), minlength=3)
    assert counts.min() > 0.28 * counts.sum()
    np.testing.assert_array_equal(PairSet(feats, ps.text_feats, ps.pairs, ps.image_groups).epoch_image_feats(0, 3),
                                  feats)
    with pytest.raises(XmrError, match="image_views"):
        PairSet(feats, ps.text_feats, ps.pairs, ps.image_groups, image_views=views[:, :3])


def test_training_with_views_caches_them_and_resumes(tmp_path: Path) -> None:
    manifest = make_shapes_dataset(tmp_path / "data", copies=2)
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ["-q", "train", str(manifest), "--out", str(run), "--cache-dir", str(cache), *TRAIN,
            "--augment-views", "2", "--augment", "crop,lineart"]
    assert main(args) == 0
    saved = json.loads((run / "run.json").read_text())["augment"]
    assert saved["views"] == 2 and saved["kinds"] == ["crop", "lineart"]
    # "+" is kept as "_" in folder names
    folders = sorted(p.name for p in (cache / "features").iterdir() if "_aug-" in p.name)
    assert len(folders) == 2 and folders[0].endswith("-v1") and folders[1].endswith("-v2")
    mtimes = {p: p.stat().st_mtime_ns for f in folders for p in (cache / "features" / f).glob("shard-*")}
    assert main(args) == 0  # finished: loaded; the views are read from the cache, not encoded again
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert main(["-q", "train", str(manifest), "--out", str(tmp_path / "r2"), *TRAIN, "--augment", "grey"]) == 2
