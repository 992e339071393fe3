"""The built-in ``emoji`` dataset: ~1,900 emoji drawn in four styles, with CLDR names and tags.

Sources (all fetched with ``npm pack``, pinned):

- ``openmoji@17.0.0``: colour and black line-art SVGs, rasterised once to PNG (CC-BY-SA-4.0);
- ``emoji-datasource-twitter@16.0.0`` / ``emoji-datasource-google@16.0.0``: 64x64 PNGs of
  Twemoji (CC-BY 4.0) and Noto Emoji (Apache-2.0), used as they are;
- ``emojibase-data@17.0.0``: the CLDR English label, tags, group and subgroup of each emoji (MIT).

One :class:`~xmr.data.manifest.Item` per (emoji, style): ``texts`` are the label then the tags,
``label`` is the CLDR subgroup (e.g. ``face-smiling``), ``group`` the emoji's normalised code
point key (shared by its four drawings) and ``style`` one of :data:`STYLES`.

The split is zero-shot by subgroup: whole subgroups go to test, val or train, so no test emoji's
subgroup was seen in training (see :func:`assign_subgroup_splits`).

Cache layout under ``<cache>/datasets/emoji/``: ``tarballs/`` (npm tarballs), ``packages/``
(unpacked), ``png/<size>/<style>/`` (rasterised OpenMoji), then ``split_counts.json``,
``dataset.json`` and, written last, ``manifest.jsonl``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import cast

from xmr.data.manifest import Item, write_manifest
from xmr.errors import XmrError
from xmr.utils.io import atomic_write_bytes, load_json, save_json
from xmr.utils.paths import default_cache_dir
from xmr.utils.progress import progress as progress_bar

log = logging.getLogger(__name__)

#: role -> (npm package, pinned version)
PACKAGES: dict[str, tuple[str, str]] = {
    "openmoji": ("openmoji", "17.0.0"),
    "twitter": ("emoji-datasource-twitter", "16.0.0"),
    "google": ("emoji-datasource-google", "16.0.0"),
    "emojibase": ("emojibase-data", "17.0.0"),
}
STYLES = ("openmoji-color", "openmoji-black", "twitter", "google")
LICENSES = {
    "openmoji": "CC-BY-SA-4.0 (images: OpenMoji)",
    "emoji-datasource-twitter": "MIT (package); images CC-BY-4.0 (Twemoji)",
    "emoji-datasource-google": "MIT (package); images Apache-2.0 (Noto Emoji)",
    "emojibase-data": "MIT",
}
ATTRIBUTION = ("Emoji artwork: OpenMoji (CC BY-SA 4.0), Twemoji by Twitter (CC BY 4.0), "
               "Noto Emoji by Google (Apache-2.0), via emoji-datasource; names and tags: "
               "emojibase-data (MIT), from Unicode CLDR.")
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
#: Bump when the manifest's content or layout changes, so old caches are rebuilt.
FORMAT_VERSION = 1
NPM_MISSING = "npm not found: install Node.js and npm to fetch the emoji dataset"
MANIFEST_NAME = "manifest.jsonl"
_FE0F = "FE0F"


@dataclass(frozen=True)
class EmojiPackages:
    """The unpacked package folders (each the ``package/`` folder inside an npm tarball)."""

    openmoji: Path
    twitter: Path
    google: Path
    emojibase: Path


@dataclass(frozen=True)
class EmojiEntry:
    """One base emoji from emojibase-data: normalised key, CLDR label, tags and subgroup name."""

    key: str
    label: str
    tags: tuple[str, ...]
    group: str
    subgroup: str


def normalise_hexcode(code: str) -> str:
    """The key shared by all packages: upper-case hex code points joined by ``-``, FE0F dropped.

    ``"2764-fe0f-200d-1f525"``, ``"2764-FE0F-200D-1F525"`` and ``"2764-200D-1F525"`` all give
    ``"2764-200D-1F525"``; underscores (some packages' separator) count as ``-``.
    """
    parts = code.strip().replace("_", "-").upper().split("-")
    return "-".join(p for p in parts if p and p != _FE0F)


# ---------------------------------------------------------------------------------------------
# npm pack and safe untar


def _npm_error_line(stderr: str, stdout: str, returncode: int) -> str:
    """The most telling first line of npm's error output (skipping warnings and the code line)."""
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"npm (error|err!)", ln, re.IGNORECASE)]
    informative = [ln for ln in errors
                   if not re.match(r"npm (error|err!)\s+code\b", ln, re.IGNORECASE)]
    for candidates in (informative, errors, lines):
        if candidates:
            return candidates[0]
    return f"exit status {returncode}"


