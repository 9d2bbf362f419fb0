"""Steering vectors: contrastive activation addition, swept over layer x scale, behaviour change against damage.

A **CAA vector** (Rimsky et al. 2023, "Steering Llama 2 via Contrastive Activation Addition", section 3) at a site is
the mean, over prompt pairs, of the site's activation at the positive prompt's last token minus the negative one's.
Adding ``scale * vector`` to the site at every position of later runs (Turner et al. 2023, "Activation Addition")
steers: the vector is an ``Add`` intervention (``core``), so it applies to runs and to generation alike
(``model.intervene(vec.add(4.0))`` around ``model.generate``).

``steer_sweep`` measures what a vector buys and costs, for a task of clean/corrupt pairs (``mechscope.data.tasks``),
its pairs first turned to one orientation where they come both ways round (``oriented``): vectors
``clean - corrupt`` from the first half of the pairs, then on the other half's corrupt prompts the task's
logit difference with and without steering (the **behaviour change**; the clean prompts' value is the target), and
on unrelated text from the built-in corpus the KL divergence of the steered next-token distributions from the plain
ones, mean over positions (the **damage**). Vectors are made and evaluated on different pairs, so a vector that only
memorises its own prompts gains nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core._interventions import Add, Index
from ..core._model import Inputs, Model
from ..data import tasks
from ..data._metrics import logit_diff
from ..data._task import Task
from ..data.corpus import load_corpus, token_contexts
from ._registry import METHODS

TASKS = ("ioi", "greater_than", "factual_recall", "gendered_pronoun", "subject_verb_agreement", "induction")
"""The built-in tasks a sweep can steer (``mechscope.data.tasks``)."""


@dataclass(frozen=True)
class SteeringVector:
    """A CAA vector at ``site``: ``mean(positive - negative)`` of the site's activation at the last token."""

    site: str
    vector: Float[Tensor, " d"]
    n_pairs: int

    def add(self, scale: float = 1.0, pos: Index = None) -> Add:
        """The intervention that steers: ``scale * vector`` added at ``pos`` (default: every position)."""
        return Add(self.site, self.vector, scale=scale, pos=pos)


@torch.no_grad()
def steering_vector(model: Model, positive: Inputs, negative: Inputs, site: str) -> SteeringVector:
    """The CAA vector of prompt pairs (``positive[i]``, ``negative[i]``) at ``site`` (any site with a ``pos`` axis)."""
    plus, minus = _last_token(model, positive, site), _last_token(model, negative, site)
    if plus.shape != minus.shape:
        raise ValueError(f"steering_vector needs as many positive as negative prompts: {len(plus)} vs {len(minus)}")
    return SteeringVector(site, (plus - minus).mean(0), len(plus))


def _last_token(model: Model, inputs: Inputs, site: str) -> Tensor:
    resolved = model.resolve(site)
    if len(resolved) != 1 or "pos" not in resolved[0].axes:
        raise ValueError(f"steering needs one site with a position axis, got {site!r} -> {len(resolved)} sites")
    run = model.run(inputs, cache=resolved[0].name, logits=False)
    act = run.cache[resolved[0].name].float()
    act = act.movedim(resolved[0].axes.index("pos"), 1)  # [batch pos ...]
    return act[torch.arange(len(act)), run.last_pos().to(act.device)]


@dataclass(frozen=True)
class SteerConfig:
    """Settings of the steering sweep (``mechscope steer``)."""

    task: str = "ioi"
    """Built-in task whose clean/corrupt pairs make the vectors and score the behaviour (see ``TASKS``)."""
    n: int = 32
    """Pairs drawn from the task: the first half makes the vectors, the second half is scored."""
    site: str = "resid_pre"
    """Site kind steered; the layer is appended (``resid_pre.L``)."""
    layers: tuple[int, ...] = ()
    """Layers swept (default: every layer)."""
    scales: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    """Multiples of each layer's vector swept."""
    damage_texts: int = 8
    """Contexts of the built-in corpus the damage (KL) is measured on."""
    damage_len: int = 64
    """Tokens per damage context."""
    seed: int = 0
    """Seed of the task's pairs and of the corpus contexts."""

    def __post_init__(self) -> None:
        if self.n < 4 or self.damage_texts < 1 or self.damage_len < 2 or not self.scales:
            raise ValueError("steering needs n >= 4 pairs, damage_texts >= 1, damage_len >= 2 and some scales")


@dataclass(frozen=True)
class SteeringSweep:
    """What :func:`steer_sweep` returns: behaviour change and damage per layer and scale."""

    task: str
    sites: tuple[str, ...]
    """The steered site of each row."""
    scales: tuple[float, ...]
    behaviour: Float[Tensor, "layer scale"]
    """Mean logit difference on the held-out corrupt prompts, steered."""
    damage: Float[Tensor, "layer scale"]
    """KL(plain || steered) of next-token distributions on unrelated text, nats, mean over positions."""
    corrupt: float
    """The held-out corrupt prompts' logit difference, unsteered (behaviour change is measured from here)."""
    clean: float
    """The held-out clean prompts' logit difference (what full steering would reach)."""
    norms: Float[Tensor, " layer"]
    """Norm of each site's vector."""
    provenance: dict[str, Any]

    @property
    def change(self) -> Float[Tensor, "layer scale"]:
        """Behaviour change: steered minus unsteered logit difference on the corrupt prompts."""
        return self.behaviour - self.corrupt

    def best(self, max_damage: float) -> tuple[str, float, float] | None:
        """The (site, scale, change) of the largest behaviour change whose damage stays within ``max_damage``."""
        ok = self.damage <= max_damage
        if not bool(ok.any()):
            return None
        flat = int(torch.where(ok, self.change, -torch.inf).argmax())
        row, col = divmod(flat, len(self.scales))
        return self.sites[row], self.scales[col], float(self.change[row, col])

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        rows = zip(self.sites, self.norms, self.behaviour.tolist(), self.change.tolist(), self.damage.tolist(),
                   strict=True)  # fmt: skip
        return {"method": "steer", "task": self.task, "provenance": self.provenance, "corrupt": self.corrupt,
                "clean": self.clean, "scales": list(self.scales),
                "rows": [{"site": s, "norm": float(n), "behaviour": b, "change": c, "damage": d}
                         for s, n, b, c, d in rows]}  # fmt: skip

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)


