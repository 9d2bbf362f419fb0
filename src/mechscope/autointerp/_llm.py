"""Chat models that explainers and scorers talk to: the built-in SmolLM2 offline, or any OpenAI-compatible server.

A ``Chat`` turns a list of ``{"role", "content"}`` messages into the assistant's reply text. Two are built in:

- ``LocalChat``: SmolLM2-135M-Instruct (mechscope's built-in model) through its own chat template, greedy,
  one request at a time, offline;
- ``HTTPChat``: ``POST {url}/chat/completions`` in the OpenAI shape, so a vLLM, llama.cpp or Ollama server the
  user runs does the work. Timeouts, refusals (``message.refusal`` or ``finish_reason: content_filter``), HTTP
  errors, non-JSON bodies and empty replies raise ``ChatError`` after
  ``retries`` tries with exponential backoff; it is thread-safe (stdlib ``urllib``), so a job may send several
  requests at once (``concurrency``).

Both also give the probabilities of a few allowed answers (``AnswerProbs``), which is how the judges
(``detection``, ``fuzzing``) read a verdict without parsing text, as delphi does with logprobs: ``LocalChat``
from its own logits after a forced start of the reply; ``HTTPChat`` from the ``top_logprobs`` the server returns
(``None`` when it returns none: the judge then parses text).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

Message = dict[str, str]
T = TypeVar("T")


class ChatError(RuntimeError):
    """A chat model gave no usable reply (after every retry); the message says what came back."""


class Chat(Protocol):
    """Anything that answers chat messages with text."""

    name: str
    """What the provenance records (``smollm2-135m``, ``http://host:8000/v1 model-name``)."""
    concurrency: int
    """How many requests may be in flight at once."""

    def complete(self, messages: list[Message], *, max_tokens: int, seed: int) -> str:
        """The reply to ``messages``: at most ``max_tokens`` tokens, sampled (if at all) with ``seed``."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in a prompt (an estimate where the tokenizer is remote)."""
        ...


@runtime_checkable
class AnswerProbs(Protocol):
    """A chat model that can say how likely each of a few allowed answers is (not every ``Chat`` can)."""

    def answer_probs(
        self, messages: list[Message], answers: Sequence[str], *, prefix: str, seed: int
    ) -> list[float] | None:
        """Probability of each of ``answers`` opening the reply (not normalised over them); None if unknown.

        ``prefix``: what the reply is made to start with, where the model allows it.
        """
        ...


class LocalChat:
    """The built-in SmolLM2-135M-Instruct (or any mechscope model with a chat template), greedy, on this machine."""

    concurrency = 1

    def __init__(self, model: Any = None) -> None:
        self._model = model
        self._lock = threading.Lock()
        self.name = model.name if model is not None else "smollm2-135m"

    @property
    def model(self) -> Any:
        """The mechscope ``Model``, opened on first use."""
        if self._model is None:
            from mechscope.core import load

            self._model = load(self.name)
        return self._model

    def count_tokens(self, text: str) -> int:
        """Exact token count with the model's tokenizer."""
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def complete(self, messages: list[Message], *, max_tokens: int, seed: int) -> str:
        """Greedy reply (``seed`` is unused: greedy decoding is deterministic)."""
        import torch

        tok, module = self.model.tokenizer, self.model.module
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.model.device)
        with self._lock, torch.no_grad():
            out = module.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.model.pad_id,
            )
        reply = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        if not reply:
            raise ChatError(f"{self.name} replied with empty text")
        return str(reply)

    def answer_probs(self, messages: list[Message], answers: Sequence[str], *, prefix: str, seed: int) -> list[float]:
        """P(each answer's tokens | the prompt, the reply forced to start with ``prefix``), from one forward pass.

        Each answer is tokenised after the prompt and ``prefix``; the tokens all answers share (a leading space
        that the tokenizer splits off, say) are conditioned on, and the rest's next-token probabilities
        multiplied. ``seed`` is unused (no sampling).
        """
        import torch

        tok, module = self.model.tokenizer, self.model.module
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefix
        seqs = [tok(text + a, add_special_tokens=False)["input_ids"] for a in answers]
        common = min(len(s) for s in seqs) - 1
        while common > 0 and any(s[:common] != seqs[0][:common] for s in seqs):
            common -= 1
        if all(len(s) == common + 1 for s in seqs):  # one token each after the shared ones: one sequence will do
            ids = torch.tensor([seqs[0][:common]], device=self.model.device)
            with self._lock, torch.no_grad():
                last = module(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
            probs = torch.softmax(last.float(), dim=-1).cpu()
            return [float(probs[s[common]]) for s in seqs]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.model.pad_id, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for k, s in enumerate(seqs):
            ids[k, : len(s)], mask[k, : len(s)] = torch.tensor(s), 1
        with self._lock, torch.no_grad():
            logits = module(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()  # [answer pos vocab]
        return [math.exp(sum(float(logp[k, j - 1, s[j]]) for j in range(common, len(s)))) for k, s in enumerate(seqs)]


@dataclass(frozen=True)
class HTTPChat:
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, Ollama, …)."""

    url: str
    """Base URL, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended)."""
    model: str = "default"
    """The ``model`` field of each request."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer …`` when given."""
    timeout: float = 60.0
    """Seconds per request before it counts as a failed try."""
    retries: int = 3
    """Tries per request (timeouts, connection errors, 5xx/429, non-JSON and empty replies are retried)."""
    backoff: float = 1.0
    """Seconds before the second try; doubled before each further one (with up to 25 % jitter)."""
    concurrency: int = 4
    """Requests a job keeps in flight at once."""
    temperature: float = 0.0
    """Sampling temperature sent with each request."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"the endpoint URL must start with http:// or https://, got {self.url!r}")
        if self.retries < 1 or self.concurrency < 1 or self.timeout <= 0:
            raise ValueError("retries and concurrency must be >= 1 and timeout > 0")

    @property
    def name(self) -> str:
        """The endpoint and model, as provenance records them."""
        return f"{self.url.rstrip('/')} {self.model}"

    def count_tokens(self, text: str) -> int:
        """An estimate: 4 characters per token (the server's tokenizer is not at hand)."""
        return (len(text) + 3) // 4

    def complete(self, messages: list[Message], *, max_tokens: int, seed: int) -> str:
        """The first choice's message content; ``ChatError`` naming the last failure after ``retries`` tries."""
        return self._post({"messages": messages, "max_tokens": max_tokens}, seed, _content)

    def answer_probs(
        self, messages: list[Message], answers: Sequence[str], *, prefix: str, seed: int
    ) -> list[float] | None:
        """Each answer's probability from the reply's ``top_logprobs`` (``logprobs: true``, 20 alternatives).

        The chat-completions API cannot force the reply's start, so ``prefix`` is not sent; the first reply token
        whose alternatives include an answer (compared without surrounding spaces) is read, and an answer's
        probability is the sum over its alternatives. None when the server returns no logprobs or no answer is
        among them (the judge then parses the reply's text).
        """
        body = {"messages": messages, "max_tokens": 4, "logprobs": True, "top_logprobs": 20}
        return self._post(body, seed, lambda raw: _answer_logprobs(raw, answers))

    def _post(self, fields: dict[str, Any], seed: int, read: Callable[[bytes], T]) -> T:
        """POST ``fields`` (plus model, temperature, seed), retried with backoff; ``read`` turns the body into T."""
        body = json.dumps({"model": self.model, "temperature": self.temperature, "seed": seed, **fields}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        endpoint = self.url.rstrip("/") + "/chat/completions"
        jitter = random.Random(seed)
        last = ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * (1 + 0.25 * jitter.random()))
            try:
                request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return read(response.read())
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}: {e.read()[:200]!r}"
                if e.code < 500 and e.code != 429:  # a client error will not go away by itself
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                last = f"no response ({e})"
            except ChatError as e:
                last = str(e)
        raise ChatError(f"{endpoint}: {last} (after {attempt + 1} of {self.retries} tries)")


def _content(raw: bytes) -> str:
    """The reply text of a chat-completions response body."""
    try:
        choice = json.loads(raw)["choices"][0]
        message = choice["message"]
        text = message.get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ChatError(f"not a chat-completions reply ({type(e).__name__}): {raw[:200]!r}") from None
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        raise ChatError(f"the model refused: {message.get('refusal') or 'finish_reason content_filter'}")
    if not isinstance(text, str) or not text.strip():
        raise ChatError("the reply's content is empty")
    return text.strip()


def _answer_logprobs(raw: bytes, answers: Sequence[str]) -> list[float] | None:
    """The answers' probabilities at the first reply token whose ``top_logprobs`` hold one; None if none does."""
    _content(raw)  # a non-JSON body, a refusal or an empty reply fails (and is retried) as for text
    positions = (json.loads(raw)["choices"][0].get("logprobs") or {}).get("content") or []
    wanted = [a.strip() for a in answers]
    for position in positions:
        alternatives = position.get("top_logprobs") or []
        probs = [sum(math.exp(t["logprob"]) for t in alternatives if str(t.get("token", "")).strip() == a)
                 for a in wanted]  # fmt: skip
        if any(probs):
            return probs
    return None
