"""Representation similarity, rendered: the site × site matrix of ``lenses.site_similarity`` as a heatmap PNG.

matplotlib is imported inside the function that draws, so importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from ..lenses._similarity import SimilarityMatrix


def similarity_heatmap(result: SimilarityMatrix, path: str | Path, *, title: str | None = None) -> Path:
    """Save a PNG of the similarity of every pair of sites (rows: the first model's sites, columns: the second's)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = result.values.numpy()
    rows, cols = len(result.rows), len(result.cols)
    fig = Figure(figsize=(0.28 * cols + 3.2, 0.26 * rows + 2.0), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", vmin=min(0.0, float(values.min())), vmax=1, origin="lower")
    ax.set_xticks(range(cols), result.cols, rotation=90, fontsize=6)
    ax.set_yticks(range(rows), result.rows, fontsize=6)
    a, b = result.provenance["a"].get("model", ""), result.provenance["b"].get("model", "")
    ax.set(xlabel=b, ylabel=a)
    fig.colorbar(image, ax=ax, label=result.measure, shrink=0.8)
    fig.suptitle(title or f"{result.measure} over {result.n} tokens", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
