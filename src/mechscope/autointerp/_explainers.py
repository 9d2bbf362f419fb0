"""Explainers: a latent's contexts in, one short description out. Declared once in ``EXPLAINERS``.

Non-LLM baselines (what a person reads off a dashboard first): ``top-tokens`` (the tokens it fires on, weighted by
activation), ``ngrams`` (the token before and the token it fires on), ``output-tokens`` (the tokens its decoder
direction promotes through the unembedding). The ``llm`` explainer shows a chat model the contexts with the
firing tokens marked ``<<like this>>`` and their activations (0–10, scaled to the latent's largest), in the
format of delphi's default explainer (Paulo et al. 2024, appendix) and OpenAI's explainer (Bills et al. 2023,
"Language models can explain neurons in language models"), and takes the line after ``[EXPLANATION]:``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mechscope.core import Registry

from ._contexts import LatentContexts, Window
from ._llm import Chat, ChatError, Message

PROMPT_VERSION = "delphi-v1"
"""Version of the LLM explainer's prompt; stored with every explanation (change it when the prompt changes)."""


@dataclass(frozen=True)
class Explanation:
    """An explainer's output for one latent."""

    text: str
    prompt: str = ""
    """The full prompt sent to the chat model ('' for the non-LLM explainers)."""
    response: str = ""
    """The chat model's full reply."""
    note: str = ""
    """What the explainer had to give up (contexts dropped to fit the prompt), or ''."""
    prompt_tokens: int = 0
    """Tokens of the prompt (the chat model's count; an estimate for an HTTP endpoint)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(self.__dict__)


EXPLAINERS: Registry[Any, Explanation] = Registry("explainers", builtins=["mechscope.autointerp._explainers"])
"""Declared explainers: ``fn(contexts: LatentContexts, llm: Chat | None, config) -> Explanation``."""


@dataclass(frozen=True)
class TokensConfig:
    """Settings of the token-list explainers."""

    n_tokens: int = 5
    """Tokens (or n-grams) listed."""


def _quote(tokens: list[str]) -> str:
    return ", ".join(repr(t) for t in tokens)


def _most(weight: dict[str, float], n: int) -> list[str]:
    """The ``n`` keys of largest weight (ties: first seen first)."""
    return sorted(weight, key=lambda k: -weight[k])[:n]


@EXPLAINERS.declare("top-tokens", config=TokensConfig, result=Explanation, tags=("baseline",))
def top_tokens(contexts: LatentContexts, llm: Chat | None, config: TokensConfig) -> Explanation:
    """The tokens the latent fires on, by total activation over its activating contexts."""
    weight: dict[str, float] = {}
    for w in contexts.activating:
        for t, a in zip(w.tokens, w.activations, strict=True):
            if a > 0 and t.strip():
                weight[t.strip()] = weight.get(t.strip(), 0.0) + a
    if not weight:
        raise ValueError(f"latent {contexts.latent} has no activating token in the feature database")
    return Explanation(f"the tokens {_quote(_most(weight, config.n_tokens))}")


@EXPLAINERS.declare("ngrams", config=TokensConfig, result=Explanation, tags=("baseline",))
def ngrams(contexts: LatentContexts, llm: Chat | None, config: TokensConfig) -> Explanation:
    """The bigrams (previous token + firing token) the latent fires on, by total activation."""
    weight: dict[str, float] = {}
    for w in contexts.activating:
        for i, (t, a) in enumerate(zip(w.tokens, w.activations, strict=True)):
            if a > 0 and i > 0:
                key = (w.tokens[i - 1] + t).strip()
                weight[key] = weight.get(key, 0.0) + a
    if not weight:
        raise ValueError(f"latent {contexts.latent} has no activating token with a token before it")
    return Explanation(f"the text {_quote(_most(weight, config.n_tokens))}")


@EXPLAINERS.declare("output-tokens", config=TokensConfig, result=Explanation, tags=("baseline",))
def output_tokens(contexts: LatentContexts, llm: Chat | None, config: TokensConfig) -> Explanation:
    """The tokens the latent's decoder direction promotes most through the unembedding (logit effects)."""
    if not contexts.promoted:
        raise ValueError(
            f"latent {contexts.latent}: the feature database has no logit effects (build it with W_U) to read "
            "output tokens from"
        )
    return Explanation(f"predicts the tokens {_quote([t.strip() for t in contexts.promoted[: config.n_tokens]])}")


