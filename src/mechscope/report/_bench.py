"""The bench's leaderboard rendered: markdown tables, and one self-contained HTML page with inline PNG plots.

``write_leaderboard(board, out)`` writes ``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.html``; the
bench itself only returns the ``Leaderboard`` (data).
"""

from __future__ import annotations

import html as _html
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from .._cache import atomic_write_bytes
from ._page import figure_html

if TYPE_CHECKING:
    from ..bench import Leaderboard, Row


def _fmt(row: Row) -> str:
    """Mean ± spread over seeds; a single seed's score is marked as such (it has no spread to show).

    A score that averages within a seed (CPR/CMD over tie orders) adds that spread where it shows at three decimals
    (tied edges that carry nothing, such as a zero MLP's, differ only by rounding).
    """
    text = f"{row.mean:.3f} ± {row.std:.3f}" if row.n > 1 else f"{row.mean:.3f} (one seed)"
    return text + (f" [ties ± {row.spread:.3f}]" if row.spread >= 0.0005 else "")


def _chance(row: Row) -> str:
    """The chance level, with the spread of its random draws where it has one (CPR/CMD's random circuits)."""
    return f"{row.chance:.3f} ± {row.chance_spread:.3f}" if row.chance_spread >= 0.0005 else f"{row.chance:.3f}"


def _tables(board: Leaderboard) -> dict[tuple[str, str], list[Row]]:
    tables: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in board.rows():
        tables[row.organism, row.metric].append(row)
    return tables


def write_leaderboard(board: Leaderboard, out: str | Path) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.html`` into ``out``; their paths by format."""
    out = Path(out)
    paths = {"markdown": out / "leaderboard.md", "json": out / "leaderboard.json", "html": out / "leaderboard.html"}
    texts = {"markdown": leaderboard_markdown(board), "json": json.dumps(board.to_dict(), indent=2),
             "html": leaderboard_html(board)}  # fmt: skip
    for kind, path in paths.items():
        atomic_write_bytes(path, texts[kind].encode("utf-8"))
    return paths


def leaderboard_markdown(board: Leaderboard) -> str:
    """Markdown: one table per organism and metric, then the organisms' verification numbers and any errors."""
    mode = "quick" if board.quick else "full"
    lines = [f"# mechscope bench ({mode})", "", f"Run time {board.seconds:.0f} s. Scores are mean ± standard "
             "deviation over seeds; chance is what a method with no information scores. CPR/CMD rows add "
             "[ties ± s], the spread over random orders of tied scores, and their chance the spread over random "
             "circuits.", ""]  # fmt: skip
    for (organism, metric), rows in _tables(board).items():
        better = "higher" if rows[0].higher_is_better else "lower"
        names = sorted({b for r in rows for b in r.baselines})
        lines += [f"## {organism} — {metric} ({better} is better)", ""]
        lines += ["| method | score | seeds | chance | " + " | ".join(names) + " | seconds |"]
        lines += ["| --- " * (5 + len(names)) + "|"]
        for r in rows:
            name = f"{r.method} (baseline)" if r.baseline else r.method
            refs = " | ".join(f"{r.baselines[b]:.3f}" if b in r.baselines else "" for b in names)
            lines.append(f"| {name} | {_fmt(r)} | {r.n} | {_chance(r)} | {refs} | {r.seconds:.2f} |")
        lines.append("")
    lines += ["## Organisms (verification numbers per seed)", ""]
    for organism, seeds in board.organisms.items():
        for seed, numbers in seeds.items():
            shown = ", ".join(f"{k} {v:.3g}" for k, v in numbers.items())
            lines.append(f"- **{organism}** seed {seed}: {shown}")
    if board.errors:
        lines += ["", "## Errors", "", *(f"- {e}" for e in board.errors)]
    if board.skipped:
        lines += ["", "## Skipped organisms", "", *(f"- {e}" for e in board.skipped)]
    return "\n".join(lines) + "\n"


