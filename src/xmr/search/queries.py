"""Query files for batch search: one query per line, a text or an image path.

    # lines starting with '#' and blank lines are skipped
    a dog on a beach
    photos/rex.jpg              <- an image query (a path: relative to the query file's folder)
    text: photos/rex.jpg        <- forced text ('text:' / 'image:' prefixes override the guess)
    image: /abs/path/cat.png

A line that looks like a path -- an image suffix (``.jpg``, ``.png``, ...), or a ``/`` in a
line without spaces -- is an image query, looked up relative to the query file's folder, then
to the working folder (``~`` expanded). When neither exists the query carries an ``error``
naming where it was looked for: the searcher reports it on its line instead of searching the
path as a text. Any other line is a text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xmr.data.folder import IMAGE_SUFFIXES
from xmr.errors import XmrError
from xmr.modality import Modality
from xmr.utils.files import LIMITS, check_input_file

PREFIXES: dict[str, Modality] = {"text:": "text", "image:": "image"}


@dataclass(frozen=True)
class Query:
    """One query: ``kind`` ``"text"`` or ``"image"``, ``value`` the text or image path, ``line`` its line
    (1-based); ``error``: why it cannot be answered, known when it was read (an image path that
    does not exist), else None."""

    kind: Modality
    value: str
    line: int = 0
    error: str | None = None


def looks_like_path(text: str) -> bool:
    """Whether a query line names a file rather than says something: an image suffix, or a ``/``
    in a line without spaces (``holidays/rex.jpg``, ``scans/0042``, not ``a cat and/or a dog``)."""
    return Path(text).suffix.lower() in IMAGE_SUFFIXES or ("/" in text and not any(c.isspace() for c in text))


def _image_query(value: str, base: Path, number: int) -> Query:
    """The image query of ``value``: the first of ``base / value`` and ``value`` (the working
    folder) that exists, else a query whose ``error`` names both places."""
    given = Path(value).expanduser()
    candidates = list(dict.fromkeys((base / given, given.absolute())))
    found = next((c for c in candidates if os.path.lexists(c)), None)  # what it is: the image reader says
    if found is not None:
        return Query("image", str(found), number)
    where = " or ".join(str(c) for c in candidates)
    return Query("image", value, number, error=f"no such image file {value!r}: looked for {where} (a path is "
                                                f"relative to the query file's folder, then to the working folder; "
                                                f"write 'text: {value}' to search it as a text)")


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
            return _image_query(value, base, number) if kind == "image" else Query("text", value, number)
    return _image_query(text, base, number) if looks_like_path(text) else Query("text", text, number)


def read_queries(path: str | Path) -> list[Query]:
    """The queries of a query file (UTF-8), in order.

    Raises:
        XmrError: the file cannot be read, is not UTF-8 or holds no query.
    """
    path = Path(path)
    check_input_file(path, "query file", max_bytes=LIMITS.text_bytes)  # a FIFO or /dev/zero is never opened
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
