"""Rendering: self-contained HTML pages, tables and plots for every method family's results.

Result classes hold data; this layer turns them into pages (one file, nothing loaded from the network, every text
escaped) and images. Method families, organisms and the bench never import it; the CLI, the demo and the app do.
"""

from ._page import Section, figure_html, png_html, render_report, table_html, write_report
from ._png import data_uri, grid, png_bytes, save_png

__all__ = [
    "Section",
    "data_uri",
    "figure_html",
    "grid",
    "png_bytes",
    "png_html",
    "render_report",
    "save_png",
    "table_html",
    "write_report",
]
