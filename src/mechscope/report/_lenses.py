"""Lenses, rendered: the answer's probability against layer, and the top tokens of every layer as a heatmap.

Every function takes a result of ``mechscope.lenses`` (data only) and draws it; matplotlib is imported inside the
functions that draw, so importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..lenses._grid import LensGrid
from ..lenses._tuned_train import LensEvaluation
from ..lenses.logit_lens import LogitLensResult


def plot_logit_lens(result: LogitLensResult, path: str | Path, *, title: str | None = None) -> Path:
    """Save a PNG of the answer's probability against layer: one line per prompt, plus their mean when several.

    The left panel is linear; the right is logarithmic, where the answer's rise in the middle layers shows even
    while its probability is still far below one percent.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    probs = result.answer_probs.numpy()
    n, layers = probs.shape[0], result.layers
    fig = Figure(figsize=(11, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    linear, log = fig.subplots(1, 2)
    for ax in (linear, log):
        for i in range(n):
            prompt = _short(result.prompts[i]) if result.prompts else f"input {i}"
            ax.plot(layers, probs[i], marker="o" if n == 1 else None, markersize=3, lw=2 if n == 1 else 1,
                    alpha=1 if n == 1 else 0.45, label=f"{prompt} → {result.answer_tokens[i]!r}")  # fmt: skip
        if n > 1:
            ax.plot(layers, probs.mean(0), color="black", lw=2.5, label=f"mean of {n} prompts")
        ax.set(xlabel="layer (resid_post → final norm → unembedding)", xlim=(layers[0] - 0.5, layers[-1] + 0.5))
        ax.grid(alpha=0.3)
    linear.set(ylabel="P(answer)", ylim=(-0.02, 1.02))
    log.set(ylabel="P(answer), log scale", yscale="log", ylim=(None, 1.5))
    handles, labels = linear.get_legend_handles_labels()
    if n <= 8:  # beyond a handful of prompts, one legend entry per line is noise
        linear.legend(handles, labels, loc="upper left", fontsize=8, frameon=False)
    elif n > 1:
        linear.legend(handles[-1:], labels[-1:], loc="upper left", fontsize=8, frameon=False)
    fig.suptitle(title or f"Logit lens — {result.provenance.get('model', '')}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def logit_lens_heatmap(result: LogitLensResult, path: str | Path, *, prompt: int = 0, title: str | None = None) -> Path:
    """Save a PNG of one prompt's top tokens under every layer's lens.

    A row per layer (the last on top), a column per rank; each cell is coloured by the token's probability and
    labelled with the token.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    probs = result.top_probs[prompt].numpy()  # [layer k]
    tokens = result.top_tokens[prompt]
    n_layers, k = probs.shape
    fig = Figure(figsize=(1.3 * k + 2.4, 0.32 * n_layers + 1.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(probs, cmap="Blues", vmin=0, vmax=1, aspect="auto", origin="lower")
    for layer in range(n_layers):
        for rank in range(k):
            p = float(probs[layer, rank])
            ax.text(rank, layer, _short(repr(tokens[layer][rank]), 14), ha="center", va="center", fontsize=7,
                    color="white" if p > 0.55 else "black")  # fmt: skip
    ax.set_xticks(range(k), [str(r + 1) for r in range(k)])
    ax.set_yticks(range(n_layers), [str(layer) for layer in result.layers])
    ax.set(xlabel="rank under the layer's lens", ylabel="layer (resid_post)")
    fig.colorbar(image, ax=ax, label="probability", shrink=0.8)
    where = _short(result.prompts[prompt]) if result.prompts else f"input {prompt}"
    name = "Tuned lens" if result.lens == "tuned_lens" else "Logit lens"
    fig.suptitle(title or f"{name} — {result.provenance.get('model', '')}\ntop tokens after {where!r}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def lens_grids(grids: dict[str, LensGrid], path: str | Path, *, title: str | None = None) -> Path:
    """Save a PNG of lens grids side by side (e.g. ``{"logit lens": ..., "tuned lens": ...}`` of one prompt).

    Each panel is layer (rows, the last on top) by position (columns): the cell is the top next-token prediction
    of that layer's lens after that token, coloured by its probability.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first = next(iter(grids.values()))
    n_layers, n_pos = first.top_ids.shape[:2]
    fig = Figure(figsize=(len(grids) * (0.62 * n_pos + 1.2) + 1.0, 0.3 * n_layers + 2.0), dpi=120,
                 layout="constrained")  # fmt: skip
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    image: Any = None
    for ax, (name, grid) in zip(axes, grids.items(), strict=True):
        probs = grid.top_probs[..., 0].numpy()  # [layer pos]
        image = ax.imshow(probs, cmap="Blues", vmin=0, vmax=1, aspect="auto", origin="lower")
        for layer in range(n_layers):
            for pos in range(n_pos):
                ax.text(pos, layer, _short(repr(grid.top_tokens[layer][pos][0]), 8), ha="center", va="center",
                        fontsize=6, color="white" if probs[layer, pos] > 0.55 else "black")  # fmt: skip
        ax.set_xticks(range(n_pos), [_short(repr(t), 8) for t in grid.tokens], rotation=60, fontsize=7)
        ax.set_yticks(range(n_layers), [str(layer) for layer in range(n_layers)], fontsize=7)
        ax.set(title=name, xlabel="input token (prediction after it)", ylabel="layer (resid_post)")
    fig.colorbar(image, ax=list(axes), label="top-1 probability", shrink=0.8)
    fig.suptitle(title or f"Lenses — {first.provenance.get('model', '')}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_lens_evaluation(result: LensEvaluation, path: str | Path, *, title: str | None = None) -> Path:
    """Save a PNG of held-out KL from the final distribution and perplexity per layer: tuned against logit lens."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = list(range(len(result.sites)))
    fig = Figure(figsize=(11, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    kl, ppl = fig.subplots(1, 2)
    for ax, (tuned, logit) in ((kl, (result.kl_tuned, result.kl_logit)), (ppl, (result.ppl_tuned, result.ppl_logit))):
        ax.plot(x, logit, marker="o", markersize=3, label="logit lens")
        ax.plot(x, tuned, marker="o", markersize=3, label="tuned lens")
        ax.set(xlabel="translator input (resid_pre.i; i = l + 1 reads resid_post.l)", yscale="log")
        ax.grid(alpha=0.3)
    kl.set(ylabel="KL(final ‖ lens), nats")
    ppl.axhline(result.ppl_model, color="black", lw=1, ls="--", label=f"model ({result.ppl_model:.1f})")
    ppl.set(ylabel="perplexity on held-out text")
    kl.legend(frameon=False)
    ppl.legend(frameon=False)
    fig.suptitle(title or f"Tuned vs logit lens, {result.tokens:,} held-out tokens — "
                 f"{result.provenance.get('model', '')}")  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]