@dataclass(frozen=True)
class LLMConfig:
    """Settings of the LLM explainer."""

    max_prompt_tokens: int = 1500
    """Prompt budget; contexts are dropped (lowest quantiles first) until the prompt fits, and the note says so."""
    max_new_tokens: int = 60
    """Length of the reply."""
    show_activations: bool = True
    """List each example's firing tokens with their activation (0-10), as delphi does."""
    seed: int = 0
    """Seed sent with each request (greedy local decoding ignores it)."""


SYSTEM = (
    "You are a meticulous AI researcher conducting an important investigation into patterns found in language. "
    "Your task is to analyze text and provide an explanation that thoroughly encapsulates possible patterns "
    "found in it.\nGuidelines:\nYou will be given a list of text examples on which special words are selected "
    "and between delimiters like <<this>>. If a sequence of consecutive tokens all are important, the entire "
    "sequence of tokens will be contained between delimiters <<just like this>>. How important each token is "
    "for the behavior is listed after each example in parentheses.\n"
    "- Try to produce a concise final description. Simply describe the text features that are common in the "
    "examples, and what patterns you found.\n"
    "- If the examples are uninformative, you don't need to mention them. Don't focus on giving examples of "
    "important tokens, but try to summarize the patterns found in the examples.\n"
    "- Do not mention the marker tokens (<< >>) in your explanation.\n"
    "- The last line of your response must be the formatted explanation, using [EXPLANATION]:"
)


def mark(window: Window) -> str:
    """The window's text with each run of firing tokens between ``<<`` and ``>>`` (newlines shown as ⏎)."""
    out, inside = [], False
    for t, a in zip(window.tokens, window.activations, strict=True):
        if a > 0 and not inside:
            out.append("<<")
        elif a <= 0 and inside:
            out.append(">>")
        inside = a > 0
        out.append(t)
    if inside:
        out.append(">>")
    return "".join(out).replace("\n", "⏎")


def _example(k: int, window: Window, scale: float, show: bool) -> str:
    line = f"Example {k}: {mark(window)}"
    if show:
        acts = [f"({t.strip() or repr(t)}, {round(10 * a / scale)})" for t, a in
                zip(window.tokens, window.activations, strict=True) if a > 0]  # fmt: skip
        line += "\nActivations: " + ", ".join(acts)
    return line


def explain_prompt(windows: tuple[Window, ...], config: LLMConfig, count: Any) -> tuple[list[Message], str]:
    """The chat messages for ``windows``, dropping trailing windows until ``count(prompt) <= max_prompt_tokens``.

    Returns the messages and a note ('' when every window fits).
    """
    scale = max((a for w in windows for a in w.activations), default=1.0) or 1.0
    lines = [_example(k + 1, w, scale, config.show_activations) for k, w in enumerate(windows)]
    for keep in range(len(lines), 0, -1):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(lines[:keep])}]
        if count(SYSTEM + messages[1]["content"]) <= config.max_prompt_tokens:
            dropped = len(lines) - keep
            note = f"dropped {dropped} of {len(lines)} contexts to fit {config.max_prompt_tokens} prompt tokens"
            return messages, note if dropped else ""
    raise ValueError(
        f"even one context does not fit max_prompt_tokens={config.max_prompt_tokens}: raise it (the system prompt "
        f"alone takes {count(SYSTEM)} tokens)"
    )


def parse_explanation(reply: str) -> str:
    """The text after the last ``[EXPLANATION]:`` (else the reply's last non-empty line); ChatError when empty."""
    _, sep, tail = reply.rpartition("[EXPLANATION]:")
    text = tail if sep else next((ln for ln in reversed(reply.splitlines()) if ln.strip()), "")
    text = text.strip().strip('"').strip()
    if not text:
        raise ChatError(f"the reply holds no explanation: {reply[:200]!r}")
    return text.splitlines()[0].strip()


@EXPLAINERS.declare("llm", config=LLMConfig, result=Explanation, tags=("llm",))
def llm_explainer(contexts: LatentContexts, llm: Chat | None, config: LLMConfig) -> Explanation:
    """A chat model reads the activating contexts (firing tokens marked) and describes the pattern (delphi format)."""
    if llm is None:
        raise ValueError("the llm explainer needs a chat model: pass llm=LocalChat() or HTTPChat(url)")
    messages, note = explain_prompt(contexts.activating, config, llm.count_tokens)
    prompt = "\n\n".join(m["content"] for m in messages)
    reply = llm.complete(messages, max_tokens=config.max_new_tokens, seed=config.seed)
    return Explanation(parse_explanation(reply), prompt, reply, note, llm.count_tokens(prompt))
