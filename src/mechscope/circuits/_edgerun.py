"""Running a model with individual edges of its graph swapped: the one engine behind edge patching and circuits.

An edge ``u -> r`` is the term that sender ``u`` contributes to receiver ``r``'s input. Swapping it means ``r``
reads ``x_r + (fixed_u - live_u)``: its live input with ``u``'s live output replaced by ``u``'s output in another
run (or a mean over runs). Everything else flows as usual, so the change propagates downstream. This covers

- circuit evaluation (Hanna et al. 2024, "Have Faith in Faithfulness", section 2): run the clean prompts and swap
  every edge outside the circuit for its corrupt value;
- edge patching, the ground truth that EAP estimates: run the corrupt prompts and swap one edge for its clean
  value (Syed et al. 2023, "Attribution Patching Outperforms Automated Circuit Discovery", section 3);
- direct-path patching (Goldowsky-Dill et al. 2023, "Localizing Model Behavior with Path Patching", section 3).

No module is reimplemented. Receivers' inputs are written where the model reads them: an MLP's at its residual
input (``resid_mid``, or ``resid_pre`` for parallel blocks), the logits' at the last ``resid_post``, the residual
stream being put back right after so later blocks see the true sum. A head's query, key and value read the block's
normed input through slices of the q/k/v projections; a receiver with its own input gets the model's own norm
module applied to that input, then its head's slice of the projection. Head outputs are ``z`` through the head's
slice of the output projection. Norms and slices come from the residual-model contract
(``mechscope.core.ResidualModel``): a family table for Hugging Face models, an explicit adapter for anything else.

Below the lowest receiver with a swapped edge the run is the unpatched run. Given that run's sender outputs and
residual stream (an ``EdgePrefix``), a pass starts at that block, with the differences ``fixed - live`` of the
senders below it taken from the cache (edge patching: a pass of edges into layer 20 of 30 runs 10 blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple

import einops
import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core._interventions import Replace
from ..core._model import Model
from ..core._residual import PARTS, Part, ResidualModel, residual
from ._graph import Graph
from ._prefix import Prefix

Ablation = Literal["patch", "mean", "global_mean", "resample"]
"""The value an ablated edge carries: each prompt's own corrupt run, the corrupt runs' mean per position, their
mean over prompts and positions, or a seeded random corrupt prompt per row (see ``reference``)."""


class SenderActs(NamedTuple):
    """Every sender's output in one run: the input, per-layer head ``z`` (outputs up to ``W_O``) and MLP outputs."""

    input: Float[Tensor, "batch pos d_model"]
    z: tuple[Float[Tensor, "batch pos head d_head"], ...]
    mlp: tuple[Float[Tensor, "batch pos d_model"], ...]

    @staticmethod
    def sites(n_layers: int) -> list[str]:
        """The sites a run must cache to build ``SenderActs``."""
        return ["resid_pre.0"] + [s for i in range(n_layers) for s in (f"head.{i}.z", f"mlp_out.{i}")]

    @classmethod
    def of(cls, cache: dict[str, Tensor], n_layers: int) -> SenderActs:
        return cls(
            cache["resid_pre.0"],
            tuple(cache[f"head.{i}.z"] for i in range(n_layers)),
            tuple(cache[f"mlp_out.{i}"] for i in range(n_layers)),
        )

    def map(self, fn: Callable[[Tensor], Tensor]) -> SenderActs:
        return SenderActs(fn(self.input), tuple(fn(t) for t in self.z), tuple(fn(t) for t in self.mlp))


