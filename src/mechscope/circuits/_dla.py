"""Direct logit attribution: how much each head, MLP (and neuron) writes along the answer direction.

The final residual stream is a sum of what every component wrote: ``x = embed + sum_L (attn_out.L + mlp_out.L)``
and each attention output is a sum over heads, ``attn_out.L = sum_h z_h W_O[h] (+ bias)``. The logit difference is
``(W_U[answer] - W_U[wrong]) . norm(x)``. The final norm is not linear, so, as is standard (Elhage et al. 2021,
"A Mathematical Framework for Transformer Circuits", section "Direct path"; Wang et al. 2022, section 3.1),
its scale is frozen at the clean run's value: for ``norm(x) = g * P(x) / s(x) + b`` with ``P`` centering
(LayerNorm) or the identity (RMSNorm) and ``s(x) = sqrt(mean(P(x)^2) + eps)``, a component ``v`` contributes
``d . (g * P(v)) / s(x)`` with ``s(x)`` of that prompt's final residual at its last position. These contributions
add up exactly (up to floating point) to the logit difference of ``norm(x) - b``; the norm's and unembedding's
biases are reported as ``bias``, so ``total`` equals the model's logit difference (before any logit soft-capping,
as in Gemma 2, which this linear picture cannot include).

Weights are read by applying each linear map to the identity (``module.forward(eye) - module.forward(0)``), so
``Linear``, GPT-2's ``Conv1D`` and Gemma's ``(1 + w)`` RMSNorm need no per-architecture code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core._model import Model
from ..core._residual import affine_matrix as _affine_matrix
from ..data._metrics import final_logits, logit_diff
from ..data._task import PAD_ID, Task, tokenize_task


@dataclass(frozen=True, eq=False)
class DLAResult:
    """Direct logit attribution per component, averaged over prompts (logit-difference units)."""

    embed: float
    """The residual stream entering block 0 (token embedding, plus position embedding where there is one)."""
    heads: Float[Tensor, "layer head"]
    attn_rest: Float[Tensor, " layer"]
    """What an attention output writes beyond its heads' sum: the output-projection bias, or the effect of a
    norm after attention (Gemma 2). Zero for Llama-style attention."""
    mlps: Float[Tensor, " layer"]
    bias: float
    """The final norm's bias and the unembedding's bias, along the answer direction."""
    logit_diff: float
    """The model's logit difference (answer minus wrong) on the clean prompts."""
    neurons: Float[Tensor, "layer d_mlp"] | None = None
    """Per-neuron attribution (``neurons=True``); each layer's sum plus its down-projection bias is ``mlps``."""
    norm_scale: Float[Tensor, " batch"] = field(default_factory=lambda: torch.zeros(0))
    """The frozen final-norm scale ``s(x)`` per prompt."""
    task: str = ""
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Sum of every component and the biases: equals ``logit_diff`` (the DLA identity)."""
        return self.embed + float(self.heads.sum() + self.attn_rest.sum() + self.mlps.sum()) + self.bias

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "embed": self.embed,
            "heads": self.heads.tolist(),
            "attn_rest": self.attn_rest.tolist(),
            "mlps": self.mlps.tolist(),
            "bias": self.bias,
            "logit_diff": self.logit_diff,
            "total": self.total,
            "neurons": self.neurons.tolist() if self.neurons is not None else None,
            "norm_scale": self.norm_scale.tolist(),
            "task": self.task,
            "model": self.model,
        }


@torch.no_grad()
def direct_logit_attribution(model: Model, task: Task, *, neurons: bool = False) -> DLAResult:
    """Attribute the clean logit difference to the embedding, every head, every MLP (and ``neurons``)."""
    cfg = model.cfg
    if cfg is None:
        raise TypeError(f"{model.name} is not a transformer language model")
    toks = tokenize_task(task, model.tokenizer)
    n, final = cfg.n_layers, f"resid_post.{cfg.n_layers - 1}"
    sites = ["resid_pre.0", final]
    for layer in range(n):
        sites += [f"head.{layer}.z", f"attn_out.{layer}", f"mlp_out.{layer}"]
        sites += [f"mlp.{layer}.post"] if neurons else []
    out = model.run(toks.clean, cache=sites, attention_mask=toks.attention_mask)
    rows = torch.arange(toks.clean.shape[0])
    at = {k: v[rows, out.last_pos()] for k, v in out.cache.items()}  # each [batch ...] at the final position
    norm = _module(model, "final_norm")
    frozen = FrozenNorm.of(norm, at[final])
    direction, unembed_bias = _answer_direction(model, task)
    u = frozen.pullback(direction)  # [batch d_model]: DLA of a residual vector v is u . v

    heads, rest, mlps, per_neuron = [], [], [], []
    for layer in range(n):
        z_site = model.resolve(f"head.{layer}.z")[0]
        w_o = _affine_matrix(_module(model, z_site.name), cfg.n_heads * cfg.d_head)  # [n_heads*d_head d_model]
        u_z = z_site.view(u @ w_o.T)  # [batch head d_head]
        h = (at[z_site.name] * u_z).sum(-1)  # [batch head]
        heads.append(h)
        rest.append(_dot(u, at[f"attn_out.{layer}"]) - h.sum(-1))
        mlps.append(_dot(u, at[f"mlp_out.{layer}"]))
        if neurons:
            w_down = _affine_matrix(_module(model, f"mlp.{layer}.post"), cfg.d_mlp)  # [d_mlp d_model]
            per_neuron.append(at[f"mlp.{layer}.post"] * (u @ w_down.T))  # [batch d_mlp]
    assert out.logits is not None
    real = logit_diff(final_logits(out.logits, toks.attention_mask), task)
    return DLAResult(
        embed=float(_dot(u, at["resid_pre.0"]).mean()),
        heads=torch.stack(heads, 0).mean(1),
        attn_rest=torch.stack(rest, 0).mean(1),
        mlps=torch.stack(mlps, 0).mean(1),
        bias=float((direction @ frozen.bias + unembed_bias).mean()),
        logit_diff=float(real.mean()),
        neurons=torch.stack(per_neuron, 0).mean(1) if neurons else None,
        norm_scale=frozen.scale,
        task=task.name,
        model=model.provenance,
    )


@dataclass(frozen=True)
class FrozenNorm:
    """A LayerNorm or RMSNorm with its scale frozen per prompt: ``v -> g * P(v) / s_frozen``."""

    weight: Float[Tensor, "d_model d_model"]
    """Row ``k`` is ``g * P(e_k)``: the norm's linear part before dividing by the scale."""
    bias: Float[Tensor, " d_model"]
    scale: Float[Tensor, " batch"]

    @classmethod
    def of(cls, norm: nn.Module, x: Float[Tensor, "batch d_model"]) -> FrozenNorm:
        """Freeze ``norm`` at the scale it applies to each row of ``x``."""
        eps = next((getattr(norm, a) for a in ("variance_epsilon", "eps") if getattr(norm, a, None) is not None), None)
        d = x.shape[-1]
        # forward() bypasses hooks, so an active intervention on the norm does not touch these probes.
        zero = norm.forward(x.new_zeros(1, d))[0]
        centered = bool(torch.allclose(norm.forward(x.new_ones(1, d))[0], zero))  # LayerNorm maps constants to b
        eye = torch.eye(d, dtype=x.dtype, device=x.device)

        def s(v: Tensor, eps: float) -> Tensor:
            pv = v - v.mean(-1, keepdim=True) if centered else v
            return (pv.pow(2).mean(-1) + eps).sqrt()

        if eps is not None:
            weight = (norm.forward(eye) - zero) * s(eye, float(eps))[:, None]
            return cls(weight, zero, s(x, float(eps)))
        # No eps attribute (OLMo's parameter-free LayerNorm passes a literal to F.layer_norm): measure instead. At a
        # large input C e_k eps is negligible (relative error eps / (2 C^2 mean(P(e_k)^2)), below 1e-9 here), which
        # gives g * P(e_k); then s(x) = |g * P(x)| / |norm(x) - b| for each row of x.
        big = 1e4
        weight = (norm.forward(big * eye) - zero) * s(eye, 0.0)[:, None]
        linear, normed = x @ weight, norm.forward(x) - zero  # [batch d_model] each
        if not bool(linear.norm(dim=-1).gt(0).all()):
            raise TypeError(f"final norm {type(norm).__name__} is not a LayerNorm or RMSNorm that DLA can freeze "
                            "(its linear part vanishes on the final residual)")  # fmt: skip
        return cls(weight, zero, linear.norm(dim=-1) / normed.norm(dim=-1))

    def pullback(self, direction: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch d_model"]:
        """``u`` with ``u . v = direction . (g * P(v)) / s`` for every residual vector ``v``."""
        return (direction @ self.weight.T) / self.scale[:, None]


def _answer_direction(model: Model, task: Task) -> tuple[Float[Tensor, "batch d_model"], Float[Tensor, " batch"]]:
    """``W_U[answer] - W_U[wrong]`` per prompt (means over answer sets) and the matching unembedding-bias term."""
    unembed = _module(model, "logits")
    weight = getattr(unembed, "weight", None)
    assert model.cfg is not None
    if weight is None or tuple(weight.shape) != (model.cfg.d_vocab, model.cfg.d_model):
        raise TypeError(f"unembedding {type(unembed).__name__} is not a [d_vocab d_model] linear map")
    bias = getattr(unembed, "bias", None)
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if bias is None else bias
    direction = _mean_rows(weight, task.answers) - _mean_rows(weight, task.wrongs)
    offset = _mean_rows(bias[:, None], task.answers) - _mean_rows(bias[:, None], task.wrongs)
    return direction, offset[:, 0]


def _mean_rows(table: Tensor, ids: Tensor) -> Tensor:
    """Mean of ``table``'s rows over each prompt's ids (padding ``PAD_ID`` ignored)."""
    ids = ids[:, None] if ids.ndim == 1 else ids
    real = (ids != PAD_ID).to(table.dtype)[..., None]  # [batch k 1]
    return (table[ids.clamp(min=0)] * real).sum(1) / real.sum(1)


def _module(model: Model, site: str) -> nn.Module:
    return model.module.get_submodule(model.resolve(site)[0].module)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)
