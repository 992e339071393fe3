"""A folder of images as xmr items: no manifest needed to index or search your own pictures.

Every file whose suffix is an image's (:data:`IMAGE_SUFFIXES`) is an item; its id is its path
relative to the folder (``dogs/rex.jpg``), so ids stay readable and unique. Hidden files and
folders (a leading ``.``) are left out; ``recursive`` walks sub-folders.

Texts, all optional:

* a **sidecar** beside the image with the same stem: ``rex.txt`` (one text per non-empty line)
  or ``rex.json`` (a string, a list of strings, or an object with ``texts`` and optionally
  ``label`` / ``group`` / ``style`` / ``split``); ``.json`` wins when both exist;
* a **captions CSV** (``--captions``) with a header naming the file column (``file``, ``image``
  or ``path``: relative to the folder) and the text column (``caption``, ``text`` or
  ``title``); a file on several rows gets several texts.

What cannot be read is left out, listed and counted, never silently and never fatally (as an
unreadable image is): a sub-folder that cannot be listed, and an image whose sidecar cannot be
read (permission, not UTF-8, not JSON, not a regular file, over
:attr:`~xmr.utils.files.InputLimits.sidecar_bytes`) — :attr:`FolderScan.skipped`.

Splits (:func:`scan_folder`'s ``split_fractions``) are drawn per item from a seeded hash of its
id, so adding images later never moves an existing image to another split (a test image
cannot drift into training); a sidecar's own ``split`` is kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xmr.data.manifest import Item
from xmr.errors import Param, XmrError
from xmr.utils.files import LIMITS, InputFileError, check_input_file
from xmr.utils.numbers import NON_NEGATIVE

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
SIDECAR_SUFFIXES = (".json", ".txt")
SPLIT_NAMES = ("train", "val", "test")
FILE_COLUMNS = ("file", "image", "path")
TEXT_COLUMNS = ("caption", "text", "title")


@dataclass(frozen=True)
class FolderScan:
    """:func:`scan_folder`'s result.

    Attributes:
        root: the folder, absolute.
        items: one per image file, sorted by id (= relative path).
        n_ignored: files that are neither images nor sidecars (left out).
        n_with_texts: items that got at least one text.
        n_captions_unmatched: captions-CSV rows naming a file that is not an image of the folder.
        skipped: what the scan left out, ``{"id", "image", "reason", "what"}`` each: ``what`` is
            ``"folder"`` for a sub-folder that could not be listed (``id`` its relative path + ``/``,
            ``image`` its path) or ``"sidecar"`` for an image whose sidecar could not be read.
    """

    root: Path
    items: list[Item]
    n_ignored: int = 0
    n_with_texts: int = 0
    n_captions_unmatched: int = 0
    skipped: tuple[dict[str, str], ...] = ()


def parse_split_fractions(text: str) -> tuple[float, float, float]:
    """``80/10/10`` or ``0.8,0.1,0.1`` -> train / val / test fractions summing to 1."""
    parts = [p for p in text.replace(",", "/").split("/") if p.strip()]
    try:  # each part finite and >= 0: one inf or nan would put every item into one split
        values = [NON_NEGATIVE.parse(p) for p in parts]
    except XmrError:
        values = []
    if len(values) != 3 or not 0 < sum(values) < math.inf:
        raise XmrError("{split} {text}: expected three finite non-negative numbers (train/val/test), not all 0, "
                       "e.g. 80/10/10", split=Param("split"), text=repr(text))
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def split_of(item_id: str, fractions: Sequence[float], seed: int = 0) -> str:
    """The split an id falls in: a uniform number from a hash of (seed, id) against the cumulative
    ``fractions`` of :data:`SPLIT_NAMES`. Deterministic, and independent of every other item."""
    digest = hashlib.sha256(f"{seed}\0{item_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    edge = 0.0
    for name, frac in zip(SPLIT_NAMES, fractions):
        edge += frac
        if u < edge:
            return name
    return SPLIT_NAMES[len(fractions) - 1]


def _image_files(root: Path, recursive: bool) -> tuple[list[Path], int, list[dict[str, str]]]:
    """Image files under ``root`` (sorted), how many other, non-sidecar files were passed over, and
    the sub-folders that could not be listed (``FolderScan.skipped`` rows); ``root`` itself unreadable
    is an XmrError."""
    images: list[Path] = []
    ignored = 0
    unreadable: list[dict[str, str]] = []

    def refused(e: OSError) -> None:  # os.walk would skip the folder silently
        where = Path(e.filename) if e.filename else root
        reason = f"cannot list folder ({(e.strerror or str(e)).lower()})"
        if where == root:
            raise XmrError(f"{root}: {reason}")
        unreadable.append({"id": where.relative_to(root).as_posix() + "/", "image": str(where), "reason": reason,
                           "what": "folder"})

    for folder, dirs, files in os.walk(root, onerror=refused):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                images.append(path)
            elif suffix not in SIDECAR_SUFFIXES and suffix != ".csv":
                ignored += 1
    return images, ignored, sorted(unreadable, key=lambda row: row["id"])


def _texts(values: object, where: Path) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(t, str) for t in values):
        raise XmrError(f"{where}: 'texts' must be a string or a list of strings")
    return [t.strip() for t in values if t.strip()]


def _read_sidecar(image: Path) -> dict[str, object]:
    """The fields a sidecar of ``image`` gives (``texts`` and optional label/group/style/split).

    Raises:
        XmrError: the sidecar cannot be read or parsed (the scan lists the image as skipped).
    """
    for suffix in SIDECAR_SUFFIXES:
        side = image.with_suffix(suffix)
        if not os.path.lexists(side):
            continue
        try:  # stat first: a FIFO would block, /dev/zero never end, a huge file fill memory
            check_input_file(side, "caption sidecar", max_bytes=LIMITS.sidecar_bytes)
            raw = side.read_text(encoding="utf-8-sig")
        except InputFileError as e:
            raise XmrError(str(e)) from None
        except UnicodeDecodeError:
            raise XmrError(f"{side}: not valid UTF-8; save the sidecar as UTF-8") from None
        except OSError as e:
            raise XmrError(f"{side}: cannot read caption sidecar ({(e.strerror or str(e)).lower()})") from None
        if suffix == ".txt":
            return {"texts": [line.strip() for line in raw.splitlines() if line.strip()]}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise XmrError(f"{side}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, dict):
            return {"texts": _texts(data, side)}
        fields: dict[str, object] = {"texts": _texts(data.get("texts", []), side)}
        for key in ("label", "group", "style", "split"):
            if data.get(key) not in (None, ""):
                fields[key] = str(data[key])
        return fields
    return {}


def read_captions_csv(path: str | Path) -> dict[str, list[str]]:
    """``file`` -> its texts from a captions CSV (see the module docstring), in row order."""
    path = Path(path)
    check_input_file(path, "captions CSV")  # a FIFO would block, a device never end
    try:
        fh = open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise XmrError(f"cannot read captions {path}: {(e.strerror or str(e)).lower()}") from None
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        file_col = next((c for c in FILE_COLUMNS if c in header), None)
        text_col = next((c for c in TEXT_COLUMNS if c in header), None)
        if file_col is None or text_col is None:
            raise XmrError(f"{path}: the header must name a file column ({' / '.join(FILE_COLUMNS)}) and a text "
                           f"column ({' / '.join(TEXT_COLUMNS)}); got {', '.join(header) or 'nothing'}")
        out: dict[str, list[str]] = {}
        try:
            for n, row in enumerate(reader, start=2):
                row = {(k or "").strip().lower(): v for k, v in row.items()}
                name, text = (row.get(file_col) or "").strip(), (row.get(text_col) or "").strip()
                if not name:
                    raise XmrError(f"{path}, line {n}: no file name")
                if text:
                    out.setdefault(Path(name).as_posix(), []).append(text)
        except UnicodeDecodeError:
            raise XmrError(f"{path}: not valid UTF-8; save the captions as UTF-8") from None
    return out


def scan_folder(root: str | Path, *, recursive: bool = False, captions: str | Path | None = None,
                split_fractions: Sequence[float] | None = None, seed: int = 0) -> FolderScan:
    """The items of a folder of images (see the module docstring).

    Args:
        root: the folder.
        recursive: also the images of its sub-folders (hidden ones excluded).
        captions: a captions CSV whose texts join each file's sidecar texts.
        split_fractions: train / val / test fractions; None leaves ``split`` unset (a search
            gallery needs none).
        seed: seeds the split draw.

    Raises:
        XmrError: ``root`` is not a folder or holds no image; a bad sidecar or captions file.
    """
    root = Path(root)
    if not root.exists():
        raise XmrError(f"{root}: folder not found")
    if not root.is_dir():
        raise XmrError("{root}: not a folder (a manifest file is given as {fix})", root=str(root),
                       fix=Param("manifest", str(root)))
    root = root.resolve()
    files, ignored, skipped = _image_files(root, recursive)
    if not files:
        where = "" if recursive else " (its sub-folders are not searched without {recursive})"
        if skipped:
            where = "; {n_skipped} sub-folder(s) could not be listed (first: {first}: {reason})"
        raise XmrError("{root}: no image files ({suffixes})" + where, root=str(root),
                       suffixes=", ".join(sorted(IMAGE_SUFFIXES)), recursive=Param("recursive", True),
                       n_skipped=len(skipped), first=skipped[0]["image"] if skipped else "",
                       reason=skipped[0]["reason"] if skipped else "")
    by_file = read_captions_csv(captions) if captions is not None else {}
    items = []
    matched: set[str] = set()
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            fields = _read_sidecar(path)
        except XmrError as e:  # like an unreadable image: listed, counted, left out
            skipped.append({"id": rel, "image": str(path), "reason": str(e), "what": "sidecar"})
            matched.add(rel)
            continue
        texts = list(fields.pop("texts", []))  # type: ignore[call-overload]
        if rel in by_file:
            texts += by_file[rel]
            matched.add(rel)
        if split_fractions is not None and "split" not in fields:
            fields["split"] = split_of(rel, split_fractions, seed)
        items.append(Item(id=rel, image=str(path), texts=tuple(dict.fromkeys(texts)), **fields))  # type: ignore[arg-type]
    unmatched = len(set(by_file) - matched)
    if unmatched:
        log.warning("%d file(s) named in %s are not images of %s (first: %s)", unmatched, captions, root,
                    sorted(set(by_file) - matched)[0])
    if skipped:
        log.warning("%s: left out %d unreadable sub-folder(s) or caption sidecar(s); first: %s (%s)", root,
                    len(skipped), skipped[0]["image"], skipped[0]["reason"])
    return FolderScan(root, items, ignored, sum(1 for it in items if it.texts), unmatched, tuple(skipped))
