"""The auto-interpretation family's adapter: declared explainers and scorers, run on latents whose meaning is known.

The organisms (``PlantedText``, ``FindText``) are feature databases whose latents have true descriptions. Every
explainer declared in ``mechscope.autointerp.EXPLAINERS`` that needs no chat model and no decoder becomes a bench
method ``explain-<name>``: it runs the library's own explain job on a copy of the database and returns its texts.
Every scorer declared in ``SCORERS`` that needs no chat model and no steerer becomes ``score-<name>``: it scores
each latent's true description, the other latents' descriptions (shuffled) and ``RANDOM_DESCRIPTIONS`` with the
library's scorer function (``autointerp._truth.check_scorers`` does the same for the docs' table). The chat-model
explainer and scorers are measured by ``benchmarks/autointerp.py`` and ``benchmarks/autointerp_llm.py`` instead
(the built-in 135M model takes about a minute per latent on a CPU: not a bench budget).

Scorers (``SCORERS`` here), all read from one ``DescriptionOutput``:

- ``description_recovery``: share of latents whose true description is the nearest (all-MiniLM-L6-v2 cosine) of
  the set's true descriptions to the method's text (recovered@1); chance ``1 / n_latents``.
- ``description_similarity``: mean cosine similarity of the text to the true description; chance: the mean
  similarity of each true description to the other latents' (what a shuffled description scores).
- ``true_vs_shuffled`` / ``true_vs_random``: for each latent, the share of shuffled (random) descriptions the
  scorer ranks below the true one (ties half), averaged over latents: an AUROC of the true description against
  the others; chance 0.5.

Baselines: ``random`` (a random description per latent, random scores) and ``oracle`` (the true descriptions;
a scorer that gives the true description 1 and every other 0).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..autointerp._contexts import ContextConfig, gather
from ..autointerp._explainers import EXPLAINERS
from ..autointerp._jobs import explain
from ..autointerp._planted import RANDOM_DESCRIPTIONS
from ..autointerp._records import Records
from ..autointerp._scorers import EMBEDS, Tools
from ..autointerp._scorers import SCORERS as AI_SCORERS
from ..organisms._protocols import AutointerpOrganism
from ..store import FeatureDB
from ._registry import MethodSpec, RunContext
from ._scorers import Score

FAMILY = "autointerp"
NEEDS_DECODER = ("output-tokens",)
"""Explainers that read a decoder direction, which an oracle dictionary does not have."""
NEEDS_STEERER = ("output",)
"""Scorers that steer the model with the latent, which an oracle dictionary cannot."""


@dataclass(frozen=True)
class DescriptionOutput:
    """What an auto-interpretation bench method returns (by latent name)."""

    texts: dict[str, str | None] | None = None
    """An explainer's text per latent (None: it failed on that latent); None for a scorer."""
    scores: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] | None = None
    """A scorer's value per latent for the true description, each shuffled one and each random one; None for an
    explainer."""


@functools.lru_cache(maxsize=1)
def tools() -> Tools:
    """One embedder for the whole bench run (all-MiniLM-L6-v2, loaded on first use, memoised by text)."""
    return Tools()


def run_explainer(name: str, organism: AutointerpOrganism, ctx: RunContext) -> DescriptionOutput:
    """Explain every latent with the declared explainer ``name`` (the library's job, on a copy of the database)."""
    path, _ = organism.database(ctx.workdir)
    summary = explain(path, name, latents=range(len(organism.planted)), progress=False)
    with Records(path) as records:
        found = {r.latent: r.text for r in records.explanations(explainer=name, run=summary.run)}
    return DescriptionOutput(texts={p.name: found.get(i) for i, p in enumerate(organism.planted)})


def run_scorer(name: str, organism: AutointerpOrganism, ctx: RunContext) -> DescriptionOutput:
    """Score every latent's true, shuffled and random descriptions with the declared scorer ``name``."""
    path, pool = organism.database(ctx.workdir)
    spec = AI_SCORERS[name]
    config = spec.config()
    out = {}
    with FeatureDB(path) as db:
        contexts = [gather(db, latent, ContextConfig(), pool) for latent in range(len(organism.planted))]
    if (embeds := EMBEDS.get(name)) is not None:  # every latent's texts in one length-sorted batch, as a job does
        texts = [p.description for p in organism.planted] + list(RANDOM_DESCRIPTIONS)
        tools().embedder(texts + [t for c in contexts for t in embeds(c, config)])
    for c, p in zip(contexts, organism.planted, strict=True):
        others = [q.description for q in organism.planted if q is not p]
        value = [float(spec.fn(c, text, tools(), config).value) for text in
                 (p.description, *others, *RANDOM_DESCRIPTIONS)]  # fmt: skip
        n_other = len(others)
        out[p.name] = (value[0], tuple(value[1 : 1 + n_other]), tuple(value[1 + n_other :]))
    return DescriptionOutput(scores=out)


