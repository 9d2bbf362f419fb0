"""The demo behind ``mechscope demo``: an IOI report on the built-in model, as one self-contained HTML file.

Indirect object identification (Wang et al. 2022): after "When Mary and John went to the store, John gave a drink
to", the model should name the person who did *not* repeat, " Mary". The demo shows the model's next-token
prediction and its logit lens (at which layer the answer becomes readable from the residual stream), then runs
the circuit analysis of ``mechscope.circuits`` over a set of IOI prompt pairs: the logit-difference distribution,
heads ranked by direct logit attribution and by activation patching, the EAP-IG circuit and its faithfulness
curve against random circuits (CPR/CMD). Everything goes into ``report.html`` (plots embedded), ``demo.json``
and the circuit's JSON/DOT files. Other method families add sections through ``run_demo(sections=...)``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ._cache import atomic_write_bytes
from .circuits._analysis import AnalysisConfig, CircuitAnalysis, analyse
from .core import Model
from .data._task import Task
from .data.tasks import ioi
from .lenses import LogitLensResult, logit_lens
from .report import (
    Section,
    analysis_sections,
    faithfulness_sentence,
    plot_logit_lens,
    png_html,
    table_html,
    write_report,
)

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"
IOI_ANSWER = " Mary"


@dataclass(frozen=True)
class Prediction:
    """One candidate next token."""

    token: str
    id: int
    prob: float


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo's IOI analysis; the report states them."""

    n_prompts: int = 8
    """IOI prompt pairs (ABBA and BABA templates, ABC corruption)."""
    seed: int = 0
    """Seed of the prompts and of the random circuits."""
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    """EAP-IG steps, random circuits per size, size of the drawn circuit, heads compared."""

    def __post_init__(self) -> None:
        if self.n_prompts < 2:
            raise ValueError(f"the demo needs at least 2 prompt pairs, got {self.n_prompts}")


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
    analysis: CircuitAnalysis
    """The circuit analysis over the task's prompt pairs."""
    report: Path
    """``report.html``: the self-contained report."""
    files: dict[str, Path] = field(default_factory=dict)
    """Every other file written (circuit JSON/DOT/SVG/PNG, faithfulness PNG)."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON (paths relative to the output folder)."""
        files = {"plot": self.plot.name, "summary": self.summary.name, "report": self.report.name}
        return {
            "prompt": self.prompt,
            "answer": self.answer,
            "provenance": self.lens.provenance,
            "top_predictions": [p.__dict__ for p in self.predictions],
            "answer_top_layer": answer_top_layer(self.lens),
            "logit_lens": self.lens.to_dict(),
            "circuits": self.analysis.to_dict(),
            "seconds": self.seconds,
            "files": files | {k: v.name for k, v in self.files.items()},
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
    model: Model,
    out_dir: str | Path,
    *,
    prompt: str = IOI_PROMPT,
    answer: str = IOI_ANSWER,
    top_k: int = 10,
    task: Task | None = None,
    config: DemoConfig | None = None,
    sections: Sequence[Section] = (),
    progress: bool = False,
    on_step: Callable[[str], object] | None = None,
) -> DemoResult:
    """Run the demo and write ``report.html``, ``demo.json``, the logit-lens PNG and the circuit files to ``out_dir``.

    ``task`` defaults to ``config.n_prompts`` IOI pairs for the model's tokenizer. ``sections`` are extra
    ``(title, HTML fragment)`` pairs appended to the report (see ``mechscope.report``).
    """
    start, cpu = time.perf_counter(), time.process_time()
    config = config or DemoConfig()
    out = Path(out_dir)
    lens = logit_lens(model, prompt, answer)  # first: a multi-token answer fails before any work is written
    if task is None:
        task = ioi(model.tokenizer, n=config.n_prompts, seed=config.seed)
    predictions = tuple(top_predictions(model, prompt, top_k))
    analysis = analyse(
        model, task, dataclasses.replace(config.analysis, seed=config.seed), progress=progress, on_step=on_step
    )
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_logit_lens(lens, out / "logit_lens.png", title=f"Logit lens on IOI — {model.name}")
    circuit_sections, files = analysis_sections(analysis, out)
    lens_html = (f"<p>Prompt: <code>{html.escape(prompt)}</code>; answer <code>{html.escape(repr(answer))}</code>."
                 "</p>" + table_html(["#", "token", "probability"],
                                     [(i, repr(p.token), p.prob) for i, p in enumerate(predictions, 1)])
                 + _lens_sentence(lens, answer) + png_html(plot.read_bytes(), "logit lens"))  # fmt: skip
    seconds = time.perf_counter() - start
    timing = (seconds, time.process_time() - cpu)
    all_sections = [("Next-token prediction and logit lens", lens_html), *circuit_sections, *sections,
                    ("Settings and timings", _settings_html(model, task, config, analysis, timing))]  # fmt: skip
    report = write_report(out / "report.html", f"IOI report — {model.name}", all_sections)
    result = DemoResult(prompt, answer, predictions, lens, plot, out / "demo.json", analysis, report, files, seconds)
    atomic_write_bytes(result.summary, json.dumps(result.to_dict(), indent=2).encode())
    return result


