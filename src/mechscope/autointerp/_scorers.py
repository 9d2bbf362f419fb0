"""Scorers: how well an explanation predicts where a latent fires. Declared once in ``SCORERS``.

Each returns a ``Score`` with its chance level; the jobs (``_jobs``) also score a *shuffled* explanation (another
latent's) beside each one, so a score is read against what any explanation would get.

- ``detection``: a chat model sees the explanation and a shuffled mix of activating and non-activating contexts
  and says which contexts have the feature (Paulo et al. 2024, §3.3). Balanced accuracy; chance 0.5.
- ``fuzzing``: activating contexts with the firing tokens marked, and the same contexts with as many *other*
  tokens marked; the chat model says which are marked right (ibid.). Balanced accuracy; chance 0.5.
- ``embedding``: AUROC of the cosine similarity between the explanation's and each context's embedding
  (all-MiniLM-L6-v2), activating against non-activating contexts (ibid., "embedding scorer"). Chance 0.5.
- ``simulation``: predict each token's activation from the explanation and correlate with the real ones over
  all tokens of all contexts (Bills et al. 2023, "all at once" correlation scoring). The simulator here is the
  embedding similarity of the explanation to each token's text, not an LLM: cheap, but blind to context and
  position, so it can only reward token-level explanations. Chance 0.
- ``output`` (``_output``): steer the latent's decoder direction and compare the explanation's embedding
  similarity to steered against unsteered continuations (AUROC; chance 0.5). Needs a ``Steerer``.

The judges (detection, fuzzing) read a verdict from the chat model's probabilities of the answers 1 and 0 where it
gives them (``AnswerProbs``; one example per request), and parse a list of 0/1 from its text otherwise. An
unparseable reply counts its items as wrong (and ``detail["unparsed"]`` counts them): a scorer that cannot read
the chat model's answer must not look better than chance.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mechscope.core import Registry

from ._contexts import LatentContexts, Window
from ._explainers import mark
from ._llm import AnswerProbs, Chat


@dataclass(frozen=True)
class Score:
    """One scorer's verdict on one explanation of one latent."""

    value: float
    chance: float
    """What an explanation with no information gets in expectation."""
    n: int
    """Items scored (contexts, or tokens for simulation)."""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"value": self.value, "chance": self.chance, "n": self.n, "detail": self.detail}


class Tools:
    """What scorers may use: a chat model, the sentence embedder (opened on first use), a steerer (``output``)."""

    def __init__(self, llm: Chat | None = None, embedder: Any = None, steer: Any = None, contexts: Any = None) -> None:
        """Scorer tools; ``contexts`` is for ``EmbeddingConfig(pooled_contexts=True)``.

        ``contexts``: a ``ContextStates``, or a function from store context index to its tokens' text
        (``store_context_tokens``).
        """
        self.llm, self._embedder, self.steer, self._contexts = llm, embedder, steer, contexts

    @property
    def contexts(self) -> Any:
        """The ``ContextStates`` pooled window embeddings come from; a ValueError saying how to give one."""
        from ._embed import ContextStates

        if self._contexts is None:
            raise ValueError(
                "pooled_contexts needs the store's context tokens: pass Tools(contexts=store_context_tokens(store, "
                "db_path)) or score(..., context_tokens=...) (the CLI reads the store the database was built from)"
            )
        if not isinstance(self._contexts, ContextStates):
            self._contexts = ContextStates(self.embedder, self._contexts)
        return self._contexts

    @property
    def embedder(self) -> Any:
        """The all-MiniLM-L6-v2 ``Embedder``."""
        if self._embedder is None:
            from ._embed import Embedder

            self._embedder = Embedder()
        return self._embedder

    def chat(self, scorer: str) -> Chat:
        """The chat model, or a ValueError naming the scorer that needs one."""
        if self.llm is None:
            raise ValueError(f"the {scorer} scorer needs a chat model: pass llm=LocalChat() or HTTPChat(url)")
        return self.llm


SCORERS: Registry[Any, Score] = Registry(
    "scorers",
    builtins=["mechscope.autointerp._scorers", "mechscope.autointerp._output", "mechscope.autointerp._simulate"],
)
"""Declared scorers: ``fn(contexts: LatentContexts, explanation: str, tools: Tools, config) -> Score``."""