@dataclass(frozen=True, eq=False)
class Wiring:
    """The residual-model contract of a model and the graph of its edges, with the model it runs."""

    residual: ResidualModel
    graph: Graph

    @classmethod
    def of(cls, model: Model | ResidualModel) -> Wiring:
        """Wiring of a model with a known family table, or of any ``ResidualModel`` adapter."""
        contract = residual(model)
        return cls(contract, Graph.of(contract.cfg))

    @property
    def model(self) -> Model:
        return self.residual.model

    def norm(self, layer: int) -> nn.Module:
        """The norm attention reads the residual stream through (identity when there is none)."""
        return self.residual.attn_norm(layer)

    def head_out(self, layer: int, z: Float[Tensor, "... head d_head"]) -> Float[Tensor, "... head d_model"]:
        """What each head adds to the residual stream (no bias): ``z_h W_O[h]``."""
        return einops.einsum(z, self.residual.w_o(layer), "... head e, head e d -> ... head d")

    def project(
        self, layer: int, part: Part, x: Float[Tensor, "copy recv batch pos d_model"], heads: Tensor
    ) -> Float[Tensor, "copy batch pos recv d_head"]:
        """Query/key/value of head ``heads[i]`` computed from its own residual input ``x[:, i]``."""
        weight, bias = self.residual.qkv(layer, part)
        # forward() bypasses hooks (resid_mid captures its residual at this norm); the norm acts on the last axis.
        normed = self.norm(layer).forward(x)
        out = einops.einsum(normed, weight[:, heads], "c r b s d, d r e -> c b s r e")
        return out + bias[heads]

    def attn_out_sites(self) -> list[str]:
        return [f"attn_out.{i}" for i in range(self.graph.n_layers)]

    def check_additive(self, acts: list[tuple[dict[str, Tensor], Tensor]]) -> None:
        """Raise unless each attention output is its heads' outputs plus a constant (the graph's premise).

        ``acts``: ``(cache with head.L.z and attn_out.L, mask of real tokens)`` for one or more runs; the
        remainder must be the same at every real token. A norm after attention (Gemma 2) makes it depend on the
        input, and the residual stream stops being a sum of per-head terms.
        """
        for layer in range(self.graph.n_layers):
            rests = []
            for cache, mask in acts:
                z = cache[f"head.{layer}.z"][mask.bool()]  # [real_tokens head d_head]
                heads_sum = z.flatten(-2) @ self.residual.w_o(layer).flatten(0, 1)  # sum over heads of z_h W_O[h]
                rests.append(cache[f"attn_out.{layer}"][mask.bool()] - heads_sum)  # [real_tokens d_model]
            scale = float(torch.cat(rests).abs().max()) + float(acts[0][0][f"attn_out.{layer}"].abs().max())
            spread = max(float((r - rests[0][:1]).abs().max()) for r in rests)
            if spread > 1e-4 * max(scale, 1.0):
                raise ValueError(
                    f"{self.model.name}: attention output of layer {layer} is not the sum of its heads' outputs "
                    f"plus a constant (off by {spread:.3g}), e.g. a norm after attention (Gemma 2). Edge-level "
                    "graphs need an additive residual stream; use node-level methods (activation_patching, acdc)."
                )


def reference(acts: SenderActs, how: Ablation, mask: Tensor, rows: int, seed: int = 0) -> SenderActs:
    """Values that ablated edges carry, from the corrupt runs ``acts``.

    ``patch``: each prompt's own corrupt run; ``mean``: the mean per position (padding excluded); ``global_mean``:
    the mean over prompts and real positions, at every position (what a component would output knowing neither
    the tokens nor their position: compiled programs read positions, which a per-position mean keeps);
    ``resample``: a seeded random corrupt prompt per row.
    """
    if how == "patch":
        return acts
    if how in ("mean", "global_mean"):
        w = mask.to(acts.input.dtype)
        dims = (0, 1) if how == "global_mean" else (0,)

        def mean(t: Tensor) -> Tensor:
            ww = w.view(*w.shape, *([1] * (t.ndim - 2)))
            avg = (t * ww).sum(dims, keepdim=True) / ww.sum(dims, keepdim=True).clamp(min=1)  # [1 pos|1 ...]
            return avg.expand(rows, *t.shape[1:])

        return acts.map(mean)
    if how == "resample":
        pick = torch.randint(acts.input.shape[0], (rows,), generator=torch.Generator().manual_seed(seed))
        return acts.map(lambda t: t[pick.to(t.device)])
    raise ValueError(f"ablation must be 'patch', 'mean', 'global_mean' or 'resample', got {how!r}")


@dataclass(frozen=True)
class EdgePrefix:
    """What an edge run needs to start late: the unpatched run's sender outputs and its residual stream."""

    live: SenderActs
    prefix: Prefix

    @staticmethod
    def sites(model: Model, tokens: Tensor) -> list[str]:
        """Sites to cache in the unpatched run of ``tokens`` (bounded by ``Prefix``'s memory budget)."""
        assert model.cfg is not None
        return SenderActs.sites(model.cfg.n_layers) + Prefix.sites(model, tokens)

    @classmethod
    def of(cls, cache: dict[str, Tensor], n_layers: int) -> EdgePrefix:
        return cls(SenderActs.of(cache, n_layers), Prefix.of(cache))

    def start(self, graph: Graph, swap: Tensor) -> tuple[int, Tensor] | None:
        """Where a run swapping ``swap`` can start: at or below its lowest receiver with a swapped edge."""
        changed = torch.nonzero(swap.flatten(0, 1).ne(0).any(0)).flatten().tolist()
        lowest = min((graph.receivers[i].layer for i in changed), default=graph.n_layers)
        return self.prefix.start(min(lowest, graph.n_layers - 1))


