"""Heatmaps of patching grids and direct logit attribution (matplotlib, no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ._dla import DLAResult
from ._result import PatchingResult


def heatmap(result: PatchingResult | DLAResult, path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """Draw a result as a heatmap; save it as PNG (or any matplotlib format) when ``path`` is given.

    Patching grids show the normalised effect (raw scores when clean and corrupt tie) with a diverging colour map
    centred on the no-effect value; ``[layer]`` grids are one row, ``[layer head pos]`` grids one row per head.
    Direct logit attribution shows ``[layer, heads + MLP]``.
    """
    if isinstance(result, DLAResult):
        grid = torch.cat([result.heads, result.mlps[:, None]], 1)
        rows = [f"L{i}" for i in range(grid.shape[0])]
        cols = [f"H{i}" for i in range(result.heads.shape[1])] + ["MLP"]
        label, center = "direct logit attribution", 0.0
        title = title or f"DLA: {result.task} (logit diff {result.logit_diff:.3g})"
    else:
        grid, rows, cols, label, center = _patching_grid(result)
        title = title or f"{result.method} patching: {result.kind}, {result.direction} ({result.task})"
    fig = Figure(figsize=(max(4.0, 0.35 * len(cols) + 2.5), max(2.5, 0.28 * len(rows) + 1.5)))
    ax = fig.subplots()
    span = float((grid - center).abs().max()) or 1.0
    image = ax.imshow(grid.numpy(), cmap="RdBu_r", vmin=center - span, vmax=center + span, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _patching_grid(result: PatchingResult) -> tuple[Tensor, list[str], list[str], str, float]:
    try:
        grid, label = result.effect, "effect (1 = clean, 0 = corrupt)"
        center = 0.0 if result.direction == "denoising" else 1.0
    except ValueError:
        grid, label, center = result.scores, f"{result.metric}", float(result.corrupt_metric)
    grid = grid.float()
    if grid.ndim == 1:  # [layer] -> one row
        return grid[None], [result.kind], list(result.labels[0]), label, center
    if grid.ndim == 3:  # [layer head pos] -> rows "L.H"
        rows = [f"L{layer}{head}" for layer in result.labels[0] for head in result.labels[1]]
        return grid.flatten(0, 1), rows, list(result.labels[2]), label, center
    return grid, [f"L{x}" for x in result.labels[0]], list(result.labels[1]), label, center
