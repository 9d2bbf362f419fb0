"""Explanations of latents, kept in the feature database: what each latent means, by whom, and how well it scored.

One table, added to an existing feature database file (``add_explanations``) by whoever explains latents
(auto-interpretation, or a person)::

    explanations(latent, explainer, text, score, scorer)
                  PRIMARY KEY (latent, explainer): one explanation per latent and explainer, a later one replaces it;
                  score and scorer may be NULL (not scored yet)

``FeatureDB.explanations(latent)`` reads a latent's explanations and ``FeatureDB.search_explanations(text)``
finds latents whose explanation contains every word of a query (SQL ``LIKE``, case-insensitive for ASCII), best
score first. A database without the table (built before it existed, or never explained) reads as having none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS explanations (latent INTEGER NOT NULL, explainer TEXT NOT NULL, text TEXT NOT NULL,
                                         score REAL, scorer TEXT, PRIMARY KEY (latent, explainer)) WITHOUT ROWID;
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

    A latent's explanation by an explainer replaces an earlier one by the same explainer. The whole batch is one
    transaction: readers see all of it or none.
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
        with con:
            con.executescript(SCHEMA)
            con.executemany("INSERT OR REPLACE INTO explanations VALUES (?, ?, ?, ?, ?)",
                            [(e.latent, e.explainer, e.text, e.score, e.scorer) for e in rows])  # fmt: skip
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
    """A latent's explanations, best score first (unscored last)."""
    if not has_table(con):
        return []
    rows = con.execute(
        "SELECT latent, text, explainer, score, scorer FROM explanations WHERE latent = ? "
        "ORDER BY score IS NULL, score DESC, explainer",
        (latent,),
    )
    return [Explanation(*r) for r in rows]


def search(con: sqlite3.Connection, text: str, n: int) -> list[Explanation]:
    """Explanations containing every word of ``text`` (case-insensitive), best score first."""
    words = text.split()
    if not words:
        raise ValueError("search text is empty: give one or more words an explanation should contain")
    if not has_table(con):
        return []
    like = " AND ".join(["text LIKE ? ESCAPE '\\'"] * len(words))
    escaped = ["%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for w in words]
    rows = con.execute(
        f"SELECT latent, text, explainer, score, scorer FROM explanations WHERE {like} "
        "ORDER BY score IS NULL, score DESC, latent, explainer LIMIT ?",
        (*escaped, n),
    )
    return [Explanation(*r) for r in rows]
