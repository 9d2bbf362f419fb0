"""``Space``: the tensor an attribution explains (the model input or a site) and the scalar target as its function.

Every method here sees a model as ``f(z) -> [rows]``: ``z`` stacks ``k`` copies of the batch's attributed tensor
(``[k*batch ...]``, block after block, as Captum and the batched IG both build them), the model runs with the rest of
its inputs repeated to match, and the target gives one value per row, with its autograd graph. Running through
``Model.run`` keeps padding, positions and active interventions exactly as in any other mechscope call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core import HookSet, Site
from ..core._model import Model, RunResult
from ._targets import as_target

ROW_ELEMENTS = 1 << 17
"""Default work per forward pass: about this many attributed elements (128 images of 32 x 32). Small CPU passes
keep activations in cache: on the 32 x 32 CNN, IG's 1600 rows in 128-row passes run 2.6x faster than in one pass
(benchmarks/attribution.py)."""
MIN_ROWS = 32
"""Rows per pass never fall below this: where one row is large (a 64-token prompt through a transformer is 37k
attributed elements), the weights' reuse across rows matters more than the cache (SmolLM2: 3-row passes 5% slower
than 25-row ones)."""


@dataclass(frozen=True, eq=False)
class Space:
    """A model, its inputs, the attributed tensor ``x`` and the target; callable on stacked copies of ``x``."""

    model: Model
    inputs: Tensor
    """Model inputs (images, or token ids for a language model)."""
    attention_mask: Tensor | None
    site: Site | None
    """Attributed site; None for the model's input."""
    x: Tensor
    """``[batch ...]``: the attributed tensor's values for these inputs."""
    target: Callable[[RunResult], Tensor]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def at(self) -> str:
        return "input" if self.site is None else self.site.name

    def leaf(self) -> Tensor:
        """A copy of ``x`` that requires gradients (what Captum's gradient methods expect)."""
        return self.x.clone().requires_grad_(True)

    def __call__(self, z: Tensor) -> Float[Tensor, " rows"]:
        """Target values for ``z = [k*batch ...]`` (k stacked copies of the attributed tensor)."""
        if z.shape[0] % self.n:
            raise ValueError(f"{z.shape[0]} rows are not whole copies of the batch of {self.n}")
        reps = z.shape[0] // self.n
        captured: dict[str, Tensor] = {}
        values: list[Tensor] = []

        def grad_of(result: RunResult) -> Tensor:
            values.append(self.target(dataclasses.replace(result, cache=captured)))
            return values[-1].sum()

        inputs = z if self.site is None else _tile(self.inputs, reps)
        mask = None if self.attention_mask is None else _tile(self.attention_mask, reps)
        with HookSet(self.model.module) as hooks:
            if self.site is not None:
                hooks.add(self.site, lambda _act: z)
            for s in self.model.resolve(list(getattr(self.target, "sites", ()))):
                hooks.add(s, _capture(captured, s.name))
            if torch.is_grad_enabled():  # the graph from z to the target is wanted (gradient methods)
                self.model.run(inputs, grad_of=grad_of, attention_mask=mask)
            else:  # forward-only methods (occlusion, Score-CAM): no graph
                result = self.model.run(inputs, attention_mask=mask)
                values.append(self.target(dataclasses.replace(result, cache=captured)))
        out = values[0]
        if out.shape != (z.shape[0],):
            raise ValueError(f"target {self.target!r} returned shape {list(out.shape)}, expected [{z.shape[0]}]")
        return out

    def values_and_grads(self, z: Tensor, rows: int | None = None) -> tuple[Tensor, Tensor]:
        """Target values ``[rows]`` and their gradients with respect to ``z``, in chunks of whole batch copies."""
        step = self.chunk_rows(rows)
        values, grads = [], []
        for part in z.split(step):
            part = part.detach().requires_grad_(True)
            with torch.enable_grad():
                out = self(part)
                (g,) = torch.autograd.grad(out.sum(), part)
            values.append(out.detach())
            grads.append(g)
        return torch.cat(values), torch.cat(grads)

    def chunk_rows(self, rows: int | None) -> int:
        """Rows per forward pass: a whole number of batch copies, about ``ROW_ELEMENTS`` elements by default."""
        per_row = max(1, self.x[0].numel())
        want = rows if rows is not None else max(MIN_ROWS, ROW_ELEMENTS // per_row)
        return max(1, want // self.n) * self.n


def space(model: Model, inputs: Any, target: Any, at: str | None = None) -> Space:
    """Build the attribution space: ``at`` is ``"input"``, a site name, or None (input, or ``embed`` for LMs)."""
    at = at if at is not None else ("input" if model.cfg is None else "embed")
    batch = model.encode(inputs)
    if at == "input":
        if not batch.tokens.is_floating_point():
            raise ValueError(
                f"{model.name} takes token ids, which have no gradient: attribute at a site instead (at='embed')"
            )
        return Space(model, batch.tokens, None, None, batch.tokens.detach(), as_target(target, model))
    site = model.resolve(at)
    if len(site) != 1:
        raise ValueError(f"at={at!r} matches {len(site)} sites; name exactly one")
    cached = model.run(batch.tokens, cache=[site[0].name], attention_mask=batch.attention_mask, logits=False)
    x = cached.cache[site[0].name]
    return Space(model, batch.tokens, batch.attention_mask, site[0], x.detach(), as_target(target, model))


def _tile(t: Tensor, reps: int) -> Tensor:
    return t.repeat(reps, *([1] * (t.ndim - 1)))


def _capture(store: dict[str, Tensor], name: str) -> Callable[[Tensor], None]:
    def keep(act: Tensor) -> None:
        store[name] = act

    return keep


def site_pass(model: Model, inputs: Any, target: Any, at: str) -> tuple[Space, Tensor]:
    """One forward pass and the backward down to site ``at`` only: the space at ``at`` and the target's gradient.

    The site's activation becomes a leaf of the graph (a detached copy that requires grad), so the backward stops
    there, and nothing runs twice: what the CAMs need, at the cost of one forward and part of one backward.
    """
    batch = model.encode(inputs)
    sites = model.resolve(at)
    if len(sites) != 1:
        raise ValueError(f"at={at!r} matches {len(sites)} sites; name exactly one")
    tgt = as_target(target, model)
    captured: dict[str, Tensor] = {}
    leaf: list[Tensor] = []
    values: list[Tensor] = []

    def as_leaf(act: Tensor) -> Tensor:
        leaf.append(act.detach().requires_grad_(True))
        return leaf[0]

    def grad_of(result: RunResult) -> Tensor:
        values.append(tgt(dataclasses.replace(result, cache=captured)))
        return values[-1].sum()

    with HookSet(model.module) as hooks:
        hooks.add(sites[0], as_leaf)
        for s in model.resolve(list(getattr(tgt, "sites", ()))):
            hooks.add(s, _capture(captured, s.name))
        model.run(batch.tokens, grad_of=grad_of, attention_mask=batch.attention_mask)
    if values[0].shape != (leaf[0].shape[0],):
        raise ValueError(f"target {tgt!r} returned shape {list(values[0].shape)}, expected [{leaf[0].shape[0]}]")
    (grad,) = torch.autograd.grad(values[0].sum(), leaf[0])
    sp = Space(model, batch.tokens, batch.attention_mask, sites[0], leaf[0].detach(), tgt)
    return sp, grad