@dataclass(frozen=True)
class JudgeConfig:
    """Settings of the chat-model scorers (detection, fuzzing)."""

    n_examples: int = 10
    """Activating contexts used (and as many non-activating / mis-marked ones)."""
    batch_size: int = 5
    """Contexts per request."""
    max_new_tokens: int = 30
    """Length of each reply."""
    seed: int = 0
    """Seed of the shuffle and of the mis-marked tokens."""
    probabilities: bool = True
    """Read each verdict from the chat model's probabilities of the answers 1 and 0, one example per request
    (``AnswerProbs``: ``LocalChat``'s logits, an HTTP server's ``top_logprobs``), as delphi does with logprobs;
    with a model that gives none, or False, parse a list of 0/1 answers, ``batch_size`` examples per request."""


JUDGE = (
    "You are an intelligent and meticulous linguistics researcher. You will be given a certain feature of text, "
    'such as "male pronouns" or "text with negative sentiment". You will then be given several text examples. '
    "{task} You must return your response as a valid Python list of 0s and 1s, one per example, such as [1, 0, 1]. "
    "Do not return anything else besides the list."
)
DETECT = "Your task is to determine which examples possess the feature: for each example return 1 if it does, else 0."
FUZZ = (
    "In each example some tokens are marked between << and >>. For each example return 1 if the marked tokens are "
    "the ones that carry the feature, 0 if they are marked wrongly."
)


JUDGE_ONE = (
    "You are an intelligent and meticulous linguistics researcher. You will be given a certain feature of text, "
    'such as "male pronouns" or "text with negative sentiment". You will then be given a text example. {task} '
    "Answer with the single digit 1 or 0 and nothing else."
)
DETECT_ONE = "Your task is to determine whether the example possesses the feature: answer 1 if it does, 0 if not."
FUZZ_ONE = (
    "In the example some tokens are marked between << and >>. Answer 1 if the marked tokens are the ones that carry "
    "the feature, 0 if they are marked wrongly."
)
ANSWER_PREFIX = "Answer:"
"""What ``LocalChat`` makes the judge's reply start with; the answers are `` 1`` and `` 0`` after it."""


def parse_labels(reply: str, n: int) -> list[int] | None:
    """The first bracketed list of ``n`` zeros and ones in ``reply`` (None when there is none)."""
    for found in re.findall(r"\[([^\[\]]*)\]", reply):
        items = [s.strip() for s in found.split(",") if s.strip()]
        if len(items) == n and all(s in ("0", "1") for s in items):
            return [int(s) for s in items]
    return None


def _judge(
    items: list[tuple[str, int]], explanation: str, task: str, llm: Chat, config: JudgeConfig
) -> tuple[float, dict[str, Any]]:
    """Balanced accuracy of the chat model's 0/1 answers on ``items`` (text, label).

    From the answers' probabilities when the model gives them (``config.probabilities``), else from its text.
    """
    if config.probabilities and isinstance(llm, AnswerProbs):
        found = _judge_by_probabilities(items, explanation, task, llm, config)
        if found is not None:
            return found
    value, detail = _judge_by_text(items, explanation, task, llm, config)
    return value, {"mode": "text", **detail}


def _judge_by_probabilities(
    items: list[tuple[str, int]], explanation: str, task: str, llm: AnswerProbs, config: JudgeConfig
) -> tuple[float, dict[str, Any]] | None:
    """One request per item; the verdict is 1 where P(1) > P(0). None if the model gives no probabilities at all.

    Besides the balanced accuracy, ``detail`` has ``auroc`` (P(1) of positive against negative items: how well the
    probabilities separate them whatever the threshold; None with one class only), ``p1`` (each item's normalised
    P(1), in item order) and ``answer_mass`` (mean unnormalised P(1) + P(0): how much of the model's next-token
    distribution the two answers hold).
    """
    system = JUDGE_ONE.format(task={DETECT: DETECT_ONE, FUZZ: FUZZ_ONE}[task])
    p1: list[float | None] = []
    mass: list[float] = []
    for k, (text, _) in enumerate(items):
        user = f"Feature explanation: {explanation}\n\nText example: {text}"
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        got = llm.answer_probs(messages, (" 1", " 0"), prefix=ANSWER_PREFIX, seed=config.seed)
        if got is None and k == 0:
            return None  # a server without logprobs: the text judge
        if got is None or sum(got) <= 0:
            p1.append(None)
            continue
        p1.append(got[0] / (got[0] + got[1]))
        mass.append(got[0] + got[1])
    hits, totals = {0: 0, 1: 0}, {0: 0, 1: 0}
    for (_, y), p in zip(items, p1, strict=True):
        totals[y] += 1
        hits[y] += int(p is not None and int(p > 0.5) == y)
    rates = [hits[y] / totals[y] for y in (0, 1) if totals[y]]
    pos = torch.tensor([p for (_, y), p in zip(items, p1, strict=True) if y == 1 and p is not None])
    neg = torch.tensor([p for (_, y), p in zip(items, p1, strict=True) if y == 0 and p is not None])
    detail = {"mode": "probabilities", "unparsed": sum(p is None for p in p1), "hits": [hits[0], hits[1]],
              "totals": [totals[0], totals[1]], "auroc": auroc(pos, neg) if len(pos) and len(neg) else None,
              "p1": p1, "answer_mass": sum(mass) / len(mass) if mass else 0.0}  # fmt: skip
    return sum(rates) / len(rates), detail


