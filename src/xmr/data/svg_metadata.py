"""The RDF metadata of an SVG drawing (title, description, keywords, creator, licence), read safely.

Inkscape and the Open Clip Art Library keep a drawing's metadata as Dublin Core inside RDF in the
SVG's ``<metadata>``::

    <metadata><rdf:RDF>
      <cc:Work rdf:about="">
        <dc:title>2 dead frogs</dc:title>
        <dc:description>...</dc:description>
        <dc:subject><rdf:Bag><rdf:li>frog</rdf:li><rdf:li>swamp</rdf:li></rdf:Bag></dc:subject>
        <dc:creator><cc:Agent><dc:title>Lumen Design Studio</dc:title></cc:Agent></dc:creator>
        <cc:license rdf:resource="http://web.resource.org/cc/PublicDomain"/>
      </cc:Work>
      <cc:License rdf:about="http://web.resource.org/cc/PublicDomain">...</cc:License>
    </rdf:RDF></metadata>

The files come from outside, so they are parsed with ``defusedxml``: no entity declarations
(a file declaring one is refused, never expanded), no external entities or DTDs fetched. The
first ``cc:Work`` holds the metadata (either Creative Commons namespace); a title or description
given as ``rdf:Alt`` alternatives reads as its first one; keywords given as one comma-separated
text (newer Inkscape) are split on the commas.
"""

from __future__ import annotations

import xml.etree.ElementTree as StdET
from dataclasses import dataclass
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as SafeET

from xmr.utils.files import InputFileError, check_input_file

DC = "{http://purl.org/dc/elements/1.1/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
CC_NAMESPACES = ("{http://web.resource.org/cc/}", "{http://creativecommons.org/ns#}")
#: the largest SVG read (bytes): the Open Clip Art drawings are under 2 MB
MAX_SVG_BYTES = 32 << 20


class SvgMetadataError(Exception):
    """An SVG whose metadata cannot be read; ``reason`` says why (no path in it)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class DrawingMetadata:
    """What an SVG's RDF says about the drawing, as written (whitespace collapsed, nothing else cleaned).

    Attributes:
        title: ``dc:title`` of the work ("" when absent).
        description: ``dc:description`` ("" when absent).
        keywords: ``dc:subject``'s ``rdf:li`` entries in file order (empty ones dropped).
        creator: the title of the ``dc:creator`` agent ("" when absent).
        licence: the ``cc:license`` resource URL, else a ``cc:License``'s ``rdf:about`` ("" when absent).
    """

    title: str
    description: str
    keywords: tuple[str, ...]
    creator: str
    licence: str


def _text(el: StdET.Element | None) -> str:
    """The element's text, whitespace collapsed; an ``rdf:Alt`` / ``rdf:Bag`` reads as its first entry."""
    if el is None:
        return ""
    first = el.find(f".//{RDF}li")
    source = first if first is not None else el
    return " ".join("".join(source.itertext()).split())


def _work(root: StdET.Element) -> StdET.Element | None:
    for cc in CC_NAMESPACES:
        work = root.find(f".//{cc}Work")
        if work is not None:
            return work
    return None


def _keywords(work: StdET.Element) -> tuple[str, ...]:
    out: list[str] = []
    for subject in work.findall(f"{DC}subject"):
        entries = subject.findall(f".//{RDF}li")
        texts = [" ".join("".join(li.itertext()).split()) for li in entries] if entries else \
            " ".join("".join(subject.itertext()).split()).split(",")
        out.extend(t.strip() for t in texts if t.strip())
    return tuple(out)


def _licence(root: StdET.Element, work: StdET.Element) -> str:
    for cc in CC_NAMESPACES:
        el = work.find(f"{cc}license")
        url = el.get(f"{RDF}resource", "").strip() if el is not None else ""
        if url:
            return url
    for cc in CC_NAMESPACES:
        el = root.find(f".//{cc}License")
        url = el.get(f"{RDF}about", "").strip() if el is not None else ""
        if url:
            return url
    return ""


def parse_svg_metadata(data: bytes) -> DrawingMetadata:
    """The metadata of one SVG document's bytes.

    Raises:
        SvgMetadataError: not well-formed XML, an entity declaration (refused, not expanded), an
            external reference, not an SVG, or no ``cc:Work`` in it.
    """
    try:
        root = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.EntitiesForbidden:
        raise SvgMetadataError("declares XML entities (refused: they are never expanded)") from None
    except defusedxml.DefusedXmlException as e:
        raise SvgMetadataError(f"unsafe XML refused ({type(e).__name__})") from None
    except StdET.ParseError as e:
        raise SvgMetadataError(f"not well-formed XML ({e})") from None
    if not root.tag.endswith("svg"):
        raise SvgMetadataError(f"not an SVG document (root element {root.tag!r})")
    work = _work(root)
    if work is None:
        raise SvgMetadataError("no RDF metadata (no cc:Work element)")
    creator = work.find(f"{DC}creator")
    return DrawingMetadata(title=_text(work.find(f"{DC}title")), description=_text(work.find(f"{DC}description")),
                           keywords=_keywords(work), creator=_text(creator), licence=_licence(root, work))


def read_svg_metadata(path: str | Path, *, max_bytes: int = MAX_SVG_BYTES) -> DrawingMetadata:
    """:func:`parse_svg_metadata` of a file, checked first (a regular file of at most ``max_bytes``).

    Raises:
        SvgMetadataError: the file cannot be read, or its metadata cannot (see :func:`parse_svg_metadata`).
    """
    try:
        check_input_file(path, "SVG file", max_bytes=max_bytes)
        data = Path(path).read_bytes()
    except InputFileError as e:
        raise SvgMetadataError(e.reason) from None
    except OSError as e:
        raise SvgMetadataError(f"cannot read ({(e.strerror or str(e)).lower()})") from None
    return parse_svg_metadata(data)
