"""Composed-query edit datasets built from real names: emoji (CLDR) and Material Design Icons.

Two datasets of ``(source image, modification text, target image)`` triplets
(:class:`~xmr.data.triplets.EditTriplet`), each a manifest plus a triplet JSONL file.

**emoji-edits** (emojibase-data English CLDR labels, emoji-datasource Twemoji/Noto 64x64 PNGs).
Four kinds of edit, all read off the labels:

- ``base-to-tone``: ``waving hand`` + ``"medium-dark skin tone"`` -> ``waving hand: medium-dark skin tone``;
- ``tone-to-tone``: ``waving hand: light skin tone`` + ``"dark skin tone"`` -> ``waving hand: dark skin tone``;
- ``gender-swap``: ``person: blond hair`` + ``"make it a man"`` -> ``man: blond hair``. Rule: split a base
  emoji's label into words (``:`` and ``,`` count as words); labels holding exactly one of ``person``,
  ``man``, ``woman`` are grouped by the label with that word blanked out; every ordered pair of two
  members of a group is an edit, the text naming the target's word. Labels with several such words
  (``kiss: woman, man``, families) are left out: "make it a man" would not say which person changes.
- ``hair-style``: ``man`` + ``"red hair"`` -> ``man: red hair``: targets labelled ``<w>: <attribute>``
  where ``<w>`` is ``person``, ``man`` or ``woman`` and itself an emoji label; the text is the attribute.

Only single-tone variants are used (emojibase ``tone`` is one number); the mixed-tone variants of
multi-person emoji (``handshake: light skin tone, dark skin tone``) are left out. Tone names are
the CLDR labels of the five skin-tone modifiers (``1F3FB`` .. ``1F3FF``). Gender swaps and hair styles
use base (untoned) emoji only.

Each edit becomes one triplet per style (:data:`EMOJI_STYLES`) in which both source and target have
an image (item ids ``<key>/<style>``, the same scheme as the ``emoji`` dataset). Item ``group`` is the
normalised hexcode, so the same emoji in the other style counts as the same target; ``texts`` is the
CLDR label; ``label`` the CLDR subgroup.

**icon-edits** (``@mdi/svg``; built in :mod:`xmr.data.icon_edits`): an icon
whose ``baseIconId`` names another icon derives from it; the
text is the variant's name words minus the base's words, in the variant's order, joined by spaces
(``account`` -> ``account-off-outline`` gives ``"off outline"``). Variants whose name does not contain
every word of the base name (``truck`` -> ``ambulance``) are siblings, not styled copies, and are left
out. SVGs are rasterised to ``image_size`` PNGs; item id and group are the icon name, ``label`` the base
icon's name, ``texts`` the name and aliases with ``-`` read as spaces.

**Splits** (both datasets): base items (base emoji; base icons) linked by any edit are joined into
connected components (a toned variant belongs to its base emoji; an icon chain follows its bases), and
each whole component goes to ``test`` (hash < :data:`TEST_FRACTION`), ``val`` (< test + val fraction)
or ``train`` by ``SHA-1(f"{seed}:{smallest member}")`` read as a number in [0, 1). So no base emoji or
icon of a test triplet appears in any train or val triplet, and the split is deterministic per seed.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xmr.data.emoji import PACKAGES, normalise_hexcode
from xmr.data.manifest import Item, write_manifest
from xmr.data.triplets import EditTriplet, write_triplets
from xmr.errors import XmrError
from xmr.utils.io import atomic_write_bytes, load_json, save_json

log = logging.getLogger(__name__)

#: Bump when the content or layout of the edit datasets changes, so old builds are redone.
FORMAT_VERSION = 1
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
EMOJI_STYLES = ("twitter", "google")
MANIFEST_NAME = "manifest.jsonl"
TRIPLETS_NAME = "triplets.jsonl"
INFO_NAME = "dataset.json"
GENDER_WORDS = ("person", "man", "woman")
#: CLDR labels of the skin-tone modifiers 1F3FB..1F3FF (emojibase ``tone`` 1..5); used when the data
#: does not hold the modifiers themselves.
DEFAULT_TONE_NAMES = {1: "light skin tone", 2: "medium-light skin tone", 3: "medium skin tone",
                      4: "medium-dark skin tone", 5: "dark skin tone"}
_TONE_MODIFIERS = {"1F3FB": 1, "1F3FC": 2, "1F3FD": 3, "1F3FE": 4, "1F3FF": 5}
_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------
# Shared pieces


@dataclass(frozen=True)
class Edit:
    """One edit between two named things, before images are attached.

    Attributes:
        source: key of the source (normalised hexcode, or icon name).
        text: the modification text.
        target: key of the target.
        kind: edit family (``base-to-tone``, ``tone-to-tone``, ``gender-swap``, ``hair-style``, ``icon-style``).
        source_base: base emoji / base icon of the source (the unit the split keeps together).
        target_base: base emoji / base icon of the target.
    """

    source: str
    text: str
    target: str
    kind: str
    source_base: str
    target_base: str


def unit_hash(seed: int | str, name: str) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``name``."""
    digest = hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()
    return int(digest[:15], 16) / 16 ** 15


