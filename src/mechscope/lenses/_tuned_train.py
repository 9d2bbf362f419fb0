"""Training and held-out evaluation of the tuned lens (Belrose et al. 2023, §3; see ``_tuned.py`` for the lens).

Training follows the tuned-lens package's recipe: loss = sum over translators of the mean over tokens of
KL(final || lens) (the model's own next-token distribution at every position is the target), SGD with Nesterov
momentum 0.9 at ``lr (1 - momentum)``, weight decay, gradient norm clipped at 1, the learning rate decayed linearly
to 0, no warmup. The contexts are ``token_contexts`` of a corpus (the built-in one by default) shuffled by ``seed``;
the first ``held_out`` contexts are never trained on and are what ``evaluate_tuned_lens`` scores.

Steps are split into named parts (``_targets``, ``_step``, ``_checkpoint``). A checkpoint (translators, momentum
buffers and the step, one safetensors file written atomically, plus the config as JSON) is written every
``checkpoint_every`` steps; ``train_tuned_lens`` on the same directory continues from it and gives the same lens as
an uninterrupted run (the batch of step ``s`` is a function of ``s``; the schedule of the step; nothing else is
random).

Speed: one fused KL (``_KLDiv``: its gradient with respect to the logits is ``softmax(logits) - p``, computed once,
with no log-softmax or product tensors kept for autograd) and the translators of several layers unembedded in one
matrix product. ``benchmarks/tuned_lens.py`` times this against the tuned-lens package on the same activations.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save
from torch import Tensor
from tqdm.auto import tqdm

from .._cache import atomic_write_bytes
from .._errors import MismatchError, NonFiniteError
from ..core._model import Model
from ..core._unembed import unembed
from ..data.corpus import load_corpus, token_contexts
from ._tuned import TunedLens, _cfg, save_tuned_lens

CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class TrainLensConfig:
    """How to train a tuned lens (``mechscope train-lens``)."""

    steps: int = 250
    """Optimiser steps (the tuned-lens package's default is 250 of 2^18 tokens)."""
    batch: int = 8
    """Contexts per step."""
    ctx_len: int = 128
    """Tokens per context (BOS included)."""
    lr: float = 1.0
    """Learning-rate scale; SGD runs at ``lr * (1 - momentum)``, decayed linearly to 0."""
    momentum: float = 0.9
    """Nesterov momentum."""
    weight_decay: float = 1e-3
    """Decoupled from nothing: torch SGD's L2 term, on weights and biases, as in the tuned-lens package."""
    corpus: str = "python-docs"
    """Training text: the built-in corpus, a .txt/.jsonl file or a Hugging Face dataset name."""
    held_out: int = 32
    """Contexts kept out of training (the first ones of the seeded order); evaluation reads them."""
    seed: int = 0
    """Order of the contexts."""
    checkpoint_every: int = 25
    """Write a resumable checkpoint every this many steps (and at the end)."""
    layer_chunk_mb: int = 256
    """Memory for the logits of the translators unembedded together (MiB); more layers at once is faster."""
    precision: str = "float32"
    """``float32``, or ``bfloat16``: the translators and unembedding under autocast (the tuned-lens package's
    training recipe); the KL and the weights stay float32. Not measured faster on this project's CPU."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "held_out", "checkpoint_every", "layer_chunk_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.ctx_len < 2:
            raise ValueError(f"ctx_len must be at least 2, got {self.ctx_len}")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be float32 or bfloat16, got {self.precision!r}")
        if not 0 <= self.momentum < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("need 0 <= momentum < 1, lr > 0 and weight_decay >= 0")


class _KLDiv(torch.autograd.Function):
    """Per-row KL(p || softmax(logits)) with ``neg_entropy = sum p log p`` given; gradient ``softmax - p``."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, p: Tensor, neg_entropy: Tensor) -> Tensor:
        lse = logits.logsumexp(-1)
        ctx.save_for_backward(logits, p, lse)
        return neg_entropy + lse - torch.linalg.vecdot(p, logits)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        logits, p, lse = ctx.saved_tensors
        q = (logits - lse[:, None]).exp_()
        return q.sub_(p).mul_(grad[:, None]), None, None


def kl_per_token(logits: Float[Tensor, "n d_vocab"], target_logp: Float[Tensor, "n d_vocab"]) -> Float[Tensor, " n"]:
    """KL(target || softmax(logits)) per row, float32 (the reference the fused training loss is checked against)."""
    logq = logits.float().log_softmax(-1)
    return (target_logp.exp() * (target_logp - logq)).sum(-1)


def _contexts(model: Model, config: TrainLensConfig) -> Tensor:
    if model.tokenizer is None:
        raise TypeError(f"training a tuned lens needs a tokenizer; {model.name} has none")
    ctx = token_contexts(load_corpus(config.corpus), model.tokenizer, config.ctx_len, seed=config.seed)
    if len(ctx) <= config.held_out:
        raise ValueError(
            f"corpus {config.corpus!r} has {len(ctx)} contexts of {config.ctx_len} tokens; {config.held_out} are "
            "held out, none would be left to train on (lower --held-out or --ctx-len)"
        )
    return ctx


@torch.no_grad()
def _targets(model: Model, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``resid_pre.*`` ``[layer tokens d_model]`` (float32), final log-probs ``[tokens d_vocab]``, ``sum p log p``."""
    n = _cfg(model).n_layers
    run = model.run(tokens, cache=[f"resid_pre.{i}" for i in range(n)])
    assert run.logits is not None
    resid = torch.stack([run.cache[f"resid_pre.{i}"] for i in range(n)]).flatten(1, 2).float()
    logp = run.logits.float().log_softmax(-1).flatten(0, 1)
    return resid, logp, torch.linalg.vecdot(logp.exp(), logp)


def _chunk(n_layers: int, n_tokens: int, d_vocab: int, mb: int) -> int:
    return max(1, min(n_layers, (mb << 20) // max(1, 4 * n_tokens * d_vocab)))


def lens_loss(
    model: Model,
    lens: TunedLens,
    resid: Tensor,
    logp: Tensor,
    neg_entropy: Tensor,
    chunk: int,
    backward: bool,
    precision: str = "float32",
) -> Tensor:
    """Per-translator mean KL; with ``backward`` the gradient of their sum is accumulated into the lens."""
    p = logp.exp()
    losses = []
    autocast = precision == "bfloat16"
    for start in range(0, lens.n_layers, chunk):
        layers = slice(start, min(start + chunk, lens.n_layers))
        c = layers.stop - start
        with torch.set_grad_enabled(backward), torch.autocast(model.device.type, torch.bfloat16, enabled=autocast):
            h = lens.translate(resid[layers], layers).to(next(model.module.parameters()).dtype)
            logits = unembed(model, h).float().flatten(0, 1)  # [c*tokens d_vocab]
            kl = _KLDiv.apply(logits, p.repeat(c, 1), neg_entropy.repeat(c)).view(c, -1).mean(-1)  # type: ignore[no-untyped-call]
            if backward:
                kl.sum().backward()
        losses.append(kl.detach())
    return torch.cat(losses)


def optimizer(lens: TunedLens, config: TrainLensConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        lens.parameters(),
        lr=config.lr * (1 - config.momentum),
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )


def _step(
    model: Model, lens: TunedLens, opt: torch.optim.SGD, tokens: Tensor, step: int, config: TrainLensConfig
) -> Tensor:
    return lens_step(model, lens, opt, _targets(model, tokens), step, config)


def lens_step(
    model: Model,
    lens: TunedLens,
    opt: torch.optim.SGD,
    targets: tuple[Tensor, Tensor, Tensor],
    step: int,
    config: TrainLensConfig,
) -> Tensor:
    """One optimiser step on given ``_targets`` (``resid_pre.*``, final log-probs, ``sum p log p``): per-layer KL."""
    resid, logp, neg_entropy = targets
    chunk = _chunk(lens.n_layers, logp.shape[0], logp.shape[-1], config.layer_chunk_mb)
    opt.zero_grad(set_to_none=False)
    losses = lens_loss(model, lens, resid, logp, neg_entropy, chunk, backward=True, precision=config.precision)
    if not bool(losses.isfinite().all()):
        raise NonFiniteError(f"tuned-lens loss is not finite at step {step}", hint="lower --lr")
    torch.nn.utils.clip_grad_norm_(lens.parameters(), 1.0)
    for group in opt.param_groups:  # linear decay to 0, no warmup (the tuned-lens package's SGD schedule)
        group["lr"] = config.lr * (1 - config.momentum) * (1 - step / config.steps)
    opt.step()
    return losses


def _checkpoint(path: Path, lens: TunedLens, opt: torch.optim.SGD, step: int, config: TrainLensConfig) -> None:
    tensors = {"weight": lens.weight.detach(), "bias": lens.bias.detach(), "step": torch.tensor(step)}
    for name, param in (("weight", lens.weight), ("bias", lens.bias)):
        buf = opt.state.get(param, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"momentum.{name}"] = buf
    state = {"config": asdict(config), "step": step, "provenance": lens.provenance}
    atomic_write_bytes(path / CHECKPOINT / "state.safetensors", save({k: v.contiguous() for k, v in tensors.items()}))
    atomic_write_bytes(path / CHECKPOINT / "state.json", json.dumps(state, indent=2).encode())


def _resume(path: Path, lens: TunedLens, opt: torch.optim.SGD, config: TrainLensConfig) -> int:
    meta_file = path / CHECKPOINT / "state.json"
    if not meta_file.is_file():
        return 0
    meta = json.loads(meta_file.read_text())
    if meta["config"] != asdict(config) or meta["provenance"] != lens.provenance:
        raise MismatchError(
            f"{path / CHECKPOINT} was written by another training run (config or model differ)",
            hint="train into a new directory, or repeat the options of the run that wrote it",
        )
    state = load_file(path / CHECKPOINT / "state.safetensors")
    with torch.no_grad():
        lens.weight.copy_(state["weight"])
        lens.bias.copy_(state["bias"])
    for name, param in (("weight", lens.weight), ("bias", lens.bias)):
        if f"momentum.{name}" in state:
            opt.state[param]["momentum_buffer"] = state[f"momentum.{name}"].clone()
    return int(state["step"])


def train_tuned_lens(
    model: Model,
    path: str | Path,
    config: TrainLensConfig = TrainLensConfig(),
    *,
    stop_after: int | None = None,
    progress: bool = True,
) -> TunedLens:
    """Train a tuned lens for ``model`` into the directory ``path``, continuing from its checkpoint if any.

    ``stop_after`` ends the session after that many steps in total (checkpointed), to be continued by a later
    call. The finished lens is saved with ``save_tuned_lens`` (provenance: model, corpus, steps, tokens, seed).
    """
    path = Path(path)
    contexts = _contexts(model, config)
    train = contexts[config.held_out :]
    corpus = load_corpus(config.corpus)
    lens = TunedLens.for_model(model)
    lens.provenance.update(
        corpus=corpus.name, corpus_sha256=corpus.sha256, steps=config.steps, seed=config.seed,
        tokens=config.steps * config.batch * config.ctx_len, ctx_len=config.ctx_len, held_out=config.held_out,
        loss="kl_from_final",
    )  # fmt: skip
    opt = optimizer(lens, config)
    step = _resume(path, lens, opt, config)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = tqdm(total=config.steps, initial=step, desc="tuned lens", unit="step", disable=not progress)
    try:
        while step < end:
            rows = (torch.arange(config.batch) + step * config.batch) % len(train)
            losses = _step(model, lens, opt, train[rows], step, config)
            step += 1
            bar.set_postfix(kl=f"{float(losses.mean()):.3f}")
            bar.update(1)
            if step % config.checkpoint_every == 0 or step == end:
                _checkpoint(path, lens, opt, step, config)
    finally:
        bar.close()
    if step >= config.steps:
        save_tuned_lens(lens, path)
    return lens


@dataclass(frozen=True)
class LensEvaluation:
    """Held-out KL from the final distribution and perplexity, per translator input, tuned lens against logit lens."""

    sites: tuple[str, ...]
    """``resid_pre.0 .. resid_pre.{n-1}`` (``resid_pre.{l+1}`` is ``resid_post.l``)."""
    kl_tuned: tuple[float, ...]
    """Mean over held-out tokens of KL(final || tuned lens), nats."""
    kl_logit: tuple[float, ...]
    """The same for the logit lens."""
    ppl_tuned: tuple[float, ...]
    """Perplexity of the lens's next-token distribution on the held-out text."""
    ppl_logit: tuple[float, ...]
    ppl_model: float
    """The model's own perplexity on the same tokens."""
    tokens: int
    """Held-out tokens scored (the last position of each context has no next token for perplexity)."""
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON."""
        return {"method": "tuned_lens_evaluation", **asdict(self)}


@torch.no_grad()
def evaluate_tuned_lens(
    model: Model, lens: TunedLens, config: TrainLensConfig | None = None, *, contexts: int | None = None
) -> LensEvaluation:
    """Score ``lens`` and the logit lens on held-out contexts: those the training run (``config``) left out.

    ``config`` defaults to the one recorded in the lens's provenance (corpus, ctx_len, seed, held_out), so the
    contexts are the ones it never trained on. ``contexts`` caps how many of them are read.
    """
    lens.check(model)
    if config is None:
        prov = lens.provenance
        keys = ("corpus", "ctx_len", "seed", "held_out")
        config = TrainLensConfig(**{k: prov[k] for k in keys if k in prov})
    held = _contexts(model, config)[: min(config.held_out, contexts or config.held_out)]
    dtype = next(model.module.parameters()).dtype
    sums = torch.zeros(4, lens.n_layers, dtype=torch.float64)
    model_nll, n_kl, n_next = 0.0, 0, 0
    for tokens in held.split(config.batch):
        resid, logp, _ = _targets(model, tokens)
        nxt = tokens[:, 1:].reshape(-1)
        keep = torch.ones(tokens.shape, dtype=torch.bool)
        keep[:, -1] = False
        keep = keep.flatten()
        model_nll += float(-logp[keep].gather(-1, nxt[:, None]).sum())
        for i in range(lens.n_layers):
            tuned = lens.translate(resid[i : i + 1], slice(i, i + 1))[0]
            for row, logits in ((0, unembed(model, tuned.to(dtype))), (1, unembed(model, resid[i].to(dtype)))):
                sums[row, i] += float(kl_per_token(logits, logp).sum())
                logq = logits.float().log_softmax(-1)[keep]
                sums[2 + row, i] += float(-logq.gather(-1, nxt[:, None]).sum())
        n_kl += logp.shape[0]
        n_next += int(keep.sum())
    kl, nll = sums[:2] / n_kl, sums[2:] / n_next
    ppl = nll.exp()
    return LensEvaluation(
        sites=tuple(f"resid_pre.{i}" for i in range(lens.n_layers)),
        kl_tuned=tuple(kl[0].tolist()),
        kl_logit=tuple(kl[1].tolist()),
        ppl_tuned=tuple(ppl[0].tolist()),
        ppl_logit=tuple(ppl[1].tolist()),
        ppl_model=float(torch.tensor(model_nll / n_next).exp()),
        tokens=n_kl,
        provenance={
            **model.provenance,
            "lens": lens.provenance,
            "eval_corpus": config.corpus,
            "eval_contexts": len(held),
            "ctx_len": config.ctx_len,
            "seed": config.seed,
        },
    )
