"""The ``openclipart`` dataset: Open Clip Art Library drawings with their authors' titles, descriptions, keywords.

Source: Debian's ``openclipart-svg`` and ``openclipart-png`` (0.18, about 7,450 SVG drawings in
category folders under ``/usr/share/openclipart/svg``, a PNG of each at the same path under
``png/``), installed with ``apt-get`` by the fetch when missing (:mod:`xmr.data.debian`, as
``make data``). Nothing else is downloaded.

**One item per drawing.** Each regular ``.svg`` file is read for its RDF metadata
(:mod:`xmr.data.svg_metadata`, with ``defusedxml``; symlinks are the package's links between
folders and are not read twice) and drawn with cairosvg, aspect kept, centred on a transparent
``image_size`` square (the package's PNGs are mostly thumbnails: half are under 224 px, so the
PNG is only the fallback for an SVG cairosvg cannot draw). The same drawing filed in several
folders (identical pixels) is one item: the copy in the deepest folder (then the first path) is
kept, the others are listed as its ``copies`` in the licences file. ``id`` and ``group``: the
SVG's path in the package without ``.svg`` (``animals/birds/puffin-md``); ``label``: its folder.

**Texts**: title, description, keywords, cleaned as :mod:`xmr.data.openclipart_texts` says (no
placeholder or file-name titles, no collection-wide texts). A drawing with no usable text, an SVG
that cannot be read safely, or a drawing with no image is skipped, never raised, and listed with
why in ``skipped.jsonl``.

**Splits**: by drawing, ``unit_hash("openclipart:<seed>", id)`` in [0, 1): below
``test_fraction`` test, below ``test_fraction + val_fraction`` val, else train.

**Licences**: each drawing's ``cc:license`` (public domain dedication for almost all; two are
GPL-2.0; some state none, where the package's copyright file's public domain dedication covers
them) and creator, in ``licences.jsonl``, one row per item in manifest order.

**Deterministic**: items sorted by id, image paths relative to the manifest, no timestamps; the
same package versions and :class:`OpenclipartConfig` give a byte-identical ``manifest.jsonl``
(and ``licences.jsonl``, ``skipped.jsonl``). Cache layout under ``<cache>/datasets/openclipart/``:
``png/<size>/<id>.png``, ``skipped.jsonl``, ``licences.jsonl``, ``dataset.json``, then, written
last, ``manifest.jsonl``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from xmr.data.debian import ensure_debian_packages, package_versions
from xmr.data.edits import unit_hash
from xmr.data.manifest import Item, finished_manifest, write_manifest
from xmr.data.openclipart_texts import clean_title, drawing_texts, drop_collection_texts
from xmr.data.svg_metadata import DrawingMetadata, SvgMetadataError, read_svg_metadata
from xmr.errors import XmrError
from xmr.utils.io import atomic_write_bytes, atomic_write_text, load_json, save_json
from xmr.utils.paths import default_cache_dir
from xmr.utils.progress import progress as progress_bar

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = ("openclipart-svg", "openclipart-png")
PACKAGE_ROOT = Path("/usr/share/openclipart")
#: Bump when the content or layout of the dataset changes, so old builds are redone.
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
LICENCES_NAME = "licences.jsonl"
SKIPPED_NAME = "skipped.jsonl"
#: what a drawing's ``cc:license`` URL means (anything else is kept as its URL)
LICENCE_NAMES = {
    "http://web.resource.org/cc/PublicDomain": "public-domain",
    "http://creativecommons.org/licenses/publicdomain/": "public-domain",
    "http://creativecommons.org/licenses/GPL/2.0/": "GPL-2.0",
}
PACKAGE_LICENCE = ("Creative Commons Public Domain Dedication (/usr/share/doc/openclipart-svg/copyright): each "
                   "drawing's own cc:license is in licences.jsonl; a drawing stating none falls under the package's")


@dataclass(frozen=True)
class OpenclipartConfig:
    """How the dataset is built; every default of ``xmr data fetch openclipart`` is here.

    Attributes:
        seed: seeds the split of drawings.
        image_size: side in pixels of each drawing's square PNG.
        test_fraction: share of drawings in ``test``.
        val_fraction: share of drawings in ``val``.
        max_shared: the most drawings one text may name before it counts as a collection's text and is dropped.
    """

    seed: int = 0
    image_size: int = 224
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    max_shared: int = 10

    def __post_init__(self) -> None:
        for name in ("seed", "image_size", "max_shared"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
                raise XmrError(f"openclipart: {name} must be a {'non-negative' if name == 'seed' else 'positive'} "
                               f"integer, got {v!r}")
        t, v = self.test_fraction, self.val_fraction
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (t, v)) \
                or not (0 <= t and 0 <= v and t + v < 1):
            raise XmrError(f"openclipart: split fractions must be >= 0 and leave some for train, got "
                           f"test_fraction={t!r}, val_fraction={v!r}")


@dataclass
class OpenclipartBuild:
    """What :func:`build_openclipart_items` found: the items and the rows of the side files."""

    items: list[Item] = field(default_factory=list)
    licences: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """Counts for ``dataset.json``: items, per split, per licence, skipped per reason."""
        reasons = Counter(row["reason"].split(":")[0] for row in self.skipped)
        return {"items": len(self.items), "splits": dict(sorted(Counter(str(it.split) for it in self.items).items())),
                "licences": dict(sorted(Counter(str(r["licence_name"]) for r in self.licences).items())),
                "with_title": sum(1 for r in self.licences if r["title_kept"]),
                "copies_merged": sum(len(r["copies"]) for r in self.licences),
                "skipped": len(self.skipped), "skipped_by_reason": dict(sorted(reasons.items()))}


@dataclass(frozen=True)
class _Drawing:
    source: PurePosixPath  # relative to the svg folder
    meta: DrawingMetadata
    png: Path
    digest: str


def list_svgs(svg_root: Path) -> list[PurePosixPath]:
    """Every regular ``.svg`` file under ``svg_root`` (symlinks left out), relative, in sorted order."""
    found = [p for p in svg_root.rglob("*") if p.suffix.lower() == ".svg" and p.is_file() and not p.is_symlink()]
    return sorted(PurePosixPath(p.relative_to(svg_root).as_posix()) for p in found)


def letterbox(im: Image.Image, size: int) -> Image.Image:
    """``im`` scaled to fit a ``size`` square (aspect kept), centred on a transparent ``size`` x ``size`` RGBA."""
    im = im.convert("RGBA")
    if max(im.size) != size:
        scale = size / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return canvas


def render_svg(data: bytes, size: int) -> Image.Image:
    """An SVG drawn with cairosvg to fit a ``size`` square, aspect kept (:func:`letterbox`)."""
    import cairosvg  # deferred: pulls in cairo

    im = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data, output_width=size)))
    if im.height > size:
        im = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data, output_height=size)))
    return letterbox(im, size)


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _is_blank(im: Image.Image) -> bool:
    """True when nothing shows once composited on white."""
    canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
    lo, _ = Image.alpha_composite(canvas, im.convert("RGBA")).convert("L").getextrema()
    return bool(lo == 255)


def draw_drawing(svg: Path, png: Path | None, size: int) -> tuple[bytes | None, str]:
    """The drawing as PNG bytes: the SVG rendered, else the package's PNG letterboxed; ``(None, why)`` if neither."""
    why = ""
    try:
        im = render_svg(svg.read_bytes(), size)
        if not _is_blank(im):
            return _png_bytes(im), ""
        why = "the SVG draws nothing"
    # cairosvg raises many unrelated types for bad input (ParseError, ValueError, ZeroDivisionError ...)
    except Exception as e:  # noqa: BLE001
        why = f"cairosvg cannot draw the SVG ({type(e).__name__})"
    if png is None or not png.is_file():
        return None, f"{why}, and the package has no PNG of it"
    try:
        with Image.open(png) as raw:
            im = letterbox(raw, size)
    except Exception as e:  # noqa: BLE001  # Pillow's errors for a bad or huge file are as varied
        return None, f"{why}, and its PNG cannot be read ({type(e).__name__})"
    return (_png_bytes(im), "") if not _is_blank(im) else (None, f"{why}, and its PNG is blank")


