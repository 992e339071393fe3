"""The contact sheet: search results as pictures, one row per query.

Each row starts with the query (its image, or its text in a box), then the top-k results as
tiles: the result's image, its score and its first text; a marked tile (a known correct hit)
gets a green frame. Drawn with matplotlib; images are read with Pillow and shown as they are
(alpha composited on white); a tile whose image cannot be read says so instead of failing.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmr.errors import XmrError
from xmr.plots.figures import pyplot, save_figure

#: inches per tile (square); a row is one tile high plus room for two lines of caption
TILE_INCHES = 1.7
DPI = 100
#: characters per caption line under a tile
CAPTION_WIDTH = 24


@dataclass(frozen=True)
class SheetTile:
    """One result: its image (or None for a text result), a caption, its score, and ``mark`` = a correct hit."""

    image: str | None
    caption: str = ""
    score: float | None = None
    mark: bool = False


@dataclass(frozen=True)
class SheetRow:
    """One query (``text`` and/or ``image``) and its result tiles, best first."""

    text: str | None = None
    image: str | None = None
    tiles: Sequence[SheetTile] = field(default_factory=tuple)


@dataclass(frozen=True)
class SheetLayout:
    """What :func:`contact_sheet` drew: rows, columns (query + the widest row's results), tiles, pixels."""

    n_rows: int
    n_cols: int
    n_tiles: int
    width_px: int
    height_px: int


def _thumbnail(path: str, side: int = 160) -> np.ndarray | None:
    """The image at ``path`` as an (h, w, 3) uint8 array on white, at most ``side`` pixels; None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (side, side))
            im.thumbnail((side, side))
            rgba = im.convert("RGBA")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def _caption(text: str, lines: int = 2) -> str:
    wrapped = textwrap.wrap(text, CAPTION_WIDTH) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][:CAPTION_WIDTH - 1] + "…"
    return "\n".join(wrapped)


def _frame(ax: object, colour: str, width: float) -> None:
    for spine in ax.spines.values():  # type: ignore[attr-defined]
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def contact_sheet(rows: Sequence[SheetRow], path: str | os.PathLike[str], *, title: str | None = None
                  ) -> SheetLayout:
    """Draw ``rows`` as a grid (query column + one column per result) to a PNG at ``path``.

    Raises:
        XmrError: no rows.
    """
    if not rows:
        raise XmrError("a contact sheet needs at least one query")
    plt = pyplot()
    n_cols = 1 + max(len(r.tiles) for r in rows)
    fig_w, fig_h = TILE_INCHES * n_cols, (TILE_INCHES + 0.45) * len(rows) + (0.4 if title else 0.0)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(fig_w, fig_h), squeeze=False)
    n_tiles = 0
    for r, row in enumerate(rows):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        q = axes[r][0]
        thumb = _thumbnail(row.image) if row.image else None
        if thumb is not None:
            q.imshow(thumb)
        if row.text is not None:
            q.text(0.5, 0.5 if thumb is None else 0.08, textwrap.fill(row.text, 16), ha="center",
                   va="center" if thumb is None else "bottom", fontsize=9, wrap=True, transform=q.transAxes,
                   bbox={"boxstyle": "round", "facecolor": "#fff6d5", "edgecolor": "#c9a400"})
        q.set_title("query" + (" (image)" if row.image else ""), fontsize=8, fontweight="bold")
        _frame(q, "#c9a400", 2.0)
        for c, tile in enumerate(row.tiles, start=1):
            ax = axes[r][c]
            img = _thumbnail(tile.image) if tile.image else None
            if img is not None:
                ax.imshow(img)
            else:
                ax.text(0.5, 0.5, "(text result)" if tile.image is None else "(unreadable)", ha="center",
                        va="center", fontsize=7, color="#777777", transform=ax.transAxes)
            score = f"{tile.score:.3f}  " if tile.score is not None else ""
            ax.set_title(f"#{c}  {score}".rstrip(), fontsize=7)
            ax.set_xlabel(_caption(tile.caption), fontsize=7)
            _frame(ax, "#2ca02c" if tile.mark else "#bbbbbb", 2.5 if tile.mark else 0.6)
            n_tiles += 1
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - (0.4 / fig_h if title else 0.0)))  # the title above the grid
    width_px, height_px = int(round(fig_w * DPI)), int(round(fig_h * DPI))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=DPI)
    return SheetLayout(len(rows), n_cols, n_tiles, width_px, height_px)
