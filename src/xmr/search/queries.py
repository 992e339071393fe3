"""Query files for batch search: one query per line, a text or an image path.

    # lines starting with '#' and blank lines are skipped
    a dog on a beach
    photos/rex.jpg              <- an existing image file: an image query
    text: photos/rex.jpg        <- forced text ('text:' / 'image:' prefixes override the guess)
    image: /abs/path/cat.png

A line is an image query when it names an existing file with an image suffix, looked up
relative to the query file's folder, then to the working folder; any other line is a text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xmr.data.folder import IMAGE_SUFFIXES
from xmr.errors import XmrError
from xmr.modality import Modality

PREFIXES: dict[str, Modality] = {"text:": "text", "image:": "image"}


@dataclass(frozen=True)
class Query:
    """One query: ``kind`` ``"text"`` or ``"image"``, ``value`` the text or image path, ``line`` its line (1-based)."""

    kind: Modality
    value: str
    line: int = 0


def _image_path(value: str, base: Path) -> Path | None:
    """The existing image file ``value`` names (relative to ``base``, then the working folder), else None."""
    if Path(value).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    for candidate in (base / value, Path(value)):
        if candidate.is_file():
            return candidate
    return None


def parse_query_line(line: str, base: Path, number: int = 0) -> Query | None:
    """The query of one line (None for a blank or ``#`` comment line); see the module docstring."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    for prefix, kind in PREFIXES.items():
        if text.lower().startswith(prefix):
            value = text[len(prefix):].strip()
            if not value:
                raise XmrError(f"line {number}: {prefix!r} with nothing after it")
            if kind == "image":
                found = next((c for c in (base / value, Path(value)) if c.exists()), None)
                return Query("image", str(found or base / value), number)  # a missing file is reported per query
            return Query("text", value, number)
    path = _image_path(text, base)
    return Query("image", str(path), number) if path is not None else Query("text", text, number)


def read_queries(path: str | Path) -> list[Query]:
    """The queries of a query file (UTF-8), in order.

    Raises:
        XmrError: the file cannot be read, is not UTF-8 or holds no query.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise XmrError(f"cannot read queries {path}: {(e.strerror or str(e)).lower()}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise XmrError(f"{path}: not valid UTF-8 (byte {e.start}); save the queries as UTF-8") from None
    base = path.resolve().parent
    queries = [q for n, line in enumerate(text.splitlines(), start=1) if (q := parse_query_line(line, base, n))]
    if not queries:
        raise XmrError(f"{path}: no queries (one text or image path per line; '#' starts a comment)")
    return queries
