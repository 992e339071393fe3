"""The icons dataset (xmr.data.icons) on a tiny fake @iconify/json package (offline, fake npm)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakes import install_fake_npm, tarball_stem
from xmr.cli import main
from xmr.data import icons as icons_mod
from xmr.data import read_manifest
from xmr.data.icons import IconSet, build_icon_items, fetch_icons, parse_icon_set, readable
from xmr.errors import XmrError

SQUARE = '<path fill="currentColor" d="M2 2h12v12H2z"/>'
CIRCLE = '<circle cx="8" cy="8" r="6" fill="currentColor"/>'
CROSS = '<path stroke="currentColor" stroke-width="2" d="M2 2L14 14M14 2L2 14"/>'
TRIANGLE = '<path fill="currentColor" d="M8 1L15 15H1z"/>'

SETS = {
    "alpha": {"prefix": "alpha", "info": {"name": "Alpha Icons", "license": {"spdx": "MIT", "title": "MIT"},
                                          "author": {"name": "A"}, "category": "UI 16px / 32px"},
              "width": 16, "height": 16,
              "icons": {"home-outline": {"body": SQUARE}, "circle": {"body": CIRCLE},
                        "old_thing": {"body": CROSS, "hidden": True}, "wide": {"body": TRIANGLE, "width": 32}},
              "aliases": {"house-outline": {"parent": "home-outline"}, "round": {"parent": "circle"},
                          "circle-rotated": {"parent": "circle", "rotate": 1}, "orphan": {"parent": "nope"}},
              "categories": {"Shapes": ["circle", "wide"], "Buildings": ["home-outline"]}},
    "ph": {"prefix": "ph", "info": {"name": "Phosphor", "license": {"spdx": "MIT"}},
           "icons": {"cross": {"body": CROSS}, "cross-bold": {"body": CROSS.replace('"2"', '"3"')},
                     "circle": {"body": CIRCLE}},  # same drawing as alpha's circle: a duplicate
           "aliases": {}},
    "octicon": {"prefix": "octicon", "info": {"name": "Octicons", "license": {"spdx": "MIT"}},
                "icons": {"bell-16": {"body": TRIANGLE}, "bell-24": {"body": SQUARE, "width": 24, "height": 24},
                          "mark-16": {"body": CROSS.replace("M2 2", "M3 3")}},
                "aliases": {"ring-24": {"parent": "bell-24"}}},
    "fake-emoji": {"prefix": "fake-emoji", "info": {"name": "Fake Emoji", "category": "Emoji"},
                   "icons": {"smile": {"body": CIRCLE}}},
    "sneaky": {"prefix": "sneaky", "info": {"name": "Sneaky Emoji Set"}, "icons": {"x": {"body": CIRCLE}}},
}
RULES = (IconSet("alpha"), IconSet("ph", drop_suffixes=("-bold",)), IconSet("octicon", size_suffixes=("24", "16")))


def _package(root: Path) -> Path:
    package = root / "package"
    (package / "json").mkdir(parents=True)
    for prefix, data in SETS.items():
        (package / "json" / f"{prefix}.json").write_text(json.dumps(data))
    return package


def test_readable_names() -> None:
    assert readable("arrow-left_thin") == "arrow left thin" and readable("3d-glasses") == "3d glasses"


def test_icons_texts_labels_choices_and_duplicates(tmp_path: Path) -> None:
    items, report = build_icon_items(_package(tmp_path), tmp_path / "out", RULES, image_size=16, progress=False)
    by_id = {it.id: it for it in items}
    assert list(by_id) == ["alpha/circle", "alpha/home-outline", "alpha/wide", "ph/cross", "octicon/bell-24",
                           "octicon/mark-16"]
    # readable name first, then plain aliases; a transformed or dangling alias is left out
    assert by_id["alpha/home-outline"].texts == ("home outline", "house outline")
    assert by_id["alpha/circle"].texts == ("circle", "round")
    assert by_id["alpha/circle"].label == "alpha:Shapes" and by_id["ph/cross"].label is None
    # one size per octicon (24 preferred, else 16), the size dropped from the text
    assert by_id["octicon/bell-24"].texts == ("bell", "ring") and by_id["octicon/mark-16"].texts == ("mark",)
    assert all(it.style == it.id.split("/")[0] and it.group == it.id for it in items)
    assert {it.split for it in items} <= {"train", "val", "test"}
    assert report["alpha"]["icons"] == 3 and report["alpha"]["license"] == "MIT"
    assert report["ph"] == {**report["ph"], "icons": 1, "duplicates_dropped": 1}  # ph/circle = alpha/circle
    svg = (tmp_path / "out" / "svg" / "alpha" / "wide.svg").read_text()
    assert 'viewBox="0 0 32 16"' in svg and TRIANGLE in svg


@pytest.mark.parametrize("prefix", ["fake-emoji", "sneaky"])
def test_emoji_sets_are_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(XmrError, match=f"icon set '{prefix}' .* is an emoji set"):
        build_icon_items(_package(tmp_path), tmp_path / "out", (IconSet(prefix),), image_size=16)


def test_bad_set_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(XmrError, match="icon set 'nope' is not in @iconify/json"):
        build_icon_items(_package(tmp_path), tmp_path / "out", (IconSet("nope"),), image_size=16)
    with pytest.raises(XmrError, match="x.json: not an Iconify icon set"):
        parse_icon_set([1, 2], IconSet("alpha"), source="x.json")
    with pytest.raises(XmrError, match="prefix 'alpha', expected 'ph'"):
        parse_icon_set(SETS["alpha"], IconSet("ph"), source="x.json")


@pytest.fixture()
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``npm`` serving the fixture package as ``@iconify/json``; returns the folder of its tarballs."""
    stem = tarball_stem(*icons_mod.ICONIFY_PACKAGE)
    return install_fake_npm(tmp_path, monkeypatch, {stem: _package(tmp_path / "src")})[0]


