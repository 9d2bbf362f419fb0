"""Turn intervention values into hook handlers for one model (resolving sites and reference activations)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._hookset import Handler
from ._interventions import Ablate, Add, Intervention, Patch, Region, Replace, fit_value, region_index
from ._sites import Site

if TYPE_CHECKING:
    from ._model import Model

RegionFn = Callable[[Tensor, Tensor, "Region | None"], Tensor]


def bind(model: Model, iv: Intervention) -> list[tuple[Site, Handler]]:
    """Handlers implementing ``iv`` at each site its name or glob matches."""
    if not isinstance(iv, Patch | Ablate | Add | Replace):
        raise TypeError(f"not an intervention: {iv!r} (use ms.Patch, ms.Ablate, ms.Add or ms.Replace)")
    sites = model.resolve(iv.site)
    for site in sites:
        if not site.writable:
            raise ValueError(
                f"{iv!r}: site {site.name!r} is read-only. Attention probabilities are computed inside the "
                "attention function; intervene on the head's q or k (scores) or z (output) instead."
            )
    refs = _references(model, iv, sites) if isinstance(iv, Ablate) and iv.how != "zero" else {}
    return [(site, _handler(model, site, iv, _region_fn(site, iv, refs.get(site.name)))) for site in sites]


def _handler(model: Model, site: Site, iv: Intervention, region_fn: RegionFn) -> Handler:
    selection = iv.selection()
    regions: dict[tuple[torch.Size, torch.device], Region | None] = {}  # the same at every pass of one shape

    def handler(act: Tensor) -> Tensor | None:
        if selection["pos"] is not None and model._generated_offset:
            return None  # generating after the prompt: this pass holds no prompt position
        key = (act.shape, act.device)
        if key not in regions:
            regions[key] = region_index(act, site.axes, selection, site.name)
        idx = regions[key]
        region = act if idx is None else act[idx]
        new = region_fn(act, region, idx)
        if new.shape != region.shape:
            raise ValueError(f"{iv!r} at {site.name!r}: produced shape {list(new.shape)}, "
                             f"the selected region is {list(region.shape)}")  # fmt: skip
        if idx is None:
            return new.contiguous()
        out = act.clone()
        out[idx] = new
        return out

    return handler


def _region_fn(site: Site, iv: Intervention, ref: tuple[Tensor, Tensor | None] | None) -> RegionFn:
    what = f"{iv!r} at site {site.name!r}"
    if isinstance(iv, Patch):
        return lambda act, region, idx: fit_value(iv.value, act, idx, what, site.axes)
    if isinstance(iv, Add):
        return lambda act, region, idx: region + iv.scale * fit_value(iv.vector, region, None, what, site.axes)
    if isinstance(iv, Replace):
        return lambda act, region, idx: iv.fn(region)
    assert isinstance(iv, Ablate)
    if iv.how == "zero":
        return lambda act, region, idx: torch.zeros_like(region)
    assert ref is not None
    acts, mask = ref
    if iv.how == "mean":
        mean = _masked_mean(acts, mask, iv.over)
        return lambda act, region, idx: fit_value(_full(mean, act, what, iv.over), act, idx, what, site.axes)
    gen_seed = iv.seed

    def resample(act: Tensor, region: Tensor, idx: Region | None) -> Tensor:
        gen = torch.Generator().manual_seed(gen_seed)
        pick = torch.randint(acts.shape[0], (act.shape[0],), generator=gen)
        return fit_value(_full(acts[pick], act, what, "batch"), act, idx, what, site.axes)

    return resample


def _full(value: Tensor, act: Tensor, what: str, over: str) -> Tensor:
    """Broadcast a reference statistic to the running activation's shape, or explain why it cannot be."""
    if value.ndim > act.ndim or value.shape != act.shape[act.ndim - value.ndim :]:
        hint = " Use over='batch_pos' to average over positions too." if over == "batch" else ""
        raise ValueError(
            f"{what}: reference activations have shape {list(value.shape)}, the run has {list(act.shape)}"
            f" (reference prompts must have as many positions as the run).{hint}"
        )
    return value.expand(act.shape)


def _masked_mean(acts: Tensor, mask: Tensor | None, over: str) -> Tensor:
    dims = (0, 1) if over == "batch_pos" else (0,)
    if mask is None:
        return acts.mean(dim=dims)
    w = mask.to(acts.dtype).view(*mask.shape, *([1] * (acts.ndim - 2)))
    return (acts * w).sum(dim=dims) / w.sum(dim=dims).clamp(min=1)


def _references(model: Model, iv: Ablate, sites: list[Site]) -> dict[str, tuple[Tensor, Tensor | None]]:
    ref = iv.reference
    # For a language model a float tensor is activations at the site; for other models tensors are inputs.
    if isinstance(ref, Tensor) and ref.is_floating_point() and model.cfg is not None:
        return {s.name: (ref, None) for s in sites}
    out = model.run(ref, cache=[s.name for s in sites], logits=False)
    return {s.name: (out.cache[s.name], out.attention_mask) for s in sites}
