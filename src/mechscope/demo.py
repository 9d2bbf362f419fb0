"""The demo behind ``mechscope demo``: the built-in model's next-token prediction on an IOI prompt, and its logit lens.

Indirect object identification (Wang et al. 2022): after "When Mary and John went to the store, John gave a drink
to", the model should name the person who did *not* repeat, " Mary". The logit lens shows at which layer that
answer becomes readable from the residual stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .lenses import LogitLensResult, logit_lens, plot_logit_lens
from .models import Model

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"
IOI_ANSWER = " Mary"


@dataclass(frozen=True)
class Prediction:
    """One candidate next token."""

    token: str
    id: int
    prob: float


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` computed and where it wrote it."""

    prompt: str
    answer: str
    predictions: tuple[Prediction, ...]
    """The model's top next tokens, most probable first."""
    lens: LogitLensResult
    plot: Path
    """The logit-lens PNG."""
    summary: Path
    """``demo.json``: everything above as JSON."""

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON (paths relative to the output folder)."""
        return {
            "prompt": self.prompt,
            "answer": self.answer,
            "provenance": self.lens.provenance,
            "top_predictions": [p.__dict__ for p in self.predictions],
            "answer_top_layer": answer_top_layer(self.lens),
            "logit_lens": self.lens.to_dict(),
            "files": {"plot": self.plot.name, "summary": self.summary.name},
        }


def top_predictions(model: Model, prompt: str, k: int = 10) -> list[Prediction]:
    """The ``k`` most probable next tokens after ``prompt``."""
    if k < 1:
        raise ValueError(f"top-k must be at least 1, got {k}")
    with torch.no_grad():
        probs = model.run(prompt).final_logits()[0].float().softmax(-1)
    values, ids = probs.topk(min(k, probs.shape[-1]))
    return [Prediction(model.tokenizer.decode([int(i)]), int(i), float(p)) for p, i in zip(values, ids, strict=True)]


def answer_top_layer(lens: LogitLensResult) -> int | None:
    """First layer from which the (first prompt's) answer stays the top token to the end, if any."""
    top = (lens.answer_ranks[0] == 0).tolist()
    if not top[-1]:
        return None
    first = len(top) - 1
    while first > 0 and top[first - 1]:
        first -= 1
    return lens.layers[first]


def run_demo(
    model: Model, out_dir: str | Path, *, prompt: str = IOI_PROMPT, answer: str = IOI_ANSWER, top_k: int = 10
) -> DemoResult:
    """Predict the next token of ``prompt``, run the logit lens for ``answer``, and save the PNG and JSON."""
    out = Path(out_dir)
    lens = logit_lens(model, prompt, answer)  # first: a multi-token answer fails before any work is written
    predictions = tuple(top_predictions(model, prompt, top_k))
    plot = plot_logit_lens(lens, out / "logit_lens.png", title=f"Logit lens on IOI — {model.name}")
    result = DemoResult(prompt, answer, predictions, lens, plot, out / "demo.json")
    result.summary.write_text(json.dumps(result.to_dict(), indent=2))
    return result


def predictions_table(predictions: list[Prediction] | tuple[Prediction, ...], title: str | None) -> Table:
    """A rich table of candidate next tokens."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("token")
    table.add_column("id", justify="right", style="dim")
    table.add_column("probability", justify="right")
    for rank, p in enumerate(predictions, 1):
        table.add_row(str(rank), Text(repr(p.token)), str(p.id), f"{p.prob:.3f}")
    return table


def lens_table(lens: LogitLensResult) -> Table:
    """A rich table of the first prompt's logit lens: the answer's probability and rank, and the top token."""
    answer = lens.answer_tokens[0]
    label = escape(repr(answer))
    table = Table(title=f"Logit lens: P({label}) after each layer", title_justify="left")
    table.add_column("layer", justify="right")
    table.add_column(f"P({label})", justify="right")
    table.add_column("rank", justify="right")
    table.add_column("top token", justify="left")
    for i, layer in enumerate(lens.layers):
        p, rank = float(lens.answer_probs[0, i]), int(lens.answer_ranks[0, i])
        style = "bold green" if rank == 0 else ""
        top = Text(f"{lens.top_tokens[0][i][0]!r} ({float(lens.top_probs[0, i, 0]):.2f})")
        table.add_row(str(layer), f"{p:.2e}" if p < 1e-3 else f"{p:.3f}", str(rank), top, style=style)
    return table


def show_demo(result: DemoResult, console: Console) -> None:
    """Print the demo's predictions, logit lens and output files."""
    console.print(f"[bold]Prompt:[/] {escape(repr(result.prompt))}")
    console.print(predictions_table(result.predictions, "Next-token predictions"))
    console.print(lens_table(result.lens))
    layer, answer, n = answer_top_layer(result.lens), escape(repr(result.answer)), len(result.lens.layers)
    if layer is None:
        console.print(f"{answer} is not the model's top prediction.")
    else:
        console.print(f"{answer} is the lens's top token from layer {layer} on (layers 0–{n - 1}).")
    console.print(f"Saved {escape(str(result.plot))} and {escape(str(result.summary))}")
