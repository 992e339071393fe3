"""The generic manifest: one item per image, with its texts and optional label/group/style/split.

JSONL (one object per line)::

    {"id": "1F600/twitter", "image": "img/1f600.png", "texts": ["grinning face", "grin"],
     "label": "face-smiling", "group": "1F600", "style": "twitter", "split": "test"}

CSV with a header row ``id,image,texts,label,group,style,split``; ``texts`` holds the texts
separated by ``|``. Image paths are relative to the manifest's folder (absolute paths are kept).

Field meaning: ``label`` is a class for label-level retrieval (mAP, CMC); ``group`` ties items
that show the same thing (e.g. one emoji drawn in several styles: they share texts and count as
relevant to each other's queries); ``style`` names the image domain; ``split`` is
``train``/``val``/``test`` (or anything else you like).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xmr.errors import Call, Param, XmrError
from xmr.utils.files import InputFileError, check_input_file
from xmr.utils.io import atomic_write_text, load_json

log = logging.getLogger(__name__)

TEXT_SEP = "|"
FIELDS = ("id", "image", "texts", "label", "group", "style", "split")


@dataclass(frozen=True)
class Item:
    """One image and its texts. ``image`` is an absolute path once read from a manifest."""

    id: str
    image: str
    texts: tuple[str, ...] = field(default_factory=tuple)
    label: str | None = None
    group: str | None = None
    style: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise XmrError(f"item {self.id!r}: 'id' must be a non-empty string")
        if not isinstance(self.image, str) or not self.image:
            raise XmrError(f"item {self.id!r}: no image")
        if isinstance(self.texts, str) or not all(isinstance(t, str) for t in self.texts):
            raise XmrError(f"item {self.id!r}: 'texts' must be a list of strings")
        object.__setattr__(self, "texts", tuple(self.texts))
        for t in self.texts:
            if not t.strip():
                raise XmrError(f"item {self.id!r}: empty text")

    def to_row(self, root: Path | None = None) -> dict[str, object]:
        """A JSON-ready dict; ``image`` made relative to ``root`` when it lies under it."""
        image = self.image
        if root is not None:
            try:
                image = str(Path(image).resolve().relative_to(root.resolve()))
            except ValueError:
                pass
        row: dict[str, object] = {"id": self.id, "image": image, "texts": list(self.texts)}
        for k in ("label", "group", "style", "split"):
            v = getattr(self, k)
            if v is not None:
                row[k] = v
        return row


def _item_from_row(row: dict[str, object] | XmrError, root: Path, where: str, *, is_csv: bool = False) -> Item:
    if isinstance(row, XmrError):
        raise row
    rid = row.get("id")
    if rid is None or str(rid).strip() == "":
        raise XmrError(f"{where}: no 'id'")
    rid = str(rid)
    image = row.get("image")
    if not image or not str(image).strip():
        raise XmrError(f"{where} (id {rid!r}): no image")
    texts = row.get("texts", [])
    if texts is None:
        texts = []
    if isinstance(texts, str):  # CSV packs texts with "|"; in JSONL a bare string is one text
        texts = (texts.split(TEXT_SEP) if is_csv else [texts]) if texts else []
    if not isinstance(texts, list):
        raise XmrError(f"{where} (id {rid!r}): 'texts' must be a list of strings")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise XmrError(f"{where} (id {rid!r}): empty text")
    path = Path(str(image))
    if not path.is_absolute():
        path = root / path
    extra = {k: (None if row.get(k) in (None, "") else str(row.get(k)))
             for k in ("label", "group", "style", "split")}
    return Item(id=rid, image=str(path), texts=tuple(t.strip() for t in texts), **extra)


def _decode_line(raw: bytes, where: str) -> str:
    """One line of a manifest as text; invalid UTF-8 raises an XmrError naming line and byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise XmrError(f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                       "save the manifest as UTF-8") from None


def _text_lines(path: Path) -> Iterable[tuple[int, str | XmrError]]:
    """(line number, text) per line of ``path``, a BOM dropped; a line that is not UTF-8 yields its error."""
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise XmrError(f"cannot read manifest {path}: {(e.strerror or str(e)).lower()}") from None
    with fh:
        for i, raw in enumerate(fh, start=1):
            if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield i, _decode_line(raw, f"{path}:{i}")
            except XmrError as e:
                yield i, e