def _image_of(source: PurePosixPath, svg_root: Path, png_root: Path | None, png_dir: Path, size: int
              ) -> tuple[Path | None, str]:
    """The drawing's PNG under ``png_dir`` (drawn now unless already there), or ``(None, why)``."""
    out = png_dir / source.with_suffix(".png")
    if out.is_file():
        return out, ""
    data, why = draw_drawing(svg_root / source, None if png_root is None else png_root / source.with_suffix(".png"),
                             size)
    if data is None:
        return None, why
    atomic_write_bytes(out, data)
    return out, ""


def _split(seed: int, key: str, config: OpenclipartConfig) -> str:
    u = unit_hash(f"openclipart:{seed}", key)
    return "test" if u < config.test_fraction else "val" if u < config.test_fraction + config.val_fraction \
        else "train"


def _read_drawings(svg_root: Path, png_root: Path | None, png_dir: Path, config: OpenclipartConfig,
                   progress: bool | None, skipped: list[dict[str, str]]) -> list[_Drawing]:
    """Every SVG read and drawn into ``png_dir``; the ones that fail go to ``skipped``."""
    drawings: list[_Drawing] = []
    disable = None if progress is None else not progress
    for source in progress_bar(list_svgs(svg_root), desc="openclipart drawings", unit="svg", disable=disable):
        try:
            meta = read_svg_metadata(svg_root / source)
        except SvgMetadataError as e:
            skipped.append({"source": f"svg/{source}", "reason": f"unreadable metadata: {e.reason}"})
            continue
        png, why = _image_of(source, svg_root, png_root, png_dir, config.image_size)
        if png is None:
            skipped.append({"source": f"svg/{source}", "reason": f"no image: {why}"})
            continue
        drawings.append(_Drawing(source, meta, png, hashlib.sha1(png.read_bytes()).hexdigest()))
    return drawings


