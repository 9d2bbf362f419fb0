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

from ..core._model import Model, RunResult
from ..data._metrics import final_logits
from ..data._task import Task, tokenize_task

Metric = Callable[[Float[Tensor, "batch d_vocab"], Task], Tensor]
"""Scores final-position logits against a task: one value per prompt (averaged over prompts), or a scalar. A task
whose ``metadata["readout"]`` is ``EVERY_POSITION`` gets the logits of every position, ``[batch pos d_vocab]``."""
EVERY_POSITION = "every_position"
"""``Task.metadata["readout"]`` of tasks with an output at every position (compiled programs): metrics see all."""
Direction = Literal["denoising", "noising"]
Start = tuple[int, Float[Tensor, "batch pos d_model"]]
"""Where a patched run starts: a block and the residual stream entering it (see ``Prefix``)."""


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

    @property
    def readout(self) -> Literal[True, "final"]:
        """What a scoring run unembeds (``Model.run``'s ``logits``).

        Each prompt's last real token, unless the task is read at every position.
        """
        return True if self.task.metadata.get("readout") == EVERY_POSITION else "final"

    def score(self, logits: Float[Tensor, "rows pos d_vocab"], copies: int = 1, rows: slice | None = None) -> Tensor:
        """Mean metric of each of ``copies`` stacked copies of the prompts (``rows`` picks a prompt subset)."""
        rows = rows or slice(None)
        if self.task.metadata.get("readout") == EVERY_POSITION:  # an output at every position: the metric reads all
            return self._per_copy(einops.rearrange(logits, "(c b) p v -> c b p v", c=copies), rows)
        mask = einops.repeat(self.attention_mask[rows], "b p -> (c b) p", c=copies)
        return self.score_final(final_logits(logits, mask), copies, rows)

    def score_final(self, final: Float[Tensor, "rows d_vocab"], copies: int = 1, rows: slice | None = None) -> Tensor:
        """``score`` given only each row's last-real-token logits (a run with ``logits="final"``)."""
        return self._per_copy(einops.rearrange(final, "(c b) v -> c b v", c=copies), rows or slice(None))

    def score_readout(self, logits: Tensor, copies: int = 1, rows: slice | None = None) -> Tensor:
        """``score`` of logits as ``self.readout`` gives them: ``[rows d_vocab]`` final rows or full logits."""
        if self.readout == "final":
            return self.score_final(logits, copies, rows)
        return self.score(logits, copies, rows)

    def score_run(self, out: RunResult, copies: int = 1, rows: slice | None = None) -> Tensor:
        """``score`` of a run made with ``logits=self.readout`` (or full logits)."""
        if out.final is not None:
            return self.score_final(out.final, copies, rows)
        assert out.logits is not None, "score_run needs a run with logits"
        return self.score(out.logits, copies, rows)

    def _per_copy(self, per_copy: Tensor, rows: slice) -> Tensor:
        task = subtask(self.task, rows)
        return torch.stack([self.metric(x, task).float().mean() for x in per_copy])

    def run(self, model: Model, tokens: Tensor, cache: Sequence[str] = ()) -> tuple[float, dict[str, Tensor]]:
        """One unpatched run of ``tokens`` (all prompts): its mean metric and the cached sites."""
        out = model.run(tokens, cache=list(cache), attention_mask=self.attention_mask, logits=self.readout)
        return float(self.score_run(out)[0]), out.cache

    def forward(self, model: Model, tokens: Tensor, copies: int = 1, start: Start | None = None) -> Tensor:
        """Mean metric of each copy of ``tokens`` stacked ``copies`` times, run under the active interventions.

        ``start``: ``(layer, resid)`` from a ``Prefix`` of an unpatched run of ``tokens``, when nothing below
        ``layer`` changes: the run starts there. Only the scored rows are unembedded.
        """
        return self.score_run(self.forward_run(model, tokens, copies, start), copies)

    def forward_run(self, model: Model, tokens: Tensor, copies: int = 1, start: Start | None = None) -> RunResult:
        """The run behind ``forward`` (logits as ``self.readout`` asks)."""
        stacked = einops.repeat(tokens, "b p -> (c b) p", c=copies)
        mask = einops.repeat(self.attention_mask, "b p -> (c b) p", c=copies)
        if start is None:
            return model.run(stacked, attention_mask=mask, logits=self.readout)
        resid = einops.repeat(start[1], "b p d -> (c b) p d", c=copies)
        return model.run(stacked, attention_mask=mask, logits=self.readout, start_at=start[0], resid=resid)


def subtask(task: Task, rows: slice) -> Task:
    """The prompts ``rows`` of ``task`` as a task of their own (for metrics on a slice of the batch)."""
    if rows == slice(None):
        return task
    return Task(task.name, task.clean[rows], task.corrupt[rows], task.answers[rows], task.wrongs[rows], task.metadata)


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    size = max(1, size)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
