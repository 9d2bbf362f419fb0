"""``Model``: a thin handle on a PyTorch model that names its sites, runs, caches, intervenes and generates.

The wrapped module runs unchanged. ``Model`` owns no numerics: every method installs hooks for one call (or one
``with`` block) and removes them afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from .._cache import state_sha256
from .._numerics import pad
from ._bind import bind
from ._hookset import HookSet, StopForward, eager_attention
from ._interventions import Intervention
from ._shortcut import start_at_block, unembed_rows
from ._sites import ModelConfig, Site, SiteInfo, resolve

Inputs = str | Sequence[str] | Tensor


@dataclass(frozen=True)
class Batch:
    """Model inputs after tokenisation and padding."""

    tokens: Tensor
    """``[batch pos]`` token ids (or the raw input tensor of a non-language model)."""
    attention_mask: Tensor | None
    """``[batch pos]``, 1 for real tokens, 0 for padding."""

    @property
    def position_ids(self) -> Tensor | None:
        """Positions counted over real tokens only, so a left-padded prompt sees the positions it would alone.

        None when no prompt has padding before a real token: the model's default positions are then already right,
        and the call stays identical to a plain one.
        """
        mask = self.attention_mask
        if mask is None or not bool((mask[:, 1:] > mask[:, :-1]).any()):
            return None
        return (mask.cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class RunResult:
    """What ``Model.run`` returns."""

    logits: Float[Tensor, "batch pos d_vocab"] | None
    """Model output (None when ``logits=False``: the forward pass stopped after the deepest cached site; None
    when ``logits="final"``: see ``final``)."""
    cache: dict[str, Tensor] = field(default_factory=dict)
    """Requested sites' tensors, keyed by site name."""
    grads: dict[str, Tensor] = field(default_factory=dict)
    """Gradients of ``grad_of`` with respect to the ``grad_at`` sites."""
    tokens: Int[Tensor, "batch pos"] | None = None
    attention_mask: Int[Tensor, "batch pos"] | None = None
    final: Float[Tensor, "batch d_vocab"] | None = None
    """Logits at each prompt's last real token only (``logits="final"``: the unembedding ran on those rows)."""

    def last_pos(self) -> Int[Tensor, " batch"]:
        """Index of each prompt's last real token (works for left and right padding)."""
        assert self.tokens is not None, "last_pos needs token inputs"
        return last_real(self.tokens, self.attention_mask)

    def final_logits(self) -> Float[Tensor, "batch d_vocab"]:
        """Logits at each prompt's last real token: the next-token prediction."""
        if self.final is not None:
            return self.final
        assert self.logits is not None, "run with logits=True or logits='final' to get final logits"
        return self.logits[torch.arange(self.logits.shape[0], device=self.logits.device), self.last_pos()]


@dataclass(frozen=True)
class GenerateResult:
    """What ``Model.generate`` returns."""

    tokens: Int[Tensor, "batch pos"]
    """Prompt (left-padded) followed by the generated tokens."""
    new_tokens: Int[Tensor, "batch new"]
    texts: list[str]
    """Decoded generated text per prompt."""
    cache: dict[str, Tensor] = field(default_factory=dict)
    """Requested sites over prompt and generated positions (concatenated along ``pos``)."""


