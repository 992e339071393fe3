"""The openclipart dataset (xmr.data.openclipart) on hand-written SVGs in the Debian package's layout.

Offline and without the Debian packages: ``tests/data/openclipart/svg`` holds nine tiny SVGs (two
copies of one drawing, a file-name title, a placeholder title, an SVG cairosvg cannot draw, one that
draws nothing, a truncated file, one declaring entities, one without metadata); their PNGs are made
here. apt-get and dpkg-query are fakes on PATH. Only the last test reads the real packages, when
they are installed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from PIL import Image

from xmr.cli import main
from xmr.data import debian, read_manifest
from xmr.data import openclipart as oc
from xmr.data.openclipart import OpenclipartConfig, build_openclipart_items, fetch_openclipart
from xmr.data.openclipart_texts import clean_description, clean_keywords, clean_title, drop_collection_texts
from xmr.data.svg_metadata import SvgMetadataError, parse_svg_metadata, read_svg_metadata
from xmr.errors import XmrError

FIXTURE = Path(__file__).parent / "data" / "openclipart" / "svg"
SIZE = 16


def _package(root: Path) -> Path:
    """A copy of the fixture as ``root/svg`` + ``root/png`` (PNGs for the stapler and the cat only)."""
    shutil.copytree(FIXTURE, root / "svg")
    (root / "svg" / "shapes" / "cat_link.svg").symlink_to("../animals/cat.svg")  # the package's links: not read
    for rel, size, colour in (("office/stapler", (30, 10), (200, 0, 0, 255)), ("animals/cat", (8, 8), (0, 0, 0, 255))):
        png = root / "png" / f"{rel}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", size, colour).save(png)
    return root


def test_metadata_is_read_in_both_namespaces_and_forms() -> None:
    cat = read_svg_metadata(FIXTURE / "animals" / "cat.svg")
    assert (cat.title, cat.description, cat.keywords, cat.creator, cat.licence) == (
        "Black Cat", "A black cat asleep on a mat", ("cat", "hash", "animal"), "Ann Artist",
        "http://web.resource.org/cc/PublicDomain")
    apple = read_svg_metadata(FIXTURE / "food" / "apple_red_01.svg")  # creativecommons.org/ns#, rdf:Alt, commas
    assert (apple.title, apple.keywords, apple.creator, apple.licence) == (
        "apple_red_01", ("fruit", "red_apple", "Fruit"), "Jane", "http://creativecommons.org/licenses/GPL/2.0/")


@pytest.mark.parametrize(("name", "reason"), [
    ("entities.svg", "declares XML entities"), ("truncated.svg", "not well-formed XML"),
    ("no_metadata.svg", "no RDF metadata")])
def test_unsafe_or_bad_svgs_are_refused_with_a_reason(name: str, reason: str) -> None:
    with pytest.raises(SvgMetadataError, match=reason):
        read_svg_metadata(FIXTURE / "broken" / name)


def test_external_entities_are_never_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    doc = (f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<svg xmlns="http://www.w3.org/2000/svg"><title>&x;</title></svg>').encode()
    with pytest.raises(SvgMetadataError) as e:
        parse_svg_metadata(doc)
    assert "do not read" not in str(e.value)
    with pytest.raises(SvgMetadataError, match="not an SVG"):
        parse_svg_metadata(b"<html/>")


@pytest.mark.parametrize(("title", "creator", "expected"), [
    ("Black  Cat", "", "Black Cat"), ("Untitled", "", ""), ("image 3", "", ""), ("layer1", "", ""), ("", "", ""),
    ("jigsaw_red_10", "", ""), ("flower.svg", "", ""), ("Baden-W&uuml;rttemberg", "", "Baden-Württemberg"),
    ("Clipart by Jon A. Cruz - United States - California", "", "United States - California"),
    ("Clipart by Nicu Buculei - arrow08_4", "", ""), ("CayennePepperRevisited", "", "Cayenne Pepper Revisited"),
    ("Mirjam Meijer", "Mirjam Meijer", ""), ("Chalet di montagna Ann Artist", "Ann Artist", "Chalet di montagna"),
    ("45 rpm record", "", "45 rpm record"), ("button2", "", "button2")])
def test_title_rules(title: str, creator: str, expected: str) -> None:
    assert clean_title(title, creator) == expected


def test_description_and_keyword_rules() -> None:
    assert clean_description("jane@example.org") == clean_description("http://x.org/a") == ""
    assert clean_description("HASH(0x89f8058)") == clean_description("Ann", "ann") == ""
    assert clean_description("A  cat\n on a mat") == "A cat on a mat"
    assert clean_keywords(["hash", "HASH(0x8a095fc)", "united_nations_member", "Flag", "flag", "0x9c7e034", " ",
                           "Ann"], "ann") == "united nations member, Flag"


def test_collection_texts_are_those_on_more_than_max_shared_drawings() -> None:
    texts = {"a": ("Flat Icon", "cat"), "b": ("flat icon", "dog", "cat"), "c": ("FLAT ICON",), "d": ("cow", "cat ")}
    kept, dropped = drop_collection_texts(texts, max_shared=2)
    # brute force: a text stays when at most 2 drawings carry it, ignoring case
    for key, ts in texts.items():
        assert kept[key] == tuple(t for t in ts if sum(t.casefold() in {u.casefold() for u in v}
                                                        for v in texts.values()) <= 2)
    assert kept == {"a": ("cat",), "b": ("dog", "cat"), "c": (), "d": ("cow", "cat ")}
    assert dropped == {k: ["'" + texts[k][0] + "' (on 3 drawings)"] for k in "abc"}


def test_build_items_texts_copies_and_skipped(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "pkg")
    build = build_openclipart_items(pkg / "svg", pkg / "png", tmp_path / "out", OpenclipartConfig(image_size=SIZE),
                                    progress=False)
    by_id = {it.id: it for it in build.items}
    assert list(by_id) == ["animals/mammals/cat", "food/apple_red_01", "office/stapler"]
    cat = by_id["animals/mammals/cat"]  # the deeper copy of the two identical drawings
    assert cat.texts == ("Black Cat", "A black cat asleep on a mat", "cat, animal, mammal")
    assert (cat.label, cat.group) == ("animals/mammals", cat.id)
    assert by_id["food/apple_red_01"].texts == ("fruit, red apple",)  # file-name title and e-mail dropped
    assert by_id["office/stapler"].texts == ("Red Stapler",)
    skipped = {row["source"]: row["reason"] for row in build.skipped}
    assert list(skipped) == sorted(skipped) and set(skipped) == {
        "svg/broken/entities.svg", "svg/broken/no_metadata.svg", "svg/broken/truncated.svg",
        "svg/office/untitled.svg", "svg/shapes/nothing.svg"}
    assert skipped["svg/office/untitled.svg"].startswith("no usable text")
    assert skipped["svg/shapes/nothing.svg"] == "no image: the SVG draws nothing, and the package has no PNG of it"
    assert skipped["svg/broken/entities.svg"].startswith("unreadable metadata: declares XML entities")
    lic = {r["id"]: r for r in build.licences}
    assert lic["animals/mammals/cat"]["copies"] == ["svg/animals/cat.svg"]
    assert [lic[k]["licence_name"] for k in by_id] == ["public-domain", "GPL-2.0", "unstated (package: public-domain)"]
    assert [lic[k]["title_kept"] for k in by_id] == [True, False, True]


def test_images_are_square_letterboxed_and_the_png_is_the_fallback(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "pkg")
    items = build_openclipart_items(pkg / "svg", pkg / "png", tmp_path / "out", OpenclipartConfig(image_size=SIZE),
                                    progress=False).items
    images = {it.id: Image.open(it.image) for it in items}
    assert all(im.size == (SIZE, SIZE) and im.mode == "RGBA" for im in images.values())
    # the 40 x 20 cat drawn 16 x 8, centred: rows 0-3 and 12-15 transparent
    assert images["animals/mammals/cat"].getchannel("A").getbbox() == (0, 4, 16, 12)
    # cairosvg cannot draw the stapler (no size): its 30 x 10 PNG, scaled to 16 x 5, centred
    stapler = images["office/stapler"]
    assert stapler.getchannel("A").getbbox() == (0, 5, 16, 10) and stapler.getpixel((8, 7)) == (200, 0, 0, 255)


def test_splits_are_seeded_by_drawing() -> None:
    keys = [f"cat/drawing-{i}" for i in range(4000)]
    config = OpenclipartConfig(test_fraction=0.2, val_fraction=0.1)
    a = [oc._split(0, k, config) for k in keys]
    assert a == [oc._split(0, k, config) for k in keys]
    assert abs(a.count("test") / len(a) - 0.2) < 0.02 and abs(a.count("val") / len(a) - 0.1) < 0.02
    b = [oc._split(1, k, config) for k in keys]
    assert 0.2 < sum(x != y for x, y in zip(a, b)) / len(a) < 0.6  # another seed, another split


def test_fetch_is_deterministic_and_a_no_op_when_done(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "pkg")
    config = OpenclipartConfig(image_size=SIZE)
    a = fetch_openclipart(tmp_path / "a", config=config, source=pkg, install=False, progress=False)
    b = fetch_openclipart(tmp_path / "b", config=config, source=pkg, install=False, progress=False)
    for name in ("manifest.jsonl", "licences.jsonl", "skipped.jsonl", "dataset.json"):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name
    items = read_manifest(a)
    assert [it.id for it in items] == ["animals/mammals/cat", "food/apple_red_01", "office/stapler"]
    assert all(Path(it.image).is_file() for it in items)
    meta = json.loads((a.parent / "dataset.json").read_text())
    assert meta["counts"]["items"] == 3 and meta["counts"]["skipped_by_reason"] == {
        "no image": 1, "no usable text": 1, "unreadable metadata": 3}
    mtime = a.stat().st_mtime_ns
    assert fetch_openclipart(tmp_path / "a", config=config, source=pkg, install=False) == a
    assert a.stat().st_mtime_ns == mtime
    other = fetch_openclipart(tmp_path / "a", config=OpenclipartConfig(image_size=SIZE, seed=5), source=pkg,
                              install=False, progress=False)
    assert other == tmp_path / "a" / "datasets" / "openclipart-seed5" / "manifest.jsonl"  # beside the default's
    assert json.loads((other.parent / "dataset.json").read_text())["config"]["seed"] == 5
    assert a.stat().st_mtime_ns == mtime and (a.parent / "manifest.jsonl").read_bytes() == (
        b.parent / "manifest.jsonl").read_bytes()


def _fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pkg: Path, *, fail_first: bool) -> Path:
    """Fake ``apt-get`` (copies ``pkg`` into place on install; with ``fail_first`` the first install fails
    until ``update`` ran) and ``dpkg-query``; returns the log of apt-get calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log, target = tmp_path / "apt.log", tmp_path / "installed"
    apt = f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in
  update*) touch {tmp_path}/updated ;;
  install*) if [ "{int(fail_first)}" = 1 ] && [ ! -e {tmp_path}/updated ]; then
              echo "E: Unable to locate package openclipart-svg" >&2; exit 100; fi
            cp -r {pkg} {target} ;;
