"""Reading the feature database: one latent's card, latents ranked by a statistic, latents that promote a token."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mechscope.store import _explanations
from mechscope.store._explanations import Explanation

FORMAT = "mechscope.feature_db"
FORMAT_VERSION = 1
_RANKABLE = ("frequency", "mean_activation", "max_activation", "n_active")


@dataclass(frozen=True)
class Example:
    """A token where a latent fired, with the latent's activation on a window of tokens around it."""

    context: int
    """Context index in the store."""
    position: int
    """Position of the token inside its context."""
    activation: float
    """The latent's activation on that token (for a top example: the context's largest)."""
    window_start: int
    """Position of the window's first token."""
    token_ids: tuple[int, ...]
    """Token ids of the window."""
    activations: tuple[float, ...]
    """The latent's activation on each token of the window."""
    tokens: tuple[str, ...] | None
    """Decoded window tokens (None when the database has no vocabulary)."""


@dataclass(frozen=True)
class TokenEffect:
    """A token a latent's decoder direction pushes up or down through the unembedding."""

    token_id: int
    token: str | None
    """Decoded token (None when the database has no vocabulary)."""
    effect: float
    """Logit change per unit of latent activation: ``(W_dec @ W_U)[latent, token]``."""


@dataclass(frozen=True)
class LatentCard:
    """Everything the feature database holds about one latent."""

    latent: int
    n_active: int
    """Tokens on which it fired."""
    frequency: float
    """Fraction of counted tokens on which it fired."""
    mean_activation: float
    """Mean activation over the tokens on which it fired."""
    max_activation: float
    hist_edges: tuple[float, ...]
    """Edges of the non-empty histogram bins' union: bin ``i`` is ``[hist_edges[i], hist_edges[i + 1])``."""
    hist_counts: tuple[int, ...]
    """Firing tokens per bin (one fewer than the edges)."""
    top_examples: tuple[Example, ...]
    """Contexts with the largest activations, best first (the activation is the context's peak)."""
    quantile_examples: tuple[tuple[Example, ...], ...]
    """Random firing tokens (up to ``samples_per_quantile``) per activation quantile, lowest quantile first,
    each by activation descending."""
    promoted: tuple[TokenEffect, ...]
    """Tokens whose logits the decoder direction raises most, strongest first."""
    suppressed: tuple[TokenEffect, ...]
    """Tokens whose logits it lowers most, strongest first."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    def to_text(self, n_examples: int = 5) -> str:
        """A plain-text view: statistics, logit effects, and examples with the peak token in ``[[ ]]``."""
        lines = [
            f"latent {self.latent}: fires on {self.frequency:.3%} of tokens ({self.n_active:,}), "
            f"mean {self.mean_activation:.3g}, max {self.max_activation:.3g}"
        ]
        for label, effects in (("promotes", self.promoted), ("suppresses", self.suppressed)):
            if effects:
                shown = ", ".join(
                    f"{e.token if e.token is not None else e.token_id!r} {e.effect:+.3g}" for e in effects
                )
                lines.append(f"{label}: {shown}")
        lines.append("top contexts:")
        lines += [f"  {e.activation:8.3g}  {_render(e)}" for e in self.top_examples[:n_examples]]
        for q, group in enumerate(self.quantile_examples):
            if group:
                lines.append(f"quantile {q + 1}/{len(self.quantile_examples)}:")
                lines += [f"  {e.activation:8.3g}  {_render(e)}" for e in group[:n_examples]]
        return "\n".join(lines)


def _render(e: Example) -> str:
    pieces = e.tokens if e.tokens is not None else tuple(f"<{i}>" for i in e.token_ids)
    peak = e.position - e.window_start
    text = "".join(f"[[{p}]]" if i == peak else p for i, p in enumerate(pieces))
    return text.replace("\n", "⏎")


class LatentSummary(NamedTuple):
    """A latent's row of statistics."""

    latent: int
    n_active: int
    frequency: float
    mean_activation: float
    max_activation: float


class TokenMatch(NamedTuple):
    """A latent that has a token among its most promoted ones."""

    latent: int
    token_id: int
    effect: float
    rank: int
    """The token's place among the latent's promoted tokens (0: the most promoted)."""