def random_method(organism: AutointerpOrganism, ctx: RunContext) -> DescriptionOutput:
    """A random description per latent (from ``RANDOM_DESCRIPTIONS``) and uniformly random scores."""
    rng = random.Random(ctx.seed)
    n_other = len(organism.planted) - 1
    texts: dict[str, str | None] = {p.name: rng.choice(RANDOM_DESCRIPTIONS) for p in organism.planted}
    scores = {p.name: (rng.random(), tuple(rng.random() for _ in range(n_other)),
                       tuple(rng.random() for _ in RANDOM_DESCRIPTIONS)) for p in organism.planted}  # fmt: skip
    return DescriptionOutput(texts, scores)


def oracle_method(organism: AutointerpOrganism, ctx: RunContext) -> DescriptionOutput:
    """Reads the truth: the true descriptions, and a scorer that gives the true one 1 and every other 0."""
    n_other = len(organism.planted) - 1
    texts: dict[str, str | None] = {p.name: p.description for p in organism.planted}
    scores = {p.name: (1.0, (0.0,) * n_other, (0.0,) * len(RANDOM_DESCRIPTIONS)) for p in organism.planted}
    return DescriptionOutput(texts, scores)


def explainer_methods() -> list[MethodSpec]:
    """One bench method per declared explainer that needs neither a chat model nor a decoder (read now)."""
    return [MethodSpec(f"explain-{s.name}", FAMILY, partial(run_explainer, s.name), None, False,
                       f"{s.summary.rstrip('.')} (explainer {s.name!r} of mechscope.autointerp)")
            for s in EXPLAINERS.specs() if "llm" not in s.tags and s.name not in NEEDS_DECODER]  # fmt: skip


def scorer_methods() -> list[MethodSpec]:
    """One bench method per declared scorer that needs neither a chat model nor a steerer (read now)."""
    return [MethodSpec(f"score-{s.name}", FAMILY, partial(run_scorer, s.name), None, False,
                       f"{s.summary.rstrip('.')} (scorer {s.name!r} of mechscope.autointerp)")
            for s in AI_SCORERS.specs() if "llm" not in s.tags and s.name not in NEEDS_STEERER]  # fmt: skip


# --- scorers -----------------------------------------------------------------------------------------------------


def _score(organism: AutointerpOrganism, method: str, metric: str, value: float, chance: float) -> Score:
    return Score(method, organism.organism, organism.seed, metric, float(value), float(chance))


def description_recovery(output: Any, organism: AutointerpOrganism, method: str) -> list[Score] | None:
    """Recovered@1 and mean similarity of an explainer's texts to the true descriptions."""
    if not isinstance(output, DescriptionOutput) or output.texts is None:
        return None
    embed = tools().embedder
    truth = embed([p.description for p in organism.planted])  # [latent 384]
    n = len(organism.planted)
    recovered, similarity = 0, 0.0
    for i, p in enumerate(organism.planted):
        text = output.texts.get(p.name)
        if text is None:  # a failed latent recovers nothing
            continue
        sims = truth @ embed([text])[0]
        recovered += int(int(sims.argmax()) == i)
        similarity += float(sims[i]) / n
    cross = truth @ truth.T
    shuffled = float((cross.sum() - cross.diagonal().sum()) / (n * (n - 1)))
    return [_score(organism, method, "description_recovery", recovered / n, 1 / n),
            _score(organism, method, "description_similarity", similarity, shuffled)]  # fmt: skip


def _beats(true: float, others: tuple[float, ...]) -> float:
    return sum(1.0 if true > o else 0.5 if true == o else 0.0 for o in others) / len(others)


def description_separation(output: Any, organism: AutointerpOrganism, method: str) -> list[Score] | None:
    """How often a scorer ranks the true description above shuffled and above random ones (chance 0.5)."""
    if not isinstance(output, DescriptionOutput) or output.scores is None:
        return None
    got = list(output.scores.values())
    shuffled = sum(_beats(t, s) for t, s, _ in got) / len(got)
    rand = sum(_beats(t, r) for t, _, r in got) / len(got)
    return [_score(organism, method, "true_vs_shuffled", shuffled, 0.5),
            _score(organism, method, "true_vs_random", rand, 0.5)]  # fmt: skip


SCORERS = (description_recovery, description_separation)
"""The autointerp family's bench scorers."""
