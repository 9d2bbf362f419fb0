"""Text corpora for harvesting activations, and their cut into fixed-length token contexts.

A ``Corpus`` is a name, a tuple of documents and the sha256 of those documents; the hash is what provenance
records, so two corpora with the same text are the same corpus wherever the file lives.

The built-in, offline default ``python-docs`` is human-written English that ships with every CPython: the
79 pydoc help topics of ``pydoc_data.topics`` (the language reference, ~465 KB) plus the docstrings of a
fixed, sorted list of standard-library modules (one document per module). It needs no download and is the
same for a given Python version. Its bias is strong: technical, second-person reference prose about
programming, with code samples; no narrative, dialogue or news. Harvest a broader corpus (a ``.txt`` or
``.jsonl`` file, or a Hugging Face dataset) before reading much into features found on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from safetensors.torch import load_file, save
from torch import Tensor

from mechscope._cache import atomic_write_bytes, cache_dir

BUILTIN = "python-docs"

# Flat standard-library modules whose docstrings are prose; sorted, import-safe, present on every CPython.
DOCSTRING_MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "codecs", "collections", "colorsys", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "filecmp",
    "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "imaplib", "inspect", "io", "ipaddress", "itertools", "locale", "logging", "lzma", "mailbox",
    "math", "mimetypes", "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil",
    "platform", "plistlib", "poplib", "pprint", "queue", "quopri", "random", "sched", "secrets", "selectors",
    "shelve", "shlex", "shutil", "smtplib", "socket", "socketserver", "statistics", "string", "stringprep",
    "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace",
    "traceback", "types", "typing", "uuid", "warnings", "wave", "weakref", "zipfile", "zipimport",
)  # fmt: skip


@dataclass(frozen=True)
class Corpus:
    """A named, hashed collection of documents. Build one with ``load_corpus`` or ``Corpus.of``."""

    name: str
    """Where the text came from: ``python-docs``, a file name, or a Hugging Face dataset name."""
    texts: tuple[str, ...]
    """The documents, in order; contexts never assume a document fits in one."""
    sha256: str
    """Hex sha256 of the documents (each one's UTF-8 length as 8 bytes, then its bytes); see ``text_sha256``."""

    def __post_init__(self) -> None:
        if not self.texts:
            raise ValueError(f"corpus {self.name!r} has no documents")

    @classmethod
    def of(cls, name: str, texts: Iterable[str]) -> Corpus:
        """A corpus of the non-empty documents among ``texts``, hashed."""
        kept = tuple(t for t in texts if t)
        if not kept:
            raise ValueError(f"corpus {name!r} is empty: no non-empty document")
        return cls(name, kept, text_sha256(kept))

    def __repr__(self) -> str:
        chars = sum(len(t) for t in self.texts)
        return f"Corpus({self.name!r}, {len(self.texts)} documents, {chars:,} characters, sha256={self.sha256[:12]})"


def text_sha256(texts: Sequence[str]) -> str:
    """Hash of a document sequence: unambiguous about where one document ends and the next begins."""
    h = hashlib.sha256()
    for t in texts:
        data = t.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def load_corpus(
    name: str | Path = BUILTIN, *, field: str = "text", split: str = "train", max_documents: int | None = None
) -> Corpus:
    """Load a corpus by name: built in, a file, or a Hugging Face dataset.

    ``python-docs`` is built in and offline; a ``.txt`` file is one document; a ``.jsonl`` file holds one
    document per line, read from ``field``; any other name is a Hugging Face dataset (``split``, streamed;
    needs the ``datasets`` package and the network). ``max_documents`` keeps the first documents only.
    """
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents must be positive, got {max_documents}")
    text, path = str(name), Path(name)
    if text == BUILTIN:
        return Corpus.of(BUILTIN, python_docs()[:max_documents])
    if path.suffix in (".txt", ".jsonl") or path.exists():
        return Corpus.of(path.name, _read_file(path, field)[:max_documents])
    return Corpus.of(text, _hf_texts(text, field, split, max_documents))


def python_docs() -> list[str]:
    """The ``python-docs`` documents: pydoc topics (sorted by name), then module docstrings (sorted)."""
    from pydoc_data.topics import topics

    docs = [topics[key] for key in sorted(topics)]
    return docs + [_module_text(m) for m in DOCSTRING_MODULES if importlib.util.find_spec(m) is not None]


def _module_text(name: str) -> str:
    """A module's docstring followed by those of its public classes, functions and methods, in name order."""
    module = importlib.import_module(name)
    parts = [inspect.cleandoc(module.__doc__ or "")]
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue  # skip private names and names re-exported from other modules
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        parts.append(_doc(obj))
        if inspect.isclass(obj):
            members = sorted(vars(obj).items())
            parts += [_doc(m) for a, m in members if not a.startswith("_") and inspect.isroutine(m)]
    return "\n\n".join(p for p in parts if p)


def _doc(obj: Any) -> str:
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else ""
    return inspect.cleandoc(doc) if doc else ""


def _read_file(path: Path, field: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist (or is not a file)")
    if path.suffix != ".jsonl":
        return [path.read_text(encoding="utf-8")]
    texts = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i} is not valid JSON: {e}") from None
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise ValueError(f"{path}:{i} has no string field {field!r}")
            texts.append(row[field])
    return texts


def _hf_texts(name: str, field: str, split: str, max_documents: int | None) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"{name!r} is not the built-in corpus {BUILTIN!r} nor a .txt/.jsonl file, and the `datasets` "
            "package that would load it from the Hugging Face Hub is not installed"
        ) from None
    rows = datasets.load_dataset(name, split=split, streaming=True)
    texts = []
    for row in rows:
        if field not in row:
            raise ValueError(f"dataset {name!r} has no field {field!r}; its fields are {sorted(row)}")
        texts.append(row[field])
        if max_documents is not None and len(texts) >= max_documents:
            break
    return texts


