"""The LLM simulator: a chat model predicts each token's activation from the explanation (explain-and-simulate).

Bills et al. 2023, "Language models can explain neurons in language models", score an explanation by asking a
simulator model to predict, for every token of a text, the neuron's activation (0-10) given only the explanation,
and correlating the predictions with the real activations over all tokens of all texts ("all at once" scoring;
their §2.2 and appendix). ``llm-simulation`` does that with any ``Chat`` (the built-in SmolLM2 or an
OpenAI-compatible server): one request per context, the context's tokens listed one per line as
``token<TAB>unknown``, the reply read back line by line as ``token<TAB>number``. Activating contexts and
non-activating ones (the negative pool) are simulated alike, so a simulator that predicts high everywhere gains
nothing. A reply that gives fewer numbers than tokens leaves the rest at 0 and counts them in
``detail["unparsed"]``: an unreadable simulator predicts nothing, so it scores 0 (chance), never above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ._contexts import LatentContexts, Window
from ._scorers import SCORERS, Score, Tools, pearson

SIMULATOR = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a short document. "
    "Look at an explanation of what the neuron does, and try to predict its activations on each token. The "
    "activation format is token<tab>activation, activations go from 0 to 10, and most activations will be 0. "
    'You are given the tokens with "unknown" in place of each activation: return the same lines with each unknown '
    "replaced by a number from 0 to 10, and nothing else."
)
_LINE = re.compile(r"^(.*?)\t\s*(10|\d)(?:\.\d+)?\s*$")


@dataclass(frozen=True)
class LLMSimulationConfig:
    """Settings of the LLM simulator."""

    n_examples: int = 5
    """Activating contexts simulated (and up to as many non-activating ones); one request each."""
    max_new_tokens: int = 120
    """Length of each reply (a 16-token context takes about 4 tokens per line)."""
    seed: int = 0
    """Seed sent with each request (greedy local decoding ignores it)."""


def _shown(token: str) -> str:
    return token.replace("\n", "⏎").replace("\t", " ") or " "


def simulation_prompt(explanation: str, window: Window) -> list[dict[str, str]]:
    """The chat messages asking for ``window``'s activations under ``explanation``."""
    lines = "\n".join(f"{_shown(t)}\tunknown" for t in window.tokens)
    user = f"Neuron explanation: {explanation}\n\nSequence:\n<start>\n{lines}\n<end>"
    return [{"role": "system", "content": SIMULATOR}, {"role": "user", "content": user}]


def parse_simulation(reply: str, n: int) -> list[float | None]:
    """The numbers of the ``token<TAB>number`` lines of ``reply``, in order, padded with None to ``n`` entries."""
    found: list[float | None] = [float(m.group(2)) for ln in reply.splitlines() if (m := _LINE.match(ln.rstrip()))]
    return (found + [None] * n)[:n]


@SCORERS.declare("llm-simulation", config=LLMSimulationConfig, result=Score, tags=("llm",))
def llm_simulation(contexts: LatentContexts, explanation: str, tools: Tools, config: LLMSimulationConfig) -> Score:
    """Correlation of per-token activations a chat model predicts from the explanation with the real ones."""
    llm = tools.chat("llm-simulation")
    windows = [*contexts.activating[: config.n_examples], *contexts.negatives[: config.n_examples]]
    predicted: list[float] = []
    real: list[float] = []
    unparsed = 0
    for w in windows:
        reply = llm.complete(simulation_prompt(explanation, w), max_tokens=config.max_new_tokens, seed=config.seed)
        got = parse_simulation(reply, len(w.tokens))
        unparsed += sum(g is None for g in got)
        predicted += [g if g is not None else 0.0 for g in got]
        real += w.activations
    value = pearson(torch.tensor(predicted), torch.tensor(real))
    return Score(value, 0.0, len(real), {"unparsed": unparsed, "requests": len(windows)})