def _merge_copies(drawings: Sequence[_Drawing]) -> list[tuple[_Drawing, list[str]]]:
    """One entry per distinct image: the copy in the deepest folder (then the first path), and its other copies."""
    by_digest: dict[str, list[_Drawing]] = {}
    for d in drawings:
        by_digest.setdefault(d.digest, []).append(d)
    out = []
    for copies in by_digest.values():
        copies.sort(key=lambda d: (-len(d.source.parts), str(d.source)))
        out.append((copies[0], sorted(f"svg/{c.source}" for c in copies[1:])))
    return sorted(out, key=lambda pair: str(pair[0].source))


def _licence_row(key: str, d: _Drawing, copies: list[str], texts: tuple[str, ...]) -> dict[str, Any]:
    url = d.meta.licence
    name = LICENCE_NAMES.get(url, url) if url else "unstated (package: public-domain)"
    title = clean_title(d.meta.title, d.meta.creator)
    return {"id": key, "source": f"svg/{d.source}", "title": d.meta.title, "title_kept": bool(title) and title in texts,
            "creator": d.meta.creator, "licence": url, "licence_name": name, "copies": copies}


def build_openclipart_items(svg_root: Path, png_root: Path | None, out_dir: Path,
                            config: OpenclipartConfig = OpenclipartConfig(), *,
                            progress: bool | None = None, png_dir: Path | None = None) -> OpenclipartBuild:
    """Items (and licence and skipped rows) of the drawings under ``svg_root``, drawn under ``out_dir``.

    Args:
        svg_root: the package's ``svg`` folder (category folders of ``.svg`` files).
        png_root: its ``png`` folder (same paths, ``.png``), the fallback image; None: none.
        out_dir: the dataset folder; PNGs go to ``out_dir/png/<image_size>/<id>.png`` (kept if there).
        png_dir: the PNGs' folder instead (another split seed's dataset reuses the default one's).

    Returns:
        The build: items sorted by id, a licence row per item, a skipped row per SVG left out.
    """
    build = OpenclipartBuild()
    png_dir = Path(png_dir) if png_dir is not None else Path(out_dir) / "png" / str(config.image_size)
    drawings = _merge_copies(_read_drawings(Path(svg_root), png_root, png_dir, config, progress, build.skipped))
    texts, dropped = drop_collection_texts({str(d.source): drawing_texts(d.meta) for d, _ in drawings},
                                           config.max_shared)
    for d, copies in drawings:
        key = str(d.source.with_suffix(""))
        kept = texts[str(d.source)]
        if not kept:
            notes = "; ".join(dropped.get(str(d.source), [])) or "empty, placeholder or file-name texts only"
            build.skipped.append({"source": f"svg/{d.source}", "reason": f"no usable text: {notes}"})
            continue
        folder = str(d.source.parent)
        build.items.append(Item(id=key, image=str(d.png.resolve()), texts=kept,
                                label=None if folder == "." else folder, group=key,
                                split=_split(config.seed, key, config)))
        build.licences.append(_licence_row(key, d, copies, kept))
    build.skipped.sort(key=lambda row: row["source"])
    return build