def token_contexts(
    corpus: Corpus, tokenizer: Any, ctx_len: int, seed: int = 0, bos: bool = True
) -> Int[Tensor, "n_ctx ctx_len"]:
    """Cut the corpus into fixed-length contexts of token ids, in an order shuffled by ``seed``.

    Documents are tokenised without special tokens and joined with the end-of-sequence token into one stream;
    the stream is cut into pieces of ``ctx_len - 1`` tokens, each prefixed with the BOS token (``bos=True``;
    tokenizers without a BOS token, such as GPT-2's, get their EOS token there instead, which is what those
    models saw at document starts in training) or into pieces of ``ctx_len`` tokens (``bos=False``). The
    final partial piece is dropped.
    """
    if ctx_len < 2:
        raise ValueError(f"ctx_len must be at least 2, got {ctx_len}")
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no end-of-sequence token to separate documents with")
    stream = token_stream(corpus, tokenizer)
    body = ctx_len - 1 if bos else ctx_len
    n_ctx = len(stream) // body
    if n_ctx == 0:
        raise ValueError(f"corpus {corpus.name!r} has {len(stream)} tokens, fewer than one context of {ctx_len}")
    contexts = stream[: n_ctx * body].view(n_ctx, body)  # [n_ctx body]
    if bos:
        start = bos_id(tokenizer)
        contexts = torch.cat([torch.full((n_ctx, 1), start, dtype=torch.long), contexts], dim=1)
    order = torch.randperm(n_ctx, generator=torch.Generator().manual_seed(seed))
    return contexts[order].contiguous()


def token_stream(corpus: Corpus, tokenizer: Any) -> Int[Tensor, " n_tokens"]:
    """The documents tokenised without special tokens, each followed by the end-of-sequence token.

    Tokenising a whole corpus costs more than harvesting a few thousand tokens of it, so the stream of a fast
    (``tokenizers``-backed) tokenizer is cached in mechscope's cache under the corpus hash and the sha256 of
    the tokenizer's full serialisation; any other tokenizer, or a cache file that cannot be read, tokenises
    afresh.
    """
    eos = tokenizer.eos_token_id
    path = _stream_cache(corpus, tokenizer)
    if path is not None and path.is_file():
        try:
            return load_file(path)["ids"].long()
        except Exception:  # an unreadable cache entry is rebuilt below
            pass
    encoded = tokenizer(list(corpus.texts), add_special_tokens=False, verbose=False)["input_ids"]
    stream = torch.tensor([t for ids in encoded for t in (*ids, eos)], dtype=torch.long)
    if path is not None and stream.numel() and int(stream.max()) < 2**31:
        with contextlib.suppress(OSError):  # a read-only cache costs speed, not correctness
            atomic_write_bytes(path, save({"ids": stream.int()}))
    return stream


def _stream_cache(corpus: Corpus, tokenizer: Any) -> Path | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    h = hashlib.sha256(f"{corpus.sha256}/{tokenizer.eos_token_id}/".encode())
    h.update(backend.to_str().encode())
    return cache_dir("token_streams") / f"{h.hexdigest()}.safetensors"


def bos_id(tokenizer: Any) -> int:
    """The token that starts every context: BOS, or EOS for tokenizers that have no BOS."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return int(tokenizer.eos_token_id if bos is None else bos)


__all__ = [
    "BUILTIN",
    "Corpus",
    "bos_id",
    "load_corpus",
    "python_docs",
    "text_sha256",
    "token_contexts",
    "token_stream",
]
