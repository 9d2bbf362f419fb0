"""Rendering: self-contained HTML pages, tables and plots for every method family's results.

Result classes hold data; this layer turns them into pages (one file, nothing loaded from the network, every text
escaped) and images. Method families, organisms and the bench never import it; the CLI, the demo and the app do.
Circuits: ``heatmap``, ``draw_circuit``, ``plot_faithfulness_curve``, ``write_run_files`` / ``run_section`` for a
``find_circuit`` run, ``analysis_sections`` for the demo's analysis. Lenses: ``plot_logit_lens``,
``logit_lens_heatmap``, ``similarity_heatmap``, ``steering_plot``.
``find_circuit`` run, ``analysis_sections`` for the demo's analysis. Features: ``dictionary_section`` for a trained
dictionary (any kind), its training run and its bench scores.
"""

from ._bench import leaderboard_html, leaderboard_markdown, write_leaderboard
from ._circuits import (
    MAX_DRAWN_EDGES,
    analysis_sections,
    draw_circuit,
    draw_node_circuit,
    faithfulness_sentence,
    heatmap,
    node_links,
    plot_faithfulness_curve,
    render_dot,
    run_section,
    write_circuit_files,
    write_run_files,
)
from ._features import dictionary_section
from ._graphs import MAX_GRAPH_EDGES, graph_section, graph_svg, write_graph_report
from ._lenses import logit_lens_heatmap, plot_logit_lens
from ._page import Section, figure_html, png_html, render_report, table_html, write_report
from ._png import data_uri, grid, png_bytes, save_png
from ._similarity import similarity_heatmap
from ._steering import steering_plot

__all__ = [
    "MAX_DRAWN_EDGES",
    "MAX_GRAPH_EDGES",
    "Section",
    "analysis_sections",
    "data_uri",
    "dictionary_section",
    "draw_circuit",
    "draw_node_circuit",
    "faithfulness_sentence",
    "figure_html",
    "graph_section",
    "graph_svg",
    "grid",
    "heatmap",
    "leaderboard_html",
    "leaderboard_markdown",
    "logit_lens_heatmap",
    "node_links",
    "plot_faithfulness_curve",
    "plot_logit_lens",
    "png_bytes",
    "png_html",
    "render_dot",
    "render_report",
    "run_section",
    "save_png",
    "similarity_heatmap",
    "steering_plot",
    "table_html",
    "write_circuit_files",
    "write_graph_report",
    "write_leaderboard",
    "write_report",
    "write_run_files",
]
