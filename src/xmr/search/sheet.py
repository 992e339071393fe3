"""Search results as a contact sheet (``xmr search ... --sheet out.png``; the demo's ``queries.png``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from xmr.errors import XmrError
from xmr.plots import SheetLayout, SheetRow, SheetTile, contact_sheet
from xmr.search.searcher import QueryResult, SearchHit


def search_sheet(results: Sequence[QueryResult], path: str | os.PathLike[str], *, title: str | None = None,
                 is_correct: Callable[[QueryResult, SearchHit], bool] | None = None) -> SheetLayout:
    """One row per answered query: the query (text, or its image), then its hits' images with
    score and first text (a text hit shows the image of the item it came from).

    Args:
        results: from :meth:`~xmr.search.Searcher.search_batch`; unanswered queries are left out.
        path: the PNG to write.
        title: above the grid.
        is_correct: marks a hit as a known correct one (green frame), e.g. by ground truth.

    Raises:
        XmrError: no query was answered.
    """
    rows = []
    for r in results:
        if r.error is not None:
            continue
        tiles = [SheetTile(h.image, h.text or "", h.score, bool(is_correct and is_correct(r, h))) for h in r.hits]
        rows.append(SheetRow(text=r.query.value if r.query.kind == "text" else None,
                             image=r.query.value if r.query.kind == "image" else None, tiles=tiles))
    if not rows:
        raise XmrError("no query was answered: nothing to draw on the contact sheet")
    return contact_sheet(rows, path, title=title)
