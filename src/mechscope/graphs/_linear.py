"""The prompt's replacement model made linear: one forward pass whose backward passes give rows of direct effects.

With attention patterns, norm scales and MLP outputs frozen at their values on the prompt, the residual stream is a
linear function of what the token embeddings, the features and the error nodes write into it (Ameisen et al. 2025,
"Circuit Tracing", §2 "Attribution graphs"). The forward pass below runs the real model's own modules once, on a
batch of ``B`` copies of the prompt, with hooks that change only the backward pass:

- every LayerNorm / RMSNorm passes gradients through ``x -> g * P(x) / s`` with its scale ``s`` taken from the run;
- queries and keys are detached, so the attention pattern is a constant and gradients flow through values and the
  output projection (the OV paths) only;
- each MLP output is detached and a zero leaf is added to it, so gradients stop there and are read at the leaf
  (a skip transcoder's linear skip ``x @ W_skip`` stays differentiable: it is part of the linear system); the MLP
  runs on a detached input, so none of its internals are kept for the backward passes;
- the unembedding reads the last position only (``core._shortcut.unembed_rows``): logit targets live there;
- the residual stream entering block 0 is a leaf too (the embedding nodes).

The forward values are the real model's. Each backward pass injects one target per batch element (a feature's
encoder row at its layer's transcoder input and position, or a logit's demeaned unembedding direction) and reads,
per element, a full row of direct effects: ``edge(s -> t) = a_s W_dec[s] . grad_t`` for features at their layer and
position (summed over every MLP output a cross-layer feature writes), ``error . grad_t`` for errors, ``embed .
grad_t`` for embeddings. The graph of the forward pass is kept
between backward passes, so a graph of ``R`` rows costs one forward pass of ``B`` copies plus ``ceil(R / B)``
backward passes of ``B`` (circuit-tracer batches the same way).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechscope.core import HookSet
from mechscope.core._hookset import _first_input, _replace_input
from mechscope.core._shortcut import unembed_rows
from mechscope.graphs._replacement import ReplacementModel, Trace


@dataclass(frozen=True, eq=False)
class Sources:
    """The source columns of every row, in graph order: active features, errors (layer-major), embeddings."""

    features: Int[Tensor, "n_features 3"]
    """``(layer, position, feature)`` of every active feature, layer-major."""
    writes: dict[tuple[int, int], Float[Tensor, "n d_model"]]
    """``(src, dst)``: what each active feature of layer ``src`` (in ``features`` order) writes into ``mlp_out.dst``,
    its decoder row to ``dst`` scaled by its activation."""
    errors: Float[Tensor, "layer pos d_model"]
    embed: Float[Tensor, "pos d_model"]

    @property
    def n_columns(self) -> int:
        """Number of source columns."""
        n_layers, n_pos, _ = self.errors.shape
        return len(self.features) + n_layers * n_pos + n_pos


class Linearised:
    """The frozen forward pass on ``batch`` copies of the prompt; ``rows`` runs backward passes over it."""

    def __init__(self, rm: ReplacementModel, trace: Trace, sources: Sources, batch: int) -> None:
        self.rm, self.trace, self.sources, self.batch = rm, trace, sources, batch
        self.n_backward = 0
        self._inputs: dict[int, Tensor] = {}
        self._leaves: dict[int, Tensor] = {}
        self._logits: dict[str, Tensor] = {}
        tokens = trace.tokens[None].expand(batch, -1)
        with torch.enable_grad(), frozen(rm, self._inputs, self._leaves, self._logits, batch, len(trace.tokens)):
            self._out = rm.model._forward(rm.model.encode(tokens))
        self._per_layer = [(sources.features[:, 0] == layer).nonzero().squeeze(1) for layer in range(rm.n_layers)]

    def rows(
        self,
        layers: Int[Tensor, " r"],
        positions: Int[Tensor, " r"],
        vectors: Float[Tensor, "r width"],
    ) -> Float[Tensor, "r n_columns"]:
        """Direct-effect rows of ``r <= batch`` targets, each ``vectors[i] . x`` at ``(layers[i], positions[i])``.

        ``x`` is the transcoder input of that layer, or the logits when ``layers[i] == n_layers`` (whose
        position must be the last one: the pass unembeds only that).
        """
        r = len(layers)
        if not 0 < r <= self.batch:
            raise ValueError(f"a backward pass takes 1 to {self.batch} rows, got {r}")
        outputs, grads = [], []
        for layer in sorted(set(layers.tolist())):
            pick = (layers == layer).nonzero().squeeze(1)
            at = positions[pick]
            if layer == self.rm.n_layers:
                target = self._logits["logits"]  # [batch 1 d_vocab]: the last position's
                if bool((at != len(self.trace.tokens) - 1).any()):
                    raise ValueError("logit targets are at the last position only")
                at = torch.zeros_like(at)
            else:
                target = self._inputs[layer]
            g = torch.zeros_like(target)
            g[pick.to(g.device), at.to(g.device)] = vectors[pick].to(g)
            outputs.append(target)
            grads.append(g)
        leaves = [self._leaves[-1], *(self._leaves[layer] for layer in range(self.rm.n_layers))]
        got = torch.autograd.grad(outputs, leaves, grads, retain_graph=True, allow_unused=True)
        self.n_backward += 1
        return self._columns(got, r)

    def _columns(self, got: tuple[Tensor | None, ...], r: int) -> Float[Tensor, "r n_columns"]:
        src = self.sources
        n_layers, n_pos, _ = src.errors.shape
        out = torch.zeros(r, src.n_columns)
        n_feat = len(src.features)
        g_embed = got[0]
        if g_embed is not None:
            out[:, n_feat + n_layers * n_pos :] = (g_embed[:r] * src.embed.to(g_embed)).sum(-1).float().cpu()
        for layer in range(n_layers):
            g = got[layer + 1]
            if g is None:
                continue
            g = g[:r].float()  # [r pos d_model]
            start = n_feat + layer * n_pos
            out[:, start : start + n_pos] = (g * src.errors[layer].to(g)).sum(-1).cpu()
            for origin in range(layer + 1):  # features of this layer and, cross-layer, of the layers below
                idx = self._per_layer[origin]
                if len(idx) and (origin, layer) in src.writes:
                    pos = src.features[idx, 1].to(g.device)
                    dec = src.writes[(origin, layer)].to(g)  # [n d_model]
                    out[:, idx] += torch.einsum("rnd,nd->rn", g[:, pos], dec).cpu()
        return out

    def close(self) -> None:
        """Free the forward pass's graph."""
        self._inputs.clear()
        self._leaves.clear()
        self._logits.clear()
        self._out = None


