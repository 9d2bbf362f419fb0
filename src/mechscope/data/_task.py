"""The ``Task`` value: clean/corrupt prompt pairs with the tokens that count as right and wrong answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from jaxtyping import Int
from torch import Tensor

from .._numerics import pad

# Pads answer/wrong *sets* of unequal size (greater-than's year bins); metrics ignore it.
PAD_ID = -1


@dataclass(frozen=True, eq=False)
class Task:
    """Clean/corrupt prompt pairs and a scoring target, ready for patching experiments.

    Pair ``i`` is ``clean[i]`` / ``corrupt[i]``; both tokenise to the same length, so positions align. The
    model is scored at each prompt's final position on ``answers[i]`` (right) against ``wrongs[i]`` (the
    answer the corrupt prompt suggests, or the wrong side of a comparison).
    """

    name: str
    """Short task name, e.g. ``"ioi"``."""
    clean: list[str] | Int[Tensor, "batch pos"]
    """Clean prompts: text, or token ids for token-level tasks (induction)."""
    corrupt: list[str] | Int[Tensor, "batch pos"]
    """Corrupted prompts, same kind and (tokenised) length as ``clean``."""
    answers: Int[Tensor, " batch"] | Int[Tensor, "batch k"]
    """Right next-token ids; ``[batch, k]`` for sets (e.g. later years), padded with ``PAD_ID`` (-1)."""
    wrongs: Int[Tensor, " batch"] | Int[Tensor, "batch k"]
    """Wrong next-token ids, same convention as ``answers``."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable details: per-pair words and templates, dropped multi-token words, seed."""

    def __post_init__(self) -> None:
        n = len(self.clean)
        if len(self.corrupt) != n:
            raise ValueError(f"task {self.name!r}: {n} clean prompts but {len(self.corrupt)} corrupt ones")
        clean, corrupt = self.clean, self.corrupt
        if isinstance(clean, Tensor) != isinstance(corrupt, Tensor):
            raise ValueError(f"task {self.name!r}: clean and corrupt must both be text or both be token ids")
        if isinstance(clean, Tensor) and isinstance(corrupt, Tensor) and clean.shape != corrupt.shape:
            raise ValueError(
                f"task {self.name!r}: clean tokens {tuple(clean.shape)} and corrupt tokens "
                f"{tuple(corrupt.shape)} differ in shape"
            )
        for label, t in (("answers", self.answers), ("wrongs", self.wrongs)):
            if t.dtype != torch.long or t.ndim not in (1, 2) or t.shape[0] != n:
                raise ValueError(
                    f"task {self.name!r}: {label} must be a LongTensor [batch] or [batch, k] with batch={n}, "
                    f"got {t.dtype} {tuple(t.shape)}"
                )
            if t.ndim == 2 and bool((t == PAD_ID).all(dim=1).any()):
                raise ValueError(f"task {self.name!r}: some row of {label} is all padding")

    def __len__(self) -> int:
        return len(self.clean)

    def __repr__(self) -> str:
        kind = "tokens" if isinstance(self.clean, Tensor) else "text"
        return (
            f"Task(name={self.name!r}, n={len(self)}, prompts={kind}, answers={tuple(self.answers.shape)}, "
            f"wrongs={tuple(self.wrongs.shape)})"
        )


class TaskTokens(NamedTuple):
    """A task's prompts as padded token ids; clean and corrupt share one attention mask."""

    clean: Int[Tensor, "batch pos"]
    """Clean prompt ids."""
    corrupt: Int[Tensor, "batch pos"]
    """Corrupt prompt ids, aligned position by position with ``clean``."""
    attention_mask: Int[Tensor, "batch pos"]
    """1 at real tokens, 0 at padding."""


def tokenize_task(task: Task, tokenizer: Any, *, padding_side: str = "right") -> TaskTokens:
    """Tokenise a text task (the tokenizer's own special tokens included) and pad to one length.

    Token-level tasks come back as they are, with an all-ones mask. Raises ValueError if a pair's lengths
    differ.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if isinstance(task.clean, Tensor):
        assert isinstance(task.corrupt, Tensor)
        return TaskTokens(task.clean, task.corrupt, torch.ones_like(task.clean))
    clean = [list(tokenizer(p)["input_ids"]) for p in task.clean]
    corrupt = [list(tokenizer(p)["input_ids"]) for p in task.corrupt]
    for i, (c, k) in enumerate(zip(clean, corrupt, strict=True)):
        if len(c) != len(k):
            raise ValueError(
                f"task {task.name!r}: pair {i} does not align ({len(c)} vs {len(k)} tokens): "
                f"{task.clean[i]!r} / {task.corrupt[i]!r}"
            )
    fill = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    ones = [[1] * len(c) for c in clean]
    return TaskTokens(pad(clean, fill, padding_side), pad(corrupt, fill, padding_side), pad(ones, 0, padding_side))


def stack_ids(rows: Sequence[int | list[int]]) -> Int[Tensor, " batch"] | Int[Tensor, "batch k"]:
    """Token ids as a LongTensor; ragged lists of ids become ``[batch, k]`` padded with ``PAD_ID``."""
    if not rows or isinstance(rows[0], int):
        return torch.tensor(rows, dtype=torch.long)
    return pad([[r] if isinstance(r, int) else r for r in rows], PAD_ID)