def assign_component_splits(edges: Iterable[tuple[str, str]], *, seed: int = 0,
                            test_fraction: float = TEST_FRACTION,
                            val_fraction: float = VAL_FRACTION) -> dict[str, str]:
    """Split the nodes of a graph by connected component, each whole component to one split.

    A component goes to ``test`` when ``unit_hash(seed, min(component))`` is below
    ``test_fraction``, to ``val`` below ``test_fraction + val_fraction``, else to ``train``.

    Args:
        edges: ``(a, b)`` pairs of base keys linked by an edit (``(a, a)`` adds a lone node).

    Returns:
        node -> split.
    """
    if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction <= 1):
        raise XmrError(f"bad split fractions: test={test_fraction}, val={val_fraction}")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is always the smallest member
    out: dict[str, str] = {}
    for node in parent:
        u = unit_hash(seed, find(node))
        out[node] = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
    return out


def dataset_is_complete(out_dir: Path, settings: Mapping[str, object]) -> bool:
    """True when ``out_dir`` holds a finished build made with ``settings``."""
    if not ((out_dir / MANIFEST_NAME).is_file() and (out_dir / TRIPLETS_NAME).is_file()):
        return False
    try:
        info = load_json(out_dir / INFO_NAME)
    except XmrError:
        return False
    return isinstance(info, dict) and all(info.get(k) == v for k, v in settings.items())


def write_edit_dataset(out_dir: Path, items: Sequence[Item], triplets: Sequence[EditTriplet],
                   info: Mapping[str, object]) -> tuple[Path, Path]:
    """Write manifest, triplets, then ``dataset.json`` last (its presence marks a finished build)."""
    (out_dir / INFO_NAME).unlink(missing_ok=True)
    manifest = write_manifest(items, out_dir / MANIFEST_NAME)
    triplet_path = write_triplets(triplets, out_dir / TRIPLETS_NAME)
    save_json(out_dir / INFO_NAME, dict(info))
    return manifest, triplet_path


def split_report(triplets: Sequence[EditTriplet], kinds: Sequence[str]) -> dict[str, dict[str, int]]:
    """Triplets per kind and split, with totals."""
    per: dict[str, Counter[str]] = {}
    for t, kind in zip(triplets, kinds, strict=True):
        per.setdefault(kind, Counter())[str(t.split)] += 1
        per.setdefault("all", Counter())[str(t.split)] += 1
    return {k: {s: c[s] for s in _SPLITS} | {"total": sum(c.values())} for k, c in per.items()}


def edit_report(edits: Sequence[Edit]) -> dict[str, int]:
    """Edits (before styles) per kind."""
    return dict(Counter(e.kind for e in edits))


# ---------------------------------------------------------------------------------------------
# Emoji: parsing emojibase


@dataclass(frozen=True)
class ToneVariant:
    """One single-tone variant of an emoji: key, CLDR label, tone number (1..5) and tone name."""

    key: str
    label: str
    tone: int
    tone_name: str


@dataclass(frozen=True)
class EmojiForms:
    """A base emoji and its single-tone variants (empty when it takes no skin tone)."""

    key: str
    label: str
    subgroup: str | None
    tones: tuple[ToneVariant, ...]


def _tone_names(data: Sequence[object]) -> dict[int, str]:
    """Tone number -> CLDR name, from the modifier emoji in ``data`` (defaults for any missing)."""
    names = dict(DEFAULT_TONE_NAMES)
    for e in data:
        if isinstance(e, dict) and isinstance(e.get("label"), str):
            tone = _TONE_MODIFIERS.get(normalise_hexcode(str(e.get("hexcode") or "")))
            if tone is not None and e["label"].strip():
                names[tone] = e["label"].strip()
    return names


