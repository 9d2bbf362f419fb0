"""Explanations of latents, kept in the feature database: what each latent means, by whom, and how well it scored.

Two tables, added to an existing feature database file on first write. They are defined here only; the
auto-interpretation jobs (``mechscope.autointerp``) write them with every prompt and response, and a person (or a
script) adds explanations with ``add_explanations``::

    explanations(latent, explainer, run, text, error, note, prompt, response, prompt_tokens, seconds, provenance)
        PRIMARY KEY (latent, explainer, run). ``run`` is a hash of the provenance (explainer, its config, prompt
        version, chat model, context config, seed), so re-running with other settings adds rows rather than
        overwriting; explanations added by hand have run ``manual``. ``text`` is NULL and ``error`` says why
        when the latent failed (a resumed job retries it). ``prompt`` / ``response`` hold the full chat exchange
        ('' for non-LLM explainers).
    explanation_scores(latent, explainer, run, scorer, value, chance, shuffled, n, error, detail, provenance)
        PRIMARY KEY (latent, explainer, run, scorer). ``shuffled`` is the same scorer's value for another
        latent's explanation (the shuffled-explanation baseline); ``detail`` is JSON.

``FeatureDB.explanations(latent)`` reads a latent's explanations, each with its best score, and
``FeatureDB.search_explanations(text)`` finds latents whose explanation contains every word of a query (SQL
``LIKE``, case-insensitive for ASCII), best score first. A database without the tables (built before they
existed, or never explained) reads as having none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS explanations (
    latent INTEGER NOT NULL, explainer TEXT NOT NULL, run TEXT NOT NULL, text TEXT, error TEXT,
    note TEXT NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL, provenance TEXT NOT NULL,
    PRIMARY KEY (latent, explainer, run)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS explanation_scores (
    latent INTEGER NOT NULL, explainer TEXT NOT NULL, run TEXT NOT NULL, scorer TEXT NOT NULL, value REAL,
    chance REAL, shuffled REAL, n INTEGER, error TEXT, detail TEXT NOT NULL, provenance TEXT NOT NULL,
    PRIMARY KEY (latent, explainer, run, scorer)) WITHOUT ROWID;
"""

MANUAL_RUN = "manual"
"""The ``run`` of explanations added with ``add_explanations`` (by a person or a script, not a job)."""

# A latent's explanations with each one's best score (SQLite takes the scorer from the row holding the MAX).
_SELECT = """
SELECT e.latent, e.text, e.explainer, MAX(s.value), s.scorer FROM explanations e
LEFT JOIN explanation_scores s ON s.latent = e.latent AND s.explainer = e.explainer AND s.run = e.run
                                AND s.value IS NOT NULL
WHERE e.text IS NOT NULL AND {where}
GROUP BY e.latent, e.explainer, e.run
ORDER BY MAX(s.value) IS NULL, MAX(s.value) DESC, e.latent, e.explainer
"""


class Explanation(NamedTuple):
    """What a latent means, in words, with the score a scorer gave that explanation."""

    latent: int
    text: str
    explainer: str
    """Who or what wrote it (an explainer's name, e.g. ``top_tokens``, or ``human``)."""
    score: float | None = None
    """How well the explanation predicts the latent, by ``scorer`` (None: not scored)."""
    scorer: str | None = None
    """The scorer behind ``score`` (e.g. ``detection``), or None."""


def add_explanations(path: str | Path, explanations: Iterable[Explanation]) -> int:
    """Write ``explanations`` into the feature database at ``path`` (creating the table); returns how many.

    They are stored with run ``manual``: a latent's explanation by an explainer replaces an earlier manual one by
    the same explainer. The whole batch is one transaction: readers see all of it or none.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no feature database at {path}")
    rows = [_checked(Explanation(*e)) for e in explanations]
    con = sqlite3.connect(path)
    try:
        n = con.execute("SELECT json_extract(value, '$.d_sae') FROM meta WHERE key = 'dictionary'").fetchone()
        if n is None:
            raise ValueError(f"{path} is not a feature database (no dictionary in its meta table)")
        if bad := [e.latent for e in rows if not 0 <= e.latent < n[0]]:
            raise ValueError(f"latents {bad[:5]} are out of range: the dictionary has {n[0]} latents (0..{n[0] - 1})")
        con.executescript(SCHEMA)
        with con:
            con.executemany("INSERT OR REPLACE INTO explanations VALUES (?, ?, ?, ?, NULL, '', '', '', 0, 0, '{}')",
                            [(e.latent, e.explainer, MANUAL_RUN, e.text) for e in rows])  # fmt: skip
            con.executemany(
                "INSERT OR REPLACE INTO explanation_scores VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, '{}', '{}')",
                [(e.latent, e.explainer, MANUAL_RUN, e.scorer or MANUAL_RUN, e.score) for e in rows
                 if e.score is not None],
            )  # fmt: skip
    finally:
        con.close()
    return len(rows)


def _checked(e: Explanation) -> Explanation:
    if not isinstance(e.text, str) or not e.text.strip():
        raise ValueError(f"latent {e.latent}: an explanation needs non-empty text, got {e.text!r}")
    if not isinstance(e.explainer, str) or not e.explainer:
        raise ValueError(f"latent {e.latent}: name the explainer (e.g. 'top_tokens' or 'human')")
    return e


def has_table(con: sqlite3.Connection) -> bool:
    """Whether the database holds the explanations table."""
    found = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'explanations'").fetchone()
    return found is not None


def of_latent(con: sqlite3.Connection, latent: int) -> list[Explanation]:
    """A latent's explanations, each with its best score, best first (unscored last)."""
    if not has_table(con):
        return []
    return [Explanation(*r) for r in con.execute(_SELECT.format(where="e.latent = ?"), (latent,))]


def search(con: sqlite3.Connection, text: str, n: int) -> list[Explanation]:
    """Explanations containing every word of ``text`` (case-insensitive), best score first."""
    words = text.split()
    if not words:
        raise ValueError("search text is empty: give one or more words an explanation should contain")
    if not has_table(con):
        return []
    like = " AND ".join(["e.text LIKE ? ESCAPE '\\'"] * len(words))
    escaped = ["%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for w in words]
    rows = con.execute(_SELECT.format(where=like) + " LIMIT ?", (*escaped, n))
    return [Explanation(*r) for r in rows]
