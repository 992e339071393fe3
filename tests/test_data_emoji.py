"""Tests for the built-in emoji dataset, on a tiny fake package layout (offline, no real npm)."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from fakes import install_fake_npm
from xmr.data import DATASETS, fetch_dataset, read_manifest
from xmr.data import emoji as emoji_mod
from xmr.data.emoji import (
    NPM_MISSING,
    EmojiPackages,
    assign_subgroup_splits,
    build_emoji_items,
    fetch_emoji,
    normalise_hexcode,
    read_emojibase,
    safe_extract,
    split_counts,
)
from xmr.errors import XmrError

SVG = ('<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">'
       '<circle cx="36" cy="36" r="20" fill="{fill}"/></svg>')
GROUPS = {"0": "smileys-emotion", "1": "people-body", "2": "component", "3": "animals-nature",
          "8": "symbols", "9": "flags"}
SUBGROUPS = {"0": "face-smiling", "14": "heart", "16": "hand-fingers-open", "32": "skin-tone",
             "34": "animal-mammal", "94": "keycap", "98": "country-flag"}

# (hexcode as in emojibase, label, tags, group, subgroup)
EMOJI = [
    ("1F600", "grinning face", ["Grinning Face", "face", "grin", "face", "smile"], 0, 0),
    ("2764-FE0F", "red heart", ["heart", "love"], 0, 14),
    ("1F44B", "waving hand", ["hand", "wave"], 1, 16),
    ("1F436", "dog face", ["dog", "pet"], 3, 34),
    ("1F431", "cat face", ["cat", "pet"], 3, 34),
    ("0023-FE0F-20E3", "keycap: #", ["keycap"], 8, 94),
    ("1F1EB-1F1F7", "flag: France", ["FR", "flag"], 9, 98),
]
KEYS = [normalise_hexcode(h) for h, *_ in EMOJI]


def _png(path: Path, color: tuple[int, int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (64, 64), color).save(path)


def _emojibase(root: Path) -> None:
    data: list[dict[str, object]] = [
        {"label": "regional indicator A", "hexcode": "1F1E6", "emoji": "", "text": "", "type": 1,
         "version": 0},
        {"label": "light skin tone", "hexcode": "1F3FB", "tags": ["skin"], "group": 2,
         "subgroup": 32, "order": 1, "type": 1, "version": 1},
    ]
    for order, (hexcode, label, tags, group, subgroup) in enumerate(EMOJI, start=2):
        entry: dict[str, object] = {"label": label, "hexcode": hexcode, "tags": tags,
                                    "emoji": "", "text": "", "type": 1, "order": order,
                                    "group": group, "subgroup": subgroup, "version": 1}
        if hexcode == "1F44B":
            entry["skins"] = [{"label": "waving hand: light skin tone", "hexcode": "1F44B-1F3FB",
                               "group": 1, "subgroup": 16, "tone": 1, "type": 1}]
        data.append(entry)
    (root / "en").mkdir(parents=True)
    (root / "meta").mkdir(parents=True)
    (root / "en" / "data.json").write_text(json.dumps(data))
    (root / "meta" / "groups.json").write_text(json.dumps(
        {"groups": GROUPS, "subgroups": SUBGROUPS, "hierarchy": {}}))


def make_packages(base: Path) -> EmojiPackages:
    """Four fake ``package/`` folders in the real layouts, with a few deliberate defects."""
    pk = EmojiPackages(*(base / name / "package" for name in
                         ("openmoji-17.0.0", "emoji-datasource-twitter-16.0.0",
                          "emoji-datasource-google-16.0.0", "emojibase-data-17.0.0")))
    _emojibase(pk.emojibase)
    for kind, fill in (("color", "#FCEA2B"), ("black", "#000000")):
        folder = pk.openmoji / kind / "svg"
        folder.mkdir(parents=True)
        for hexcode, *_ in EMOJI:
            # OpenMoji drops FE0F in some names (red heart) and keeps it in others (keycaps)
            name = "2764" if hexcode == "2764-FE0F" else hexcode
            (folder / f"{name}.svg").write_text(SVG.format(fill=fill))
        (folder / "1F3FB.svg").write_text(SVG.format(fill=fill))  # component: not an item
    (pk.openmoji / "black" / "svg" / "1F431.svg").write_text("<svg this is not xml")
    for style, pkg, color in (("twitter", pk.twitter, (255, 0, 0, 255)),
                              ("google", pk.google, (0, 0, 255, 255))):
        for hexcode, *_ in EMOJI:
            if style == "twitter" and hexcode == "1F436":
                continue  # a missing file
            _png(pkg / "img" / style / "64" / f"{hexcode.lower()}.png", color)
    return pk


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code, key", [
    ("2764-fe0f-200d-1f525", "2764-200D-1F525"),
    ("2764-FE0F-200D-1F525", "2764-200D-1F525"),
    ("2764-200D-1F525", "2764-200D-1F525"),
    ("0023-fe0f-20e3", "0023-20E3"),
    ("1f600", "1F600"),
    ("1f1eb_1f1f7", "1F1EB-1F1F7"),
])
def test_normalise_hexcode(code: str, key: str) -> None:
    assert normalise_hexcode(code) == key


def test_read_emojibase_keeps_base_emoji_only(tmp_path: Path) -> None:
    pk = make_packages(tmp_path)
    entries = read_emojibase(pk.emojibase)
    assert [e.key for e in entries] == KEYS  # no regional indicator, component or skin tone
    grin = entries[0]
    assert (grin.label, grin.group, grin.subgroup) == ("grinning face", "smileys-emotion",
                                                       "face-smiling")
    assert grin.tags == ("face", "grin", "smile")  # label-equal and duplicate tags dropped


def test_build_items_fields_and_skips(tmp_path: Path) -> None:
    pk = make_packages(tmp_path / "pk")
    out = tmp_path / "out"
    items, report = build_emoji_items(pk, out, image_size=32, progress=False)
    ids = [it.id for it in items]
    assert len(ids) == len(set(ids)) == 7 * 4 - 2
    assert "1F436/twitter" not in ids and "1F431/openmoji-black" not in ids
    assert report["skipped"] == {
        "missing": {"openmoji-color": 0, "openmoji-black": 0, "twitter": 1, "google": 0},
        "unrenderable": {"openmoji-color": 0, "openmoji-black": 1, "twitter": 0, "google": 0}}
    assert report["emoji"] == 7 and report["items"] == 26
    by_id = {it.id: it for it in items}
    heart = by_id["2764/openmoji-color"]
    assert heart.texts == ("red heart", "heart", "love")
    assert (heart.label, heart.group, heart.style) == ("heart", "2764", "openmoji-color")
    assert heart.image == str((out / "png" / "32" / "openmoji-color" / "2764.png").resolve())
    assert by_id["2764/twitter"].image == str(
        (pk.twitter / "img" / "twitter" / "64" / "2764-fe0f.png").resolve())
    assert by_id["0023-20E3/google"].group == "0023-20E3"
    with Image.open(by_id["1F600/openmoji-black"].image) as im:
        assert im.size == (32, 32) and im.mode == "RGBA"
        assert im.getpixel((0, 0))[3] == 0  # transparent background kept
        assert im.getpixel((16, 16))[3] == 255
    assert {it.style for it in items} == set(emoji_mod.STYLES)
    assert all(it.split in {"train", "val", "test"} for it in items)


def test_build_items_is_deterministic_and_resumes(tmp_path: Path) -> None:
    pk = make_packages(tmp_path / "pk")
    out = tmp_path / "out"
    first, _ = build_emoji_items(pk, out, image_size=16, progress=False)
    png = out / "png" / "16" / "openmoji-color" / "1F600.png"
    other = out / "png" / "16" / "openmoji-color" / "1F436.png"
    before = other.stat().st_mtime_ns
    png.unlink()
    second, _ = build_emoji_items(pk, out, image_size=16, progress=False)
    assert first == second
    assert png.is_file()
    assert other.stat().st_mtime_ns == before  # kept, not redrawn


def test_split_is_zero_shot_by_subgroup(tmp_path: Path) -> None:
    items, report = build_emoji_items(make_packages(tmp_path / "pk"), tmp_path / "out",
                                      image_size=16, progress=False)
    split_of_subgroup: dict[str, set[str]] = {}
    for it in items:
        split_of_subgroup.setdefault(str(it.label), set()).add(str(it.split))
    assert all(len(s) == 1 for s in split_of_subgroup.values())
    # brute-force recount of the report
    counts = report["splits"]
    assert isinstance(counts, dict)
    assert counts["items"] == dict(Counter(str(it.split) for it in items))
    assert sum(counts["emoji"].values()) == 7
    assert sum(counts["subgroups"].values()) == len(split_of_subgroup)


def test_assign_subgroup_splits_fixed_rule() -> None:
    sizes = {f"sub-{i}": 1 + (i * 7) % 23 for i in range(100)}
    splits = assign_subgroup_splits(sizes)
    assert splits == assign_subgroup_splits(dict(reversed(list(sizes.items()))))
    total = sum(sizes.values())
    emoji = Counter()
    for name, split in splits.items():
        emoji[split] += sizes[name]
    assert 0.17 * total <= emoji["test"] <= round(0.2 * total)
    assert 0.07 * total <= emoji["val"] <= round(0.1 * total)
    assert emoji["train"] == total - emoji["test"] - emoji["val"]
    assert assign_subgroup_splits(sizes, test_fraction=0.0, val_fraction=0.0) == {
        name: "train" for name in sizes}
    with pytest.raises(ValueError):
        assign_subgroup_splits(sizes, test_fraction=0.8, val_fraction=0.3)


def test_split_counts_brute_force() -> None:
    from xmr.data.manifest import Item

    items = [Item(id=f"{g}/{s}", image="x.png", texts=("t",), label=lab, group=g, style=s,
                  split=sp)
             for g, lab, sp in (("A", "a", "train"), ("B", "a", "train"), ("C", "c", "test"))
             for s in ("x", "y")]
    assert split_counts(items) == {
        "emoji": {"train": 2, "test": 1}, "items": {"train": 4, "test": 2},
        "subgroups": {"train": 1, "test": 1},
        "subgroup_names": {"train": ["a"], "test": ["c"]}}


# --- safe untar ------------------------------------------------------------------------------


def _tar_with(path: Path, name: str, *, symlink: bool = False) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        if symlink:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    return path


@pytest.mark.parametrize("name, symlink", [("../evil.txt", False), ("/abs/evil.txt", False),
                                           ("package/a/../../../evil.txt", False),
                                           ("package/link", True)])
def test_safe_extract_refuses_escaping_members(tmp_path: Path, name: str, symlink: bool) -> None:
    tarball = _tar_with(tmp_path / "bad.tgz", name, symlink=symlink)
    with pytest.raises(XmrError, match="refusing unsafe member"):
        safe_extract(tarball, tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_unpacks_normal_tarball(tmp_path: Path) -> None:
    tarball = _tar_with(tmp_path / "ok.tgz", "package/a.txt")
    safe_extract(tarball, tmp_path / "dest")
    assert (tmp_path / "dest" / "package" / "a.txt").read_bytes() == b"hi"


# --- fetch with a fake npm -------------------------------------------------------------------

@pytest.fixture()
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``npm`` first on PATH that serves tarballs of the fake packages; returns its log."""
    pk = make_packages(tmp_path / "fake-packages")
    folders = (pk.openmoji, pk.twitter, pk.google, pk.emojibase)
    return install_fake_npm(tmp_path, monkeypatch, {f.parent.name: f for f in folders})[1]


