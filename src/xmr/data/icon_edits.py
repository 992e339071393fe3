"""The icon-edits dataset from Material Design Icons (``@mdi/svg``), see :mod:`xmr.data.edits`.

An icon whose ``baseIconId`` names another icon derives from it; the triplet's text is the
variant's name words minus the base's (``account`` -> ``account-off-outline``: ``"off outline"``).
Splits, the dataset layout and the completion marker are shared with the emoji edits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from xmr.data.edits import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    TEST_FRACTION,
    TRIPLETS_NAME,
    VAL_FRACTION,
    Edit,
    assign_component_splits,
    dataset_is_complete,
    edit_report,
    edit_triplets,
    split_report,
    write_edit_dataset,
)
from xmr.data.emoji import ensure_package, rasterise_svgs
from xmr.data.manifest import Item
from xmr.data.triplets import EditTriplet
from xmr.errors import XmrError
from xmr.utils.io import load_json
from xmr.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

MDI_PACKAGE = ("@mdi/svg", "7.4.47")

def style_words(base_name: str, variant_name: str) -> str | None:
    """The variant's name words minus the base's (each once), in order, joined by spaces.

    ``("account", "account-off-outline")`` gives ``"off outline"``; None when the variant does not
    hold every base word or adds nothing.
    """
    rest = variant_name.split("-")
    for w in base_name.split("-"):
        if w not in rest:
            return None
        rest.remove(w)
    return " ".join(rest) or None


def parse_mdi_meta(data: object, *, source: str = "meta.json") -> tuple[dict[str, dict[str, object]], list[Edit]]:
    """Icons by name and their ``icon-style`` edits from a parsed MDI ``meta.json``.

    Returns:
        ``(icons, edits)``: name -> icon object, and one edit per derived icon whose name holds its
        base's words (see :func:`style_words`); ``source_base``/``target_base`` are the base's name
        and the variant's name.

    Raises:
        XmrError: ``data`` is not a list of icons with ``id``, ``baseIconId`` and ``name``, or a
            ``baseIconId`` names no icon (naming ``source``).
    """
    if not isinstance(data, list):
        raise XmrError(f"{source}: expected a JSON list of icons, got {type(data).__name__}")
    by_id: dict[str, dict[str, object]] = {}
    for i, icon in enumerate(data):
        if not isinstance(icon, dict) or not all(isinstance(icon.get(k), str) for k in ("id", "baseIconId", "name")):
            raise XmrError(f"{source}: entry {i} is not an icon object with 'id', 'baseIconId' and 'name'")
        by_id[str(icon["id"])] = icon
    edits: list[Edit] = []
    skipped = 0
    for icon in by_id.values():
        if icon["baseIconId"] == icon["id"]:
            continue
        base = by_id.get(str(icon["baseIconId"]))
        if base is None:
            raise XmrError(f"{source}: icon {icon['name']!r} has unknown baseIconId {icon['baseIconId']!r}")
        words = style_words(str(base["name"]), str(icon["name"]))
        if words is None:
            skipped += 1
            continue
        edits.append(Edit(str(base["name"]), words, str(icon["name"]), "icon-style",
                          str(base["name"]), str(icon["name"])))
    if skipped:
        log.info("%s: %d derived icon(s) whose name lacks a base word left out", source, skipped)
    return {str(icon["name"]): icon for icon in by_id.values()}, edits


def _icon_texts(icon: Mapping[str, object]) -> tuple[str, ...]:
    """Name then aliases, ``-`` read as a space, without repeats."""
    aliases = icon.get("aliases")
    names = [str(icon["name"]), *(a for a in (aliases if isinstance(aliases, list) else []) if isinstance(a, str))]
    return tuple(dict.fromkeys(n.replace("-", " ").strip() for n in names if n.strip()))


def icon_edit_dataset(icons: Mapping[str, Mapping[str, object]], edits: Sequence[Edit],
                      images: Mapping[str, str], *, seed: int = 0
                      ) -> tuple[list[Item], list[EditTriplet], list[str]]:
    """Items and triplets of the icon edits.

    Args:
        icons: name -> icon object (from :func:`parse_mdi_meta`).
        edits: the icon edits.
        images: icon name -> PNG path (icons without one are left out).
        seed: split seed.

    Returns:
        ``(items, triplets, kinds)``; item id and group are the icon name, style ``"mdi"``.
    """
    split_of = assign_component_splits(((e.source_base, e.target_base) for e in edits), seed=seed)
    base_name = {e.target: e.source for e in edits}
    used, triplets, kinds = edit_triplets(edits, {"mdi": images}, split_of, id_format="{key}")
    items = [Item(id=name, image=str(images[name]), texts=_icon_texts(icons[name]),
                  label=base_name.get(name, name), group=name, style="mdi", split=split_of[name])
             for name, _, _ in used]
    return items, triplets, kinds


def build_icon_edits(mdi_root: Path, out_dir: Path, *, seed: int = 0, image_size: int = 64,
                     progress: bool | None = None) -> tuple[Path, Path]:
    """Build the icon-edits dataset from an unpacked ``@mdi/svg`` package; return (manifest, triplets).

    SVGs are rasterised once to ``out_dir/png/<image_size>/<name>.png`` (kept across runs).

    Args:
        mdi_root: the package folder holding ``meta.json`` and ``svg/``.
        out_dir: where the dataset is written.
        seed: split seed.
        image_size: PNG side in pixels.
        progress: show a progress bar (None: only on a terminal).

    Raises:
        XmrError: ``meta.json`` is missing or malformed (naming it).
        ValueError: ``image_size`` is not a positive integer.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise XmrError(f"image_size must be a positive integer, got {image_size!r}")
    start = time.perf_counter()
    mdi_root, out_dir = Path(mdi_root), Path(out_dir)
    meta = mdi_root / "meta.json"
    icons, edits = parse_mdi_meta(load_json(meta), source=str(meta))
    needed = sorted({e.source for e in edits} | {e.target for e in edits})
    png_dir = out_dir / "png" / str(image_size)
    jobs = [(mdi_root / "svg" / f"{name}.svg", png_dir / f"{name}.png") for name in needed]
    missing = [src for src, _ in jobs if not src.is_file()]
    failed = set(rasterise_svgs([j for j in jobs if j[0].is_file()], image_size, progress=progress))
    images = {name: str(dst.resolve()) for name, (src, dst) in zip(needed, jobs, strict=True)
              if src.is_file() and src not in failed}
    if missing:
        log.warning("%d icon SVG(s) missing; first: %s", len(missing), missing[0])
    items, triplets, kinds = icon_edit_dataset(icons, edits, images, seed=seed)
    info = {
        "name": "icon-edits", "format": FORMAT_VERSION, "seed": seed, "image_size": image_size,
        "package": dict([MDI_PACKAGE]),
        "text_rule": "variant name words minus base name words, in order, joined by spaces",
        "split_rule": (f"connected components of icons linked by baseIconId; SHA-1('<seed>:<smallest name>') "
                       f"< {TEST_FRACTION} test, < {TEST_FRACTION + VAL_FRACTION:g} val, else train"),
        "edits": edit_report(edits), "triplets": split_report(triplets, kinds), "items": len(items),
        "skipped": {"missing_svg": len(missing), "unrenderable_svg": len(failed)},
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    paths = write_edit_dataset(out_dir, items, triplets, info)
    log.info("icon-edits: %d items, triplets per split %s", len(items), info["triplets"])
    return paths


def fetch_icon_edits(cache_dir: Path | None = None, *, seed: int = 0, image_size: int = 64,
                     progress: bool | None = None) -> tuple[Path, Path]:
    """Fetch ``@mdi/svg@7.4.47`` (npm) and build the icon-edits dataset; return (manifest, triplets).

    Idempotent: a finished build with the same settings is returned as is. The package goes to
    ``<cache>/datasets/icons/``, the dataset to ``<cache>/datasets/icon-edits/``.

    Raises:
        XmrError: npm is missing, the package cannot be fetched, or its files are malformed.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    out_dir = root / "datasets" / "icon-edits"
    settings = {"format": FORMAT_VERSION, "seed": seed, "image_size": image_size, "package": dict([MDI_PACKAGE])}
    if dataset_is_complete(out_dir, settings):
        return out_dir / MANIFEST_NAME, out_dir / TRIPLETS_NAME
    package = ensure_package(*MDI_PACKAGE, root / "datasets" / "icons")
    return build_icon_edits(package, out_dir, seed=seed, image_size=image_size, progress=progress)
