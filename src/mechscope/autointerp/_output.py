"""Output scoring: steer along a latent's decoder direction, check the generated text against the explanation.

An explanation of what a latent *does* should describe what the model writes when the latent is turned up
(Paulo et al. 2024, "intervention scoring"; Gur-Arieh et al. 2025, "Enhancing Automated Interpretability with
Output-Centric Feature Descriptions"). ``DictionarySteerer`` adds ``strength`` times the latent's decoder row at the
dictionary's site (``core.Add``, inside ``Model.intervene``) while the model continues a fixed set of neutral
prompts greedily, and keeps the unsteered continuations (computed once) beside them. The ``output`` scorer is the
AUROC of the embedding similarity of the explanation to steered against unsteered continuations: 0.5 when the
explanation says nothing about what steering changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from mechscope.core import Add

from ._contexts import LatentContexts
from ._scorers import SCORERS, Score, Tools, auroc

PROMPTS = (
    "The",
    "I think that",
    "Here is a short example:",
    "In the next section we",
    "She said",
    "1.",
)
"""Neutral prompts the model continues with and without steering."""


class Steerer(Protocol):
    """Continuations of fixed prompts with a latent turned up, and without."""

    def generations(self, latent: int) -> tuple[list[str], list[str]]:
        """``(steered, plain)`` continuations of the same prompts."""
        ...


class DictionarySteerer:
    """Steers ``model`` at ``dictionary.cfg.site`` along ``dictionary.W_dec[latent]`` (greedy continuations)."""

    def __init__(
        self, model: Any, dictionary: Any, *, strength: float = 8.0, max_new_tokens: int = 12,
        prompts: tuple[str, ...] = PROMPTS,
    ) -> None:  # fmt: skip
        self.model, self.site = model, str(dictionary.cfg.site)
        self.W_dec = dictionary.W_dec.detach().float()  # [d_sae d_model]
        self.strength, self.max_new_tokens, self.prompts = strength, max_new_tokens, list(prompts)
        self._plain: list[str] | None = None

    def _generate(self) -> list[str]:
        return list(self.model.generate(self.prompts, max_new_tokens=self.max_new_tokens).texts)

    def generations(self, latent: int) -> tuple[list[str], list[str]]:
        """Steered continuations of the prompts, and the unsteered ones (generated once)."""
        if self._plain is None:
            self._plain = self._generate()
        direction = self.W_dec[latent].to(self.model.device)
        with self.model.intervene(Add(self.site, direction, scale=self.strength)):
            steered = self._generate()
        return steered, self._plain


@dataclass(frozen=True)
class OutputConfig:
    """Settings of the output scorer (the steering itself is the ``Steerer``'s)."""

    prefix_prompt: bool = False
    """Score the continuations with their prompts in front (default: the generated text alone)."""


@SCORERS.declare("output", config=OutputConfig, result=Score, tags=("intervention",))
def output(contexts: LatentContexts, explanation: str, tools: Tools, config: OutputConfig) -> Score:
    """AUROC of explanation similarity, steered against unsteered continuations (needs a Steerer)."""
    steer = tools.steer
    if steer is None:
        raise ValueError(
            "the output scorer needs a steerer: Tools(steer=DictionarySteerer(model, dictionary)) "
            "(command line: mechscope score DB --scorer output --dictionary DIR)"
        )
    steered, plain = steer.generations(contexts.latent)
    if config.prefix_prompt and hasattr(steer, "prompts"):
        steered = [p + t for p, t in zip(steer.prompts, steered, strict=True)]
        plain = [p + t for p, t in zip(steer.prompts, plain, strict=True)]
    vectors = tools.embedder([explanation, *steered, *plain])
    sims = vectors[1:] @ vectors[0]
    changed = sum(s != p for s, p in zip(steered, plain, strict=True))
    return Score(auroc(sims[: len(steered)], sims[len(steered) :]), 0.5, len(steered) + len(plain),
                 {"changed": changed, "steered": steered})  # fmt: skip