class FeatureDB:
    """Read-only view of a feature database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no feature database at {self.path}")
        self._con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        self.meta = {k: json.loads(v) for k, v in self._con.execute("SELECT key, value FROM meta")}
        if self.meta.get("format") != FORMAT or self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.path} is not a version-{FORMAT_VERSION} {FORMAT} file")
        self._has_vocab = self._con.execute("SELECT EXISTS (SELECT 1 FROM vocab)").fetchone()[0] == 1

    def __repr__(self) -> str:
        return f"FeatureDB({str(self.path)!r}, {len(self)} latents of {self.meta['site']})"

    def __len__(self) -> int:
        return int(self.meta["dictionary"]["d_sae"])

    def __enter__(self) -> FeatureDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self._con.close()

    def latent(self, i: int) -> LatentCard:
        """The card of latent ``i``."""
        row = self._con.execute("SELECT * FROM latents WHERE latent = ?", (i,)).fetchone()
        if row is None:
            raise IndexError(f"latent {i} is out of range: the dictionary has {len(self)} latents")
        stats = LatentSummary(*row)
        edges, counts = self._histogram(i, stats.max_activation)
        n_q = self.meta["config"]["n_quantiles"]
        samples = self._examples(i, "sample")
        return LatentCard(
            latent=stats.latent,
            n_active=stats.n_active,
            frequency=stats.frequency,
            mean_activation=stats.mean_activation,
            max_activation=stats.max_activation,
            hist_edges=edges,
            hist_counts=counts,
            top_examples=tuple(e for _, e in self._examples(i, "top")),
            quantile_examples=tuple(
                tuple(sorted((e for q, e in samples if q == k), key=lambda e: -e.activation)) for k in range(n_q)
            ),
            promoted=self._effects(i, "promoted"),
            suppressed=self._effects(i, "suppressed"),
        )

    def top_latents(self, by: str = "frequency", n: int = 20, *, descending: bool = True) -> list[LatentSummary]:
        """The ``n`` latents with the largest (or, not ``descending``, smallest) value of ``by``.

        ``by`` is ``frequency``, ``mean_activation``, ``max_activation`` or ``n_active``.
        """
        if by not in _RANKABLE:
            raise ValueError(f"by must be one of {_RANKABLE}, got {by!r}")
        order = "DESC" if descending else "ASC"
        rows = self._con.execute(f"SELECT * FROM latents ORDER BY {by} {order}, latent LIMIT ?", (n,))
        return [LatentSummary(*r) for r in rows]

    def search_token(self, token: str | int, n: int = 20) -> list[TokenMatch]:
        """Latents that have ``token`` among their most promoted tokens, by effect descending.

        ``token`` is an id or text; text matches with or without a leading space (``"Paris"``, ``" Paris"``).
        """
        if isinstance(token, int):
            ids = [token]
        else:
            if not self._has_vocab:
                raise ValueError(f"{self.path} has no vocabulary (built without a tokenizer): search by token id")
            found = self._con.execute("SELECT token_id FROM vocab WHERE text IN (?, ?)", (token, " " + token.lstrip()))
            ids = [r[0] for r in found]
        marks = ",".join("?" * len(ids))
        rows = self._con.execute(
            f"SELECT latent, token_id, effect, rank FROM logit_effects WHERE direction = 'promoted' "
            f"AND token_id IN ({marks}) ORDER BY effect DESC LIMIT ?",
            (*ids, n),
        )
        return [TokenMatch(*r) for r in rows]

    def explanations(self, latent: int) -> list[Explanation]:
        """The latent's explanations (``add_explanations`` writes them), best score first; [] when none."""
        return _explanations.of_latent(self._con, latent)

    def search_explanations(self, text: str, n: int = 20) -> list[Explanation]:
        """Explanations that contain every word of ``text`` (case-insensitive), best score first."""
        return _explanations.search(self._con, text, n)

    def _histogram(self, i: int, max_activation: float) -> tuple[tuple[float, ...], tuple[int, ...]]:
        rows = self._con.execute("SELECT bin, count FROM histograms WHERE latent = ? ORDER BY bin", (i,)).fetchall()
        if not rows:
            return (), ()
        edges = [*self.meta["hist_edges"], max(max_activation, self.meta["hist_edges"][-1])]  # close the last bin
        lo, hi = rows[0][0], rows[-1][0]
        counts = [0] * (hi - lo + 1)
        for b, c in rows:
            counts[b - lo] = c
        return tuple(edges[lo : hi + 2]), tuple(counts)

    def _examples(self, i: int, kind: str) -> list[tuple[int, Example]]:
        rows = self._con.execute(
            "SELECT quantile, context, position, activation, window_start, token_ids, activations FROM examples "
            "WHERE latent = ? AND kind = ? ORDER BY quantile, rank",
            (i, kind),
        ).fetchall()
        out = []
        for q, ctx, pos, act, start, id_blob, act_blob in rows:
            ids = tuple(np.frombuffer(id_blob, "<i4").tolist())
            acts = tuple(np.frombuffer(act_blob, "<f4").tolist())
            out.append((q, Example(ctx, pos, act, start, ids, acts, self._texts(ids))))
        return out

    def _effects(self, i: int, direction: str) -> tuple[TokenEffect, ...]:
        rows = self._con.execute(
            "SELECT token_id, effect FROM logit_effects WHERE latent = ? AND direction = ? ORDER BY rank",
            (i, direction),
        ).fetchall()
        texts = self._texts(tuple(r[0] for r in rows))
        return tuple(TokenEffect(t, None if texts is None else texts[k], e) for k, (t, e) in enumerate(rows))

    def _texts(self, ids: tuple[int, ...]) -> tuple[str, ...] | None:
        if not self._has_vocab:
            return None
        marks = ",".join("?" * len(set(ids)))
        found = dict(
            self._con.execute(f"SELECT token_id, text FROM vocab WHERE token_id IN ({marks})", tuple(set(ids)))
        )
        return tuple(found.get(i, f"<{i}>") for i in ids)