class Model:
    """A PyTorch model with named sites. Build one with ``ms.load``, ``ms.tiny`` or ``ms.wrap``."""

    def __init__(
        self,
        module: nn.Module,
        sites: dict[str, Site],
        *,
        name: str,
        tokenizer: Any = None,
        cfg: ModelConfig | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        self.module = module
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.name = name
        self._sites = sites
        self._weights_sha256 = weights_sha256
        self._generated_offset = 0
        """Positions before the tokens of the current forward pass; nonzero only inside ``generate`` after the
        prompt (set and reset by ``_generate``), where ``pos=`` selections, which address prompt positions, are
        left out."""

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {len(self._sites)} sites)"

    # --- sites -------------------------------------------------------------------------------------------------

    def sites(self, pattern: str | Sequence[str] = "*") -> list[SiteInfo]:
        """List sites matching names or globs, with shapes and meaning."""
        return [SiteInfo(s.name, s.describe(), s.meaning) for s in self.resolve(pattern)]

    def resolve(self, pattern: str | Sequence[str]) -> list[Site]:
        """Site objects for names or globs, in forward order; unknown names raise with the closest matches."""
        return resolve(self._sites, pattern)

    @cached_property
    def provenance(self) -> dict[str, Any]:
        """Model id, weights checksum and dtype: recorded with everything computed from this model."""
        param = next(self.module.parameters(), None)
        return {
            "model": self.name,
            "weights_sha256": self._weights_sha256 or state_sha256(self.module),
            "dtype": str(param.dtype).removeprefix("torch.") if param is not None else None,
        }

    # --- inputs ------------------------------------------------------------------------------------------------

    def encode(self, inputs: Inputs, padding_side: str = "right", attention_mask: Tensor | None = None) -> Batch:
        """Tokenise and pad prompts (or pass token ids / raw tensors through)."""
        if isinstance(inputs, Tensor):
            if self.cfg is None:
                return Batch(inputs.to(self.device), None)
            tokens = (inputs.unsqueeze(0) if inputs.ndim == 1 else inputs).to(self.device)
            self._check_length(tokens.shape[-1], "the input")
            mask = attention_mask.to(self.device) if attention_mask is not None else torch.ones_like(tokens)
            return Batch(tokens, mask)
        if self.tokenizer is None:
            raise TypeError(f"{self.name} has no tokenizer: pass a tensor of inputs, not {type(inputs).__name__}")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise ValueError("inputs must be a non-empty string or a non-empty list of non-empty strings")
        ids = [self.tokenizer(t)["input_ids"] for t in texts]
        for text, row in zip(texts, ids, strict=True):
            self._check_length(len(row), f"prompt {text[:40]!r}{'...' if len(text) > 40 else ''}")
        batch = _pad(ids, self.pad_id, padding_side)
        return Batch(batch.tokens.to(self.device), batch.attention_mask.to(self.device))  # type: ignore[union-attr]

    def _check_length(self, n_tokens: int, what: str) -> None:
        n_ctx = self.cfg.n_ctx if self.cfg is not None else None
        if n_ctx is not None and n_tokens > n_ctx:
            raise ValueError(
                f"{what} is {n_tokens} tokens long; {self.name} has {n_ctx} positions. "
                "Shorten it, or split it into windows of at most that many tokens"
            )

    @property
    def device(self) -> torch.device:
        """Where inputs go: the first parameters' device (with a ``device_map``, the first not offloaded)."""
        for param in self.module.parameters():
            if param.device.type != "meta":
                return param.device
        return torch.device("cpu")

    @property
    def pad_id(self) -> int:
        """Token id used for padding (the tokenizer's pad token, else end-of-sequence, else 0)."""
        tok = self.tokenizer
        for candidate in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
            if candidate is not None:
                return int(candidate)
        return 0

    def to_single_token(self, word: str) -> int:
        """Token id of ``word``, which must be exactly one token (mind the leading space: ``" Mary"``)."""
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise ValueError(
                f"{word!r} is {len(ids)} tokens {pieces} for {self.name}, but a single token is required. "
                "Try a leading space (' Paris') or a more common word."
            )
        return int(ids[0])

    # --- running -----------------------------------------------------------------------------------------------

    def run(
        self,
        inputs: Inputs,
        *,
        cache: str | Sequence[str] = (),
        grad_at: str | Sequence[str] = (),
        grad_of: Callable[[RunResult], Tensor] | None = None,
        logits: bool | Literal["final"] = True,
        padding_side: str = "right",
        attention_mask: Tensor | None = None,
        start_at: int | None = None,
        resid: Float[Tensor, "batch pos d_model"] | None = None,
    ) -> RunResult:
        """One forward pass, caching ``cache`` sites and (optionally) gradients of ``grad_of`` at ``grad_at``.

        Without ``grad_of`` no autograd graph is built. With ``logits=False`` the pass stops after the deepest
        cached site; with ``logits="final"`` the unembedding runs only on each prompt's last real token, whose
        logits come back as ``RunResult.final`` (``[batch d_vocab]``; a ``logits`` site hook sees
        ``[batch 1 d_vocab]``). Attention patterns require eager attention; the model is switched to it for this
        call only.

        ``start_at=L`` with ``resid`` (``[batch pos d_model]``, the residual stream entering block ``L``, i.e.
        ``resid_pre.L`` of a run of the same tokens) skips blocks ``0 .. L-1``: block ``L`` and everything after it
        see bitwise what the full run gives them (the model's own forward still builds the mask and positions).
        Sites below block ``L`` cannot be cached, and interventions on them do not run.
        """
        batch = self.encode(inputs, padding_side, attention_mask)
        cache_sites, grad_sites = (
            self.resolve(cache) if cache else [],
            self.resolve(grad_at) if grad_at else [],
        )
        if grad_sites and grad_of is None:
            raise ValueError("grad_at needs grad_of: a function of the RunResult returning a scalar")
        if logits not in (True, False, "final"):
            raise ValueError(f"logits must be True, False or 'final', got {logits!r}")
        store: dict[str, Tensor] = {}
        tracked: list[tuple[Site, Tensor]] = []
        wants_grad = grad_of is not None
        patterns = any("qpos" in s.axes for s in cache_sites)
        with (
            HookSet(self.module) as hooks,
            eager_attention(self.module, patterns),
            torch.set_grad_enabled(wants_grad),
            ExitStack() as shortcuts,
        ):
            if start_at is not None or resid is not None:
                blocks = self._start(start_at, resid, batch, cache_sites + grad_sites)
                shortcuts.enter_context(start_at_block(blocks, start_at, resid))  # type: ignore[arg-type]
            if logits == "final":
                shortcuts.enter_context(unembed_rows(self._head(), last_real(batch.tokens, batch.attention_mask)))
            for s in cache_sites:
                hooks.add(s, _cacher(store, s.name, detach=wants_grad))
            for s in grad_sites:
                hooks.track_grad(s, tracked)
            if not logits and not wants_grad and cache_sites:
                hooks.stop_after(cache_sites[-1])
            try:
                out = self._forward(batch)
            except StopForward:
                out = None
            full = _logits_of(out)
            final = full[:, 0] if logits == "final" and full is not None else None
            result = RunResult(None if final is not None else full, store, {}, batch.tokens, batch.attention_mask,
                               final)  # fmt: skip
            if grad_of is None:
                return result
            return self._with_grads(result, grad_of, tracked, keep_logits=bool(logits))

    def _start(self, start_at: int | None, resid: Tensor | None, batch: Batch, sites: list[Site]) -> nn.ModuleList:
        """The block list that ``start_at`` indexes, after checking the layer, the residual and the sites."""
        if self.cfg is None:
            raise TypeError(f"{self.name}: start_at needs a transformer language model with known blocks")
        if start_at is None or resid is None:
            raise ValueError("start_at and resid go together: the layer to start at and the residual entering it")
        if not 0 <= start_at < self.cfg.n_layers:
            raise ValueError(f"start_at={start_at} is not a block of {self.name} (0 .. {self.cfg.n_layers - 1})")
        want = (*batch.tokens.shape, self.cfg.d_model)
        if tuple(resid.shape) != want:
            raise ValueError(
                f"resid has shape {list(resid.shape)}; start_at={start_at} needs the residual stream entering "
                f"block {start_at} for these inputs, [batch pos d_model] = {list(want)}"
            )
        first = self.resolve(f"resid_pre.{start_at}")[0]
        below = [s.name for s in sites if s.order < first.order]
        if below:
            raise ValueError(f"sites {below} are computed before block {start_at}, which start_at={start_at} "
                             "skips: cache them from the run that produced resid")  # fmt: skip
        path, _ = first.module.rsplit(".", 1)
        blocks = self.module.get_submodule(path)
        assert isinstance(blocks, nn.ModuleList), f"{path} is not a list of blocks"
        return blocks

    def _head(self) -> nn.Module:
        if self.cfg is None:
            raise TypeError(f"{self.name}: logits='final' needs a transformer language model with an unembedding")
        return self.module.get_submodule(self.resolve("logits")[0].module)

    def _with_grads(self, result: RunResult, grad_of: Callable, tracked: list, keep_logits: bool) -> RunResult:
        metric = grad_of(result)
        if metric.numel() != 1:
            raise ValueError(f"grad_of must return a scalar, got shape {list(metric.shape)} (sum or mean it)")
        gs = torch.autograd.grad(metric, [t for _, t in tracked], allow_unused=True) if tracked else ()
        grads = {}
        for (site, raw), g in zip(tracked, gs, strict=True):
            g = torch.zeros_like(raw) if g is None else g
            grads[site.name] = g if site.residual_from else site.view(g)
        logits = result.logits.detach() if keep_logits and result.logits is not None else None
        final = result.final.detach() if keep_logits and result.final is not None else None
        return RunResult(logits, result.cache, grads, result.tokens, result.attention_mask, final)

    def _forward(self, batch: Batch) -> Any:
        if self.cfg is None:
            return self.module(batch.tokens)
        kwargs: dict[str, Any] = {
            "input_ids": batch.tokens,
            "attention_mask": batch.attention_mask,
            "use_cache": False,
        }
        if batch.position_ids is not None:
            kwargs["position_ids"] = batch.position_ids
        return self.module(**kwargs)

    @contextmanager
    def intervene(self, *interventions: Intervention, sequential: bool = False) -> Iterator[Model]:
        """Apply interventions to every forward pass inside the block; every hook is removed on exit.

        Interventions compose in order (later ones see earlier ones' results); nested blocks apply inside
        outer ones. Ablation references given as inputs are run once, when the block is entered, by the model as
        it is outside this block: before any of these interventions is applied (with ``sequential=True``, each
        reference is run with the interventions before it already applied).

        ``pos=`` selects positions of the padded batch; during ``generate`` it selects prompt positions (the
        first pass), and tokens generated after the prompt are left alone.
        """
        hooks = HookSet(self.module)
        try:
            if sequential:
                for iv in interventions:
                    for site, handler in bind(self, iv):
                        hooks.add(site, handler)
            else:
                bound = [pair for iv in interventions for pair in bind(self, iv)]  # every reference run first
                for site, handler in bound:
                    hooks.add(site, handler)
            yield self
        finally:
            hooks.close()

    def generate(
        self,
        inputs: str | Sequence[str],
        *,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        cache: str | Sequence[str] = (),
    ) -> GenerateResult:
        """Generate with the model's own ``generate`` (left-padded batch), under any active interventions."""
        from ._generate import generate

        return generate(self, inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                        top_k=top_k, top_p=top_p, seed=seed, cache=cache)  # fmt: skip


def _cacher(store: dict[str, Tensor], name: str, detach: bool) -> Callable[[Tensor], None]:
    def keep(act: Tensor) -> None:
        store[name] = act.detach() if detach else act

    return keep


def _logits_of(out: Any) -> Tensor | None:
    if out is None or isinstance(out, Tensor):
        return out
    if getattr(out, "logits", None) is not None:
        return out.logits
    return out[0] if isinstance(out, tuple | list) else None


def last_real(tokens: Tensor, attention_mask: Tensor | None) -> Int[Tensor, " batch"]:
    """Index of each row's last real token: the highest position whose mask is nonzero (either padding side)."""
    batch, pos = tokens.shape[:2]
    if attention_mask is None:
        return torch.full((batch,), pos - 1, device=tokens.device)
    positions = torch.arange(pos, device=attention_mask.device).expand(batch, pos)
    return torch.where(attention_mask != 0, positions, -1).amax(-1).clamp(min=0)


def _pad(ids: list[list[int]], pad_id: int, side: str) -> Batch:
    return Batch(pad(ids, pad_id, side), pad([[1] * len(x) for x in ids], 0, side))