def test_fetch_end_to_end_then_fast_noop(tmp_path: Path, fake_npm: Path) -> None:
    cache = tmp_path / "cache"
    manifest = fetch_emoji(cache, image_size=16, progress=False)
    root = cache / "datasets" / "emoji"
    assert manifest == root / "manifest.jsonl"
    calls = fake_npm.read_text().splitlines()
    assert sorted(c.split()[1] for c in calls) == sorted(
        f"{n}@{v}" for n, v in emoji_mod.PACKAGES.values())
    items = read_manifest(manifest)
    assert len(items) == 26
    assert all(Path(it.image).is_file() for it in items)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["image_size"] == 16
    assert meta["licenses"]["openmoji"].startswith("CC-BY-SA-4.0")
    assert meta["packages"]["emojibase-data"] == "17.0.0"
    counts = json.loads((root / "split_counts.json").read_text())
    assert sum(counts["items"].values()) == 26 and sum(counts["emoji"].values()) == 7
    mtime = manifest.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert fetch_emoji(cache, image_size=16) == manifest
    assert time.perf_counter() - t0 < 1.0
    assert manifest.stat().st_mtime_ns == mtime
    assert fake_npm.read_text().splitlines() == calls  # npm not run again


def test_fetch_resumes_without_refetching(tmp_path: Path, fake_npm: Path) -> None:
    cache = tmp_path / "cache"
    manifest = fetch_emoji(cache, image_size=16, progress=False)
    root = cache / "datasets" / "emoji"
    n_calls = len(fake_npm.read_text().splitlines())
    # an interrupted run: manifest not yet written, a PNG and an unpacked package missing
    manifest.unlink()
    kept = root / "png" / "16" / "openmoji-color" / "1F431.png"
    kept_mtime = kept.stat().st_mtime_ns
    (root / "png" / "16" / "openmoji-color" / "1F600.png").unlink()
    shutil.rmtree(root / "packages" / "openmoji-17.0.0")
    assert fetch_emoji(cache, image_size=16, progress=False) == manifest
    assert len(fake_npm.read_text().splitlines()) == n_calls  # tarballs were kept
    assert (root / "png" / "16" / "openmoji-color" / "1F600.png").is_file()
    assert kept.stat().st_mtime_ns == kept_mtime
    assert len(read_manifest(manifest)) == 26