def _lens_sentence(lens: LogitLensResult, answer: str) -> str:
    layer, n = answer_top_layer(lens), len(lens.layers)
    if layer is None:
        return f"<p>{html.escape(repr(answer))} is not the model's top prediction.</p>"
    return f"<p>{html.escape(repr(answer))} is the lens's top token from layer {layer} on (layers 0–{n - 1}).</p>"


def _settings_html(
    model: Model, task: Task, config: DemoConfig, analysis: CircuitAnalysis, timing: tuple[float, float]
) -> str:
    a = config.analysis
    tol = a.completeness_tolerance
    rule = "fixed" if tol is None else f"doubled while |completeness - 1| > {tol:g}, at most {a.max_ig_steps}"
    rows = [
        ("model", model.name),
        ("weights sha256", str(model.provenance.get("weights_sha256", "n/a"))),
        ("task", f"{task.name}, {len(task)} prompt pairs, seed {config.seed}"),
        ("pairs for real per-head patching", analysis.n_patched),
        ("EAP-IG steps", f"{analysis.scores.steps} (from {a.ig_steps}; {rule})"),
        ("random circuits per size", a.random),
        ("drawn circuit", f"smallest on the curve with faithfulness >= {a.faithful_at:g}: "
                          f"{100 * analysis.circuit_size:g} % of edges"),
        ("torch threads", torch.get_num_threads()),
    ]  # fmt: skip
    rows += [(f"time: {k}", f"{v:.1f} s") for k, v in analysis.seconds.items()]
    rows.append(("time: whole demo (before this page)", f"{timing[0]:.1f} s wall, {timing[1]:.1f} s CPU"))
    return table_html(["setting", "value"], rows)  # fmt: skip


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
    a = result.analysis
    n, positive = len(a.task), int((a.clean_diffs > 0).sum())
    console.print(f"[bold]{escape(a.task.name)}[/], {n} prompt pairs: logit difference positive on {positive}/{n} "
                  f"(mean {float(a.clean_diffs.mean()):.2f}; corrupt {float(a.corrupt_diffs.mean()):.2f})")  # fmt: skip
    ranks, ov, k = a.rankings(), a.overlaps(), a.k
    for name in ("dla", "patching"):
        console.print(f"  top heads by {name}: " + ", ".join(h for h, _ in ranks[name]))
    console.print(f"  top-{k} overlap: DLA & patching {ov['dla&patching']}, attribution & patching "
                  f"{ov['attribution&patching']} (chance {a.chance_overlap:.2f})")  # fmt: skip
    c = a.curve
    console.print(f"EAP-IG: {a.scores.steps} steps, completeness {a.scores.completeness:.2f}; curve CPR {c.cpr:.3f} "
                  f"(random {c.random_cpr:.3f}), CMD {c.cmd:.3f} (random {c.random_cmd:.3f}); "
                  f"{c.reach(a.config.faithful_at)}")  # fmt: skip
    console.print(escape(faithfulness_sentence(a)))
    console.print(f"Saved {escape(str(result.report))}, {escape(str(result.summary))} and the plots "
                  f"({result.seconds:.0f} s)")  # fmt: skip