def _judge_by_text(
    items: list[tuple[str, int]], explanation: str, task: str, llm: Chat, config: JudgeConfig
) -> tuple[float, dict[str, Any]]:
    """Balanced accuracy of the chat model's 0/1 answers on ``items`` (text, label), ``batch_size`` per request."""
    order = list(range(len(items)))
    random.Random(config.seed).shuffle(order)
    hits = {0: 0, 1: 0}
    totals = {0: sum(1 for _, y in items if y == 0), 1: sum(1 for _, y in items if y == 1)}
    unparsed = 0
    for b in range(0, len(order), config.batch_size):
        batch = [items[i] for i in order[b : b + config.batch_size]]
        examples = "\n\n".join(f"Example {k + 1}: {text}" for k, (text, _) in enumerate(batch))
        user = f"Feature explanation: {explanation}\n\nText examples:\n\n{examples}"
        messages = [{"role": "system", "content": JUDGE.format(task=task)}, {"role": "user", "content": user}]
        answer = parse_labels(llm.complete(messages, max_tokens=config.max_new_tokens, seed=config.seed), len(batch))
        if answer is None:
            unparsed += len(batch)
            continue
        for (_, y), p in zip(batch, answer, strict=True):
            hits[y] += int(p == y)
    rates = [hits[y] / totals[y] for y in (0, 1) if totals[y]]
    return sum(rates) / len(rates), {"unparsed": unparsed, "hits": [hits[0], hits[1]], "totals": [totals[0], totals[1]]}


def _need_negatives(contexts: LatentContexts, scorer: str) -> None:
    if not contexts.negatives:
        raise ValueError(
            f"the {scorer} scorer needs non-activating contexts for latent {contexts.latent}: build a NegativePool "
            "from the activation store and the dictionary (CLI: --store and --dictionary)"
        )


@SCORERS.declare("detection", config=JudgeConfig, result=Score, tags=("llm",))
def detection(contexts: LatentContexts, explanation: str, tools: Tools, config: JudgeConfig) -> Score:
    """A chat model tells activating from non-activating contexts given the explanation (balanced accuracy)."""
    _need_negatives(contexts, "detection")
    items = [(w.text.replace("\n", "⏎"), 1) for w in contexts.activating[: config.n_examples]]
    items += [(w.text.replace("\n", "⏎"), 0) for w in contexts.negatives[: config.n_examples]]
    value, detail = _judge(items, explanation, DETECT, tools.chat("detection"), config)
    return Score(value, 0.5, len(items), detail)


def misplaced(window: Window, rng: random.Random) -> Window:
    """``window`` with as many tokens marked as fire, at positions where the latent is zero."""
    firing = [i for i, a in enumerate(window.activations) if a > 0]
    quiet = [i for i, a in enumerate(window.activations) if a <= 0]
    chosen = set(rng.sample(quiet, min(len(firing), len(quiet))))
    acts = tuple(1.0 if i in chosen else 0.0 for i in range(len(window.tokens)))
    return Window(window.tokens, acts, window.kind)