def test_fetch_other_image_size_rebuilds(tmp_path: Path, fake_npm: Path) -> None:
    cache = tmp_path / "cache"
    fetch_emoji(cache, image_size=16, progress=False)
    manifest = fetch_emoji(cache, image_size=24, progress=False)
    item = next(it for it in read_manifest(manifest) if it.style == "openmoji-color")
    assert "/png/24/" in item.image
    with Image.open(item.image) as im:
        assert im.size == (24, 24)


def test_crash_before_manifest_leaves_no_stale_manifest(tmp_path: Path, fake_npm: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    manifest = fetch_emoji(cache, image_size=16, progress=False)

    def crash(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    # dataset.json for size 24 gets written, then the run dies before the manifest
    with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(emoji_mod, "write_manifest", crash)
        fetch_emoji(cache, image_size=24, progress=False)
    assert json.loads((manifest.parent / "dataset.json").read_text())["image_size"] == 24
    assert not manifest.exists()  # the size-16 manifest must not pass for a size-24 one
    item = next(it for it in read_manifest(fetch_emoji(cache, image_size=24))
                if it.style == "openmoji-black")
    assert "/png/24/" in item.image


def test_fetch_uses_xmr_cache_dir(tmp_path: Path, fake_npm: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMR_CACHE_DIR", str(tmp_path / "envcache"))
    manifest = fetch_dataset("emoji", image_size=16, progress=False)
    assert manifest == tmp_path / "envcache" / "datasets" / "emoji" / "manifest.jsonl"
    assert manifest.is_file()


def test_npm_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emoji_mod.shutil, "which", lambda name: None)
    with pytest.raises(XmrError) as exc:
        fetch_emoji(tmp_path / "cache")
    assert str(exc.value) == NPM_MISSING


def test_npm_failure_names_package_and_error(tmp_path: Path, fake_npm: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emoji_mod, "PACKAGES", {**emoji_mod.PACKAGES,
                                                "openmoji": ("openmoji", "99.0.0")})
    with pytest.raises(XmrError) as exc:
        fetch_emoji(tmp_path / "cache", image_size=16)
    msg = str(exc.value)
    assert msg == "npm pack openmoji@99.0.0 failed: npm error 404 Not Found - openmoji@99.0.0"
    assert "\n" not in msg
    assert not list((tmp_path / "cache").rglob("*.tgz*"))  # no partial tarball left


@pytest.mark.parametrize("stderr, line", [
    ("npm warn x\nnpm error code ETARGET\nnpm error notarget No matching version\n",
     "npm error notarget No matching version"),
    ("npm ERR! code E404\nnpm ERR! 404 Not Found\n", "npm ERR! 404 Not Found"),
    ("npm error code E404\n", "npm error code E404"),
    ("something odd\n", "something odd"),
    ("", "exit status 7"),
])
def test_npm_error_line(stderr: str, line: str) -> None:
    assert emoji_mod._npm_error_line(stderr, "", 7) == line


def test_registry() -> None:
    assert "emoji" in DATASETS
    assert DATASETS.get("emoji") is fetch_emoji
    with pytest.raises(XmrError, match="unknown dataset 'nope'; known: cci, css, emoji, emoji-edits, icon-edits"):
        fetch_dataset("nope")


def test_bad_image_size_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        fetch_emoji(tmp_path, image_size=0)


def test_unrenderable_svg_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="xmr.data.emoji"):
        build_emoji_items(make_packages(tmp_path / "pk"), tmp_path / "out", image_size=16,
                          progress=False)
    assert "skipped 1 unrenderable SVG(s)" in caplog.text