esac
"""
    dpkg = """#!/bin/sh
printf 'install ok installed\\t1:0.18+test-1'
"""
    for name, text in (("apt-get", apt), ("dpkg-query", dpkg)):
        (bindir / name).write_text(text)
        (bindir / name).chmod((bindir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(debian.os, "geteuid", lambda: 0)
    return log


@pytest.mark.parametrize("fail_first", [False, True])
def test_the_fetch_installs_the_packages_with_apt_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fail_first: bool) -> None:
    pkg = _package(tmp_path / "pkg")
    log = _fake_tools(tmp_path, monkeypatch, pkg, fail_first=fail_first)
    manifest = fetch_openclipart(tmp_path / "c", config=OpenclipartConfig(image_size=SIZE),
                                 source=tmp_path / "installed", progress=False)
    calls = log.read_text().splitlines()
    expected = ["install -y -q openclipart-svg openclipart-png"]
    assert calls == (expected + ["update -q"] + expected if fail_first else expected)
    assert len(read_manifest(manifest)) == 3
    assert json.loads((manifest.parent / "dataset.json").read_text())["packages"] == {
        "openclipart-svg": "1:0.18+test-1", "openclipart-png": "1:0.18+test-1"}
    fetch_openclipart(tmp_path / "c", config=OpenclipartConfig(image_size=SIZE), source=tmp_path / "installed")
    assert len(log.read_text().splitlines()) == len(calls)  # present: apt-get not run again


def test_install_failures_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(oc, "PACKAGE_ROOT", tmp_path / "nowhere")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no apt-get, no sudo
    assert main(["data", "fetch", "openclipart", "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xmr: error: openclipart: the Debian packages openclipart-svg "
                                               "openclipart-png are not installed and there is no apt-get"), err
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "apt-get").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(debian.os, "geteuid", lambda: 1000)
    with pytest.raises(XmrError, match="installing them needs root"):
        debian.apt_install(oc.DEBIAN_PACKAGES, what="openclipart")
    monkeypatch.setattr(debian.os, "geteuid", lambda: 0)  # apt-get "succeeds" but installs nothing
    with pytest.raises(XmrError, match="were installed but their files are not where expected"):
        fetch_openclipart(tmp_path / "c", source=tmp_path / "nowhere")


def test_config_is_checked() -> None:
    with pytest.raises(XmrError, match="image_size must be a positive integer"):
        OpenclipartConfig(image_size=0)
    with pytest.raises(XmrError, match="split fractions"):
        OpenclipartConfig(test_fraction=0.5, val_fraction=0.5)
    from xmr.data.registry import DATASETS

    assert DATASETS.get("openclipart") is fetch_openclipart


REAL = oc.PACKAGE_ROOT / "svg"


@pytest.mark.skipif(not REAL.is_dir(), reason="the Debian package openclipart-svg is not installed")
def test_real_package_drawings(tmp_path: Path) -> None:
    versions = debian.package_versions(oc.DEBIAN_PACKAGES)
    assert versions["openclipart-svg"], versions
    folder = REAL / "animals" / "birds"
    picked = sorted(p for p in folder.glob("*.svg") if p.is_file() and not p.is_symlink())[:4]
    (tmp_path / "svg" / "animals" / "birds").mkdir(parents=True)
    for p in picked:
        shutil.copy(p, tmp_path / "svg" / "animals" / "birds" / p.name)
    build = build_openclipart_items(tmp_path / "svg", oc.PACKAGE_ROOT / "png", tmp_path / "out", progress=False)
    assert len(build.items) + len(build.skipped) == len(picked) == 4
    assert all(it.texts and it.label == "animals/birds" for it in build.items)
    assert all(Image.open(it.image).size == (224, 224) for it in build.items)


def test_fetch_seed_draws_another_split_beside_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``xmr data fetch openclipart --seed N``: the default (seed 0, no option) is byte-identical to the library's
    default build and left untouched by another seed, whose dataset sits beside it (``openclipart-seed<N>``),
    with the same items, texts and PNGs (drawn once, under the default's folder) and splits drawn by its seed,
    as :func:`oc._split` draws them; a dataset with one fixed split refuses a seed in one line."""
    from hostile import cli_error, cli_ok

    pkg = _package(tmp_path / "pkg")
    monkeypatch.setattr(oc, "PACKAGE_ROOT", pkg)  # installed: nothing for apt-get to do
    config = OpenclipartConfig(test_fraction=0.3, val_fraction=0.3)
    monkeypatch.setattr(oc.fetch_openclipart, "__kwdefaults__", {**oc.fetch_openclipart.__kwdefaults__,
                                                                   "config": config, "progress": False})
    cache = tmp_path / "cache"
    cli_ok(["data", "fetch", "openclipart", "--cache-dir", cache], capsys)
    default = cache / "datasets" / "openclipart" / "manifest.jsonl"
    reference = fetch_openclipart(tmp_path / "ref", config=config, source=pkg, install=False, progress=False)
    assert default.read_bytes() == reference.read_bytes()
    before, mtime = default.read_bytes(), default.stat().st_mtime_ns
    pngs = sorted((cache / "datasets" / "openclipart" / "png").rglob("*.png"))
    splits = {}
    for seed in (1, 7):
        out = cli_ok(["data", "fetch", "openclipart", "--seed", str(seed), "--cache-dir", cache], capsys)
        manifest = cache / "datasets" / f"openclipart-seed{seed}" / "manifest.jsonl"
        assert f"manifest: {manifest}" in out
        items, base = read_manifest(manifest), read_manifest(default)
        assert [(it.id, it.texts, it.image) for it in items] == [(it.id, it.texts, it.image) for it in base]
        assert [it.split for it in items] == [oc._split(seed, it.id, config) for it in items]
        splits[seed] = [it.split for it in items]
        assert not (manifest.parent / "png").exists()
    assert splits[1] != splits[7] or splits[1] != [it.split for it in read_manifest(default)]
    assert default.read_bytes() == before and default.stat().st_mtime_ns == mtime
    assert sorted((cache / "datasets" / "openclipart" / "png").rglob("*.png")) == pngs  # drawn once
    cli_ok(["data", "fetch", "openclipart", "--seed", "0", "--cache-dir", cache], capsys)  # the default, as it is
    assert default.stat().st_mtime_ns == mtime
    err = cli_error(["data", "fetch", "emoji", "--seed", "1", "--cache-dir", tmp_path / "e"], capsys)
    assert "dataset 'emoji' has one fixed split; --seed 1 draws the split of: openclipart" in err
    assert not (tmp_path / "e").exists()
