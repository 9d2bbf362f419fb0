"""Rendering: self-contained HTML pages, tables and plots for every method family's results.

Result classes hold data; this layer turns them into pages (one file, nothing loaded from the network, every text
escaped) and images. Method families, organisms and the bench never import it; the CLI, the demo and the app do.
"""

from ._bench import leaderboard_html, leaderboard_markdown, write_leaderboard
from ._page import Section, figure_html, png_html, render_report, table_html, write_report

__all__ = [
    "Section",
    "figure_html",
    "leaderboard_html",
    "leaderboard_markdown",
    "png_html",
    "render_report",
    "table_html",
    "write_leaderboard",
    "write_report",
]