def _jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def write_openclipart(build: OpenclipartBuild, out_dir: Path, meta: dict[str, Any]) -> Path:
    """Write ``licences.jsonl``, ``skipped.jsonl``, ``dataset.json`` (``meta`` + counts), then the manifest."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / LICENCES_NAME, _jsonl(build.licences))
    atomic_write_text(out_dir / SKIPPED_NAME, _jsonl(build.skipped))
    save_json(out_dir / "dataset.json", {**meta, "licence": PACKAGE_LICENCE, "counts": build.report()})
    return write_manifest(build.items, out_dir / MANIFEST_NAME)


def _stamped_png_dir(png_dir: Path, stamp: dict[str, Any]) -> None:
    """Drop PNGs drawn from other package versions (``render.json`` in the folder says which)."""
    marker = png_dir / "render.json"
    try:
        same = marker.is_file() and load_json(marker) == stamp
    except XmrError:
        same = False
    if not same:
        shutil.rmtree(png_dir, ignore_errors=True)
        png_dir.mkdir(parents=True, exist_ok=True)
        save_json(marker, stamp)


def dataset_folder(datasets: Path, seed: int) -> Path:
    """The dataset's folder under ``<cache>/datasets``: ``openclipart`` for the default split (seed 0), else
    ``openclipart-seed<N>``, so that every seed's manifest stays where the runs made on it recorded it."""
    return datasets / ("openclipart" if seed == 0 else f"openclipart-seed{seed}")


def fetch_openclipart(cache_dir: Path | None = None, *, config: OpenclipartConfig = OpenclipartConfig(),
                      seed: int | None = None, source: Path | None = None, install: bool = True,
                      progress: bool | None = None) -> Path:
    """Install the Debian packages if missing, build the dataset (or find it built); return its manifest.

    Args:
        cache_dir: cache root (None: :func:`default_cache_dir`); the dataset is ``<cache>/datasets/openclipart``
            (:func:`dataset_folder`: ``openclipart-seed<N>`` for another split seed, its items drawn from the same
            PNGs, under ``openclipart/png``, which are drawn once).
        config: the split seed, image size, fractions and collection-text limit.
        seed: the split's seed (``xmr data fetch openclipart --seed N``; None: ``config.seed``).
        source: the packages' install folder (``svg/`` and ``png/`` inside; None: :data:`PACKAGE_ROOT`).
        install: run apt-get when ``source/svg`` is missing (else refuse).

    Raises:
        XmrError: the packages are missing and cannot be installed, or no drawing is usable.
    """
    source = Path(source) if source is not None else PACKAGE_ROOT
    svg_root, png_root = source / "svg", source / "png"
    if install:
        ensure_debian_packages(DEBIAN_PACKAGES, present=svg_root.is_dir, what="openclipart")
    elif not svg_root.is_dir():
        raise XmrError(f"openclipart: {svg_root} not found; install the Debian packages {' '.join(DEBIAN_PACKAGES)}")
    if seed is not None:
        config = replace(config, seed=seed)
    datasets = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "datasets"
    root = dataset_folder(datasets, config.seed)
    png_dir = dataset_folder(datasets, 0) / "png" / str(config.image_size)  # a drawing's PNG is every seed's
    settings = {"name": "openclipart", "format": FORMAT_VERSION, "config": asdict(config),
                "packages": package_versions(DEBIAN_PACKAGES), "source": str(source)}
    manifest = root / MANIFEST_NAME
    if finished_manifest(root, settings, MANIFEST_NAME) is not None:
        return manifest
    _stamped_png_dir(png_dir, {k: settings[k] for k in ("format", "packages", "source")})
    build = build_openclipart_items(svg_root, png_root if png_root.is_dir() else None, root, config, progress=progress,
                                    png_dir=png_dir)
    if not build.items:
        atomic_write_text(root / SKIPPED_NAME, _jsonl(build.skipped))
        raise XmrError(f"openclipart: no usable drawing under {svg_root} ({len(build.skipped)} skipped, listed in "
                       f"{root / SKIPPED_NAME})")
    write_openclipart(build, root, settings)
    report = build.report()
    log.info("openclipart dataset: %d drawings (splits %s), %d skipped (%s), listed in %s", report["items"],
             report["splits"], report["skipped"], report["skipped_by_reason"], root / SKIPPED_NAME)
    return manifest