def test_fetch_is_deterministic_and_a_no_op_when_done(tmp_path: Path, fake_npm: Path) -> None:
    a = fetch_icons(tmp_path / "a", image_size=16, sets=RULES, progress=False)
    b = fetch_icons(tmp_path / "b", image_size=16, sets=RULES, progress=False)
    assert a.read_bytes() == b.read_bytes()  # same version and sets: byte-identical manifests
    items = read_manifest(a)
    assert len(items) == 6 and all(Path(it.image).is_file() for it in items)
    meta = json.loads((a.parent / "dataset.json").read_text())
    assert meta["package"] == list(icons_mod.ICONIFY_PACKAGE) and meta["sets_report"]["alpha"]["license"] == "MIT"
    mtime = a.stat().st_mtime_ns
    for tgz in fake_npm.iterdir():
        tgz.unlink()  # a finished dataset needs no npm
    assert fetch_icons(tmp_path / "a", image_size=16, sets=RULES) == a and a.stat().st_mtime_ns == mtime


def test_a_failed_fetch_is_one_line(tmp_path: Path, fake_npm: Path, capsys: pytest.CaptureFixture) -> None:
    for tgz in fake_npm.iterdir():
        tgz.unlink()
    assert main(["data", "fetch", "icons", "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xmr: error:") and "@iconify/json" in err[0], err


def test_a_second_icons_dataset_shares_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, calls = install_fake_npm(tmp_path, monkeypatch,
                                       {tarball_stem(*icons_mod.ICONIFY_PACKAGE): _package(tmp_path / "src")})
    first = fetch_icons(tmp_path / "c", image_size=16, sets=RULES[:1], progress=False)
    second = fetch_icons(tmp_path / "c", image_size=16, sets=RULES[1:], progress=False, name="more")
    assert first.parent.name == "icons" and second.parent.name == "more"
    assert len(calls.read_text().splitlines()) == 1  # one npm pack: the package is kept once, in icons/
    assert not (second.parent / "packages").exists()
    assert {it.style for it in read_manifest(second)} == {"ph", "octicon"}
    assert json.loads((second.parent / "dataset.json").read_text())["name"] == "more"


def test_the_extra_sets_are_disjoint_from_the_default_ones_and_registered() -> None:
    from xmr.data.registry import DATASETS

    assert not {s.prefix for s in icons_mod.DEFAULT_SETS} & {s.prefix for s in icons_mod.EXTRA_SETS}
    assert "icons-extra" in DATASETS.names()
    # the variant rules keep one drawing per name: ri's line twin, solar's linear one
    assert icons_mod._choose(IconSet("ri", size_suffixes=("line", "fill")), ["home-line", "home-fill"]) == {
        "home-line": "home"}
    solar = next(s for s in icons_mod.EXTRA_SETS if s.prefix == "solar")
    assert icons_mod._choose(solar, ["cup-linear", "cup-bold", "cup-bold-duotone", "cup-line-duotone",
                                     "cup-broken", "cup-outline"]) == {"cup-linear": "cup"}