def parse_emojibase_forms(data: object, *, subgroups: Mapping[str, str] | None = None,
                          source: str = "data.json") -> list[EmojiForms]:
    """Base emoji with their single-tone variants from parsed emojibase ``<locale>/data.json``.

    Entries with no group (regional indicators) and the skin-tone/hair components (group 2) are
    left out; variants whose ``tone`` is a list (mixed tones) are left out too.

    Args:
        data: the parsed JSON list.
        subgroups: emojibase subgroup number (as a string) -> name, from ``meta/groups.json``.
        source: the file name used in error messages.

    Raises:
        XmrError: ``data`` is not a list of objects with ``hexcode`` and ``label`` (naming ``source``).
    """
    if not isinstance(data, list):
        raise XmrError(f"{source}: expected a JSON list of emoji, got {type(data).__name__}")
    tone_names = _tone_names(data)
    subgroups = subgroups or {}
    out: list[EmojiForms] = []
    seen: set[str] = set()
    for i, e in enumerate(data):
        if not isinstance(e, dict) or not isinstance(e.get("hexcode"), str) or not isinstance(e.get("label"), str):
            raise XmrError(f"{source}: entry {i} is not an emoji object with 'hexcode' and 'label'")
        key, label = normalise_hexcode(e["hexcode"]), e["label"].strip()
        if e.get("group") is None or e.get("group") == 2 or not key or not label or key in seen:
            continue
        seen.add(key)
        tones: list[ToneVariant] = []
        skins = e.get("skins") or []
        if not isinstance(skins, list):
            raise XmrError(f"{source}: emoji {e['hexcode']!r} has 'skins' that is not a list")
        for s in skins:
            if not isinstance(s, dict) or not isinstance(s.get("hexcode"), str):
                raise XmrError(f"{source}: emoji {e['hexcode']!r} has a malformed skin variant")
            tone = s.get("tone")
            if not isinstance(tone, int) or isinstance(tone, bool) or tone not in tone_names:
                continue
            tones.append(ToneVariant(key=normalise_hexcode(s["hexcode"]), label=str(s.get("label") or "").strip(),
                                     tone=tone, tone_name=tone_names[tone]))
        out.append(EmojiForms(key=key, label=label, subgroup=subgroups.get(str(e.get("subgroup"))),
                              tones=tuple(sorted(tones, key=lambda t: t.tone))))
    return out


def read_emojibase_forms(emojibase_dir: Path, locale: str = "en") -> list[EmojiForms]:
    """:func:`parse_emojibase_forms` of ``<emojibase_dir>/<locale>/data.json`` (+ ``meta/groups.json``).

    Raises:
        XmrError: a file is missing or malformed (naming it).
    """
    path = Path(emojibase_dir) / locale / "data.json"
    data = load_json(path)
    meta_path = Path(emojibase_dir) / "meta" / "groups.json"
    meta = load_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("subgroups", {}), dict):
        raise XmrError(f"{meta_path}: expected an object with a 'subgroups' object")
    subgroups = {str(k): str(v) for k, v in meta.get("subgroups", {}).items()}
    forms = parse_emojibase_forms(data, subgroups=subgroups, source=str(path))
    if not forms:
        raise XmrError(f"{path}: no emoji found")
    return forms


# ---------------------------------------------------------------------------------------------
# Emoji: the four edit kinds


def tone_edits(forms: Sequence[EmojiForms]) -> list[Edit]:
    """``base-to-tone`` (base + tone name -> variant) and ``tone-to-tone`` (variant + other tone name).

    Only emoji with all their single-tone variants in ``forms`` contribute; each base with ``n``
    variants gives ``n`` base-to-tone and ``n * (n - 1)`` tone-to-tone edits.
    """
    out: list[Edit] = []
    for f in forms:
        for t in f.tones:
            out.append(Edit(f.key, t.tone_name, t.key, "base-to-tone", f.key, f.key))
        for a, b in itertools.permutations(f.tones, 2):
            out.append(Edit(a.key, b.tone_name, b.key, "tone-to-tone", f.key, f.key))
    return out


def _words(label: str) -> list[str]:
    """Label words, with ``:`` and ``,`` as words of their own."""
    return label.replace(":", " : ").replace(",", " , ").split()


