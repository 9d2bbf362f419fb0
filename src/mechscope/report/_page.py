"""Self-contained HTML reports: sections of HTML fragments, plots embedded as base64 PNG, one file, no assets.

A report is a title and a list of ``(section title, HTML fragment)`` pairs. Any method can contribute a section by
returning such a pair; ``figure_html`` and ``png_html`` turn a matplotlib figure or PNG bytes into an ``<img>``
with the image inside it, and ``table_html`` escapes every cell. ``write_report`` writes the page atomically: a
reader sees the previous report or the new one, never half of one. Nothing in the page loads from the network
(no scripts, fonts or style sheets from elsewhere), so the file can be mailed, archived or opened offline.

Example::

    from mechscope.report import figure_html, write_report

    write_report("out/report.html", "My analysis", [("Logit lens", figure_html(fig)), ("Notes", "<p>…</p>")])
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .._cache import atomic_write_bytes
from .._png import SIGNATURE, data_uri

Section = tuple[str, str]
"""``(title, HTML fragment)``: one section of a report."""

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
nav ol { columns: 2; } .note { color: #555; font-size: .9em; } code, pre { background: #f5f5f5; }
pre { padding: .5em; overflow-x: auto; font-size: .8em; }
"""


def png_html(png: bytes, alt: str = "") -> str:
    """An ``<img>`` holding ``png`` as a base64 data URI."""
    if png[:8] != SIGNATURE:
        raise ValueError("png_html expects PNG bytes (they start with \\x89PNG)")
    return f'<img alt="{html.escape(alt)}" src="{data_uri(png)}">'


def figure_html(fig: Figure, alt: str = "", *, dpi: int = 100) -> str:
    """A matplotlib figure as an embedded PNG ``<img>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return png_html(buf.getvalue(), alt)


def table_html(header: Sequence[str], rows: Iterable[Sequence[Any]], *, digits: int = 3) -> str:
    """An HTML table; every cell is escaped, floats are shown with ``digits`` significant digits, right-aligned."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="num">{value:.{digits}g}</td>'
        if isinstance(value, int) and not isinstance(value, bool):
            return f'<td class="num">{value}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(title: str, sections: Sequence[Section], *, intro: str = "") -> str:
    """The whole page as a string: title, ``intro`` (HTML), a table of contents, then each section."""
    for i, section in enumerate(sections):
        if not (isinstance(section, tuple) and len(section) == 2 and all(isinstance(s, str) for s in section)):
            raise TypeError(f"report section {i} must be a (title, html) pair of strings, got {type(section)}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f'<li><a href="#s{i}">{html.escape(t)}</a></li>' for i, (t, _) in enumerate(sections, 1))
    body = "\n".join(f'<section id="s{i}"><h2>{html.escape(t)}</h2>\n{frag}\n</section>'
                     for i, (t, frag) in enumerate(sections, 1))  # fmt: skip
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        f'<p class="note">Written by mechscope on {stamp}.</p>\n{intro}\n<nav><ol>{toc}</ol></nav>\n{body}\n'
        "</body></html>\n"
    )


def write_report(path: str | Path, title: str, sections: Sequence[Section], *, intro: str = "") -> Path:
    """Write the report to ``path`` atomically and return the path."""
    path = Path(path)
    atomic_write_bytes(path, render_report(title, sections, intro=intro).encode("utf-8"))
    return path
