"""The ``icons`` dataset: named icons of many sets as image-text pairs, for training on far more pairs.

Source: the Iconify collections in one npm package, ``@iconify/json`` (:data:`ICONIFY_PACKAGE`),
fetched with ``npm pack`` like the emoji. Each set is ``json/<prefix>.json``::

    {"prefix": "mdi", "width": 24, "height": 24, "info": {"name": ..., "license": {"spdx": ...}},
     "icons": {"home": {"body": "<path .../>"}, ...},
     "aliases": {"house": {"parent": "home"}, ...}, "categories": {"Home": ["home", ...]}}

The SVG of an icon is ``<svg viewBox="left top width height">`` around its ``body`` (sizes from
the icon, else the set, else 16); ``currentColor`` is drawn black on a transparent background, as
the emoji are.

**Items.** One per kept icon: id and group ``<prefix>/<name>``, style ``<prefix>`` (a set is an
art style), label ``<prefix>:<category>`` when the set has categories. ``texts``: the name made
readable (``-``/``_`` read as spaces, a size suffix dropped), then the readable names of its plain
aliases (an alias with a transform, e.g. a rotation, is another picture and is left out),
de-duplicated case-insensitively.

**Which icons** (:class:`IconSet`): hidden (deprecated) icons are left out; a set with weight
variants keeps one weight (Phosphor: regular), a set with size variants one size per icon
(Octicons: 24, else 16; the size is dropped from its name and aliases). Icons are de-duplicated
across sets by the rendered image (SHA-1 of the PNG bytes: the first set in
:data:`DEFAULT_SETS` order keeps it) and, within a family shipped in several versions, by taking
one version only (Font Awesome 6, not 5). The same name drawn by two sets is kept twice: two
styles of one concept are what cross-style training needs.

**No emoji.** A set in the Iconify ``Emoji`` category, or whose prefix or name says emoji, is
refused: emoji art styles beyond the four xmr ships are held out to evaluate unseen styles.

**Splits.** By ``SHA-1("icons:<readable name>")`` read as a number in [0, 1): below
:data:`TEST_FRACTION` test, below test + :data:`VAL_FRACTION` val, else train; so one name is in
one split across all sets. Used as an extra training source (``xmr train emoji.jsonl
icons.jsonl:train,val,test``) every split may be taken.

Deterministic: the same package version and set list give a byte-identical manifest (items in
set order, then name order; image paths relative to the manifest).

**icons-extra** (:func:`fetch_extra_icons`): the 22 further sets of :data:`EXTRA_SETS`, most of
them in colour, built the same way into their own dataset folder from the same unpacked package
(kept once, under ``datasets/icons``). Its splits follow the same name hash, so a name is in one
split across both datasets.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmr.data.edits import unit_hash
from xmr.data.emoji import ensure_package, rasterise_svgs, unique_texts
from xmr.data.manifest import Item, finished_manifest, write_manifest
from xmr.errors import XmrError
from xmr.utils.io import load_json, save_json
from xmr.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

ICONIFY_PACKAGE = ("@iconify/json", "2.2.535")
#: Bump when the content or layout of the dataset changes, so old builds are redone.
FORMAT_VERSION = 2  # 2: the size suffix is dropped from aliases too
MANIFEST_NAME = "manifest.jsonl"
PACKAGE_HOME = "icons"  # the dataset folder that keeps the package's tarball and unpacked copy
TEST_FRACTION = 0.1
VAL_FRACTION = 0.1
DEFAULT_SIZE = 16  # Iconify's default icon width / height
_SVG_NS = "http://www.w3.org/2000/svg"


@dataclass(frozen=True)
class IconSet:
    """One Iconify set and which of its icons to keep.

    Attributes:
        prefix: the set's Iconify prefix (``mdi``, ``game-icons`` ...).
        drop_suffixes: name endings of variants left out (``-bold`` ...), keeping the plain icon.
        size_suffixes: size (or variant) endings in order of preference (``("24", "16")``,
            ``("line", "fill")``): one icon per base name is kept, the first ending it has; the
            ending is dropped from the readable name.
    """

    prefix: str
    drop_suffixes: tuple[str, ...] = ()
    size_suffixes: tuple[str, ...] = ()


#: the sets of ``xmr data fetch icons``: drawn objects (Game Icons) and the UI sets with names
DEFAULT_SETS: tuple[IconSet, ...] = (
    IconSet("game-icons"),
    IconSet("mdi"),
    IconSet("tabler"),
    IconSet("ph", drop_suffixes=("-thin", "-light", "-bold", "-fill", "-duotone")),
    IconSet("fa6-solid"),
    IconSet("fa6-regular"),
    IconSet("lucide"),
    IconSet("bi"),
    IconSet("octicon", size_suffixes=("24", "16", "12", "48", "96")),
)

#: the sets of ``xmr data fetch icons-extra``: a second tier, most of it in colour (the multicolour
#: sets are the nearest in style to the emoji), the rest drawn objects, map and health pictograms
#: and more UI sets. Every set here is disjoint from :data:`DEFAULT_SETS`; ``-flat`` / ``-solid`` /
#: ``-fill`` twins of an icon are left out, keeping one drawing per name.
EXTRA_SETS: tuple[IconSet, ...] = (
    IconSet("icon-park"),
    IconSet("streamline-color", drop_suffixes=("-flat",)),
    IconSet("streamline-freehand-color"),
    IconSet("streamline-flex-color", drop_suffixes=("-flat",)),
    IconSet("streamline-plump-color", drop_suffixes=("-flat",)),
    IconSet("streamline-sharp-color", drop_suffixes=("-flat",)),
    IconSet("streamline-ultimate-color"),
    IconSet("marketeq"),
    IconSet("flat-color-icons"),
    IconSet("fluent-color", size_suffixes=("48", "32", "28", "24", "20", "16")),
    IconSet("healthicons", drop_suffixes=("-outline", "-24px")),
    IconSet("pinhead"),
    IconSet("medical-icon"),
    IconSet("covid"),
    IconSet("guidance"),
    IconSet("wi"),
    IconSet("map"),
    IconSet("carbon", drop_suffixes=("-filled",)),
    IconSet("iconoir", drop_suffixes=("-solid",)),
    IconSet("ri", size_suffixes=("line", "fill")),
    IconSet("mingcute", size_suffixes=("line", "fill")),
    IconSet("solar", drop_suffixes=("-bold", "-duotone", "-broken", "-outline"), size_suffixes=("linear",)),
)


@dataclass(frozen=True)
class Icon:
    """One icon of a set, ready to draw: its key, texts, SVG and label."""

    prefix: str
    name: str
    texts: tuple[str, ...]
    svg: str
    category: str | None


def readable(name: str) -> str:
    """An icon name as words: ``arrow-left_thin`` -> ``arrow left thin``."""
    return " ".join(name.replace("_", "-").split("-")).strip()


def check_not_emoji(prefix: str, info: Mapping[str, Any], source: str) -> None:
    """Refuse an emoji set (held out to evaluate unseen emoji styles), naming it."""
    name = str(info.get("name", ""))
    if info.get("category") == "Emoji" or "emoji" in prefix.lower() or "emoji" in name.lower():
        raise XmrError(f"{source}: icon set {prefix!r} ({name}) is an emoji set; emoji art styles beyond the four xmr "
                       "ships are held out for evaluation, not trained on")


def svg_of(body: str, left: float, top: float, width: float, height: float) -> str:
    """A standalone SVG document around an Iconify ``body`` (``currentColor`` drawn black)."""
    return (f'<svg xmlns="{_SVG_NS}" viewBox="{left:g} {top:g} {width:g} {height:g}" '
            f'width="{width:g}" height="{height:g}" style="color:#000">{body}</svg>')


def parse_icon_set(data: object, rule: IconSet, *, source: str) -> tuple[list[Icon], dict[str, Any]]:
    """The icons to keep from one parsed Iconify set file, and its ``info`` (name, licence ...).

    Raises:
        XmrError: not an Iconify set (naming ``source``), another prefix than ``rule``'s, or an emoji set.
    """
    if not isinstance(data, dict) or not isinstance(data.get("icons"), dict):
        raise XmrError(f"{source}: not an Iconify icon set (a JSON object with 'icons' expected)")
    if data.get("prefix") != rule.prefix:
        raise XmrError(f"{source}: prefix {data.get('prefix')!r}, expected {rule.prefix!r}")
    raw_info = data.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    check_not_emoji(rule.prefix, info, source)
    icons: dict[str, Any] = data["icons"]
    set_w, set_h = data.get("width", DEFAULT_SIZE), data.get("height", DEFAULT_SIZE)
    category: dict[str, str] = {}
    for cat in sorted(data.get("categories") or {}):
        for n in data["categories"][cat]:
            category.setdefault(n, cat)
    plain_aliases: dict[str, list[str]] = {}
    for alias, spec in sorted((data.get("aliases") or {}).items()):
        if isinstance(spec, dict) and set(spec) == {"parent"} and spec["parent"] in icons:
            plain_aliases.setdefault(spec["parent"], []).append(alias)
    chosen = _choose(rule, [n for n, v in icons.items() if isinstance(v, dict) and not v.get("hidden")])
    out: list[Icon] = []
    for name, shown in sorted(chosen.items()):
        v = icons[name]
        body = v.get("body")
        if not isinstance(body, str) or not body.strip():
            continue
        svg = svg_of(body, v.get("left", 0), v.get("top", 0), v.get("width", set_w), v.get("height", set_h))
        names = [shown, *(_drop_size(a, rule) for a in plain_aliases.get(name, []))]
        out.append(Icon(rule.prefix, name, unique_texts(map(readable, names)), svg, category.get(name)))
    return out, dict(info)


def _drop_size(name: str, rule: IconSet) -> str:
    """``name`` without a trailing size of ``rule`` (``clippy-24`` -> ``clippy``)."""
    base, _, size = name.rpartition("-")
    return base if base and size in rule.size_suffixes else name


def _choose(rule: IconSet, names: Sequence[str]) -> dict[str, str]:
    """``{icon name: name to show}`` after the rule's weight and size choices."""
    names = [n for n in names if not any(n.endswith(s) for s in rule.drop_suffixes)]
    if not rule.size_suffixes:
        return {n: n for n in names}
    by_base: dict[str, dict[str, str]] = {}
    for n in names:
        base, _, size = n.rpartition("-")
        if base and size in rule.size_suffixes:
            by_base.setdefault(base, {})[size] = n
        else:
            by_base.setdefault(n, {})[""] = n
    out: dict[str, str] = {}
    for base, sizes in by_base.items():
        for size in (*rule.size_suffixes, ""):
            if size in sizes:
                out[sizes[size]] = base
                break
    return out