def _plot(rows: list[Row], title: str) -> str:
    """Horizontal bars (mean ± std over seeds) with the chance level as a dashed line; an ``<img>``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 0.45 * len(rows) + 1.0), dpi=100)
    ax = fig.subplots()
    names = [r.method for r in rows][::-1]
    means = [r.mean for r in rows][::-1]
    stds = [r.std for r in rows][::-1]
    colors = ["#9aa5b1" if r.baseline else "#3b6ea5" for r in rows][::-1]
    ax.barh(names, means, xerr=stds, color=colors, capsize=3)
    chance = sum(r.chance for r in rows) / len(rows)
    ax.axvline(chance, color="#c0392b", linestyle="--", linewidth=1, label=f"chance {chance:.2f}")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return figure_html(fig, title)


def _curves(board: Leaderboard, organism: str, metric: str) -> str | None:
    """Each method's curve behind ``metric`` (mean over seeds), log x axis; an ``<img>``, None when no curves."""
    curves: dict[str, list[tuple[tuple[float, float], ...]]] = defaultdict(list)
    for s in board.scores:
        if s.organism == organism and s.metric == metric and s.curve:
            curves[s.method].append(s.curve)
    if not curves:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    for method, runs in sorted(curves.items()):
        xs = [100 * x for x, _ in runs[0]]
        ys = [sum(run[i][1] for run in runs) / len(runs) for i in range(len(xs))]
        ax.plot(xs, ys, marker=".", label=method)
    ax.axhline(1.0, color="k", linewidth=0.5)
    ax.axhline(0.0, color="k", linewidth=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("edges in circuit (%)")
    ax.set_ylabel("faithfulness")
    ax.set_title(f"{organism}: faithfulness curves (mean over seeds)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_html(fig, f"{organism} faithfulness curves")


_STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.baseline{color:#777}h2{margin-top:2em;font-size:1.15em}"""


def leaderboard_html(board: Leaderboard) -> str:
    """One HTML page with every table and plot inline: no scripts, no external resources."""
    esc = _html.escape
    mode = "quick" if board.quick else "full"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mechscope bench</title><style>{_STYLE}"
             f"</style></head><body><h1>mechscope bench ({mode})</h1><p>Run time {board.seconds:.0f} s. Scores are "
             "mean ± standard deviation over seeds; dashed line: chance; grey bars: baselines.</p>"]  # fmt: skip
    for (organism, metric), rows in _tables(board).items():
        better = "higher" if rows[0].higher_is_better else "lower"
        title = f"{organism} — {metric} ({better} is better)"
        parts.append(f"<h2>{esc(title)}</h2>{_plot(rows, title)}")
        if metric == "cpr" and (curve := _curves(board, organism, metric)) is not None:
            parts.append(curve)
        names = sorted({b for r in rows for b in r.baselines})
        head = "".join(f"<th>{esc(b)}</th>" for b in names)
        parts.append(f"<table><tr><th>method</th><th>score</th><th>seeds</th><th>chance</th>{head}<th>s</th></tr>")
        for r in rows:
            refs = "".join(f"<td>{r.baselines[b]:.3f}</td>" if b in r.baselines else "<td></td>" for b in names)
            cls = " class='baseline'" if r.baseline else ""
            parts.append(f"<tr{cls}><td>{esc(r.method)}</td><td>{_fmt(r)}</td><td>{r.n}</td><td>{_chance(r)}</td>"
                         f"{refs}<td>{r.seconds:.2f}</td></tr>")  # fmt: skip
        parts.append("</table>")
    parts.append("<h2>Organisms (verification numbers per seed)</h2><ul>")
    for organism, seeds in board.organisms.items():
        for seed, numbers in seeds.items():
            shown = ", ".join(f"{esc(k)} {v:.3g}" for k, v in numbers.items())
            parts.append(f"<li><b>{esc(organism)}</b> seed {esc(seed)}: {shown}</li>")
    parts.append("</ul>")
    if board.errors:
        parts.append("<h2>Errors</h2><ul>" + "".join(f"<li>{esc(e)}</li>" for e in board.errors) + "</ul>")
    if board.skipped:
        parts.append("<h2>Skipped organisms</h2><ul>" + "".join(f"<li>{esc(e)}</li>" for e in board.skipped) + "</ul>")
    return "".join(parts) + "</body></html>\n"
