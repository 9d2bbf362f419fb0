"""The torch model of a compiled RASP program, and its adapter to the residual-model contract.

``CompiledTransformer`` holds tracr's weights as plain torch modules: token + position embeddings, per layer an
attention with one module per head and a ReLU MLP, no layer norm, an additive residual stream and a linear
unembedding. Each head's module maps the head's ``z`` to what it adds to the residual stream, so its output is the
head's contribution (``blocks.L.attn.heads.H``, the site the organism ablates). The attention also gathers the
heads' queries, keys and values (``attn.q`` / ``attn.k`` / ``attn.v``) and their ``z`` (the input of ``attn.z``)
into one tensor each, so the uniform sites ``head.L.q/k/v/z`` exist; these gathering modules hold no weights.

``compiled_model`` wraps a ``CompiledTransformer`` as a ``Model`` with the uniform sites (``TRACR_FAMILY``) and its
module paths; ``CompiledResidual`` is its residual-model contract (``mechscope.core.ResidualModel``): no norms,
per-head q/k/v/o weights read from the head modules, sequential blocks, the unembedding's weight. With it the
library's circuit methods (EAP, EAP-IG, ACDC, faithfulness) run on every compiled program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..circuits._ids import NodeId
from ..core._families import Family
from ..core._model import Model
from ..core._residual import Part
from ..core._sites import ModelConfig, Site, lm_sites


class Head(nn.Module):
    """One attention head: its q/k/v projections, and ``o``, which writes its ``z`` to the residual stream."""

    def __init__(self, d_model: int, d_head: int) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d_model, d_head) for _ in range(3))
        self.o = nn.Linear(d_head, d_model, bias=False)

    def forward(self, z: Float[Tensor, "batch pos d_head"]) -> Float[Tensor, "batch pos d_model"]:
        return self.o(z)


class Gather(nn.Module):
    """The heads' projections side by side, ``[batch pos head*d_head]``: the tensor the site ``head.L.q`` views."""

    def forward(self, *parts: Tensor) -> Tensor:
        return torch.cat(parts, -1)


class Attention(nn.Module):
    """Heads in parallel, plus the output bias of the fused projection they came from."""

    def __init__(self, d_model: int, n_heads: int, d_head: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(Head(d_model, d_head) for _ in range(n_heads))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.q, self.k, self.v = Gather(), Gather(), Gather()
        self.z = nn.Identity()  # its input is every head's z: the site head.L.z

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        heads = cast(list[Head], list(self.heads))
        n, d = len(heads), heads[0].q.out_features
        q, k, v = (gather(*(getattr(h, part)(x) for h in heads)).unflatten(-1, (n, d))  # [batch pos head d_head]
                   for part, gather in (("q", self.q), ("k", self.k), ("v", self.v)))  # fmt: skip
        scores = einsum(q, k, "batch q head d, batch k head d -> batch head q k") / math.sqrt(d)
        z = einsum(scores.softmax(-1), v, "batch head q k, batch k head d -> batch q head d")  # non-causal: no mask
        z = self.z(z.flatten(-2)).unflatten(-1, (n, d))
        return sum((head(z[..., i, :]) for i, head in enumerate(heads)), self.bias)


class MLP(nn.Module):
    """ReLU MLP."""

    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(d_model, d_mlp), nn.Linear(d_mlp, d_model)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return self.down(torch.relu(self.up(x)))


class Block(nn.Module):
    """Attention then MLP, each added to the residual stream (tracr models have no layer norm)."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, d_mlp: int) -> None:
        super().__init__()
        self.attn, self.mlp = Attention(d_model, n_heads, d_head), MLP(d_model, d_mlp)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x = x + self.attn(x)
        return x + self.mlp(x)


@dataclass(frozen=True)
class Dims:
    """Sizes of a compiled transformer."""

    n_tokens: int
    n_pos: int
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_out: int
    """Output classes (categorical programs) or 1 (numerical programs)."""


class CompiledTransformer(nn.Module):
    """A tracr model in torch: ``[batch pos]`` token ids (BOS first) -> ``[batch pos d_out]`` logits."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.token_embed = nn.Embedding(dims.n_tokens, dims.d_model)
        self.pos_embed = nn.Embedding(dims.n_pos, dims.d_model)
        self.blocks = nn.ModuleList(Block(dims.d_model, dims.n_heads, dims.d_head, dims.d_mlp)
                                    for _ in range(dims.n_layers))  # fmt: skip
        self.unembed = nn.Linear(dims.d_model, dims.d_out, bias=False)

    def forward(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Tensor | None = None,
        use_cache: bool = False,
        position_ids: Tensor | None = None,
    ) -> Float[Tensor, "batch pos d_out"]:
        """Logits; the keyword arguments are a language model's (``Model.run`` passes them) and must be trivial."""
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("compiled programs attend to every position and have no padding: batch inputs of one "
                             "length (attention_mask all ones)")  # fmt: skip
        if position_ids is not None:
            raise ValueError("compiled programs take no position_ids: inputs are never padded")
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.token_embed(input_ids) + self.pos_embed(positions)
        for block in self.blocks:
            x = block(x)
        return self.unembed(x)

    def components(self) -> dict[str, nn.Module]:
        """Module path -> module of every head and MLP, in forward order."""
        out: dict[str, nn.Module] = {}
        for i, block in enumerate(cast(list[Block], list(self.blocks))):
            out |= {f"blocks.{i}.attn.heads.{h}": head for h, head in enumerate(block.attn.heads)}
            out[f"blocks.{i}.mlp"] = block.mlp
        return out


def node_of(site: str) -> NodeId:
    """The graph node of a component's module path: ``blocks.1.attn.heads.0``: ``a1.h0``; ``blocks.2.mlp``: ``m2``."""
    parts = site.split(".")
    if len(parts) == 5 and parts[0] == "blocks" and parts[2:4] == ["attn", "heads"]:
        return NodeId.head(int(parts[1]), int(parts[4]))
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] == "mlp":
        return NodeId.mlp(int(parts[1]))
    raise ValueError(f"{site!r} is not the module path of a head or an MLP of a compiled transformer")


