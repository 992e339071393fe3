"""Figures, all drawn with matplotlib (Agg backend) and written atomically: the contact sheet of
search results (:mod:`xmr.plots.sheet`) and the plain line and histogram helpers the evaluation
and the benchmarks share (:mod:`xmr.plots.figures`)."""

from xmr.plots.figures import line_plot, save_figure
from xmr.plots.sheet import SheetLayout, SheetRow, SheetTile, contact_sheet

__all__ = ["SheetLayout", "SheetRow", "SheetTile", "contact_sheet", "line_plot", "save_figure"]