def _split(text: str) -> str:
    u = unit_hash("icons", text.casefold())  # SHA-1("icons:<text>") in [0, 1)
    return "test" if u < TEST_FRACTION else "val" if u < TEST_FRACTION + VAL_FRACTION else "train"


def build_icon_items(package: Path, out_dir: Path, sets: Sequence[IconSet] = DEFAULT_SETS, *,
                     image_size: int = 224, progress: bool | None = None
                     ) -> tuple[list[Item], dict[str, Any]]:
    """Items of ``sets`` from an unpacked ``@iconify/json`` package, rasterised under ``out_dir``.

    Returns:
        ``(items, report)``: the items in set then name order, and per set its name, licence,
        icons kept, duplicates dropped and unrenderable SVGs.

    Raises:
        XmrError: a set missing from the package, not a set file, or an emoji set.
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise XmrError(f"image_size must be a positive integer, got {image_size!r}")
    png_dir = Path(out_dir) / "png" / str(image_size)
    parsed: list[tuple[IconSet, list[Icon], dict[str, Any]]] = []
    for rule in sets:
        path = package / "json" / f"{rule.prefix}.json"
        if not path.is_file():
            raise XmrError(f"icon set {rule.prefix!r} is not in {ICONIFY_PACKAGE[0]}@{ICONIFY_PACKAGE[1]} "
                           f"({path} missing)")
        parsed.append((rule, *parse_icon_set(load_json(path), rule, source=str(path))))
    jobs: list[tuple[Path, Path]] = []
    svg_dir = Path(out_dir) / "svg"
    for rule, icons, _ in parsed:
        for icon in icons:
            src = svg_dir / rule.prefix / f"{icon.name}.svg"
            if not src.is_file() or src.read_text() != icon.svg:
                src.parent.mkdir(parents=True, exist_ok=True)
                src.write_text(icon.svg)
            jobs.append((src, png_dir / rule.prefix / f"{icon.name}.png"))
    failed = set(rasterise_svgs(jobs, image_size, progress=progress, what="icons"))
    items: list[Item] = []
    seen: set[str] = set()
    report: dict[str, Any] = {}
    for rule, icons, info in parsed:
        kept = duplicates = broken = 0
        for icon in icons:
            src = svg_dir / rule.prefix / f"{icon.name}.svg"
            png = png_dir / rule.prefix / f"{icon.name}.png"
            if src in failed:
                broken += 1
                continue
            digest = hashlib.sha1(png.read_bytes()).hexdigest()
            if digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
            key = f"{rule.prefix}/{icon.name}"
            items.append(Item(id=key, image=str(png.resolve()), texts=icon.texts,
                              label=f"{rule.prefix}:{icon.category}" if icon.category else None, group=key,
                              style=rule.prefix, split=_split(icon.texts[0])))
            kept += 1
        licence, author = (v if isinstance(v, dict) else {} for v in (info.get("license"), info.get("author")))
        report[rule.prefix] = {"name": info.get("name"), "license": licence.get("spdx"),
                               "license_title": licence.get("title"), "author": author.get("name"),
                               "icons": kept, "duplicates_dropped": duplicates, "unrenderable": broken}
    return items, report


def fetch_icons(cache_dir: Path | None = None, *, image_size: int = 224, sets: Sequence[IconSet] = DEFAULT_SETS,
                progress: bool | None = None, name: str = "icons") -> Path:
    """Fetch and build the ``icons`` dataset (or another list of sets as dataset ``name``); return its manifest.

    Idempotent and resumable like the emoji: the tarball, the unpacked package and every PNG are
    kept; the manifest is written last, so its presence means the build finished with these
    settings (``dataset.json`` records the package, sets, image size and each set's licence).
    Images are de-duplicated within one dataset, not across two.

    Raises:
        XmrError: npm is missing, the package cannot be fetched, or a set is missing / an emoji set.
    """
    datasets = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "datasets"
    root = datasets / name
    settings = {"format": FORMAT_VERSION, "package": list(ICONIFY_PACKAGE), "image_size": image_size,
                "sets": [vars(s) | {"drop_suffixes": list(s.drop_suffixes), "size_suffixes": list(s.size_suffixes)}
                         for s in sets]}
    manifest = root / MANIFEST_NAME
    if finished_manifest(root, settings, MANIFEST_NAME) is not None:
        return manifest
    package = ensure_package(*ICONIFY_PACKAGE, datasets / PACKAGE_HOME)  # one copy for every icons dataset
    items, report = build_icon_items(package, root, sets, image_size=image_size, progress=progress)
    splits = Counter(str(it.split) for it in items)
    save_json(root / "dataset.json", {"name": name, **settings, "sets_report": report,
                                      "items": len(items), "splits": dict(sorted(splits.items()))})
    write_manifest(items, manifest)
    log.info("%s dataset: %d icons from %d sets (%s); splits %s", name, len(items), len(sets),
             ", ".join(f"{p} {r['icons']}" for p, r in report.items()), dict(splits))
    return manifest


def fetch_extra_icons(cache_dir: Path | None = None, *, image_size: int = 224, progress: bool | None = None) -> Path:
    """Fetch and build ``icons-extra``: the :data:`EXTRA_SETS` of the same package; return its manifest."""
    return fetch_icons(cache_dir, image_size=image_size, sets=EXTRA_SETS, progress=progress, name="icons-extra")
