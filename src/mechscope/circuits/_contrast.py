"""A task made ready for patching: aligned clean/corrupt token ids, a metric, and the unpatched runs.

Every circuit method compares two runs of the same prompts, one *clean* and one *corrupt*, through one scalar
metric (by default the logit difference, Wang et al. 2022, section 3). A direction names which run is patched:
*denoising* runs the corrupt prompts and patches in clean activations (is this node sufficient to restore the
behaviour?), *noising* runs the clean prompts and patches in corrupt ones (is it necessary?) — Heimersheim &
Nanda 2024, "How to use and interpret activation patching", section 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core._model import Model
from ..data._metrics import final_logits
from ..data._task import Task, tokenize_task

Metric = Callable[[Float[Tensor, "batch d_vocab"], Task], Tensor]
"""Scores final-position logits against a task: one value per prompt (averaged over prompts), or a scalar. A task
whose ``metadata["readout"]`` is ``EVERY_POSITION`` gets the logits of every position, ``[batch pos d_vocab]``."""
EVERY_POSITION = "every_position"
"""``Task.metadata["readout"]`` of tasks with an output at every position (compiled programs): metrics see all."""
Direction = Literal["denoising", "noising"]


@dataclass(frozen=True, eq=False)
class Contrast:
    """Token ids of a task's clean and corrupt prompts (one shared mask) and the metric that scores them."""

    task: Task
    clean: Int[Tensor, "batch pos"]
    corrupt: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    metric: Metric

    @classmethod
    def of(cls, model: Model, task: Task, metric: Metric) -> Contrast:
        """Tokenise ``task`` for ``model`` (right padding, so a position means the same token slot in both runs)."""
        if model.cfg is None:
            raise TypeError(f"{model.name} is not a transformer language model; patching needs token sites")
        toks = tokenize_task(task, model.tokenizer)
        return cls(task, toks.clean, toks.corrupt, toks.attention_mask, metric)

    @property
    def n_prompts(self) -> int:
        return self.clean.shape[0]

    @property
    def n_pos(self) -> int:
        return self.clean.shape[1]

    def base_and_source(self, direction: Direction) -> tuple[Tensor, Tensor]:
        """Token ids of the run that is patched and of the run whose activations are patched in."""
        if direction == "denoising":
            return self.corrupt, self.clean
        if direction == "noising":
            return self.clean, self.corrupt
        raise ValueError(f"direction must be 'denoising' or 'noising', got {direction!r}")

    def pos_labels(self, model: Model) -> list[str]:
        """Tick labels for positions: index and token of the first clean prompt (padded positions say so)."""
        out = []
        for p, (tok, real) in enumerate(zip(self.clean[0].tolist(), self.attention_mask[0].tolist(), strict=True)):
            text = model.tokenizer.decode([tok]) if real and model.tokenizer is not None else "<pad>"
            out.append(f"{p}:{text}")
        return out

    def score(self, logits: Float[Tensor, "rows pos d_vocab"], copies: int = 1, rows: slice | None = None) -> Tensor:
        """Mean metric of each of ``copies`` stacked copies of the prompts (``rows`` picks a prompt subset)."""
        rows = rows or slice(None)
        mask = self.attention_mask[rows]
        task = subtask(self.task, rows)
        if self.task.metadata.get("readout") == EVERY_POSITION:  # an output at every position: the metric reads all
            per_copy = einops.rearrange(logits, "(c b) p v -> c b p v", c=copies)
        else:
            last = final_logits(logits, einops.repeat(mask, "b p -> (c b) p", c=copies))
            per_copy = einops.rearrange(last, "(c b) v -> c b v", c=copies)
        return torch.stack([self.metric(x, task).float().mean() for x in per_copy])

    def run(self, model: Model, tokens: Tensor, cache: Sequence[str] = ()) -> tuple[float, dict[str, Tensor]]:
        """One unpatched run of ``tokens`` (all prompts): its mean metric and the cached sites."""
        out = model.run(tokens, cache=list(cache), attention_mask=self.attention_mask)
        assert out.logits is not None
        return float(self.score(out.logits)[0]), out.cache


def subtask(task: Task, rows: slice) -> Task:
    """The prompts ``rows`` of ``task`` as a task of their own (for metrics on a slice of the batch)."""
    if rows == slice(None):
        return task
    return Task(task.name, task.clean[rows], task.corrupt[rows], task.answers[rows], task.wrongs[rows], task.metadata)


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    size = max(1, size)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
