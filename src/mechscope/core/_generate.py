"""Generation through the model's own ``generate``, with caching across steps under active interventions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from ._hookset import HookSet, eager_attention
from ._sites import Site

if TYPE_CHECKING:
    from ._model import GenerateResult, Model


def generate(
    model: Model,
    inputs: str | Sequence[str],
    *,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int,
    cache: str | Sequence[str],
) -> GenerateResult:
    from ._model import GenerateResult

    if model.cfg is None or not hasattr(model.module, "generate"):
        raise TypeError(f"{model.name} is not a generative language model")
    batch = model.encode(inputs, padding_side="left")
    sites = model.resolve(cache) if cache else []
    steps: dict[str, list[Tensor]] = {s.name: [] for s in sites}
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p} if do_sample else {}
    sampling = {k: v for k, v in sampling.items() if v is not None}  # None: the model's generation defaults
    patterns = any("qpos" in s.axes for s in sites)

    def offset(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        # Positions already in the key/value cache (0 on the first pass); without a cache object, what the
        # attention mask covers beyond this pass's tokens.
        kv = next((v for v in kwargs.values() if hasattr(v, "get_seq_length")), None)
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if kv is not None:
            model._generated_offset = int(kv.get_seq_length())
        else:
            model._generated_offset = mask.shape[1] - ids.shape[1] if ids is not None and mask is not None else 0

    with HookSet(model.module) as hooks, eager_attention(model.module, patterns), torch.no_grad():
        for s in sites:
            hooks.add(s, lambda act, name=s.name: steps[name].append(act.detach()))  # type: ignore[misc]
        # Registered first, so interventions' pos= selections know whether a pass holds prompt positions.
        handle = model.module.register_forward_pre_hook(offset, with_kwargs=True, prepend=True)
        with _release(handle, model), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tokens = model.module.generate(  # type: ignore[operator]
                input_ids=batch.tokens,
                attention_mask=batch.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                pad_token_id=model.pad_id,
                **sampling,
            )
    new = tokens[:, batch.tokens.shape[1] :]
    texts = model.tokenizer.batch_decode(new, skip_special_tokens=True)
    return GenerateResult(tokens, new, texts, {s.name: _concat_steps(s, steps[s.name]) for s in sites})


@contextmanager
def _release(handle: RemovableHandle, model: Model) -> Iterator[None]:
    try:
        yield
    finally:
        handle.remove()
        model._generated_offset = 0


def _concat_steps(site: Site, parts: list[Tensor]) -> Tensor:
    """Join per-step tensors along positions; attention patterns are zero-padded to the final key length."""
    if "qpos" in site.axes:
        keys = parts[-1].shape[-1]
        parts = [torch.nn.functional.pad(p, (0, keys - p.shape[-1])) for p in parts]
        return torch.cat(parts, dim=site.axes.index("qpos"))
    return torch.cat(parts, dim=site.axes.index("pos"))