@contextmanager
def frozen(
    rm: ReplacementModel,
    inputs: dict[int, Tensor],
    leaves: dict[int, Tensor],
    logits: dict[str, Tensor],
    batch: int,
    n_pos: int,
) -> Iterator[None]:
    """Hooks of the linearised pass (module docstring); fills ``inputs``, ``leaves`` (-1: embeddings), ``logits``."""
    model = rm.model
    handles: list[Any] = []
    hooks = HookSet(model.module)
    head = model.module.get_submodule(model.resolve("logits")[0].module)
    try:
        for module in model.module.modules():
            if _is_norm(module):
                handles.append(module.register_forward_hook(_frozen_norm))
        for site in rm.output_sites:  # the MLP's output is replaced by a detached value: keep no graph inside it
            mlp = model.module.get_submodule(site.module)
            handles.append(mlp.register_forward_pre_hook(_detached_input, with_kwargs=True))
        hooks.add(model.resolve("resid_pre.0")[0], _leaf(leaves, -1))
        for s in model.resolve(["head.*.q", "head.*.k"]):
            hooks.add(s, _detach)
        for layer in range(rm.n_layers):
            hooks.add(rm.input_sites[layer], _keep(inputs, layer))
            hooks.add(rm.output_sites[layer], _stopped(rm, layer, inputs, leaves))
        hooks.add(model.resolve("logits")[0], _keep(logits, "logits"))
        with unembed_rows(head, torch.full((batch,), n_pos - 1)):
            yield
    finally:
        hooks.close()
        for h in handles:
            h.remove()


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return isinstance(module, nn.LayerNorm) or name.endswith(("rmsnorm", "layernorm"))


def _frozen_norm(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
    """Same value; gradient of ``g * P(x) / s`` with ``s`` fixed (LayerNorm centres, RMSNorm does not)."""
    x = args[0]
    if "rms" in type(module).__name__.lower():
        linear = x * (out / torch.where(x == 0, 1, x)).detach()
    else:
        bias = getattr(module, "bias", None)
        bias = 0 if bias is None else bias
        centred = x - x.mean(-1, keepdim=True)
        linear = centred * ((out - bias) / torch.where(centred == 0, 1, centred)).detach()
    return out.detach() + (linear - linear.detach())


def _detached_input(_m: nn.Module, args: tuple, kwargs: dict) -> tuple:
    return _replace_input(args, kwargs, _first_input(args, kwargs).detach())


def _detach(act: Tensor) -> Tensor:
    return act.detach()


def _leaf(store: dict[int, Tensor], key: int) -> Any:
    def make(act: Tensor) -> Tensor:
        leaf = act.detach().requires_grad_(True)
        store[key] = leaf
        return leaf

    return make


def _keep(store: dict[Any, Tensor], key: Any) -> Any:
    def keep(act: Tensor) -> None:
        store[key] = act

    return keep


def _stopped(rm: ReplacementModel, layer: int, inputs: dict[int, Tensor], leaves: dict[int, Tensor]) -> Any:
    def stop(act: Tensor) -> Tensor:
        leaf = torch.zeros_like(act, requires_grad=True)
        leaves[layer] = leaf
        out = act.detach() + leaf
        x = inputs[layer]
        skip = rm.coders.skip(layer, x.reshape(-1, x.shape[-1]))
        if skip is not None:  # the skip is linear in the input: part of the linear system, not a node
            skip = skip.reshape(act.shape).to(act)
            out = out + (skip - skip.detach())
        return out

    return stop
