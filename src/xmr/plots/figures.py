"""matplotlib set up for files, not screens: the Agg backend, atomic PNG writes, a labelled line plot."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from xmr.utils.io import atomic_save_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed; safe in threads and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically (a reader never sees half a file), then close it."""
    plt = pyplot()
    try:
        atomic_save_file(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike[str], *,
              xlabel: str, ylabel: str, title: str = "", emphasise: Sequence[str] = (),
              dashed: Sequence[str] = ()) -> None:
    """One line per ``series`` entry (name -> (xs, ys)) with markers, labelled axes and a legend.

    ``emphasise`` names lines drawn thicker; ``dashed`` names reference lines (no markers).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=name, linewidth=2.2 if name in emphasise else 1.2,
                linestyle="--" if name in dashed else "-", marker=None if name in dashed else "o", markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
