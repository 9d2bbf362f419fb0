"""The features family's section: a trained dictionary, its training run, its reconstruction and its bench scores.

``dictionary_section`` takes what ``mechscope.features.train`` returns (a ``TrainResult``, or just the
``Dictionary``), optionally its ``ReconstructionMetrics`` (``features.evaluate``) and the bench's ``Score`` objects
of it (``bench.score("features", result, organism, method)``), and gives one report section: the dictionary's
config (its kind's settings typed, as ``Dictionary.settings`` reads them), the logged training steps, the
reconstruction, and each score beside its chance level. Every cell is escaped. Any dictionary kind renders, a
plug-in's included: the section reads only the kinds registry's config of the dictionary.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._page import Section, table_html

if TYPE_CHECKING:
    from ..bench._scorers import Score
    from ..features._dictionary import Dictionary
    from ..features._metrics import ReconstructionMetrics
    from ..features._train import TrainResult


def dictionary_section(trained: Dictionary | TrainResult, scores: Sequence[Score] = (), *,
                       metrics: ReconstructionMetrics | None = None, title: str | None = None) -> Section:  # fmt: skip
    """One report section for a trained dictionary (see the module docstring)."""
    from ..features._train import TrainResult

    result = trained if isinstance(trained, TrainResult) else None
    d = trained.dictionary if isinstance(trained, TrainResult) else trained
    cfg = d.cfg
    out = f" to {cfg.d_out} outputs (a transcoder)" if cfg.d_out is not None else ""
    body = (f"<p>A <b>{html.escape(cfg.kind)}</b> dictionary: {cfg.d_in:,} inputs, {cfg.d_sae:,} latents{out}"
            f"{f', reading {html.escape(cfg.site)}' if cfg.site else ''}.</p>")  # fmt: skip
    body += table_html(["setting", "value"], _config_rows(d))
    if result is not None:
        body += f"<p>Trained {result.steps:,} steps on {result.tokens:,} rows.</p>"
        steps = [(h.step, h.tokens, h.loss, h.fvu, h.l0, h.dead_fraction) for h in result.history]
        if steps:
            body += table_html(["step", "rows", "loss", "FVU", "L0", "dead fraction"], steps)
    if metrics is not None:
        body += "<p>Reconstruction:</p>" + table_html(["metric", "value"], list(metrics._asdict().items()))
    if scores:
        rows = [(s.method, s.organism, s.seed, s.metric, s.value, s.chance, "higher" if s.higher_is_better else "lower")
                for s in scores]  # fmt: skip
        body += "<p>Bench scores (against the organism's true features):</p>"
        body += table_html(["method", "organism", "seed", "metric", "value", "chance", "better"], rows)
    return (title or f"Dictionary: {cfg.kind}, {cfg.d_sae:,} latents", body)


def _config_rows(d: Dictionary) -> list[tuple[str, str]]:
    """The dictionary's shape and sites, then its kind's settings."""
    cfg = d.cfg
    rows = [("kind", cfg.kind), ("d_in", str(cfg.d_in)), ("d_sae", str(cfg.d_sae))]
    rows += [(name, str(getattr(cfg, name))) for name in ("d_out", "site", "target_site") if getattr(cfg, name)]
    rows.append(("apply_b_dec_to_input", str(cfg.apply_b_dec_to_input)))
    settings = d.settings
    rows += [(f.name, repr(getattr(settings, f.name))) for f in dataclasses.fields(settings)]
    return rows