def site_of(node: NodeId) -> str:
    """The module path of a head or MLP node (the inverse of ``node_of``)."""
    if node.kind == "head":
        return f"blocks.{node.layer}.attn.heads.{node.index}"
    if node.kind == "mlp":
        return f"blocks.{node.layer}.mlp"
    raise ValueError(f"{node} is no component of a compiled transformer (only heads and MLPs are)")


TRACR_FAMILY = Family(
    layers="blocks",
    embed="token_embed",
    final_norm=None,
    unembed="unembed",
    attn="attn",
    attn_out="attn",
    mlp_out="mlp",
    o_proj="attn.z",
    qkv=("attn.q", "attn.k", "attn.v"),
    qkv_layout="separate",
    mlp_down="mlp.down",
    ln1=None,
    ln2=None,
)
"""Where the uniform sites live in a ``CompiledTransformer`` (no norms: attention and MLP read the residual)."""


def compiled_model(module: CompiledTransformer, name: str) -> Model:
    """``module`` as a ``Model``: the uniform sites (``resid_pre.L``, ``head.L.q`` ...) and its components' paths."""
    d = module.dims
    cfg = ModelConfig(n_layers=d.n_layers, d_model=d.d_model, n_heads=d.n_heads, n_kv_heads=d.n_heads,
                      d_head=d.d_head, d_mlp=d.d_mlp, d_vocab=d.d_out, parallel=False)  # fmt: skip
    # the attention returns no pattern (it is no Hugging Face attention), so no head.L.pattern sites
    sites = {k: v for k, v in lm_sites(TRACR_FAMILY, cfg).items() if not k.endswith(".pattern")}
    for path in module.components():
        node = node_of(path)
        after = 4.5 if node.kind == "head" else 8  # a head's output right after z; an MLP's is mlp_out's
        sites[path] = Site(path, path, "out", meaning=f"{'head' if node.kind == 'head' else 'MLP'} {node} output",
                           order=10 * (node.layer or 0) + after)  # fmt: skip
    for path, order in (("token_embed", -1.0), ("pos_embed", -1.0)):
        sites[path] = Site(path, path, "out", meaning=path.replace("_", " "), order=order)
    return Model(module.eval(), sites, name=name, cfg=cfg)


@dataclass(frozen=True, eq=False)
class CompiledResidual:
    """The residual-model contract of a compiled program (``mechscope.core.ResidualModel``).

    No norms (identity), each head's q/k/v/o slice read from its own module, sequential blocks, the unembedding's
    weight (no final norm).
    """

    model: Model

    @property
    def cfg(self) -> ModelConfig:
        assert self.model.cfg is not None
        return self.model.cfg

    def _heads(self, layer: int) -> list[Head]:
        module = cast(CompiledTransformer, self.model.module)
        return cast(list[Head], list(cast(Block, module.blocks[layer]).attn.heads))

    def attn_norm(self, layer: int) -> nn.Module:
        return nn.Identity()

    def mlp_norm(self, layer: int) -> nn.Module:
        return nn.Identity()

    def qkv(self, layer: int, part: Part) -> tuple[Tensor, Tensor]:
        maps = [cast(nn.Linear, getattr(h, part)) for h in self._heads(layer)]
        weight = torch.stack([m.weight.detach().T for m in maps], 1)  # [d_model head d_head]
        return weight, torch.stack([cast(Tensor, m.bias).detach() for m in maps])  # [head d_head]

    def w_o(self, layer: int) -> Tensor:
        return torch.stack([h.o.weight.detach().T for h in self._heads(layer)])  # [head d_head d_model]

    def unembed(self) -> tuple[nn.Module, Tensor]:
        module = cast(CompiledTransformer, self.model.module)
        return nn.Identity(), module.unembed.weight.detach().T
