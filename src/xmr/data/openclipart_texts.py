"""The texts of an Open Clip Art drawing: its title, description and keywords, cleaned (the rules below).

A drawing's texts are, in this order and each only when it survives its rule:

1. **the title** (``dc:title``). Dropped when empty or a placeholder (``Untitled``, ``drawing``,
   ``image 3``, ``New document 1``, ``layer1`` ...: :data:`PLACEHOLDER`), the creator's name
   (``Mirjam Meijer`` by Mirjam Meijer; a title that starts or ends with it loses it), or
   file-name-like: a word joined by underscores (``jigsaw_red_10``, ``aiga_symbol_signs``) or one
   ending in a file extension (``flower.svg``).
   The prefix ``Clipart by <author> - `` is cut first (``Clipart by Jon A. Cruz - United States -
   California`` -> ``United States - California``), so ``Clipart by Nicu Buculei - arrow08_4``
   leaves a file name, which is dropped. A title of one CamelCase word is read as words
   (``CayennePepperRevisited`` -> ``Cayenne Pepper Revisited``).
2. **the description** (``dc:description``). Dropped when it is a URL or an e-mail address alone,
   the creator's name, or a ``HASH(0x...)`` left by the tool that exported the library.
3. **the keywords** (``dc:subject``), joined by ``", "`` in the file's order, each with ``_`` read
   as a space (``united_nations_member`` -> ``united nations member``); ``hash``,
   ``hash(0x...)`` and ``0x...`` entries (the same export's leftovers), the creator's name and
   repeats are dropped.

Every text has HTML entities decoded (``W&uuml;rttemberg`` -> ``Württemberg``) and its whitespace
collapsed; a text equal to an earlier one of the drawing (ignoring case) is dropped.

**Collection texts** (:func:`drop_collection_texts`): a text that more than ``max_shared`` drawings
carry (compared ignoring case) names a collection, not a drawing — ``gramastar`` on 1,375
generated star patterns, ``Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)`` on 551
icons, the keywords ``stars, shapes, magick, geometry`` — and is dropped from every drawing that
has it. A drawing left with no text is not an item (it is listed, with why, in the skipped list).
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from xmr.data.emoji import unique_texts
from xmr.data.svg_metadata import DrawingMetadata

#: titles that name no drawing, compared ignoring case, after an optional number (``image 3``)
PLACEHOLDER = frozenset({"untitled", "untitled document", "no title", "title", "drawing", "image", "picture",
                         "new document", "document", "layer", "svg", "clipart", "clip art", "none", "unknown",
                         "test", "icon", "logo", "graphic", "figure"})
_NUMBERED = re.compile(r"^(?P<base>.*?)[\s_#-]*\d*$")
_AUTHOR_PREFIX = re.compile(r"^clip\s*art\s+by\s+[^-]+?\s+-\s+", re.IGNORECASE)
_FILE_EXTENSION = re.compile(r"\.(svg|svgz|png|jpe?g|gif|bmp|eps|ai|wmf|emf|xcf|pdf|odg|sxd)$", re.IGNORECASE)
_UNDERSCORED = re.compile(r"^\S*\w_\w\S*$")
_URL_OR_EMAIL = re.compile(r"^(?:(?:https?|ftp)://\S+|www\.\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)$", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_EXPORT_LEFTOVER = re.compile(r"^(?:hash(?:\(0x[0-9a-f]+\))?|0x[0-9a-f]+)$", re.IGNORECASE)


def normalise(text: str) -> str:
    """HTML entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(text).split())


def is_placeholder(title: str) -> bool:
    """``Untitled``, ``drawing``, ``image 3``, ``layer1`` ... (see :data:`PLACEHOLDER`)."""
    m = _NUMBERED.match(title.strip())
    base = (m.group("base") if m else title).strip().casefold()
    return not base or base in PLACEHOLDER


def is_file_name(title: str) -> bool:
    """One word joined by underscores (``jigsaw_red_10``), or a name ending in a file extension."""
    return bool(_UNDERSCORED.match(title) or _FILE_EXTENSION.search(title))


def clean_title(title: str, creator: str = "") -> str:
    """The title after rule 1 of the module docstring ("" when dropped)."""
    t = _without_name(_AUTHOR_PREFIX.sub("", normalise(title)), normalise(creator))
    if is_placeholder(t) or is_file_name(t):
        return ""
    return _CAMEL.sub(" ", t) if " " not in t else t


def _without_name(text: str, name: str) -> str:
    """``text`` without ``name`` (ignoring case) at its start or end, and "" when it is ``name`` alone."""
    if not name:
        return text
    folded, n = text.casefold(), name.casefold()
    if folded.startswith(n):
        text = text[len(name):]
    elif folded.endswith(n):
        text = text[: len(text) - len(name)]
    return text.strip(" -,:;")


def clean_description(description: str, creator: str = "") -> str:
    """The description after rule 2 ("" when dropped)."""
    d = normalise(description)
    bad = _URL_OR_EMAIL.match(d) or _EXPORT_LEFTOVER.match(d) or d.casefold() == normalise(creator).casefold()
    return "" if bad else d


def clean_keywords(keywords: Sequence[str], creator: str = "") -> str:
    """The keywords after rule 3, joined by ``", "`` ("" when none is left)."""
    words = (normalise(k.replace("_", " ")) for k in keywords)
    author = normalise(creator).casefold()
    return ", ".join(unique_texts(w for w in words if not _EXPORT_LEFTOVER.match(w) and w.casefold() != author))


def drawing_texts(meta: DrawingMetadata) -> tuple[str, ...]:
    """The drawing's cleaned title, description and keywords line, in that order, empty and repeated ones dropped."""
    return unique_texts((clean_title(meta.title, meta.creator), clean_description(meta.description, meta.creator),
                         clean_keywords(meta.keywords, meta.creator)))


def drop_collection_texts(texts: Mapping[str, tuple[str, ...]], max_shared: int
                          ) -> tuple[dict[str, tuple[str, ...]], dict[str, list[str]]]:
    """Each drawing's texts without those more than ``max_shared`` drawings carry (ignoring case).

    Args:
        texts: drawing id -> its texts (:func:`drawing_texts`).
        max_shared: the most drawings a text may name.

    Returns:
        ``(kept, dropped)``: drawing id -> the texts it keeps (possibly none), and drawing id -> a
        note per dropped text (``"'gramastar' (on 1375 drawings)"``), for drawings that lost any.
    """
    counts = Counter(t.casefold() for ts in texts.values() for t in set(ts))
    kept: dict[str, tuple[str, ...]] = {}
    dropped: dict[str, list[str]] = {}
    for key, ts in texts.items():
        kept[key] = tuple(t for t in ts if counts[t.casefold()] <= max_shared)
        notes = [f"{_short(t)!r} (on {counts[t.casefold()]} drawings)" for t in ts if counts[t.casefold()] > max_shared]
        if notes:
            dropped[key] = notes
    return kept, dropped


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