@SCORERS.declare("fuzzing", config=JudgeConfig, result=Score, tags=("llm",))
def fuzzing(contexts: LatentContexts, explanation: str, tools: Tools, config: JudgeConfig) -> Score:
    """A chat model tells correctly marked firing tokens from wrongly marked ones given the explanation."""
    rng = random.Random(config.seed * 7919 + contexts.latent)
    windows = [w for w in contexts.activating[: config.n_examples] if any(a <= 0 for a in w.activations)]
    items = [(mark(w), 1) for w in windows] + [(mark(misplaced(w, rng)), 0) for w in windows]
    if not items:
        raise ValueError(f"latent {contexts.latent} has no activating context with a quiet token to mis-mark")
    value, detail = _judge(items, explanation, FUZZ, tools.chat("fuzzing"), config)
    return Score(value, 0.5, len(items), detail)


@dataclass(frozen=True)
class EmbeddingConfig:
    """Settings of the embedding scorer."""

    n_examples: int = 20
    """Activating contexts used (and up to as many non-activating ones)."""
    pooled_contexts: bool = False
    """Embed each store context once and pool a window's token states over its span (``ContextStates``): several
    times faster over a whole dictionary (docs/autointerp.md), an approximation of embedding each window alone
    (the default)."""


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a random positive scores above a random negative), ties counting half (Mann–Whitney U / (n_p n_n))."""
    greater = (positive[:, None] > negative[None, :]).float().sum()
    ties = (positive[:, None] == negative[None, :]).float().sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))


def _embedding_windows(contexts: LatentContexts, config: EmbeddingConfig) -> tuple[list[Window], list[Window]]:
    return list(contexts.activating[: config.n_examples]), list(contexts.negatives[: config.n_examples])


def _embedding_texts(contexts: LatentContexts, config: EmbeddingConfig) -> tuple[list[str], list[str]]:
    if config.pooled_contexts:  # the windows are pooled from their contexts' states (``POOLED``), not embedded
        return [], []
    pos, neg = _embedding_windows(contexts, config)
    return [w.text for w in pos], [w.text for w in neg]


@SCORERS.declare("embedding", config=EmbeddingConfig, result=Score)
def embedding(contexts: LatentContexts, explanation: str, tools: Tools, config: EmbeddingConfig) -> Score:
    """AUROC of explanation-to-context embedding similarity, activating vs non-activating contexts."""
    _need_negatives(contexts, "embedding")
    if config.pooled_contexts:
        pos_w, neg_w = _embedding_windows(contexts, config)
        sims = tools.contexts([*pos_w, *neg_w]) @ tools.embedder([explanation])[0]
        return Score(auroc(sims[: len(pos_w)], sims[len(pos_w) :]), 0.5, len(pos_w) + len(neg_w))
    pos, neg = _embedding_texts(contexts, config)
    vectors = tools.embedder([explanation, *pos, *neg])
    sims = vectors[1:] @ vectors[0]
    return Score(auroc(sims[: len(pos)], sims[len(pos) :]), 0.5, len(pos) + len(neg))


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of the simulation scorer."""

    n_examples: int = 20
    """Activating contexts used (and up to as many non-activating ones)."""


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation (0 when either side is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = float(x.norm() * y.norm())
    return float(x @ y) / denom if denom > 0 else 0.0


def _simulation_tokens(contexts: LatentContexts, config: SimulationConfig) -> list[str]:
    windows = [*contexts.activating[: config.n_examples], *contexts.negatives[: config.n_examples]]
    return [t.strip() or t for w in windows for t in w.tokens]


@SCORERS.declare("simulation", config=SimulationConfig, result=Score)
def simulation(contexts: LatentContexts, explanation: str, tools: Tools, config: SimulationConfig) -> Score:
    """Correlation of per-token activations simulated from the explanation (embedding similarity) with the real ones."""
    windows = [*contexts.activating[: config.n_examples], *contexts.negatives[: config.n_examples]]
    tokens = _simulation_tokens(contexts, config)
    real = torch.tensor([a for w in windows for a in w.activations])
    vocab = list(dict.fromkeys(tokens))
    vectors = tools.embedder([explanation, *vocab])
    sim = dict(zip(vocab, (vectors[1:] @ vectors[0]).tolist(), strict=True))
    predicted = torch.tensor([sim[t] for t in tokens])
    return Score(pearson(predicted, real), 0.0, len(tokens))


EMBEDS: dict[str, Callable[[LatentContexts, Any], list[str]]] = {
    "embedding": lambda c, config: [t for part in _embedding_texts(c, config) for t in part],
    "simulation": lambda c, config: list(dict.fromkeys(_simulation_tokens(c, config))),
}
"""The texts each embedding-based scorer will embed for a latent: a job embeds those of many latents in one batched
call first (``_jobs.score``), so the scorer finds them memoised."""


def _pooled_contexts(c: LatentContexts, config: EmbeddingConfig) -> list[int]:
    if not config.pooled_contexts:
        return []
    return [w.context for part in _embedding_windows(c, config) for w in part if w.context is not None]


def embedding_chunk(
    chunk: list[LatentContexts], texts: dict[int, str], shuffled: dict[int, str], tools: Tools,
    config: EmbeddingConfig,
) -> dict[int, tuple[Score, Score]]:  # fmt: skip
    """``embedding``'s scores of a chunk of latents for their explanation and their shuffled one, all at once.

    Each distinct window is embedded (or pooled) once for the chunk, the similarities of every window to every
    latent's two explanations come from one batched product, and the AUROCs from one comparison of padded
    ``[2 latent pos]`` against ``[2 latent neg]`` similarities: the values ``embedding`` gives latent by latent
    (up to float rounding of the products). Latents without activating or non-activating windows are left out
    (``embedding`` gives them their error).
    """
    chunk = [c for c in chunk if c.activating and c.negatives]
    if not chunk:
        return {}
    key: Callable[[Window], Any] = (
        (lambda w: (w.context, w.start, len(w.tokens))) if config.pooled_contexts else (lambda w: w.text)
    )
    index: dict[Any, int] = {}
    unique: list[Window] = []
    parts: list[tuple[list[int], list[int]]] = []
    for c in chunk:
        ids: list[list[int]] = [[], []]
        for side, part in zip(ids, _embedding_windows(c, config), strict=True):
            for w in part:
                if (k := key(w)) not in index:
                    index[k] = len(unique)
                    unique.append(w)
                side.append(index[k])
        parts.append((ids[0], ids[1]))
    vectors = tools.contexts(unique) if config.pooled_contexts else tools.embedder([w.text for w in unique])
    n = len(chunk)
    explanations = tools.embedder([texts[c.latent] for c in chunk] + [shuffled[c.latent] for c in chunk])
    pos, pos_mask = _padded([p for p, _ in parts])  # [latent pos]
    neg, neg_mask = _padded([q for _, q in parts])  # [latent neg]
    e = explanations.view(2, n, -1)  # [which latent d]: which = 0 the latent's explanation, 1 the shuffled one
    d = vectors.shape[-1]  # index_select: advanced indexing is slow on a busy CPU (``NegativePool.negatives``)
    sim_pos = torch.einsum("wld,lpd->wlp", e, vectors.index_select(0, pos.flatten()).view(*pos.shape, d))
    sim_neg = torch.einsum("wld,lqd->wlq", e, vectors.index_select(0, neg.flatten()).view(*neg.shape, d))
    both = (pos_mask[:, :, None] & neg_mask[:, None, :])[None]  # [1 latent pos neg]
    a, b = sim_pos[..., :, None], sim_neg[..., None, :]
    greater = ((a > b) & both).sum((-1, -2)).double()
    ties = ((a == b) & both).sum((-1, -2)).double()
    pairs = (pos_mask.sum(1) * neg_mask.sum(1)).double()
    values = ((greater + 0.5 * ties) / pairs).tolist()  # [which latent]
    return {
        c.latent: (Score(values[0][k], 0.5, len(p) + len(q)), Score(values[1][k], 0.5, len(p) + len(q)))
        for k, (c, (p, q)) in enumerate(zip(chunk, parts, strict=True))
    }


def _padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` as a ``[len(rows) longest]`` index tensor (padded with 0) and the mask of real entries."""
    width = max(map(len, rows))
    index = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for k, r in enumerate(rows):
        index[k, : len(r)], mask[k, : len(r)] = torch.tensor(r, dtype=torch.long), True
    return index, mask


POOLED: dict[str, Callable[[LatentContexts, Any], list[int]]] = {"embedding": _pooled_contexts}
"""The store contexts a scorer will pool windows from (``pooled_contexts``): a job runs MiniLM on those of many
latents at once first, so each context is embedded once."""


BATCHED: dict[str, Callable[..., dict[int, tuple[Score, Score]]]] = {"embedding": embedding_chunk}
"""Scorers that score a job's whole chunk of latents at once (``fn(chunk, texts, shuffled, tools, config)``, the
same values as scoring each latent), so the job's per-latent work is a lookup."""
