"""Tests for the composed-query edit datasets (emoji tones/genders/hair, MDI icon styles).

Everything runs on tiny synthetic emojibase / emoji-datasource / MDI files in tmp dirs: no network,
no real packages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from xmr.data import icon_edits as icon_mod
from xmr.data.edits import (
    Edit,
    EmojiForms,
    assign_component_splits,
    build_emoji_edits,
    datasource_images,
    emoji_edit_dataset,
    gender_swap_edits,
    hair_style_edits,
    parse_emojibase_forms,
    tone_edits,
)
from xmr.data.icon_edits import build_icon_edits, fetch_icon_edits, parse_mdi_meta, style_words
from xmr.data.manifest import read_manifest
from xmr.data.triplets import read_triplets
from xmr.errors import XmrError

TONE_HEX = ["1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"]
TONE_NAMES = ["light skin tone", "medium-light skin tone", "medium skin tone", "medium-dark skin tone",
              "dark skin tone"]
SUBGROUPS = {"16": "hand-fingers-open", "20": "hands", "23": "person", "32": "skin-tone", "34": "animal-mammal",
             "87": "family"}
KISS_WM = "1F469-200D-2764-FE0F-200D-1F48B-200D-1F468"
KISS_MM = "1F468-200D-2764-FE0F-200D-1F48B-200D-1F468"


def _emoji(hexcode: str, label: str, subgroup: int, group: int = 1, tones: tuple[int, ...] = (),
           extra_skins: list[dict[str, object]] | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"label": label, "hexcode": hexcode, "group": group, "subgroup": subgroup}
    skins = [{"label": f"{label}: {TONE_NAMES[t - 1]}", "hexcode": f"{hexcode}-{TONE_HEX[t - 1]}", "tone": t,
              "group": group, "subgroup": subgroup} for t in tones]
    skins += extra_skins or []
    if skins:
        entry["skins"] = skins
    return entry


def emojibase_data() -> list[dict[str, object]]:
    """A tiny emojibase ``en/data.json``: tones, gender words, hair, multi-person, noise."""
    return [
        {"label": "regional indicator A", "hexcode": "1F1E6"},  # no group: skipped
        *({"label": n, "hexcode": h, "group": 2, "subgroup": 32} for h, n in zip(TONE_HEX, TONE_NAMES)),
        {"label": "red hair", "hexcode": "1F9B0", "group": 2, "subgroup": 33},  # component: skipped
        _emoji("1F44B", "waving hand", 16, tones=(1, 2, 5)),
        _emoji("1FAF1-200D-1FAF2", "handshake", 20, tones=(1,), extra_skins=[
            {"label": "handshake: light skin tone, dark skin tone", "hexcode": "1FAF1-1F3FB-200D-1FAF2-1F3FF",
             "tone": [1, 5]}]),  # mixed tones: left out
        _emoji("1F9D1", "person", 23),
        _emoji("1F468", "man", 23),
        _emoji("1F469", "woman", 23),
        _emoji("1F9D1-200D-1F9B0", "person: red hair", 23),
        _emoji("1F468-200D-1F9B0", "man: red hair", 23),
        _emoji(KISS_WM, "kiss: woman, man", 87),  # two gender words: no swap
        _emoji(KISS_MM, "kiss: man, man", 87),
        _emoji("1F436", "dog face", 34, group=3),
        _emoji("1F9D4-200D-2642-FE0F", "man's beard", 23),  # "man's" is not the word "man"
    ]


def datasource_json(style: str, missing: set[str] = frozenset()) -> list[dict[str, object]]:
    """A tiny emoji-datasource ``emoji.json`` covering :func:`emojibase_data`; ``missing`` keys lack images."""
    def entry(unified: str) -> dict[str, object]:
        return {"unified": unified, "image": unified.lower() + ".png", f"has_img_{style}": unified not in missing}

    out: list[dict[str, object]] = []
    for e in emojibase_data():
        if e.get("group") in (None, 2):
            continue
        hexcode = str(e["hexcode"])
        row = entry(hexcode)
        skins = [s for s in e.get("skins", []) if isinstance(s["tone"], int)]  # type: ignore[attr-defined]
        if skins:
            row["skin_variations"] = {TONE_HEX[s["tone"] - 1]: entry(s["hexcode"]) for s in skins}
        out.append(row)
    return out


def _png(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (8, 8), (shade % 256, 40, 90, 255)).save(path)


def make_emoji_packages(root: Path, *, google_missing: set[str] = frozenset()) -> Path:
    """Lay out emojibase + two emoji-datasource packages under ``root`` (tiny PNGs)."""
    eb = root / "emojibase-data-17.0.0" / "package"
    (eb / "en").mkdir(parents=True)
    (eb / "meta").mkdir()
    (eb / "en" / "data.json").write_text(json.dumps(emojibase_data()))
    (eb / "meta" / "groups.json").write_text(json.dumps({"groups": {}, "subgroups": SUBGROUPS}))
    for style in ("twitter", "google"):
        pkg = root / f"emoji-datasource-{style}-16.0.0" / "package"
        pkg.mkdir(parents=True)
        data = datasource_json(style, google_missing if style == "google" else set())
        (pkg / "emoji.json").write_text(json.dumps(data))
        names = [r["image"] for r in data] + [v["image"] for r in data for v in r.get("skin_variations", {}).values()]
        for i, name in enumerate(names):
            _png(pkg / "img" / style / "64" / str(name), i)
    return root


def forms() -> list[EmojiForms]:
    return parse_emojibase_forms(emojibase_data(), subgroups=SUBGROUPS)


def triples(edits: list[Edit]) -> set[tuple[str, str, str]]:
    return {(e.source, e.text, e.target) for e in edits}


# ---------------------------------------------------------------------------------------------
# Emoji edit kinds, hand-checked


def test_parse_forms_keeps_single_tones_only() -> None:
    by_label = {f.label: f for f in forms()}
    assert "regional indicator A" not in by_label and "red hair" not in by_label
    assert [t.key for t in by_label["waving hand"].tones] == ["1F44B-1F3FB", "1F44B-1F3FC", "1F44B-1F3FF"]
    assert [t.tone_name for t in by_label["waving hand"].tones] == ["light skin tone", "medium-light skin tone",
                                                                    "dark skin tone"]
    assert [t.tone for t in by_label["handshake"].tones] == [1]
    assert by_label["waving hand"].subgroup == "hand-fingers-open"


def test_tone_names_come_from_the_modifier_labels() -> None:
    data = emojibase_data()
    data[1] = {"label": "pale", "hexcode": "1F3FB", "group": 2, "subgroup": 32}
    wave = next(f for f in parse_emojibase_forms(data) if f.label == "waving hand")
    assert wave.tones[0].tone_name == "pale"


def test_tone_edits() -> None:
    got = [e for e in tone_edits(forms())]
    base = {(e.source, e.text, e.target) for e in got if e.kind == "base-to-tone"}
    assert base == {("1F44B", "light skin tone", "1F44B-1F3FB"), ("1F44B", "medium-light skin tone", "1F44B-1F3FC"),
                    ("1F44B", "dark skin tone", "1F44B-1F3FF"),
                    ("1FAF1-200D-1FAF2", "light skin tone", "1FAF1-200D-1FAF2-1F3FB")}
    tt = {(e.source, e.text, e.target) for e in got if e.kind == "tone-to-tone"}
    assert tt == {("1F44B-1F3FB", "medium-light skin tone", "1F44B-1F3FC"),
                  ("1F44B-1F3FB", "dark skin tone", "1F44B-1F3FF"),
                  ("1F44B-1F3FC", "light skin tone", "1F44B-1F3FB"),
                  ("1F44B-1F3FC", "dark skin tone", "1F44B-1F3FF"),
                  ("1F44B-1F3FF", "light skin tone", "1F44B-1F3FB"),
                  ("1F44B-1F3FF", "medium-light skin tone", "1F44B-1F3FC")}
    assert all(e.source_base == e.target_base == "1F44B" for e in got if e.kind == "tone-to-tone")


def test_gender_swaps() -> None:
    assert triples(gender_swap_edits(forms())) == {
        ("1F9D1", "make it a man", "1F468"), ("1F9D1", "make it a woman", "1F469"),
        ("1F468", "make it a person", "1F9D1"), ("1F468", "make it a woman", "1F469"),
        ("1F469", "make it a person", "1F9D1"), ("1F469", "make it a man", "1F468"),
        ("1F9D1-200D-1F9B0", "make it a man", "1F468-200D-1F9B0"),
        ("1F468-200D-1F9B0", "make it a person", "1F9D1-200D-1F9B0"),
    }


def test_hair_styles() -> None:
    got = hair_style_edits(forms())
    assert triples(got) == {("1F9D1", "red hair", "1F9D1-200D-1F9B0"), ("1F468", "red hair", "1F468-200D-1F9B0")}
    assert {e.kind for e in got} == {"hair-style"}


def test_datasource_images_reads_skin_variations_and_flags() -> None:
    got = datasource_images(datasource_json("google", {"1F44B-1F3FF"}), "google")
    assert got["1F44B"] == "1f44b.png" and got["1F44B-1F3FB"] == "1f44b-1f3fb.png"
    assert "1F44B-1F3FF" not in got
    assert normalised_key_of_fe0f() in got


def normalised_key_of_fe0f() -> str:
    return "1F9D4-200D-2642"  # "1F9D4-200D-2642-FE0F" in the files, FE0F dropped


# ---------------------------------------------------------------------------------------------
# Splits


def test_component_splits_keep_components_together() -> None:
    edges = [("a", "b"), ("b", "c"), ("d", "e"), ("f", "f")] + [(f"n{i}", f"n{i}") for i in range(300)]
    split = assign_component_splits(edges, seed=3)
    assert split["a"] == split["b"] == split["c"] and split["d"] == split["e"]
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert 30 < counts["test"] < 100 and 10 < counts["val"] < 60  # about 20 % / 10 % of 306
    assert split == assign_component_splits(edges, seed=3)
    assert split != assign_component_splits(edges, seed=4)
    with pytest.raises(ValueError):
        assign_component_splits(edges, test_fraction=0.8, val_fraction=0.5)


def _many_forms(n: int) -> list[EmojiForms]:
    data = [_emoji(f"E{i:03X}", f"thing {i}", 16, tones=(1, 2, 3)) for i in range(n)]
    return parse_emojibase_forms(data + emojibase_data(), subgroups=SUBGROUPS)


def test_test_bases_unseen_in_training() -> None:
    fs = _many_forms(60)
    base_of = {f.key: f.key for f in fs} | {t.key: f.key for f in fs for t in f.tones}
    keys = list(base_of)
    images = {"twitter": {k: f"/x/{k}.png" for k in keys}}
    for seed in range(3):
        _, triplets, _, _ = emoji_edit_dataset(fs, images, seed=seed)
        bases: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
        for t in triplets:
            for ident in (t.source, t.target):
                bases[str(t.split)].add(base_of[ident.split("/")[0]])
        assert bases["test"] and bases["train"]
        assert not bases["test"] & bases["train"] and not bases["test"] & bases["val"]
        assert not bases["val"] & bases["train"]


# ---------------------------------------------------------------------------------------------
# Emoji builder


def test_build_emoji_edits(tmp_path: Path) -> None:
    root = make_emoji_packages(tmp_path / "pkgs", google_missing={"1F44B-1F3FF"})
    manifest, trip_path = build_emoji_edits(root, tmp_path / "out")
    items = read_manifest(manifest)
    triplets = read_triplets(trip_path, items)  # raises on any unknown id
    by_id = {it.id: it for it in items}
    got = {(t.source, t.text, t.target) for t in triplets}
    assert ("1F44B/twitter", "dark skin tone", "1F44B-1F3FF/twitter") in got
    assert ("1F44B/google", "dark skin tone", "1F44B-1F3FF/google") not in got  # no google image
    assert ("1F44B-1F3FC/google", "light skin tone", "1F44B-1F3FB/google") in got
    assert ("1F9D1/twitter", "make it a man", "1F468/twitter") in got
    assert ("1F468/google", "red hair", "1F468-200D-1F9B0/google") in got
    # 4 base-to-tone + 6 tone-to-tone + 8 gender swaps + 2 hair per style, minus the 3 that need 1F44B-1F3FF/google
    assert len(triplets) == 2 * 20 - 5
    tone = by_id["1F44B-1F3FB/twitter"]
    assert tone.texts == ("waving hand: light skin tone",) and tone.group == "1F44B-1F3FB"
    assert tone.label == "hand-fingers-open" and tone.style == "twitter"
    assert by_id["1F44B/google"].group == by_id["1F44B/twitter"].group == "1F44B"
    assert all(Path(it.image).is_file() for it in items)
    assert "dog face" not in {it.texts[0] for it in items}  # no edit: not in the manifest
    assert all(by_id[t.source].split == by_id[t.target].split == t.split for t in triplets)
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["edits"] == {"base-to-tone": 4, "tone-to-tone": 6, "gender-swap": 8, "hair-style": 2}
    assert info["triplets"]["all"]["total"] == len(triplets)


def test_emoji_build_is_deterministic(tmp_path: Path) -> None:
    root = make_emoji_packages(tmp_path / "pkgs")
    m1, t1 = build_emoji_edits(root, tmp_path / "a", seed=5)
    m2, t2 = build_emoji_edits(root, tmp_path / "b", seed=5)
    assert t1.read_text() == t2.read_text() and m1.read_text() == m2.read_text()


@pytest.mark.parametrize("target", ["emojibase-data-17.0.0/package/en/data.json",
                                    "emoji-datasource-google-16.0.0/package/emoji.json",
                                    "emojibase-data-17.0.0/package/meta/groups.json"])
def test_emoji_malformed_json_names_the_file(tmp_path: Path, target: str) -> None:
    root = make_emoji_packages(tmp_path / "pkgs")
    (root / target).write_text("[{not json")
    with pytest.raises(XmrError, match=str(root / target)):
        build_emoji_edits(root, tmp_path / "out")


def test_emoji_wrong_shapes_and_missing_files(tmp_path: Path) -> None:
    root = make_emoji_packages(tmp_path / "pkgs")
    data_json = root / "emojibase-data-17.0.0/package/en/data.json"
    data_json.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(XmrError, match=str(data_json)):
        build_emoji_edits(root, tmp_path / "out")
    data_json.write_text(json.dumps([{"label": "no hexcode"}]))
    with pytest.raises(XmrError, match=str(data_json)):
        build_emoji_edits(root, tmp_path / "out")
    data_json.unlink()
    with pytest.raises(XmrError, match=str(data_json)):
        build_emoji_edits(root, tmp_path / "out")
    with pytest.raises(XmrError, match="emoji.json: entry 0"):
        datasource_images([{"unified": "1F600"}], "twitter")
    with pytest.raises(XmrError, match="package folder not found"):
        build_emoji_edits(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


# ---------------------------------------------------------------------------------------------
# Icons

SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path d="M{x},2 L22,22 L2,22 Z"/></svg>'
ICONS = [  # (name, base name or None, aliases)
    ("account", None, ["user"]),
    ("account-outline", "account", []),
    ("account-off", "account", []),
    ("account-off-outline", "account-off", ["user-off-outline"]),
    ("truck", None, []),
    ("ambulance", "truck", []),  # no "truck" word: not a style edit
    ("abacus", None, []),
    ("bell", None, []),
    ("bell-plus", "bell", []),
]


def mdi_meta() -> list[dict[str, object]]:
    ids = {name: f"ID-{i}" for i, (name, _, _) in enumerate(ICONS)}
    return [{"id": ids[n], "baseIconId": ids[b or n], "name": n, "aliases": a, "tags": [], "deprecated": False}
            for n, b, a in ICONS]


def make_mdi(root: Path) -> Path:
    (root / "svg").mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps(mdi_meta()))
    for i, (name, _, _) in enumerate(ICONS):
        (root / "svg" / f"{name}.svg").write_text(SVG.format(x=2 + i))
    return root


def test_style_words() -> None:
    assert style_words("account", "account-off-outline") == "off outline"
    assert style_words("arrow-left", "arrow-left-bold-circle") == "bold circle"
    assert style_words("truck", "ambulance") is None
    assert style_words("bell", "bell") is None


def test_parse_mdi_meta() -> None:
    icons, got = parse_mdi_meta(mdi_meta())
    assert triples(got) == {("account", "outline", "account-outline"), ("account", "off", "account-off"),
                            ("account-off", "outline", "account-off-outline"), ("bell", "plus", "bell-plus")}
    assert set(icons) == {n for n, _, _ in ICONS}
    bad = mdi_meta()
    bad[1]["baseIconId"] = "nope"
    with pytest.raises(XmrError, match="meta.json: icon 'account-outline' has unknown baseIconId"):
        parse_mdi_meta(bad)
    with pytest.raises(XmrError, match="meta.json: entry 0"):
        parse_mdi_meta([{"name": "x"}])


def test_build_icon_edits(tmp_path: Path) -> None:
    mdi = make_mdi(tmp_path / "mdi")
    manifest, trip_path = build_icon_edits(mdi, tmp_path / "out", image_size=16, progress=False)
    items = read_manifest(manifest)
    triplets = read_triplets(trip_path, items)
    assert {(t.source, t.text, t.target) for t in triplets} == {
        ("account", "outline", "account-outline"), ("account", "off", "account-off"),
        ("account-off", "outline", "account-off-outline"), ("bell", "plus", "bell-plus")}
    by_id = {it.id: it for it in items}
    assert set(by_id) == {"account", "account-outline", "account-off", "account-off-outline", "bell", "bell-plus"}
    assert by_id["account-off-outline"].texts == ("account off outline", "user off outline")
    assert by_id["account-off-outline"].label == "account-off" and by_id["account-off-outline"].group == by_id[
        "account-off-outline"].id
    # the chain account -> account-off -> account-off-outline is one split unit
    assert len({by_id[n].split for n in ("account", "account-off", "account-off-outline")}) == 1
    with Image.open(by_id["bell"].image) as im:
        assert im.size == (16, 16)
    m2, t2 = build_icon_edits(mdi, tmp_path / "again", image_size=16, progress=False)
    assert t2.read_text() == trip_path.read_text()


def test_icon_split_by_base(tmp_path: Path) -> None:
    icons = [{"id": f"B{i}", "baseIconId": f"B{i}", "name": f"base{i}"} for i in range(50)]
    icons += [{"id": f"V{i}-{s}", "baseIconId": f"B{i}", "name": f"base{i}-{s}"}
              for i in range(50) for s in ("outline", "off")]
    parsed, edits = parse_mdi_meta(icons)
    images = {name: f"/x/{name}.png" for name in parsed}
    _, triplets, kinds = icon_mod.icon_edit_dataset(parsed, edits, images, seed=1)
    assert set(kinds) == {"icon-style"} and len(triplets) == 100
    train = {t.source for t in triplets if t.split == "train"}
    test = {t.source for t in triplets if t.split == "test"}
    assert test and train and not test & train


def test_icon_malformed_meta_names_the_file(tmp_path: Path) -> None:
    mdi = make_mdi(tmp_path / "mdi")
    (mdi / "meta.json").write_text("{broken")
    with pytest.raises(XmrError, match=str(mdi / "meta.json")):
        build_icon_edits(mdi, tmp_path / "out")
    (mdi / "meta.json").unlink()
    with pytest.raises(XmrError, match=str(mdi / "meta.json")):
        build_icon_edits(mdi, tmp_path / "out")
    with pytest.raises(ValueError, match="image_size"):
        build_icon_edits(mdi, tmp_path / "out", image_size=0)


def test_fetch_icon_edits_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mdi = make_mdi(tmp_path / "mdi")
    calls: list[tuple[str, str, Path]] = []

    def fake_ensure(name: str, version: str, root: Path) -> Path:
        calls.append((name, version, root))
        return mdi

    monkeypatch.setattr(icon_mod, "ensure_package", fake_ensure)
    first = fetch_icon_edits(tmp_path / "cache", image_size=16, progress=False)
    assert calls == [("@mdi/svg", "7.4.47", tmp_path / "cache" / "datasets" / "icons")]
    assert first[0] == tmp_path / "cache" / "datasets" / "icon-edits" / "manifest.jsonl"
    second = fetch_icon_edits(tmp_path / "cache", image_size=16, progress=False)
    assert second == first and len(calls) == 1  # complete: nothing fetched or rebuilt
    fetch_icon_edits(tmp_path / "cache", image_size=16, seed=1, progress=False)
    assert len(calls) == 2  # other settings: rebuilt

