"""Report sections for the lenses family: one ``lens_section(result)`` for every result type its methods return.

The registry (``lenses.METHODS``) declares each method's result type; ``SECTIONS`` maps each of those types (and
the tuned lens's ``LensEvaluation``) to its renderer, so a report of any lenses method is ``lens_section(result)``
and ``tests/test_lens_sections.py`` checks that every declared result type has one. Plots are the PNGs of
``report._lenses`` / ``_similarity`` / ``_steering``, embedded.
"""

from __future__ import annotations

import html
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..lenses._grid import LensGrid
from ..lenses._heads import HEAD_TYPES, CompositionScores, HeadTypeScores
from ..lenses._probes import ProbeResult
from ..lenses._similarity import SimilarityMatrix
from ..lenses._steering import SteeringSweep
from ..lenses._tuned_train import LensEvaluation
from ..lenses._weights import HeadSpectra
from ..lenses.logit_lens import LogitLensResult
from ._page import Section, png_html, table_html


def _png(draw: Callable[[Path], Path], alt: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return png_html(draw(Path(tmp) / "plot.png").read_bytes(), alt)


def _lens(result: LogitLensResult) -> Section:
    from ._lenses import logit_lens_heatmap

    name = result.lens.replace("_", " ")
    rows = [(layer, " ".join(repr(t) for t in result.top_tokens[0][i]), float(result.answer_probs[0, i]),
             int(result.answer_ranks[0, i])) for i, layer in enumerate(result.layers)]  # fmt: skip
    body = _png(lambda p: logit_lens_heatmap(result, p), f"{name} heatmap")
    body += table_html(["layer", "top tokens", f"P({result.answer_tokens[0]!r})", "rank"], rows, digits=4)
    return (f"{name.capitalize()}", body)


def _evaluation(result: LensEvaluation) -> Section:
    from ._lenses import plot_lens_evaluation

    rows = list(zip(result.sites, result.kl_tuned, result.kl_logit, result.ppl_tuned, result.ppl_logit, strict=True))
    body = f"<p>{result.tokens:,} held-out tokens; the model's own perplexity is {result.ppl_model:.2f}.</p>"
    body += _png(lambda p: plot_lens_evaluation(result, p), "tuned vs logit lens")
    body += table_html(["site", "KL tuned", "KL logit", "ppl tuned", "ppl logit"], rows)
    return ("Tuned lens against logit lens (held out)", body)


def _grid(result: LensGrid) -> Section:
    from ._lenses import lens_grids

    return (result.method.replace("_", " ").capitalize(), _png(lambda p: lens_grids({result.method: result}, p), ""))


def _head_types(result: HeadTypeScores) -> Section:
    rows = [(kind, f"{layer}.{head}", score) for kind in HEAD_TYPES for (layer, head), score in result.top(kind, 3)]
    return ("Head types", table_html(["type", "head", "score"], rows))


def _composition(result: CompositionScores) -> Section:
    rows = [(mode.upper(), f"{s[0]}.{s[1]}", f"{r[0]}.{r[1]}", v) for mode in ("q", "k", "v")
            for s, r, v in result.top(mode, 3)]  # fmt: skip
    return ("Composition scores", table_html(["mode", "writer", "reader", "score"], rows))


def _spectra(result: HeadSpectra) -> Section:
    rows = []
    for i, (layer, head) in enumerate(result.heads[:12]):
        out = result.tokens.get("ov_out", ())
        tops = " ".join(repr(t) for t in out[i][0][:5]) if len(out) > i else ""
        rows.append((f"{layer}.{head}", float(result.ov_singular[i, 0]), tops))
    note = f"<p class='note'>First {len(rows)} of {len(result.heads)} heads.</p>"
    return ("Head OV spectra", note + table_html(["head", "top OV singular value", "top OV output tokens"], rows))


def _probe(result: ProbeResult) -> Section:
    rows = [("site", result.site or ""), ("accuracy", result.accuracy), ("chance", result.chance),
            ("control accuracy", result.control_accuracy), ("selectivity", result.selectivity),
            ("n", result.n)]  # fmt: skip
    return ("Linear probe", table_html(["", "value"], [(k, "" if v is None else v) for k, v in rows]))


def _similarity(result: SimilarityMatrix) -> Section:
    from ._similarity import similarity_heatmap

    return (f"Representation similarity ({html.escape(result.measure)})",
            _png(lambda p: similarity_heatmap(result, p), result.measure))  # fmt: skip


def _steering(result: SteeringSweep) -> Section:
    from ._steering import steering_plot

    return (f"Steering: {html.escape(result.task)}", _png(lambda p: steering_plot(result, p), "steering sweep"))


SECTIONS: dict[type, Callable[[Any], Section]] = {
    LogitLensResult: _lens,
    LensEvaluation: _evaluation,
    LensGrid: _grid,
    HeadTypeScores: _head_types,
    CompositionScores: _composition,
    HeadSpectra: _spectra,
    ProbeResult: _probe,
    SimilarityMatrix: _similarity,
    SteeringSweep: _steering,
}
"""Result type -> its section renderer."""


def lens_section(result: Any, *, title: str | None = None) -> Section:
    """One report section for a result of any lenses method (raises ``TypeError`` naming the known types)."""
    render = SECTIONS.get(type(result))
    if render is None:
        known = ", ".join(sorted(t.__name__ for t in SECTIONS))
        raise TypeError(f"no report section for {type(result).__name__}; lenses results are {known}")
    heading, body = render(result)
    return (title or heading, body)
