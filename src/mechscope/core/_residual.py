"""The residual-model contract: what circuit methods need to know about a transformer, beyond its sites.

Circuit methods (edge patching, EAP, EAP-IG, ACDC, faithfulness) see a transformer as a residual stream that every
block reads and writes. They run the model through its uniform sites (``resid_pre.L``, ``head.L.q/k/v/z``,
``attn_out.L``, ``resid_mid.L``, ``mlp_out.L``, ``resid_post.L``) and, to split a block's input into one term per
writer, read a few weights once: the norm in front of attention and in front of the MLP (or none), each head's
slice of the q/k/v projections and of the output projection (grouped-query attention: keys and values per
key/value head), whether attention and MLP run in parallel, and the unembedding (final norm and ``W_U``).

``ResidualModel`` is that contract. ``FamilyResidual`` builds it for a Hugging Face model from the family rename
table its sites come from; a model outside the tables (a compiled program, a custom model) gets a small explicit
adapter that implements the same protocol (``mechscope.organisms.CompiledResidual`` is one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ._families import Family, family_of
from ._model import Model
from ._sites import ModelConfig

Part = Literal["q", "k", "v"]
PARTS: tuple[Part, ...] = ("q", "k", "v")


@runtime_checkable
class ResidualModel(Protocol):
    """A transformer as circuit methods need it: a model with uniform sites plus the weights that wire its blocks."""

    @property
    def model(self) -> Model:
        """The model, run through its uniform sites (``resid_pre.L``, ``head.L.q`` ...) and ``model.cfg``."""
        ...

    @property
    def cfg(self) -> ModelConfig:
        """Dimensions; ``cfg.parallel``: attention and MLP read the same residual stream."""
        ...

    def attn_norm(self, layer: int) -> nn.Module:
        """The norm attention reads the residual stream through (``nn.Identity`` when there is none).

        Called with ``.forward`` on a residual of any leading shape, so it must act on the last axis only.
        """
        ...

    def mlp_norm(self, layer: int) -> nn.Module:
        """The norm in front of the MLP (``nn.Identity`` when there is none)."""
        ...

    def qkv(self, layer: int, part: Part) -> tuple[Float[Tensor, "d_model head d_head"], Float[Tensor, "head d_head"]]:
        """Weight and bias of each (query, or key/value) head's slice of the ``part`` projection."""
        ...

    def w_o(self, layer: int) -> Float[Tensor, "head d_head d_model"]:
        """Each head's slice of the output projection (its input is ``head.L.z``)."""
        ...

    def unembed(self) -> tuple[nn.Module, Float[Tensor, "d_model d_vocab"]]:
        """The final norm (``nn.Identity`` when there is none) and the unembedding's linear part."""
        ...


def residual(model: Model | ResidualModel) -> ResidualModel:
    """The contract of ``model``: itself when it already satisfies it, else built from its family table."""
    if isinstance(model, Model):
        return FamilyResidual.of(model)
    if isinstance(model, ResidualModel):
        return model
    raise TypeError(f"expected a mechscope Model or a ResidualModel adapter, got {type(model).__name__}")


def model_of(model: Model | ResidualModel) -> Model:
    """The runnable model behind a model or an adapter (for methods that need no weights, only the sites)."""
    return model if isinstance(model, Model) else model.model


@dataclass(frozen=True, eq=False)
class FamilyResidual:
    """The contract of a Hugging Face model, read from the family rename table and its sites (weights read once)."""

    model: Model
    family: Family
    _qkv: tuple[dict[str, tuple[Tensor, Tensor]], ...] = field(repr=False)
    _w_o: tuple[Tensor, ...] = field(repr=False)

    @property
    def cfg(self) -> ModelConfig:
        assert self.model.cfg is not None
        return self.model.cfg

    @classmethod
    @torch.no_grad()
    def of(cls, model: Model) -> FamilyResidual:
        """Read ``model``'s wiring; TypeError when it is no transformer language model of a known family."""
        cfg = model.cfg
        config: Any = getattr(model.module, "config", None)
        if cfg is None or config is None:
            raise TypeError(
                f"{model.name} is not a transformer language model of a known family; circuit methods need the "
                "residual-model contract (mechscope.core.ResidualModel): pass an adapter that implements it"
            )
        family = family_of(config)
        qkv, w_o = [], []
        for layer in range(cfg.n_layers):
            parts = {}
            for part in "qkv":
                site = model.resolve(f"head.{layer}.{part}")[0]
                weight, bias = linear_part(model.module.get_submodule(site.module), cfg.d_model)  # [d_model out]
                parts[part] = (site.view(weight), site.view(bias))  # [d_model n d_head], [n d_head]
            qkv.append(parts)
            o_proj = model.module.get_submodule(model.resolve(f"head.{layer}.z")[0].module)
            w, _ = linear_part(o_proj, cfg.n_heads * cfg.d_head)  # [head*d_head d_model]
            w_o.append(w.unflatten(0, (cfg.n_heads, cfg.d_head)))
        return cls(model, family, tuple(qkv), tuple(w_o))

    def _block(self, layer: int, path: str | None) -> nn.Module:
        if path is None:
            return nn.Identity()
        return self.model.module.get_submodule(f"{self.family.layers}.{layer}.{path}")

    def attn_norm(self, layer: int) -> nn.Module:
        return self._block(layer, self.family.ln1)

    def mlp_norm(self, layer: int) -> nn.Module:
        return self._block(layer, self.family.ln2)

    def qkv(self, layer: int, part: Part) -> tuple[Tensor, Tensor]:
        return self._qkv[layer][part]

    def w_o(self, layer: int) -> Tensor:
        return self._w_o[layer]

    def unembed(self) -> tuple[nn.Module, Tensor]:
        names = {s.name for s in self.model.resolve("*")}
        norm = (self.model.module.get_submodule(self.model.resolve("final_norm")[0].module)
                if "final_norm" in names else nn.Identity())  # fmt: skip
        head = self.model.module.get_submodule(self.model.resolve("logits")[0].module)
        return norm, linear_part(head, self.cfg.d_model)[0]


def linear_part(module: nn.Module, d_in: int) -> tuple[Float[Tensor, "d_in d_out"], Float[Tensor, " d_out"]]:
    """Weight ``[d_in d_out]`` and bias of an affine module.

    A plain ``nn.Linear`` is read directly (applying a 576-wide projection to the identity costs as much as a
    forward pass over all of SmolLM2's projections); anything else (GPT-2's ``Conv1D``...) is probed with the
    identity.
    """
    if type(module) is nn.Linear:
        weight = module.weight.detach()
        bias = module.bias.detach() if module.bias is not None else weight.new_zeros(weight.shape[0])
        return weight.T, bias
    weight = affine_matrix(module, d_in)
    return weight, module.forward(weight.new_zeros(1, d_in))[0]


def affine_matrix(module: nn.Module, d_in: int) -> Float[Tensor, "d_in d_out"]:
    """The linear part of an affine module: row ``i`` is ``module(e_i) - module(0)`` (hooks bypassed)."""
    param = next(module.parameters())
    eye = torch.eye(d_in, dtype=param.dtype, device=param.device)
    return module.forward(eye) - module.forward(torch.zeros_like(eye[:1]))