def run_edges(
    wiring: Wiring,
    tokens: Tensor,
    attention_mask: Tensor,
    fixed: SenderActs,
    swap: Float[Tensor, "copy sender receiver"],
    *,
    final: bool = False,
    prefix: EdgePrefix | None = None,
) -> Float[Tensor, "rows pos d_vocab"] | Float[Tensor, "rows d_vocab"]:
    """Logits of ``tokens`` (stacked once per copy) where copy ``c`` swaps edge ``(u, r)`` if ``swap[c, u, r]``.

    A swapped edge carries ``fixed``'s output of ``u`` (``[batch pos ...]``, the prompts' other run or a
    reference) instead of the live one. Receivers none of whose edges are swapped are left untouched, so an
    all-zero ``swap`` is the plain run. ``final=True``: only each row's last-real-token logits, ``[rows d_vocab]``
    (the unembedding runs on those rows alone). ``prefix``: the unpatched run of ``tokens``, to start late.
    """
    copies = swap.shape[0]
    start = prefix.start(wiring.graph, swap) if prefix is not None else None
    run = _EdgeRun(wiring, fixed, swap.to(fixed.input), tokens.shape[0])
    if start is not None:
        assert prefix is not None
        run.skip_to(start[0], prefix.live)
    stacked = einops.repeat(tokens, "b p -> (c b) p", c=copies)
    mask = einops.repeat(attention_mask, "b p -> (c b) p", c=copies)
    resid = einops.repeat(start[1], "b p d -> (c b) p d", c=copies) if start is not None else None
    with wiring.model.intervene(*run.interventions()):
        out = wiring.model.run(stacked, attention_mask=mask, logits="final" if final else True,
                               start_at=start[0] if start is not None else None, resid=resid)  # fmt: skip
    return out.final_logits() if final else out.logits  # type: ignore[return-value]