def gender_swap_edits(forms: Sequence[EmojiForms]) -> list[Edit]:
    """``gender-swap`` edits between base emoji whose labels differ only in one person/man/woman word.

    See the module docstring for the rule; the text is ``"make it a <word>"``.
    """
    groups: dict[tuple[str, ...], list[tuple[str, EmojiForms]]] = {}
    for f in forms:
        words = _words(f.label)
        slots = [i for i, w in enumerate(words) if w in GENDER_WORDS]
        if len(slots) != 1:
            continue
        i = slots[0]
        template = (*words[:i], "_", *words[i + 1:])
        groups.setdefault(template, []).append((words[i], f))
    out: list[Edit] = []
    for members in groups.values():
        for (_, a), (word_b, b) in itertools.permutations(members, 2):
            out.append(Edit(a.key, f"make it a {word_b}", b.key, "gender-swap", a.key, b.key))
    return out


def hair_style_edits(forms: Sequence[EmojiForms]) -> list[Edit]:
    """``hair-style`` edits: ``person``/``man``/``woman`` + attribute -> ``<word>: <attribute>``."""
    by_label = {f.label: f for f in forms}
    out: list[Edit] = []
    for f in forms:
        word, sep, attribute = f.label.partition(": ")
        base = by_label.get(word)
        if sep and word in GENDER_WORDS and base is not None and attribute.strip() and "skin tone" not in attribute:
            out.append(Edit(base.key, attribute.strip(), f.key, "hair-style", base.key, f.key))
    return out


def emoji_edits(forms: Sequence[EmojiForms]) -> list[Edit]:
    """All four kinds, in the order tone edits, gender swaps, hair styles."""
    return [*tone_edits(forms), *gender_swap_edits(forms), *hair_style_edits(forms)]


# ---------------------------------------------------------------------------------------------
# Emoji: images and triplets


def datasource_images(data: object, style: str, *, source: str = "emoji.json") -> dict[str, str]:
    """Normalised key -> image file name for every emoji and skin variation in a parsed ``emoji.json``.

    Entries or variations flagged ``has_img_<style>: false`` are left out.

    Raises:
        XmrError: ``data`` is not a list of objects with ``unified`` and ``image`` (naming ``source``).
    """
    if not isinstance(data, list):
        raise XmrError(f"{source}: expected a JSON list of emoji, got {type(data).__name__}")
    flag = f"has_img_{style}"
    out: dict[str, str] = {}
    for i, e in enumerate(data):
        if not isinstance(e, dict) or not isinstance(e.get("unified"), str) or not isinstance(e.get("image"), str):
            raise XmrError(f"{source}: entry {i} is not an emoji object with 'unified' and 'image'")
        variations = e.get("skin_variations") or {}
        if not isinstance(variations, dict):
            raise XmrError(f"{source}: emoji {e['unified']!r} has 'skin_variations' that is not an object")
        for v in (e, *variations.values()):
            if not isinstance(v, dict) or not isinstance(v.get("unified"), str) or not isinstance(v.get("image"), str):
                raise XmrError(f"{source}: emoji {e['unified']!r} has a malformed skin variation")
            if v.get(flag, True) is not False:
                out.setdefault(normalise_hexcode(v["unified"]), v["image"])
    return out


def emoji_labels(forms: Sequence[EmojiForms]) -> dict[str, tuple[str, str | None]]:
    """Key -> (CLDR label, subgroup) for every base emoji and tone variant."""
    out: dict[str, tuple[str, str | None]] = {}
    for f in forms:
        out[f.key] = (f.label, f.subgroup)
        for t in f.tones:
            out[t.key] = (t.label or f"{f.label}: {t.tone_name}", f.subgroup)
    return out


def edit_triplets(edits: Sequence[Edit], images: Mapping[str, Mapping[str, str]],
                  split_of: Mapping[str, str], *, id_format: str = "{key}/{style}"
                  ) -> tuple[list[tuple[str, str, str]], list[EditTriplet], list[str]]:
    """One triplet per (edit, style) where both source and target have an image in that style.

    Args:
        edits: the edits.
        images: style -> key -> image path.
        split_of: base key -> split (see :func:`assign_component_splits`).
        id_format: item id from ``key`` and ``style``.

    Returns:
        ``(used, triplets, kinds)``: the ``(key, style, item id)`` of every image referenced (first
        use order, no repeats), the triplets and the kind of each triplet.
    """
    used: dict[str, tuple[str, str, str]] = {}
    triplets: list[EditTriplet] = []
    kinds: list[str] = []
    for style, have in images.items():
        for e in edits:
            if e.source not in have or e.target not in have:
                continue
            split = split_of[e.source_base]
            ids = []
            for key in (e.source, e.target):
                item_id = id_format.format(key=key, style=style)
                used.setdefault(item_id, (key, style, item_id))
                ids.append(item_id)
            triplets.append(EditTriplet(source=ids[0], text=e.text, target=ids[1], split=split))
            kinds.append(e.kind)
    return list(used.values()), triplets, kinds


