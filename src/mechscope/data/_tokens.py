"""Tokenisation checks shared by the task builders: is a word one token, and do two prompts align.

Every check tokenises *in context* (the text that precedes the word, then the text with the word appended)
rather than the word alone, so that tokenisers which glue a prefix space onto the first word (SentencePiece)
or merge across the boundary are judged by what the model will actually see.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# Neutral left context for checking a word in isolation: the word is then judged as it appears mid-sentence.
_CONTEXT = "Then"


def ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def continuation_ids(tokenizer: Any, prompt: str, continuation: str) -> list[int] | None:
    """Ids that ``continuation`` adds after ``prompt``, or None if appending it re-tokenises the prompt."""
    base = ids(tokenizer, prompt)
    full = ids(tokenizer, prompt + continuation)
    if full[: len(base)] != base:
        return None
    return full[len(base) :]


def word_token(tokenizer: Any, word: str) -> int | None:
    """Return the token id of ``" " + word`` mid-sentence, or None if it takes several tokens."""
    cont = continuation_ids(tokenizer, _CONTEXT, " " + word)
    return cont[0] if cont is not None and len(cont) == 1 else None


def single_token_words(tokenizer: Any, words: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split ``words`` into (kept, dropped) by whether each is one token with its leading space."""
    kept: list[str] = []
    dropped: list[str] = []
    for w in words:
        (kept if word_token(tokenizer, w) is not None else dropped).append(w)
    return kept, dropped


def answer_token(tokenizer: Any, prompt: str, answer: str, *, where: str = "") -> int:
    """Token id of ``answer`` appended verbatim to ``prompt``; ValueError naming the word unless one token.

    ``where`` (e.g. ``"line 3 of tasks.jsonl"``) is added to the message.
    """
    at = f" ({where})" if where else ""
    if not answer:
        raise ValueError(f"empty answer{at}")
    if prompt and prompt[-1].isalnum() and answer[0].isalpha():
        # Almost never intended: "... gave it to" + "Mary" reads "toMary". Answers are appended verbatim.
        raise ValueError(
            f"answer {answer!r}{at} would be glued to the prompt's last word {prompt.split()[-1]!r}; "
            f"answers are appended verbatim, so write {' ' + answer!r}"
        )
    cont = continuation_ids(tokenizer, prompt, answer)
    if cont is None or len(cont) != 1:
        full = ids(tokenizer, prompt + answer)
        shown = tokenizer.convert_ids_to_tokens(cont if cont is not None else full[-4:])
        why = "re-tokenises the end of the prompt" if cont is None else f"is {len(cont)} tokens {shown}"
        raise ValueError(f"answer {answer!r}{at} must be a single token after the prompt, but it {why}")
    return cont[0]


def check_aligned(tokenizer: Any, clean: Sequence[str], corrupt: Sequence[str], *, name: str) -> None:
    """Raise ValueError unless every clean/corrupt pair tokenises to the same length (positions align)."""
    if len(clean) != len(corrupt):
        raise ValueError(f"{name}: {len(clean)} clean prompts but {len(corrupt)} corrupt prompts")
    for i, (c, k) in enumerate(zip(clean, corrupt, strict=True)):
        if not same_length(tokenizer, c, k):
            raise ValueError(
                f"{name}: pair {i} does not align: clean {c!r} is {len(ids(tokenizer, c))} tokens, "
                f"corrupt {k!r} is {len(ids(tokenizer, k))} tokens; patching needs equal lengths"
            )


def same_length(tokenizer: Any, a: str, b: str) -> bool:
    """Whether two prompts tokenise to the same number of tokens."""
    return len(ids(tokenizer, a)) == len(ids(tokenizer, b))
