"""LRP for transformer language models: gradient x input through a network whose non-linear parts are frozen.

Layer-wise relevance propagation can be computed as gradient x input once every operation that is not linear in its
input is replaced, for the backward pass only, by the linear map with the same value at this point (Achtibat et
al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers", sections 3.2-3.3; Ali et
al. 2022, "XAI for Transformers: Better Explanations through Conservative Propagation"). The rules used here:

- **normalisation** (identity rule): LayerNorm/RMSNorm's denominator is a constant; LayerNorm's mean subtraction
  stays (it is linear).
- **attention** (conservative propagation, CP-LRP): the attention probabilities are constants, so relevance flows
  through the values only, none through queries and keys. AttnLRP's own softmax rule, which also gives relevance to
  the scores, is not implemented.
- **element-wise activations** (identity rule): ``act(x)`` is ``x * (act(x) / x)`` with the ratio constant.
- **gated MLPs** (uniform rule for the product ``act(gate) * up``): each factor receives half the relevance.

With these rules and no biases (Llama, Qwen, Mistral, Gemma, SmolLM2), relevance is conserved: the relevance of the
token embeddings sums to the target logit (``completeness_gap`` is that difference; biases, where a model has them,
absorb their share and make the gap non-zero). Outputs equal the plain model's up to rounding (the rules change the
backward pass only). Attention runs eagerly for the pass, as attention patterns need.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..core._hookset import eager_attention
from ..core._model import Model
from ._result import Attribution
from ._space import space


def attn_lrp(model: Model, inputs: Any, target: Any, *, at: str | None = None) -> Attribution:
    """Relevance of the attributed tensor (default ``embed``) for ``target`` under the rules above."""
    start = time.perf_counter()
    sp = space(model, inputs, target, at)
    with lrp_rules(model):
        leaf = sp.leaf().requires_grad_(True)
        out = sp(leaf)
        (grad,) = torch.autograd.grad(out.sum(), leaf)
    relevance = (grad * leaf).detach()
    value = out.detach()
    gap = relevance.reshape(sp.n, -1).sum(-1) - value
    return Attribution(map=relevance, method="attn_lrp", target=repr(sp.target), at=sp.at, completeness_gap=gap,
                       output_change=value, params={"rules": "identity norms, CP attention, identity activations, "
                                                    "uniform gated product"},
                       seconds=time.perf_counter() - start, model=model.provenance)  # fmt: skip


@contextmanager
def lrp_rules(model: Model) -> Iterator[None]:
    """Inside the block, the model's backward pass is the LRP rules' (its forward values stay the same)."""
    if model.cfg is None:
        raise TypeError(f"{model.name} is not a transformer language model: AttnLRP's rules need one")
    family = _family_of(model)
    root = model.module
    handles: list[Any] = []
    try:
        for path in _norm_paths(model, family):
            handles.append(root.get_submodule(path).register_forward_hook(_norm_rule(path)))
        if family.mlp_down is None:
            raise TypeError(f"{model.name}: AttnLRP has no rule for mixture-of-experts MLPs (no per-expert modules)")
        for layer in range(model.cfg.n_layers):
            mlp_path = f"{family.layers}.{layer}.{family.mlp_down}".rsplit(".", 1)[0]
            mlp = root.get_submodule(mlp_path)
            for child in mlp.modules():
                if child is not mlp and _is_activation(child):
                    handles.append(child.register_forward_hook(_identity_rule))
            if any("gate" in name for name, _ in mlp.named_children()):
                down = root.get_submodule(f"{family.layers}.{layer}.{family.mlp_down}")
                handles.append(down.register_forward_pre_hook(_half_product))
        with eager_attention(root, True), _constant_softmax():
            yield
    finally:
        for h in handles:
            h.remove()


def _family_of(model: Model) -> Any:
    from ..core._families import family_of

    return family_of(model.module.config)


def _norm_paths(model: Model, family: Any) -> list[str]:
    assert model.cfg is not None
    paths = [f"{family.layers}.{i}.{n}" for i in range(model.cfg.n_layers) for n in (family.ln1, family.ln2) if n]
    return [*paths, *([family.final_norm] if family.final_norm else [])]


def _norm_rule(path: str) -> Any:
    def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        x = args[0]
        if isinstance(module, nn.LayerNorm):
            centred = x - x.mean(-1, keepdim=True)
            scale = (out - (module.bias if module.bias is not None else 0)) / torch.where(centred == 0, 1, centred)
            return centred * scale.detach() + (module.bias if module.bias is not None else 0)
        if "rms" in type(module).__name__.lower():
            return x * (out / torch.where(x == 0, 1, x)).detach()
        raise TypeError(
            f"AttnLRP has no rule for the norm {path} ({type(module).__name__}): it knows nn.LayerNorm and RMSNorm"
        )

    return hook


def _is_activation(module: nn.Module) -> bool:
    """An element-wise activation module: no parameters, no children, not dropout or a projection."""
    return (
        not list(module.parameters(recurse=False))
        and not list(module.children())
        and not isinstance(module, nn.Dropout | nn.Identity)
    )


def _identity_rule(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
    x = args[0]
    return x * (out / torch.where(x == 0, 1, x)).detach()


def _half_product(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    # The down projection reads act(gate) * up, a product of two functions of the input: half the gradient
    # through it gives each factor half the relevance (uniform rule), instead of counting the product twice.
    h = args[0]
    return (0.5 * h + 0.5 * h.detach(), *args[1:])


@contextmanager
def _constant_softmax() -> Iterator[None]:
    """Attention probabilities as constants: every eager attention calls ``torch.nn.functional.softmax``."""
    original = torch.nn.functional.softmax

    def constant(*args: Any, **kwargs: Any) -> Tensor:
        return original(*args, **kwargs).detach()

    torch.nn.functional.softmax = constant  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.nn.functional.softmax = original