def _rows(path: Path) -> Iterable[tuple[str, dict[str, object] | XmrError]]:
    """(where, row) per data line; a line that cannot be parsed yields an XmrError instead."""
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path)
        return
    for i, line in _text_lines(path):
        if isinstance(line, XmrError):
            yield f"{path}:{i}", line
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield f"{path}:{i}", XmrError(f"{path}:{i}: not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            yield f"{path}:{i}", XmrError(f"{path}:{i}: each line must be a JSON object")
            continue
        yield f"{path}:{i}", row


def _csv_rows(path: Path) -> Iterable[tuple[str, dict[str, object] | XmrError]]:
    """CSV rows; a record with invalid UTF-8 yields an error naming its line (the others are read)."""
    bad: dict[int, XmrError] = {}

    def lines() -> Iterable[str]:
        for i, line in _text_lines(path):
            if isinstance(line, XmrError):
                bad[i] = line
                yield "\ufffd\n"  # a placeholder keeps the reader's line numbers true
            else:
                yield line

    reader = csv.DictReader(lines())
    if reader.fieldnames is None or "id" not in reader.fieldnames:
        if 1 in bad:
            raise bad[1]
        raise XmrError(f"{path}: CSV manifest needs a header row with at least 'id,image,texts'")
    start = reader.line_num + 1
    for row in reader:
        lines_of_row = range(start, reader.line_num + 1)
        start = reader.line_num + 1
        err = next((bad[i] for i in lines_of_row if i in bad), None)
        if err is not None:
            yield f"{path}:{lines_of_row.start}", err
            continue
        if None in row:  # more fields than the header names
            yield f"{path}:{lines_of_row.start}", XmrError(f"{path}:{lines_of_row.start}: more fields than the header "
                                                            f"has ({len(reader.fieldnames)})")
            continue
        yield f"{path}:{lines_of_row.start}", dict(row)


def check_manifest_file(path: Path) -> None:
    """Refuse a manifest path that is missing, a folder, or not a regular file (a FIFO would block),
    with :func:`~xmr.utils.files.check_input_file` (read line by line: no size limit)."""
    try:
        check_input_file(path, "manifest")
    except InputFileError as e:
        if e.is_folder:
            raise XmrError("{path}: a folder, not a manifest file (JSONL, CSV or Karpathy JSON); to search a folder "
                           "of images with no training and no captions: {now}; else use {images} (when indexing or "
                           "encoding) or write its manifest first: {write}",
                           path=str(path), now=Call("index_folder", Param("images", str(path))),
                           images=Param("images", str(path)),
                           write=Call("write_folder_manifest", Param("root", str(path)), Param("out", "M"))) from None
        raise


def read_manifest(path: str | Path, *, skip_bad: bool = False) -> list[Item]:
    """Read a JSONL (``.jsonl``/``.json``) or CSV (``.csv``) manifest.

    Args:
        path: the manifest file; image paths inside are relative to its folder.
        skip_bad: if True, rows with a problem (no image, empty text, duplicate id) are skipped
            with one warning giving the count and the first offender; otherwise the first such
            row raises :class:`XmrError` naming it.

    Returns:
        The items in file order.
    """
    path = Path(path)
    check_manifest_file(path)
    root = path.resolve().parent
    is_csv = path.suffix.lower() == ".csv"
    rows = ((where, lambda row=row, where=where: _item_from_row(row, root, where, is_csv=is_csv))
            for where, row in _rows(path))
    return collect_items(rows, source=path, skip_bad=skip_bad, what="row")


def collect_items(candidates: Iterable[tuple[str, Callable[[], Item]]], *, source: Path, skip_bad: bool,
                  what: str) -> list[Item]:
    """Build items from ``(where, make_item)`` pairs, refusing duplicate ids.

    With ``skip_bad`` a bad candidate (its ``make_item`` raised XmrError, or a duplicate id) is
    skipped and counted in one warning naming the first; otherwise the first one raises.
    """
    items: list[Item] = []
    seen: set[str] = set()
    bad: list[str] = []
    for where, make in candidates:
        try:
            item = make()
            if item.id in seen:
                raise XmrError(f"{where}: duplicate id {item.id!r}")
        except XmrError as e:
            if not skip_bad:
                raise
            bad.append(str(e))
            continue
        seen.add(item.id)
        items.append(item)
    if bad:
        log.warning("%s: skipped %d bad %s(s); first: %s", source, len(bad), what, bad[0])
    if not items:
        raise XmrError(f"{source}: no usable {what}s")
    return items


def write_manifest(items: Sequence[Item], path: str | Path) -> Path:
    """Write items as JSONL (or CSV if ``path`` ends in ``.csv``), atomically; paths made relative."""
    path = Path(path)
    root = path.resolve().parent
    if path.suffix.lower() == ".csv":
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(FIELDS))
        w.writeheader()
        for it in items:
            row = it.to_row(root)
            row["texts"] = TEXT_SEP.join(it.texts)
            w.writerow(row)
        atomic_write_text(path, buf.getvalue())
    else:
        atomic_write_text(path, "".join(json.dumps(it.to_row(root), ensure_ascii=False) + "\n"
                                        for it in items))
    return path


def select_split(items: Sequence[Item], split: str | None) -> list[Item]:
    """Items whose ``split`` equals ``split`` (all items when ``split`` is None)."""
    if split is None:
        return list(items)
    out = [it for it in items if it.split == split]
    if not out:
        known = sorted({it.split for it in items if it.split is not None})
        if not known:
            raise XmrError(f"no items in split {split!r}: the manifest's items have no 'split' field (add one, "
                           "e.g. train/val/test)")
        raise XmrError(f"no items in split {split!r}; splits present: {', '.join(known)}")
    return out


def finished_manifest(root: Path, settings: dict[str, object], name: str = "manifest.jsonl") -> Path | None:
    """A built dataset's manifest under ``root`` when its ``dataset.json`` records these ``settings`` (the
    fetch is done: nothing to build), else None, with any manifest left by other settings removed (the
    manifest is written last, so a dataset without it is rebuilt)."""
    manifest = root / name
    try:
        meta = load_json(root / "dataset.json") if manifest.is_file() else None
    except XmrError:  # a damaged record: build again
        meta = None
    if isinstance(meta, dict) and {k: meta.get(k) for k in settings} == settings:
        return manifest
    manifest.unlink(missing_ok=True)
    return None