def npm_pack(name: str, version: str, dest_dir: Path) -> Path:
    """Run ``npm pack name@version`` and move the tarball to ``dest_dir/<name>-<version>.tgz``.

    npm runs in a scratch folder inside ``dest_dir``, so a failed or interrupted pack never
    leaves a partial tarball under the final name. Nothing is installed.

    Raises:
        XmrError: npm is not on PATH, or the pack fails (naming the package and npm's error).
    """
    npm = shutil.which("npm")
    if npm is None:
        raise XmrError(NPM_MISSING)
    spec = f"{name}@{version}"
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    scratch = Path(tempfile.mkdtemp(prefix=".pack-", dir=dest_dir))
    try:
        log.info("npm pack %s", spec)
        try:
            proc = subprocess.run([npm, "pack", spec, "--ignore-scripts"], cwd=scratch,
                                  capture_output=True, text=True, timeout=1800, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise XmrError(f"npm pack {spec} failed: {e}") from None
        if proc.returncode != 0:
            line = _npm_error_line(proc.stderr, proc.stdout, proc.returncode)
            raise XmrError(f"npm pack {spec} failed: {line}")
        tarballs = sorted(scratch.glob("*.tgz"))
        if len(tarballs) != 1:
            raise XmrError(f"npm pack {spec} failed: expected one .tgz, found {len(tarballs)}")
        os.replace(tarballs[0], final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def safe_extract(tarball: Path, dest: Path) -> None:
    """Extract ``tarball`` into ``dest``, refusing members that would land outside it.

    Only regular files and folders are allowed; absolute paths, ``..`` and links are refused.

    Raises:
        XmrError: the tarball is unreadable or holds an unsafe member (named).
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                p = PurePosixPath(m.name)
                target = (root / m.name).resolve()
                if (p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir())
                        or (target != root and root not in target.parents)):
                    raise XmrError(f"{tarball}: refusing unsafe member {m.name!r}")
            tar.extractall(root, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise XmrError(f"{tarball}: cannot extract ({e})") from None


def ensure_package(name: str, version: str, root: Path) -> Path:
    """The unpacked ``package/`` folder of ``name@version`` under ``root``, fetching if needed.

    Resumable: a kept tarball is not fetched again, and unpacking goes to a scratch folder
    renamed into place when complete, so a present folder is always a whole package.
    """
    stem = f"{name.lstrip('@').replace('/', '-')}-{version}"
    final = root / "packages" / stem
    if not final.is_dir():
        tarball = root / "tarballs" / f"{stem}.tgz"
        if not tarball.is_file():
            npm_pack(name, version, tarball.parent)
        scratch = root / "packages" / f".{stem}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        safe_extract(tarball, scratch)
        os.replace(scratch, final)
    package = final / "package"
    if not package.is_dir():
        raise XmrError(f"{final}: no 'package' folder inside; delete it to fetch again")
    return package


# ---------------------------------------------------------------------------------------------
# Parsing the packages


def unique_texts(texts: Iterable[object]) -> tuple[str, ...]:
    """The texts stripped, empty ones and repeats (case-insensitively) dropped, order kept."""
    out: list[str] = []
    seen: set[str] = set()
    for t in texts:
        t = t.strip() if isinstance(t, str) else ""
        if t and t.casefold() not in seen:
            seen.add(t.casefold())
            out.append(t)
    return tuple(out)


def read_emojibase(emojibase_dir: Path) -> list[EmojiEntry]:
    """Base emoji from ``en/data.json`` with group/subgroup names from ``meta/groups.json``.

    Skin-tone variants (nested under ``skins``), regional indicators (no group) and the
    ``component`` group (skin tones, hair styles) are left out. Order is the file's.
    """
    data = load_json(emojibase_dir / "en" / "data.json")
    meta = load_json(emojibase_dir / "meta" / "groups.json")
    if not isinstance(data, list) or not isinstance(meta, dict):
        raise XmrError(f"{emojibase_dir}: not an emojibase-data package")
    groups = {str(k): str(v) for k, v in meta.get("groups", {}).items()}
    subgroups = {str(k): str(v) for k, v in meta.get("subgroups", {}).items()}
    entries: list[EmojiEntry] = []
    seen: set[str] = set()
    for e in data:
        if not isinstance(e, dict) or e.get("group") is None or e.get("subgroup") is None:
            continue
        group = groups.get(str(e["group"]))
        subgroup = subgroups.get(str(e["subgroup"]))
        if group is None or subgroup is None:
            raise XmrError(f"{emojibase_dir}: emoji {e.get('hexcode')!r} has unknown "
                           f"group {e['group']!r} or subgroup {e['subgroup']!r}")
        label = str(e.get("label") or "").strip()
        key = normalise_hexcode(str(e.get("hexcode") or ""))
        if group == "component" or not key or not label or key in seen:
            continue
        seen.add(key)
        tags = tuple(t for t in unique_texts([label, *(e.get("tags") or [])])[1:])
        entries.append(EmojiEntry(key=key, label=label, tags=tags, group=group,
                                  subgroup=subgroup))
    if not entries:
        raise XmrError(f"{emojibase_dir}/en/data.json: no emoji found")
    return entries


def index_images(folder: Path, suffix: str) -> dict[str, Path]:
    """Map normalised key -> file for every ``*<suffix>`` in ``folder`` (first name wins)."""
    if not folder.is_dir():
        raise XmrError(f"{folder}: image folder not found (incomplete package?)")
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() == suffix and path.is_file():
            out.setdefault(normalise_hexcode(path.stem), path)
    return out


def style_sources(packages: EmojiPackages) -> dict[str, dict[str, Path]]:
    """For each style in :data:`STYLES`, the source image (SVG or PNG) of every key it has."""
    return {
        "openmoji-color": index_images(packages.openmoji / "color" / "svg", ".svg"),
        "openmoji-black": index_images(packages.openmoji / "black" / "svg", ".svg"),
        "twitter": index_images(packages.twitter / "img" / "twitter" / "64", ".png"),
        "google": index_images(packages.google / "img" / "google" / "64", ".png"),
    }


# ---------------------------------------------------------------------------------------------
# Rasterising and splitting


def rasterise_svgs(jobs: Sequence[tuple[Path, Path]], image_size: int, *,
                   progress: bool | None = None, what: str = "emoji") -> list[Path]:
    """Render each ``(svg, png)`` job to a square ``image_size`` PNG, transparency kept.

    PNGs already present are kept (resume); each new one is written atomically. An SVG that
    cannot be read or rendered is skipped, never raised.

    Returns:
        The SVGs that failed, in job order.
    """
    todo = [(src, dst) for src, dst in jobs if not dst.is_file()]
    if not todo:
        return []
    import cairosvg  # deferred: pulls in cairo, only needed when something is left to draw

    failed: list[Path] = []
    disable = None if progress is None else not progress
    for src, dst in progress_bar(todo, desc=f"rasterising {what}", unit="svg", disable=disable):
        try:
            data = src.read_bytes()
            if not data.strip():
                raise XmrError("empty file")
            png = cairosvg.svg2png(bytestring=data, output_width=image_size,
                                   output_height=image_size)
        # cairosvg raises many unrelated types (ParseError, ValueError, ZeroDivisionError...)
        # for bad input; one broken drawing must not stop the dataset.
        except Exception as e:  # noqa: BLE001
            log.debug("cannot render %s: %s", src, e)
            failed.append(src)
            continue
        atomic_write_bytes(dst, png)
    if failed:
        log.warning("skipped %d unrenderable SVG(s); first: %s", len(failed), failed[0])
    return failed


def _subgroup_hash(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8")).hexdigest()


def assign_subgroup_splits(emoji_per_subgroup: Mapping[str, int], *,
                           test_fraction: float = TEST_FRACTION,
                           val_fraction: float = VAL_FRACTION) -> dict[str, str]:
    """Assign whole subgroups to ``test``/``val``/``train`` by a fixed hash-ordered fill.

    Subgroups are visited in order of the SHA-1 of their name. Each goes to test if it still
    fits in the test quota (``round(test_fraction * total emoji)``), else to val if it fits in
    the val quota, else to train. The rule depends only on subgroup names and sizes, so it is
    deterministic and never looks at model results; test and val stay at or under their quotas.

    Args:
        emoji_per_subgroup: number of emoji in each subgroup.

    Returns:
        subgroup name -> split.
    """
    if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction <= 1):
        raise XmrError(f"bad split fractions: test={test_fraction}, val={val_fraction}")
    total = sum(emoji_per_subgroup.values())
    quota = {"test": round(test_fraction * total), "val": round(val_fraction * total)}
    filled = {"test": 0, "val": 0}
    out: dict[str, str] = {}
    for name in sorted(emoji_per_subgroup, key=lambda s: (_subgroup_hash(s), s)):
        n = emoji_per_subgroup[name]
        split = next((s for s in ("test", "val") if filled[s] + n <= quota[s]), "train")
        if split != "train":
            filled[split] += n
        out[name] = split
    return out


def split_counts(items: Sequence[Item]) -> dict[str, object]:
    """Emoji, items and subgroups per split (plus the subgroup names) for emoji items."""
    emoji: dict[str, set[str]] = {}
    subgroups: dict[str, set[str]] = {}
    n_items: Counter[str] = Counter()
    for it in items:
        split = str(it.split)
        n_items[split] += 1
        emoji.setdefault(split, set()).add(str(it.group))
        subgroups.setdefault(split, set()).add(str(it.label))
    splits = sorted(n_items, key=lambda s: ({"train": 0, "val": 1, "test": 2}.get(s, 3), s))
    return {
        "emoji": {s: len(emoji[s]) for s in splits},
        "items": {s: n_items[s] for s in splits},
        "subgroups": {s: len(subgroups[s]) for s in splits},
        "subgroup_names": {s: sorted(subgroups[s]) for s in splits},
    }


def build_emoji_items(packages: EmojiPackages, out_dir: Path, *, image_size: int = 224,
                      progress: bool | None = None) -> tuple[list[Item], dict[str, object]]:
    """Build the emoji items from unpacked packages, rasterising OpenMoji SVGs under ``out_dir``.

    Args:
        packages: the four unpacked ``package/`` folders.
        out_dir: dataset folder; PNGs go to ``out_dir/png/<image_size>/<style>/<key>.png``.
        image_size: side of the rasterised OpenMoji PNGs (emoji-datasource PNGs stay 64x64).
        progress: show a progress bar (None: only on a terminal).

    Returns:
        ``(items, report)``: items ordered by emoji then style; ``report`` holds ``emoji`` and
        ``items`` totals, ``splits`` (see :func:`split_counts`) and ``skipped`` counts per style
        (``missing`` file, ``unrenderable`` SVG).
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise XmrError(f"image_size must be a positive integer, got {image_size!r}")
    entries = read_emojibase(packages.emojibase)
    sources = style_sources(packages)
    png_dir = Path(out_dir) / "png" / str(image_size)
    missing: Counter[str] = Counter()
    images: dict[tuple[str, str], Path] = {}
    jobs: list[tuple[Path, Path]] = []
    for e in entries:
        for style in STYLES:
            src = sources[style].get(e.key)
            if src is None:
                missing[style] += 1
            elif src.suffix.lower() == ".svg":
                dst = png_dir / style / f"{e.key}.png"
                jobs.append((src, dst))
                images[(e.key, style)] = dst
            else:
                images[(e.key, style)] = src
    failed = set(rasterise_svgs(jobs, image_size, progress=progress))
    unrenderable: Counter[str] = Counter()
    for src, dst in jobs:
        if src in failed:
            style = dst.parent.name
            unrenderable[style] += 1
            del images[(dst.stem, style)]
    per_subgroup = Counter(e.subgroup for e in entries
                           if any((e.key, s) in images for s in STYLES))
    split_of = assign_subgroup_splits(per_subgroup)
    items = [Item(id=f"{e.key}/{style}", image=str(images[(e.key, style)].resolve()),
                  texts=(e.label, *e.tags), label=e.subgroup, group=e.key, style=style,
                  split=split_of[e.subgroup])
             for e in entries for style in STYLES if (e.key, style) in images]
    if missing:
        log.info("emoji with no image, per style: %s", dict(missing))
    report: dict[str, object] = {
        "emoji": len({it.group for it in items}),
        "items": len(items),
        "splits": split_counts(items),
        "skipped": {"missing": {s: missing[s] for s in STYLES},
                    "unrenderable": {s: unrenderable[s] for s in STYLES}},
    }
    return items, report


# ---------------------------------------------------------------------------------------------
# The dataset entry point


def _is_complete(root: Path, image_size: int) -> bool:
    """True when ``root`` holds a finished manifest built with these settings."""
    if not (root / MANIFEST_NAME).is_file():
        return False
    try:
        meta = load_json(root / "dataset.json")
    except XmrError:
        return False
    return (isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION
            and meta.get("image_size") == image_size
            and meta.get("packages") == {n: v for n, v in PACKAGES.values()})


def fetch_emoji(cache_dir: Path | None = None, *, image_size: int = 224,
                progress: bool | None = None) -> Path:
    """Fetch and build the ``emoji`` dataset; return the path of its JSONL manifest.

    Idempotent and resumable: with everything in place this only checks ``dataset.json`` and
    returns; an interrupted run keeps its tarballs, unpacked packages and PNGs and carries on.
    The manifest is written last, so its presence means the build finished.

    Args:
        cache_dir: cache root (default: :func:`default_cache_dir`); the dataset lives in
            ``<cache_dir>/datasets/emoji/``.
        image_size: side in pixels of the PNGs rasterised from OpenMoji SVGs.
        progress: show progress bars (None: only on a terminal).

    Raises:
        XmrError: npm is missing or a package cannot be fetched or unpacked.
        ValueError: ``image_size`` is not a positive integer.
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise XmrError(f"image_size must be a positive integer, got {image_size!r}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = root / "datasets" / "emoji"
    manifest = root / MANIFEST_NAME
    if _is_complete(root, image_size):
        return manifest
    # A manifest from other settings must not survive beside the new dataset.json.
    manifest.unlink(missing_ok=True)
    dirs = {role: ensure_package(name, version, root) for role, (name, version) in PACKAGES.items()}
    items, report = build_emoji_items(EmojiPackages(**dirs), root, image_size=image_size,
                                      progress=progress)
    save_json(root / "split_counts.json", report["splits"])
    save_json(root / "dataset.json", {
        "name": "emoji",
        "format": FORMAT_VERSION,
        "packages": {n: v for n, v in PACKAGES.values()},
        "licenses": LICENSES,
        "attribution": ATTRIBUTION,
        "image_size": image_size,
        "styles": list(STYLES),
        "split_rule": (f"whole CLDR subgroups in SHA-1(name) order, filled into test up to "
                       f"{TEST_FRACTION:.0%} of emoji, then val up to {VAL_FRACTION:.0%}, "
                       f"rest train"),
        "counts": report,
    })
    write_manifest(items, manifest)
    splits = cast("dict[str, object]", report["splits"])
    log.info("emoji dataset: %d emoji, %d items; emoji per split %s, items per split %s, "
             "subgroups per split %s", report["emoji"], report["items"], splits["emoji"],
             splits["items"], splits["subgroups"])
    return manifest