@torch.no_grad()
def steer_sweep(model: Model, config: SteerConfig = SteerConfig(), task: Task | None = None) -> SteeringSweep:
    """CAA vectors of ``task`` (default: the built-in ``config.task``) at every layer, each swept over the scales."""
    if model.cfg is None or model.tokenizer is None:
        raise TypeError(f"steering sweeps need a transformer language model with a tokenizer, got {model.name}")
    if task is None:
        if config.task not in TASKS:
            raise ValueError(f"unknown task {config.task!r}: choose one of {', '.join(TASKS)}")
        task = getattr(tasks, config.task)(model.tokenizer, n=config.n, seed=config.seed)
    task = oriented(task)
    half = len(task) // 2
    if half < 2:
        raise ValueError(f"task {task.name!r} has {len(task)} pairs; steering needs at least 4")
    build, held = _split(task, 0, half), _split(task, half, len(task))
    layers = config.layers or tuple(range(model.cfg.n_layers))
    texts = token_contexts(load_corpus(), model.tokenizer, config.damage_len, seed=config.seed)[: config.damage_texts]
    plain = torch.log_softmax(_logits(model, texts).float(), -1)
    corrupt, clean = _behaviour(model, held, held.corrupt), _behaviour(model, held, held.clean)
    behaviour, damage = torch.zeros(len(layers), len(config.scales)), torch.zeros(len(layers), len(config.scales))
    sites, norms = [], []
    for i, layer in enumerate(layers):
        vec = steering_vector(model, build.clean, build.corrupt, f"{config.site}.{layer}")
        sites.append(vec.site)
        norms.append(float(vec.vector.norm()))
        for j, scale in enumerate(config.scales):
            with model.intervene(vec.add(scale)):
                behaviour[i, j] = _behaviour(model, held, held.corrupt)
                steered = torch.log_softmax(_logits(model, texts).float(), -1)
            damage[i, j] = (plain.exp() * (plain - steered)).sum(-1).mean()
    return SteeringSweep(task.name, tuple(sites), tuple(config.scales), behaviour, damage, corrupt, clean,
                         torch.tensor(norms), model.provenance)  # fmt: skip


def oriented(task: Task) -> Task:
    """The task with pairs flipped (clean <-> corrupt, answer <-> wrong) to share the first pair's orientation.

    Where a task's pairs come both ways round (gendered pronouns: half the clean prompts want " she" against " he",
    half the reverse), the mean of ``clean - corrupt`` would cancel; flipped, every pair pushes the same way. Pairs
    whose answer and wrong are not the first pair's, either way round, are kept as they are (IOI: every pair has its
    own names, and no single vector can steer them all).
    """
    if task.answers.ndim != 1:
        return task
    answer, wrong = int(task.answers[0]), int(task.wrongs[0])
    flip = ((task.answers == wrong) & (task.wrongs == answer)).tolist()
    if not any(flip):
        return task
    clean = [c if not f else k for c, k, f in zip(task.clean, task.corrupt, flip, strict=True)]
    corrupt = [k if not f else c for c, k, f in zip(task.clean, task.corrupt, flip, strict=True)]
    mask = torch.tensor(flip)
    answers, wrongs = torch.where(mask, task.wrongs, task.answers), torch.where(mask, task.answers, task.wrongs)
    if isinstance(task.clean, Tensor):
        return Task(task.name, torch.stack(clean), torch.stack(corrupt), answers, wrongs, task.metadata)
    return Task(task.name, clean, corrupt, answers, wrongs, task.metadata)


def _split(task: Task, start: int, stop: int) -> Task:
    return Task(task.name, task.clean[start:stop], task.corrupt[start:stop], task.answers[start:stop],
                task.wrongs[start:stop], task.metadata)  # fmt: skip


def _behaviour(model: Model, task: Task, prompts: Sequence[str] | Tensor) -> float:
    final = model.run(prompts, logits="final").final_logits()
    return float(logit_diff(final.float().cpu(), task).mean())


def _logits(model: Model, tokens: Tensor) -> Tensor:
    logits = model.run(tokens).logits
    assert logits is not None
    return logits


@METHODS.declare("steer", config=SteerConfig, result=SteeringSweep, tags=("steering",))
def steer_method(model: Model, config: SteerConfig) -> SteeringSweep:
    """CAA steering vectors from a task's pairs, swept over layer x scale: behaviour change vs damage."""
    return steer_sweep(model, config)
