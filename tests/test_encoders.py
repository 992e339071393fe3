"""Encoders, image preprocessing and the feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmr.encoders import ENCODERS, FeatureCache, create_encoder, encode_images, encode_texts
from xmr.encoders.cache import text_key
from xmr.encoders.image_io import load_rgb, resize_center_crop
from xmr.errors import XmrError


def _png(path: Path, rgba: tuple[int, int, int, int], size: tuple[int, int] = (20, 10)) -> Path:
    Image.new("RGBA", size, rgba).save(path)
    return path


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    im = load_rgb(_png(tmp_path / "clear.png", (0, 0, 0, 0)))
    assert im.mode == "RGB" and im.getpixel((3, 3)) == (255, 255, 255)
    half = load_rgb(_png(tmp_path / "half.png", (0, 0, 0, 128)))
    assert half.getpixel((0, 0))[0] == pytest.approx(127, abs=1)


def test_resize_center_crop_shapes() -> None:
    im = Image.new("RGB", (300, 100))
    assert resize_center_crop(im, 64).size == (64, 64)
    assert resize_center_crop(Image.new("RGB", (10, 40)), 32).size == (32, 32)


@pytest.mark.parametrize("content,match", [(None, "image not found"), (b"not an image", "not an image or corrupt")])
def test_bad_images_raise_one_line_error(tmp_path: Path, content: bytes | None, match: str) -> None:
    p = tmp_path / "x.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(XmrError, match=match) as e:
        load_rgb(p)
    assert "\n" not in str(e.value) and "x.png" in str(e.value)


def test_truncated_image_names_file(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "trunc.png"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(XmrError, match="trunc.png"):
        load_rgb(bad)


def test_registry_lists_builtins_and_rejects_unknown() -> None:
    assert {"efficientnet-lite0", "minilm-l6", "toy-image", "toy-text"} <= set(ENCODERS.names())
    with pytest.raises(XmrError, match="unknown encoder 'clip'"):
        create_encoder("clip")


def test_toy_text_is_deterministic_and_informative() -> None:
    enc = create_encoder("toy-text")
    a = enc.encode_batch(["a red circle", "a red circle", "a blue square"])
    assert a.shape == (3, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a[0], a[1])
    assert a[0] @ a[2] < 0.99


def _distinct(paths: list[str]) -> int:
    return len({Path(p).read_bytes() for p in paths})


def test_cache_reuses_and_resumes(tmp_path: Path, shapes_manifest: Path) -> None:
    paths = sorted(str(p) for p in (shapes_manifest.parent / "img").glob("*.png"))
    enc = create_encoder("toy-image")
    first = encode_images(enc, paths, cache_dir=tmp_path / "c")
    assert first.n_encoded == _distinct(paths) and first.ok.all()  # same bytes, encoded once
    again = encode_images(enc, paths, cache_dir=tmp_path / "c")
    assert again.n_encoded == 0
    np.testing.assert_array_equal(first.feats, again.feats)
    direct = enc.encode_batch([enc.load(p) for p in paths])
    np.testing.assert_allclose(first.feats, direct, rtol=1e-5, atol=1e-6)


def test_interrupted_encode_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shapes_manifest: Path) -> None:
    import xmr.encoders.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CHUNK", 8)
    paths = sorted(str(p) for p in (shapes_manifest.parent / "img").glob("*.png"))
    enc = create_encoder("toy-image")
    real = enc.encode_batch
    calls = {"n": 0}

    def flaky(inputs):  # dies on the third chunk, like a Ctrl-C
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(inputs)

    monkeypatch.setattr(enc, "encode_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        encode_images(enc, paths, cache_dir=tmp_path / "c")
    monkeypatch.setattr(enc, "encode_batch", real)
    res = encode_images(enc, paths, cache_dir=tmp_path / "c")
    assert res.n_encoded == _distinct(paths) - 16  # two chunks of 8 survived the interruption
    assert res.ok.all()


def test_bad_image_skipped_with_count_or_raised(tmp_path: Path, shapes_manifest: Path) -> None:
    paths = sorted(str(p) for p in (shapes_manifest.parent / "img").glob("*.png"))[:4]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    enc = create_encoder("toy-image")
    res = encode_images(enc, paths + [str(broken), str(tmp_path / "missing.png")], cache_dir=tmp_path / "c",
                        skip_bad=True)
    assert [type(e).__name__ if e else None for e in res.errors] == [None] * 4 + ["UnreadableImage"] * 2
    assert res.ok.tolist() == [True] * 4 + [False, False]
    assert res.n_bad == 2 and np.isnan(res.feats[4:]).all() and np.isfinite(res.feats[:4]).all()
    with pytest.raises(XmrError, match="broken.png"):
        encode_images(enc, [str(broken)], cache_dir=tmp_path / "c")  # refusing is the default


def test_empty_text_rejected(tmp_path: Path) -> None:
    with pytest.raises(XmrError, match="text #1 is empty"):
        encode_texts(create_encoder("toy-text"), ["ok", "  "], cache_dir=tmp_path)


def test_cache_refuses_other_encoder_in_same_folder(tmp_path: Path) -> None:
    FeatureCache(tmp_path, {"encoder_id": "e", "modality": "text", "dim": 4})
    with pytest.raises(XmrError, match="was written by"):
        FeatureCache(tmp_path, {"encoder_id": "e", "modality": "text", "dim": 8})


def test_cache_ignores_corrupt_shard(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path, {"encoder_id": "e", "modality": "text", "dim": 2})
    c.put([text_key("a")], np.ones((1, 2)))
    (c.dir / "shard-00009.npz").write_bytes(b"half written")
    again = FeatureCache(tmp_path, {"encoder_id": "e", "modality": "text", "dim": 2})
    assert text_key("a") in again and len(again) == 1


def test_cache_writers_in_two_processes_never_lose_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two caches on one folder (as two processes would have) append and merge without losing data."""
    import xmr.encoders.cache as cache_mod

    desc = {"encoder_id": "e", "modality": "text", "dim": 2}
    a, b = FeatureCache(tmp_path, desc), FeatureCache(tmp_path, desc)
    for i in range(4):  # interleaved writes: shard names never collide
        a.put([text_key(f"a{i}")], np.full((1, 2), i))
        b.put([text_key(f"b{i}")], np.full((1, 2), 10 + i))
    b.put([text_key("a0")], np.zeros((1, 2)))  # both encoded the same text: a duplicate key across shards
    assert len(list(a.dir.glob("shard-*.npz"))) == 9
    c = FeatureCache(tmp_path, desc)  # has read the 8 shards
    b.put([text_key("late")], np.full((1, 2), 99.0))  # another process appends meanwhile
    c._merge()  # c rewrites what it read as one shard: the late shard must survive
    monkeypatch.setattr(cache_mod, "_MERGE_AT", 1)
    c2 = FeatureCache(tmp_path, desc)  # a second merge (at load) keeps everything too
    d = FeatureCache(tmp_path, desc)
    assert len(c) == 8 and len(c2) == 9 and len(d) == 9
    assert len(list(d.dir.glob("shard-*.npz"))) == 1
    np.testing.assert_array_equal(d.get([text_key("b3"), text_key("late")]), [[13, 13], [99, 99]])


@pytest.mark.slow
def test_real_encoders_load_offline_and_give_documented_dims(shapes_manifest: Path) -> None:
    img = create_encoder("efficientnet-lite0")
    paths = sorted((shapes_manifest.parent / "img").glob("*.png"))[:2]
    feats = img.encode_batch([img.load(p) for p in paths])
    assert feats.shape == (2, 1280) and np.isfinite(feats).all()
    txt = create_encoder("minilm-l6")
    t = txt.encode_batch(["a red circle", "a photo of a dog"])
    assert t.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
