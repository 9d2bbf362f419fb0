"""Explanations and their scores, stored in the feature database itself (two tables, defined here only).

Schema, added to a feature database on first write (``CREATE TABLE IF NOT EXISTS``; the feature database's own
tables are untouched and ``FeatureDB`` reads the file as before)::

    explanations(latent, explainer, run, text, error, note, prompt, response, prompt_tokens, seconds, provenance)
        PRIMARY KEY (latent, explainer, run). ``run`` is a hash of the provenance (explainer, its config, prompt
        version, chat model, context config, seed), so re-running with other settings adds rows rather than
        overwriting. ``text`` is NULL and ``error`` says why when the latent failed (a resumed job retries it).
        ``prompt`` / ``response`` hold the full chat exchange ('' for non-LLM explainers).
    explanation_scores(latent, explainer, run, scorer, value, chance, shuffled, n, error, detail, provenance)
        PRIMARY KEY (latent, explainer, run, scorer). ``shuffled`` is the same scorer's value for another
        latent's explanation (the shuffled-explanation baseline); ``detail`` is JSON.

``put_explanation`` / ``put_score`` commit at once unless told not to (``commit=False``); a job commits every
few latents or every second (``_jobs.Checkpoint``), so a killed job loses at most the latents since its last
commit.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechscope.store._explanations import SCHEMA  # the tables are defined once, beside the feature database


def run_id(provenance: dict[str, Any]) -> str:
    """A short stable hash of a provenance dict."""
    return hashlib.sha256(json.dumps(provenance, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ExplanationRecord:
    """A stored explanation (or failure) of one latent."""

    latent: int
    explainer: str
    run: str
    text: str | None
    error: str | None
    note: str
    prompt: str
    response: str
    prompt_tokens: int
    seconds: float
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ScoreRecord:
    """A stored score of one latent's explanation by one scorer, with its chance level and shuffled baseline."""

    latent: int
    explainer: str
    run: str
    scorer: str
    value: float | None
    chance: float | None
    shuffled: float | None
    n: int | None
    error: str | None
    detail: dict[str, Any]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(self.__dict__)


class Records:
    """Read and write the two tables of a feature database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no feature database at {self.path}")
        self.con = sqlite3.connect(self.path, timeout=60)
        self.con.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def commit(self) -> None:
        """Commit the rows written with ``commit=False``."""
        self.con.commit()

    def put_explanation(self, r: ExplanationRecord, *, commit: bool = True) -> None:
        """Insert or replace one latent's explanation (committed at once unless ``commit=False``)."""
        self.con.execute(
            "INSERT OR REPLACE INTO explanations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.latent, r.explainer, r.run, r.text, r.error, r.note, r.prompt, r.response, r.prompt_tokens,
             r.seconds, json.dumps(r.provenance, sort_keys=True, default=str)),
        )  # fmt: skip
        if commit:
            self.con.commit()

    def put_score(self, r: ScoreRecord, *, commit: bool = True) -> None:
        """Insert or replace one latent's score (committed at once unless ``commit=False``)."""
        self.con.execute(
            "INSERT OR REPLACE INTO explanation_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.latent, r.explainer, r.run, r.scorer, r.value, r.chance, r.shuffled, r.n, r.error,
             json.dumps(r.detail, default=str), json.dumps(r.provenance, sort_keys=True, default=str)),
        )  # fmt: skip
        if commit:
            self.con.commit()

    def explanations(
        self, *, latent: int | None = None, explainer: str | None = None, run: str | None = None
    ) -> list[ExplanationRecord]:
        """Stored explanations (failures included), by latent, explainer, run."""
        where, args = _where(latent=latent, explainer=explainer, run=run)
        rows = self.con.execute(f"SELECT * FROM explanations{where} ORDER BY latent, explainer, run", args)
        return [ExplanationRecord(*r[:-1], json.loads(r[-1])) for r in rows]  # type: ignore[call-arg]

    def scores(
        self, *, latent: int | None = None, explainer: str | None = None, scorer: str | None = None,
        run: str | None = None,
    ) -> list[ScoreRecord]:  # fmt: skip
        """Stored scores, by latent, explainer, run, scorer."""
        where, args = _where(latent=latent, explainer=explainer, scorer=scorer, run=run)
        rows = self.con.execute(
            f"SELECT * FROM explanation_scores{where} ORDER BY latent, explainer, run, scorer", args
        )
        return [ScoreRecord(*r[:-2], json.loads(r[-2]), json.loads(r[-1])) for r in rows]  # type: ignore[call-arg]

    def texts(self, explainer: str, run: str) -> dict[int, str]:
        """Latent -> explanation text of one run (failed latents left out); reads no prompts or responses."""
        rows = self.con.execute(
            "SELECT latent, text FROM explanations WHERE explainer = ? AND run = ? AND text IS NOT NULL",
            (explainer, run),
        )
        return dict(rows)

    def scored(self, explainer: str, run: str, scorer: str) -> set[int]:
        """Latents with a stored (successful) score of one run by ``scorer``."""
        rows = self.con.execute(
            "SELECT latent FROM explanation_scores WHERE explainer = ? AND run = ? AND scorer = ? "
            "AND value IS NOT NULL",
            (explainer, run, scorer),
        )
        return {r[0] for r in rows}

    def latest_run(self, explainer: str) -> str | None:
        """The run of ``explainer`` with the most explained latents (None when it has none)."""
        row = self.con.execute(
            "SELECT run FROM explanations WHERE explainer = ? AND text IS NOT NULL GROUP BY run "
            "ORDER BY COUNT(*) DESC, run LIMIT 1",
            (explainer,),
        ).fetchone()
        return None if row is None else str(row[0])


def _where(**filters: Any) -> tuple[str, tuple[Any, ...]]:
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), tuple(used.values())


def read_explanations(path: str | Path, latent: int | None = None) -> list[ExplanationRecord]:
    """Every stored explanation in a feature database (of one latent when given); [] when it has none."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'explanations'").fetchone() is None:
            return []
    finally:
        con.close()
    with Records(path) as records:
        return records.explanations(latent=latent)


def read_scores(path: str | Path, latent: int | None = None) -> list[ScoreRecord]:
    """Every stored score in a feature database (of one latent when given); [] when it has none."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'explanation_scores'").fetchone() is None:
            return []
    finally:
        con.close()
    with Records(path) as records:
        return records.scores(latent=latent)