def emoji_edit_dataset(forms: Sequence[EmojiForms], images: Mapping[str, Mapping[str, str]], *, seed: int = 0
                       ) -> tuple[list[Item], list[EditTriplet], list[str], list[Edit]]:
    """Items and triplets of the emoji edits, from parsed forms and ``style -> key -> image`` maps.

    Returns:
        ``(items, triplets, kinds, edits)``; item ids are ``<key>/<style>``, ``group`` the key.
    """
    edits = emoji_edits(forms)
    split_of = assign_component_splits(((e.source_base, e.target_base) for e in edits), seed=seed)
    base_of = {f.key: f.key for f in forms} | {t.key: f.key for f in forms for t in f.tones}
    used, triplets, kinds = edit_triplets(edits, images, split_of)
    labels = emoji_labels(forms)
    items = [Item(id=item_id, image=str(images[style][key]), texts=(labels[key][0],), label=labels[key][1],
                  group=key, style=style, split=split_of[base_of[key]])
             for key, style, item_id in used]
    return items, triplets, kinds, edits


def _package_dir(packages_root: Path, role: str) -> Path:
    name, version = PACKAGES[role]
    path = Path(packages_root) / f"{name.lstrip('@').replace('/', '-')}-{version}" / "package"
    if not path.is_dir():
        raise XmrError(f"{path}: package folder not found (fetch the emoji dataset first)")
    return path


def build_emoji_edits(packages_root: Path, out_dir: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Build the emoji-edits dataset from the unpacked emoji packages; return (manifest, triplets).

    The used PNGs are copied to ``out_dir/png/<style>/<key>.png`` so the dataset stands alone;
    ``out_dir/dataset.json`` holds the rules and the counts per kind and split.

    Args:
        packages_root: the folder holding ``emojibase-data-17.0.0/``, ``emoji-datasource-twitter-16.0.0/``
            and ``emoji-datasource-google-16.0.0/`` (each with its ``package/`` inside).
        out_dir: where the dataset is written.
        seed: split seed.

    Raises:
        XmrError: a package, file or image is missing, or a JSON file is malformed (naming it).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    forms = read_emojibase_forms(_package_dir(packages_root, "emojibase"))
    images: dict[str, dict[str, str]] = {}
    for style in EMOJI_STYLES:
        pkg = _package_dir(packages_root, style)
        names = datasource_images(load_json(pkg / "emoji.json"), style, source=str(pkg / "emoji.json"))
        folder = pkg / "img" / style / "64"
        images[style] = {k: str(folder / n) for k, n in names.items() if (folder / n).is_file()}
    items, triplets, kinds, edits = emoji_edit_dataset(forms, images, seed=seed)
    local = []
    for it in items:
        dst = out_dir / "png" / str(it.style) / f"{it.group}.png"
        if not dst.is_file():
            atomic_write_bytes(dst, Path(it.image).read_bytes())
        local.append(Item(id=it.id, image=str(dst.resolve()), texts=it.texts, label=it.label, group=it.group,
                          style=it.style, split=it.split))
    info = {
        "name": "emoji-edits", "format": FORMAT_VERSION, "seed": seed, "styles": list(EMOJI_STYLES),
        "packages": {n: v for role, (n, v) in PACKAGES.items() if role != "openmoji"},
        "split_rule": (f"connected components of base emoji linked by edits; SHA-1('<seed>:<smallest key>') "
                       f"< {TEST_FRACTION} test, < {TEST_FRACTION + VAL_FRACTION:g} val, else train"),
        "edits": edit_report(edits), "triplets": split_report(triplets, kinds), "items": len(local),
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    paths = write_edit_dataset(out_dir, local, triplets, info)
    log.info("emoji-edits: %d items, triplets per kind and split %s", len(local), info["triplets"])
    return paths
