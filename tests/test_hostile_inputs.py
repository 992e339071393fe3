"""Bad input is refused with one line naming the item (or skipped and listed with --skip-bad)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmr.data.manifest import Item, read_manifest, write_manifest
from xmr.encoders.cache import FeatureCache
from xmr.encoders.image_io import ImageReadConfig, UnreadableImage, image_to_array, load_rgb
from xmr.errors import XmrError

from hostile import TOY, TRAIN, cli_error, cli_ok, make_toy_run, one_error_line, run_process


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_toy_run(tmp_path_factory.mktemp("inputs"), index_split="test")


def _bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def _bad_images(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    truncated = folder / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image at all")
    (folder / "a-folder.png").mkdir(exist_ok=True)
    (folder / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"></svg>')
    return {"missing": folder / "missing.png", "truncated": truncated, "empty": folder / "empty.png",
            "non-image": folder / "text.png", "directory": folder / "a-folder.png",
            "svg": folder / "drawing.svg", "bomb": _bomb_png(folder / "bomb.png")}


EXPECTED = {"missing": "image not found", "truncated": "cannot read image", "empty": "empty file",
            "non-image": "not an image", "directory": "a folder", "svg": "SVG", "bomb": "over the limit"}


def _with_bad(manifest: Path, image: Path, out: Path, split: str = "train") -> Path:
    items = read_manifest(manifest)
    bad = Item(id="bad/0", image=str(image), texts=("a bad item",), group="bad", label="bad", split=split)
    return write_manifest([*items, bad], out)


# -- 4, 7. unreadable images: refused by default, skipped and listed with --skip-bad ------------------------


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_encode_refuses_each_bad_image_by_name(run: tuple[Path, Path, Path], tmp_path: Path, kind: str,
                                               capsys: pytest.CaptureFixture) -> None:
    manifest, cache, _ = run
    bad = _bad_images(tmp_path / "bad", Path(read_manifest(manifest)[0].image))
    m = _with_bad(manifest, bad[kind], tmp_path / "m.jsonl")
    msg = cli_error(["encode", m, *TOY, "--cache-dir", cache], capsys)
    assert "'bad/0'" in msg and EXPECTED[kind] in msg and "--skip-bad" in msg
    out = cli_ok(["encode", m, *TOY, "--cache-dir", cache, "--skip-bad"], capsys)
    listed = Path(out.split("listed in ")[-1].strip())
    rows = [json.loads(line) for line in listed.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["bad/0"] and EXPECTED[kind] in rows[0]["reason"]


def test_bomb_limit_is_configurable_and_names_the_numbers(run: tuple[Path, Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, cache, r = run
    # --max-image-pixels sets $XMR_MAX_IMAGE_PIXELS; setenv makes monkeypatch restore its absence after
    monkeypatch.setenv("XMR_MAX_IMAGE_PIXELS", str(ImageReadConfig().max_pixels))
    bomb = _bomb_png(tmp_path / "bomb.png")
    with pytest.raises(UnreadableImage, match="400,000,000 pixels is over the limit of 178,956,970"):
        load_rgb(bomb)
    msg = cli_error(["search", r, "--image", bomb], capsys)
    assert "400,000,000 pixels" in msg and "--max-image-pixels" in msg
    medium = _bomb_png(tmp_path / "medium.png", 12000, 12000)  # under PIL's own refusal, over ours
    assert "12000 x 12000 = 144,000,000 pixels is over the limit of 100,000,000" in cli_error(
        ["--max-image-pixels", "100000000", "search", r, "--image", medium], capsys)
    normal = read_manifest(manifest)[0].image  # 32 x 32
    assert "1,024 pixels is over the limit of 1,000" in cli_error(["--max-image-pixels", "1000", "search", r,
                                                                   "--image", normal], capsys)
    os.environ.pop("XMR_MAX_IMAGE_PIXELS")
    m = _with_bad(manifest, bomb, tmp_path / "m.jsonl", split="test")
    assert "over the limit" in cli_error(["index", r, "--manifest", m, "--split", "test", "--cache-dir", cache,
                                          "--out", tmp_path / "idx"], capsys)
    cli_ok(["-q", "index", r, "--manifest", m, "--split", "test", "--cache-dir", cache, "--out", tmp_path / "idx",
            "--skip-bad"], capsys)
    skipped = [json.loads(line) for line in (tmp_path / "idx" / "skipped.jsonl").read_text().splitlines()]
    assert [s["id"] for s in skipped] == ["bad/0"]
    built = json.loads((tmp_path / "idx" / "index_run.json").read_text())
    assert built["n_skipped"] == 1 and built["n_images"] == 24


def test_max_pixels_help_matches_the_config() -> None:
    from xmr.cli import build_parser

    assert f"{ImageReadConfig().max_pixels:,}" in build_parser().format_help()


def test_train_refuses_then_skips_and_lists(run: tuple[Path, Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    manifest, cache, _ = run
    bad = _bad_images(tmp_path / "bad", Path(read_manifest(manifest)[0].image))
    m = _with_bad(manifest, bad["truncated"], tmp_path / "m.jsonl")
    out = tmp_path / "r"
    assert "'bad/0'" in cli_error(["train", m, "--out", out, "--cache-dir", cache, *TRAIN], capsys)
    cli_ok(["-q", "train", m, "--out", out, "--cache-dir", cache, *TRAIN, "--skip-bad"], capsys)
    assert [json.loads(line)["id"] for line in (out / "skipped.jsonl").read_text().splitlines()] == ["bad/0"]


def test_large_image_decodes_reduced_close_to_the_full_decode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((4000, 3000), Image.Resampling.BILINEAR)
    path = tmp_path / "big.png"
    big.save(path)
    reduced = load_rgb(path, min_side=64)
    assert min(reduced.size) < 3000 and min(reduced.size) >= 3 * 64
    from xmr.encoders.image_io import resize_center_crop

    slow = np.asarray(resize_center_crop(load_rgb(path), 64), dtype=np.float64)
    fast = image_to_array(path, 64).astype(np.float64)
    assert np.abs(fast - slow).mean() < 2.0  # box-reduce then bicubic vs bicubic from full size


# -- 5. every PIL mode decodes to the right 8-bit RGB ----------------------------------------------------------

GREY = np.tile(np.linspace(0, 255, 16).round().astype(np.uint8), (16, 1))  # a left-to-right ramp


@pytest.mark.parametrize("mode,fmt,scale", [
    ("1", "PNG", None), ("L", "PNG", 1), ("LA", "PNG", 1), ("P", "PNG", None), ("PA", "TIFF", None),
    ("RGB", "PNG", 1), ("RGBA", "PNG", 1), ("RGBX", "TIFF", 1), ("CMYK", "TIFF", 1), ("CMYK", "JPEG", 1),
    ("YCbCr", "TIFF", 1), ("LAB", "TIFF", 1), ("I", "TIFF", 257), ("I;16", "PNG", 257), ("I;16B", "TIFF", 257),
    ("I;16", "TIFF", 257), ("F", "TIFF", 1 / 255), ("I", "PPM", 257), ("F", "PPM", 1 / 255),
])
def test_every_mode_decodes_to_8bit_rgb(tmp_path: Path, mode: str, fmt: str, scale: float | None) -> None:
    rgb = np.stack([GREY] * 3, axis=-1)
    if mode in ("I", "I;16", "I;16B", "F"):
        values = GREY.astype(np.float64) * scale
        arr = values.astype(np.float32) if mode == "F" else values.round().astype(np.uint16 if "16" in mode
                                                                                  else np.int32)
        im = Image.fromarray(arr.astype(">u2") if mode == "I;16B" else arr)
        assert im.mode == mode
    elif mode == "1":
        im = Image.fromarray(GREY >= 128).convert("1")
        rgb = np.where(GREY[..., None] >= 128, 255, 0).repeat(3, axis=-1)
    elif mode in ("P", "PA"):
        im = Image.fromarray(rgb.astype(np.uint8), "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        if mode == "PA":
            im = im.convert("PA")
        rgb = np.asarray(im.convert("RGB"))
    else:
        im = Image.fromarray(rgb.astype(np.uint8), "RGB").convert(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    with Image.open(path) as saved:
        assert saved.mode.startswith(mode[:1]), saved.mode  # the file really holds that kind of mode
    got = np.asarray(load_rgb(path), dtype=np.int64)
    assert got.shape == (16, 16, 3)
    tolerance = 6 if mode in ("CMYK", "YCbCr", "LAB") or fmt == "JPEG" else 1
    assert np.abs(got - rgb).max() <= tolerance, (mode, fmt, np.abs(got - rgb).max())


def test_16bit_grey_is_not_washed_out(tmp_path: Path) -> None:
    eight = tmp_path / "8.png"
    sixteen = tmp_path / "16.png"
    Image.fromarray(GREY, "L").save(eight)
    Image.fromarray(GREY.astype(np.uint16) * 257).save(sixteen)
    assert np.abs(image_to_array(sixteen, 16).astype(int) - image_to_array(eight, 16).astype(int)).max() <= 1


def test_transparent_16bit_and_float_nan(tmp_path: Path) -> None:
    arr = np.full((4, 4), np.nan, dtype=np.float32)
    arr[0, 0] = 1.0
    Image.fromarray(arr, "F").save(tmp_path / "nan.tiff")
    got = np.asarray(load_rgb(tmp_path / "nan.tiff"))
    assert got[0, 0, 0] == 255 and got[1, 1, 0] == 0


# -- 6. non-regular files are refused without opening them ---------------------------------------------------------


def test_fifo_and_dev_zero_are_refused_not_read(run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, cache, r = run
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for image in (fifo, Path("/dev/zero")):
        m = _with_bad(manifest, image, tmp_path / "m.jsonl")
        proc = run_process(["encode", m, *TOY, "--cache-dir", cache], timeout=60)  # today: hangs forever
        assert "not a regular file" in one_error_line(proc) and "'bad/0'" in proc.stderr
    proc = run_process(["search", r, "--image", fifo], timeout=60)
    assert "not a regular file" in one_error_line(proc)


# -- 8. non-UTF-8 manifests -------------------------------------------------------------------------------------


def test_non_utf8_manifest_rows_are_named_or_skipped(run: tuple[Path, Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    manifest, cache, _ = run
    image = read_manifest(manifest)[0].image
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(b'{"id": "a", "image": "%s", "texts": ["caf\xe9"]}\n{"id": "b", "image": "%s", '
                      b'"texts": ["ok"]}\n' % (image.encode(), image.encode()))
    csv = tmp_path / "m.csv"
    csv.write_bytes(b"\xef\xbb\xbfid,image,texts\na,%s,caf\xe9\nb,%s,ok\n" % (image.encode(), image.encode()))
    for m, where in ((jsonl, "m.jsonl:1"), (csv, "m.csv:2")):
        msg = cli_error(["encode", m, *TOY, "--cache-dir", cache], capsys)
        assert where in msg and "not valid UTF-8 (byte 0xe9" in msg
        assert "encoded 1 images" in cli_ok(["encode", m, *TOY, "--cache-dir", cache, "--skip-bad"], capsys)
    assert [it.id for it in read_manifest(csv, skip_bad=True)] == ["b"]  # the BOM did not hide the header


def test_csv_quoted_multiline_and_extra_fields(tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(image)
    m = tmp_path / "m.csv"
    m.write_text(f'id,image,texts\na,{image},"two\nlines"\nb,{image},ok,surplus\nc,{image},fine\n')
    with pytest.raises(XmrError, match=r"m.csv:4: more fields than the header"):
        read_manifest(m)
    assert [it.id for it in read_manifest(m, skip_bad=True)] == ["a", "c"]


# -- 11. option values ---------------------------------------------------------------------------------------------


def test_option_values_are_refused_before_any_work(run: tuple[Path, Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    manifest, cache, r = run
    for cmd in ("eval", "index"):
        for value in ("0", "-2"):
            with pytest.raises(SystemExit) as e:
                from xmr.cli import main

                main([cmd, str(r), "--texts-per-item", value])
            assert e.value.code == 2
            assert "must be >= 1" in capsys.readouterr().err
    msg = cli_error(["index", r, "--factory", "Bogus99", "--cache-dir", cache], capsys)
    assert "--factory 'Bogus99'" in msg
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "not a folder" in cli_error(["train", manifest, "--out", afile, "--cache-dir", cache, *TRAIN], capsys)
    assert afile.read_text() == "x"
    assert "instance" in cli_error(["train", manifest, "--out", tmp_path / "r", "--loss", "nope"], capsys)


def test_index_dot_out_dot_deletes_nothing(run: tuple[Path, Path, Path], capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, cache, r = run
    monkeypatch.chdir(r)
    before = sorted(os.listdir("."))
    assert "would delete the run" in cli_error(["index", ".", "--out", ".", "--cache-dir", cache], capsys)
    assert sorted(os.listdir(".")) == before


# -- 12. a damaged run -----------------------------------------------------------------------------------------------


def _damaged_copy(r: Path, tmp: Path) -> Path:
    import shutil

    out = tmp / "damaged"
    shutil.copytree(r, out)
    return out


@pytest.mark.parametrize("edit,expected", [
    (lambda cfg: {**cfg, "manifest": 5}, "field 'manifest' is 5, expected a string"),
    (lambda cfg: [cfg], "a JSON object expected, found list"),
    (lambda cfg: {**cfg, "text_encoder": "minilm-l6"}, "names the text encoder 'minilm-l6'"),
    (lambda cfg: {**cfg, "train": {**cfg["train"], "epochs": "3"}}, "field 'epochs' is \"3\""),
    (lambda cfg: {**cfg, "embed_dim": None}, "field 'embed_dim' is null"),
])
def test_damaged_run_json_is_one_line(run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                                      edit, expected: str) -> None:
    _, cache, r = run
    d = _damaged_copy(r, tmp_path)
    (d / "run.json").write_text(json.dumps(edit(json.loads((r / "run.json").read_text()))))
    for cmd in (["eval", d, "--cache-dir", cache], ["search", d, "--text", "a red circle"]):
        assert expected in cli_error(cmd, capsys)


def test_short_gallery_is_refused_at_load(run: tuple[Path, Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    import sqlite3

    _, _, r = run
    d = _damaged_copy(r, tmp_path)
    db = sqlite3.connect(d / "index" / "gallery.sqlite")
    n = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    db.execute("DELETE FROM items WHERE id >= ?", (n // 2,))
    db.commit()
    db.close()
    msg = cli_error(["search", d, "--text", "a red circle", "-k", "2000"], capsys)
    assert f"lists {n // 2} images but the index holds {n}" in msg


def test_model_json_damaged(run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, _, r = run
    d = _damaged_copy(r, tmp_path)
    meta = json.loads((d / "best" / "model.json").read_text())
    (d / "best" / "model.json").write_text(json.dumps({**meta, "config": {**meta["config"], "embed_dim": 64}}))
    assert "do not fit the saved model config" in cli_error(["search", d, "--text", "x"], capsys)
    (d / "best" / "model.json").write_text("[]")
    assert "a JSON object expected" in cli_error(["search", d, "--text", "x"], capsys)


# -- 14. two processes on one cache: a merge in between loses nothing -----------------------------------------------


def test_cache_reader_survives_a_concurrent_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import xmr.encoders.cache as cache_mod

    describe = {"encoder_id": "t", "modality": "image", "dim": 4}
    writer = FeatureCache(tmp_path, describe)
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(40)]
    feats = rng.standard_normal((40, 4)).astype(np.float32)
    for a in range(0, 40, 5):
        writer.put(keys[a:a + 5], feats[a:a + 5])
    monkeypatch.setattr(cache_mod, "_MERGE_AT", 4)
    real_load = np.load
    state = {"merged": False}

    def load_then_merge_elsewhere(path, *a, **k):  # another process merges right after our listing
        if not state["merged"]:
            state["merged"] = True
            FeatureCache(tmp_path, describe)  # > _MERGE_AT shards: merges them all, removes the old ones
        return real_load(path, *a, **k)

    monkeypatch.setattr(cache_mod.np, "load", load_then_merge_elsewhere)
    with caplog.at_level("WARNING"):
        reader = FeatureCache(tmp_path, describe)
    monkeypatch.setattr(cache_mod.np, "load", real_load)
    assert state["merged"] and not [r for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(reader) == 40 and reader.missing(keys) == []
    np.testing.assert_array_equal(reader.get(keys), feats)


def test_exif_orientation_is_applied_also_when_reduced(tmp_path: Path) -> None:
    im = Image.new("RGB", (400, 200), (255, 255, 255))
    im.paste((255, 0, 0), (0, 0, 40, 200))  # a red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    im.save(tmp_path / "cam.jpg", exif=exif, quality=95)
    full, small = load_rgb(tmp_path / "cam.jpg"), load_rgb(tmp_path / "cam.jpg", min_side=16)
    assert full.size == (200, 400) and small.size[0] < small.size[1]
    for view in (full, small):
        top = np.asarray(view)[:8].mean(axis=(0, 1))
        assert top[0] > 200 and top[1] < 80  # the left band is on top once the camera's rotation is applied


def test_reducing_by_strips_equals_reducing_the_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    import xmr.encoders.image_io as image_io

    rng = np.random.default_rng(0)
    monkeypatch.setattr(image_io, "_STRIP_PIXELS", 5000)  # many strips, a ragged last one
    for mode, shape in (("RGBA", (301, 457, 4)), ("LA", (64, 1000, 2))):
        im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        np.testing.assert_array_equal(np.asarray(image_io._reduced(im, 20)),
                                      np.asarray(im.reduce(min(im.size) // 20)))


@pytest.mark.parametrize(("mode", "averaged_as"), [("1", "L"), ("P", "RGBA")])
def test_modes_pil_cannot_average_are_reduced_by_converted_strips(monkeypatch: pytest.MonkeyPatch, mode: str,
                                                                   averaged_as: str) -> None:
    """A large 1-bit PNG was refused ("image has wrong mode": PIL's reduce takes no mode "1")."""
    import xmr.encoders.image_io as image_io

    monkeypatch.setattr(image_io, "_STRIP_PIXELS", 5000)
    grey = Image.fromarray(np.random.default_rng(1).integers(0, 256, (333, 517), dtype=np.uint8), "L")
    im = grey.convert(mode)
    got = image_io._reduced(im, 20)
    assert got.mode == averaged_as
    np.testing.assert_array_equal(np.asarray(got), np.asarray(im.convert(averaged_as).reduce(min(im.size) // 20)))
