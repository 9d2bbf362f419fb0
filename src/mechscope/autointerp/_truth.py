"""The ground-truth check: do scorers prefer a planted feature's true description, and do explainers find it.

For every planted latent and every scorer given, ``ground_truth`` scores the true description, the other planted
features' descriptions (shuffled) and descriptions that fit nothing (random). For every explainer given it runs
the explain job and measures *recovery*: the embedding cosine similarity of the explainer's text to the true
description, and whether the true description is the closest of all planted descriptions to it (recovered@1;
chance ``1 / n_planted``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechscope.store import FeatureDB

from ._contexts import ContextConfig, NegativePool, gather
from ._jobs import explain
from ._llm import Chat
from ._planted import PLANTED, RANDOM_DESCRIPTIONS, Planted, feature_set
from ._records import Records
from ._scorers import SCORERS, Tools


@dataclass(frozen=True)
class ScorerCheck:
    """One scorer on one planted latent: the true description against shuffled and random ones."""

    feature: str
    scorer: str
    true: float
    shuffled: float
    """Mean over the other planted features' descriptions."""
    random: float
    """Mean over ``RANDOM_DESCRIPTIONS``."""
    chance: float

    @property
    def margin(self) -> float:
        """``true - max(shuffled, random)``."""
        return self.true - max(self.shuffled, self.random)


@dataclass(frozen=True)
class Recovery:
    """One explainer on one planted latent."""

    feature: str
    explainer: str
    text: str | None
    """The explainer's text (None when it failed)."""
    similarity: float
    """Embedding cosine similarity of the text to the true description."""
    recovered: bool
    """Whether the true description is the closest planted description to the text."""


@dataclass(frozen=True)
class GroundTruth:
    """The whole check."""

    checks: tuple[ScorerCheck, ...]
    recovery: tuple[Recovery, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (with each check's margin)."""
        return {
            "checks": [{**c.__dict__, "margin": c.margin} for c in self.checks],
            "recovery": [r.__dict__ for r in self.recovery],
        }

    def to_markdown(self) -> str:
        """Two tables: scorer separation, and recovery per explainer."""
        lines = ["| feature | scorer | true | shuffled | random | chance |", "|---|---|---|---|---|---|"]
        lines += [f"| {c.feature} | {c.scorer} | {c.true:.3f} | {c.shuffled:.3f} | {c.random:.3f} | {c.chance:.2f} |"
                  for c in self.checks]  # fmt: skip
        lines += ["", "| explainer | feature | similarity | recovered@1 | text |", "|---|---|---|---|---|"]
        lines += [f"| {r.explainer} | {r.feature} | {r.similarity:.3f} | {'yes' if r.recovered else 'no'} | "
                  f"{(r.text or '(failed)').replace('|', '&#124;')} |" for r in self.recovery]  # fmt: skip
        return "\n".join(lines)


def check_scorers(
    db: FeatureDB,
    pool: NegativePool,
    scorers: Sequence[str],
    tools: Tools,
    contexts: ContextConfig = ContextConfig(),  # noqa: B008
    planted: tuple[Planted, ...] = PLANTED,
) -> list[ScorerCheck]:
    """Every scorer on every planted latent: true vs shuffled vs random descriptions."""
    out = []
    for latent, p in enumerate(planted):
        c = gather(db, latent, contexts, pool)
        others = [q.description for q in planted if q is not p]
        for name in scorers:
            spec = SCORERS[name]
            cfg = spec.config()
            true = spec.fn(c, p.description, tools, cfg)
            shuffled = [spec.fn(c, d, tools, cfg).value for d in others]
            random = [spec.fn(c, d, tools, cfg).value for d in RANDOM_DESCRIPTIONS]
            out.append(ScorerCheck(p.name, name, true.value, sum(shuffled) / len(shuffled),
                                   sum(random) / len(random), true.chance))  # fmt: skip
    return out


def recovery(db_path: str | Path, explainers: Sequence[str], tools: Tools, llm: Chat | None = None,
             planted: tuple[Planted, ...] = PLANTED) -> list[Recovery]:  # fmt: skip
    """Run each explainer on the planted latents and measure how close its text comes to the true description."""
    out = []
    for name in explainers:
        summary = explain(db_path, name, latents=range(len(planted)), llm=llm, progress=False)
        with Records(db_path) as records:
            found = {r.latent: r.text for r in records.explanations(explainer=name, run=summary.run)}
        out += recovery_of(found, name, tools, range(len(planted)), planted)
    return out


def recovery_of(texts: dict[int, str | None], explainer: str, tools: Tools, latents: Iterable[int],
                planted: tuple[Planted, ...] = PLANTED) -> list[Recovery]:  # fmt: skip
    """Recovery of the planted ``latents`` from an explainer's ``texts`` (latent -> text; missing: failed)."""
    truth_vectors = tools.embedder([p.description for p in planted])
    out = []
    for latent in latents:
        p, text = planted[latent], texts.get(latent)
        if text is None:
            out.append(Recovery(p.name, explainer, None, 0.0, False))
            continue
        sims = truth_vectors @ tools.embedder([text])[0]
        out.append(Recovery(p.name, explainer, text, float(sims[latent]), int(sims.argmax()) == latent))
    return out


def ground_truth(
    db_path: str | Path, pool: NegativePool, *, scorers: Sequence[str] = ("embedding", "simulation"),
    explainers: Sequence[str] = ("top-tokens", "ngrams"), tools: Tools | None = None, llm: Chat | None = None,
) -> GroundTruth:  # fmt: skip
    """Scorer separation and explainer recovery on a planted feature database (``planted_db``)."""
    tools = tools or Tools(llm)
    with FeatureDB(db_path) as db:
        planted = feature_set(db.meta["dictionary"].get("features"))
        if planted is None:
            raise ValueError(f"{db_path} is not a planted feature database: build one with planted_db()")
        checks = check_scorers(db, pool, scorers, tools, planted=planted)
    return GroundTruth(tuple(checks), tuple(recovery(db_path, explainers, tools, llm, planted)))
