"""Tasks for circuit work: clean/corrupt prompt pairs, the tokens that answer them, and metrics.

A ``Task`` holds pairs of prompts that differ in the one fact a circuit should use (who the indirect object
is, which year the war started), tokenised to equal lengths so activations can be patched position by
position, plus the right and wrong next tokens. Builders generate the standard tasks for a given tokenizer,
keeping only words that are a single token; ``from_jsonl`` loads your own. Metrics read logits at each
prompt's final position and ``normalise`` maps the clean run to 1 and the corrupt run to 0.

    task = ioi(tokenizer, n=32)
    logits = final_logits(model(...).logits, attention_mask)
    score = normalise(logit_diff(logits, task).mean(), clean_ld, corrupt_ld)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mechscope.data._metrics import (
    accuracy,
    final_logits,
    kl_to_clean,
    logit_diff,
    normalise,
    prob,
    prob_diff,
)
from mechscope.data._task import PAD_ID, Task, TaskTokens, stack_ids, tokenize_task
from mechscope.data._task_gen import (
    factual_recall,
    gendered_pronoun,
    greater_than,
    induction,
    ioi,
    subject_verb_agreement,
)
from mechscope.data._tokens import answer_token, ids

_FIELDS = ("clean", "corrupt", "answer", "wrong")


def from_jsonl(path: str | Path, tokenizer: Any, name: str | None = None) -> Task:
    """Load a task from JSON Lines: one object per line with ``clean``, ``corrupt``, ``answer`` and ``wrong``.

    ``answer`` and ``wrong`` are appended verbatim to the clean prompt, so include the leading space (``"
    Mary"``); either may be a list of such strings (a set, as in greater-than). Every answer must be one token
    and each pair must tokenise to the same length; otherwise a ValueError names the word, its tokens, the
    line and the file. Blank lines are skipped. ``name`` defaults to the file's stem.
    """
    path = Path(path)
    rows: list[tuple[str, str, list[int], list[int]]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                rows.append(_parse_line(line, tokenizer, f"line {number} of {path}"))
    if not rows:
        raise ValueError(f"{path}: no tasks (the file is empty)")
    as_sets = any(len(a) > 1 for _, _, a, _ in rows) or any(len(w) > 1 for _, _, _, w in rows)

    def pack(col: list[list[int]]) -> Any:
        return stack_ids(col if as_sets else [c[0] for c in col])

    return Task(
        name=name or path.stem,
        clean=[r[0] for r in rows],
        corrupt=[r[1] for r in rows],
        answers=pack([r[2] for r in rows]),
        wrongs=pack([r[3] for r in rows]),
        metadata={"source": str(path)},
    )


def _parse_line(line: str, tokenizer: Any, where: str) -> tuple[str, str, list[int], list[int]]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict) or set(_FIELDS) - set(obj):
        missing = sorted(set(_FIELDS) - set(obj)) if isinstance(obj, dict) else list(_FIELDS)
        raise ValueError(f"{where}: expected an object with keys {list(_FIELDS)}, missing {missing}")
    clean, corrupt = obj["clean"], obj["corrupt"]
    if not isinstance(clean, str) or not isinstance(corrupt, str):
        raise ValueError(f"{where}: 'clean' and 'corrupt' must be strings")
    n_clean, n_corrupt = len(ids(tokenizer, clean)), len(ids(tokenizer, corrupt))
    if n_clean != n_corrupt:
        raise ValueError(
            f"{where}: clean prompt is {n_clean} tokens but corrupt prompt is {n_corrupt}; "
            "they must tokenise to the same length so positions align"
        )
    answers, wrongs = ([obj[k]] if isinstance(obj[k], str) else obj[k] for k in ("answer", "wrong"))
    for key, words in (("answer", answers), ("wrong", wrongs)):
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{where}: {key!r} must be a string or a non-empty list of strings")
    return (
        clean,
        corrupt,
        [answer_token(tokenizer, clean, w, where=where) for w in answers],
        [answer_token(tokenizer, clean, w, where=where) for w in wrongs],
    )


__all__ = [
    "PAD_ID",
    "Task",
    "TaskTokens",
    "accuracy",
    "factual_recall",
    "final_logits",
    "from_jsonl",
    "gendered_pronoun",
    "greater_than",
    "induction",
    "ioi",
    "kl_to_clean",
    "logit_diff",
    "normalise",
    "prob",
    "prob_diff",
    "subject_verb_agreement",
    "tokenize_task",
]