class _EdgeRun:
    """One engine pass: the hooks, and the per-sender differences ``fixed - live`` they share.

    Each sender's difference is written when the forward pass reaches it, before any receiver reads it, together
    with their running sum: a receiver reads every sender written so far, so that sum is its shift when all its
    edges are swapped.
    """

    def __init__(self, wiring: Wiring, fixed: SenderActs, swap: Tensor, batch: int) -> None:
        self.wiring, self.g, self.fixed, self.swap, self.batch = wiring, wiring.graph, fixed, swap, batch
        shape = (swap.shape[0], *fixed.input.shape)  # [copy batch pos d_model]
        self.diff = fixed.input.new_empty((shape[0], len(self.g.senders), *shape[1:]))
        self.running = fixed.input.new_zeros(shape)
        self.changed = swap.flatten(0, 1).ne(0).any(0).tolist()  # per receiver
        self.by_kind: dict[tuple[int, str], list[int]] = {}
        for i, r in enumerate(self.g.receivers):
            self.by_kind.setdefault((r.layer, r.kind), []).append(i)
        self.pre_resid: Tensor | None = None  # this layer's live block input
        self.mlp_shift: Tensor | None = None  # what the MLP's own input adds to the residual stream

    def interventions(self) -> list[Replace]:
        out = []
        for layer in range(self.g.n_layers):
            out += [Replace(f"resid_pre.{layer}", partial(self.pre, layer=layer))]
            out += [Replace(f"head.{layer}.{p}", partial(self.qkv, layer=layer, part=p)) for p in PARTS]
            out += [Replace(f"head.{layer}.z", partial(self.z, layer=layer))]
            if self.mlp_changed(layer) and not self.g.parallel:
                out.append(Replace(f"resid_mid.{layer}", partial(self.mid, layer=layer)))
            out += [Replace(f"mlp_out.{layer}", partial(self.mlp_out, layer=layer))]
            out += [Replace(f"resid_post.{layer}", partial(self.post, layer=layer))]
        return out

    def skip_to(self, layer: int, live: SenderActs) -> None:
        """Record the senders below block ``layer`` from the unpatched run ``live``, in the order the hooks would.

        Every copy's live outputs there equal the unpatched run's (no receiver below ``layer`` is swapped).
        """
        if layer == 0:
            return
        self.record(0, (self.fixed.input - live.input)[None, None])
        for i in range(layer):
            fixed = self.wiring.head_out(i, self.fixed.z[i]).permute(2, 0, 1, 3)  # [head batch pos d_model]
            here = self.wiring.head_out(i, live.z[i]).permute(2, 0, 1, 3)
            self.record(self.g.head_index(i, 0), (fixed - here)[None])
            self.record(self.g.mlp_index(i), (self.fixed.mlp[i] - live.mlp[i])[None, None])

    def split(self, act: Tensor) -> Tensor:
        return act.unflatten(0, (-1, self.batch))  # [copy*batch ...] -> [copy batch ...]

    def mlp_changed(self, layer: int) -> bool:
        return self.changed[self.by_kind[(layer, "mlp")][0]]

    def record(self, first: int, values: Tensor) -> None:
        """Store ``fixed - live`` for senders ``first ...`` (``values``: ``[copy sender batch pos d_model]``)."""
        self.diff[:, first : first + values.shape[1]] = values
        self.running.add_(values.sum(1))

    def shift(self, receivers: list[int]) -> Tensor:
        """``[copy recv batch pos d_model]``: sum of ``fixed - live`` over each receiver's swapped edges.

        Only senders with a nonzero coefficient cost anything. Per copy, sum over the swapped edges or, when most
        edges are swapped (a small circuit being evaluated), subtract the kept ones from the running sum.
        """
        n_up = self.g.receivers[receivers[0]].n_upstream
        out = []
        for c in range(self.swap.shape[0]):
            a = self.swap[c, :n_up, receivers]  # [sender recv]
            swapped, kept = a.ne(0).any(-1), a.ne(1).any(-1)
            if int(kept.sum()) < int(swapped.sum()):
                idx = torch.nonzero(kept).flatten()
                part = (1 - a[idx]).T @ self.diff[c, idx].flatten(1)  # [recv batch*pos*d_model]
                out.append(self.running[c] - part.unflatten(1, self.running.shape[1:]))
            else:
                idx = torch.nonzero(swapped).flatten()
                out.append((a[idx].T @ self.diff[c, idx].flatten(1)).unflatten(1, self.running.shape[1:]))
        return torch.stack(out)

    def pre(self, act: Tensor, layer: int) -> Tensor:
        x = self.split(act)
        if layer == 0:
            self.record(0, (self.fixed.input - x)[:, None])
        self.pre_resid = x
        if self.g.parallel and self.mlp_changed(layer):  # the MLP reads the block's input: give it its own
            self.mlp_shift = self.shift(self.by_kind[(layer, "mlp")])[:, 0]
            return (x + self.mlp_shift).flatten(0, 1)
        return act

    def qkv(self, act: Tensor, layer: int, part: Part) -> Tensor:
        # in parallel blocks a changed MLP input changed the block input that every q/k/v reads: redo them all
        redo_all = self.g.parallel and self.mlp_changed(layer)
        redo = [i for i in self.by_kind[(layer, part)] if self.changed[i] or redo_all]
        if not redo:
            return act
        assert self.pre_resid is not None
        heads = torch.tensor([self.g.receivers[i].head for i in redo], device=act.device)
        x = self.pre_resid[:, None] + self.shift(redo)  # [copy recv batch pos d_model]
        out = self.split(act).clone()
        out[:, :, :, heads] = self.wiring.project(layer, part, x, heads).to(out.dtype)
        return out.flatten(0, 1)

    def z(self, act: Tensor, layer: int) -> Tensor:
        fixed = self.wiring.head_out(layer, self.fixed.z[layer]).permute(2, 0, 1, 3)  # [head batch pos d_model]
        live = self.wiring.head_out(layer, self.split(act)).permute(0, 3, 1, 2, 4)  # [copy head batch pos d_model]
        self.record(self.g.head_index(layer, 0), fixed - live)
        return act

    def mid(self, act: Tensor, layer: int) -> Tensor:
        self.mlp_shift = self.shift(self.by_kind[(layer, "mlp")])[:, 0]
        return (self.split(act) + self.mlp_shift).flatten(0, 1)

    def mlp_out(self, act: Tensor, layer: int) -> Tensor:
        self.record(self.g.mlp_index(layer), (self.fixed.mlp[layer] - self.split(act))[:, None])
        return act

    def post(self, act: Tensor, layer: int) -> Tensor:
        x = self.split(act)
        if self.mlp_shift is not None:  # put the residual stream back to the true sum
            x, self.mlp_shift = x - self.mlp_shift, None
        if layer == self.g.n_layers - 1 and self.changed[-1]:
            x = x + self.shift([len(self.g.receivers) - 1])[:, 0]
        return x.flatten(0, 1)
