"""How far an attribution map can be trusted: perturbation curves, the randomisation sanity check, localisation.

- Deletion and insertion (Petsiuk, Das & Saenko 2018, "RISE", section 4.1): remove the most important pixels
  first (set them to ``baseline``) and watch the target fall, or insert them first into a blurred canvas and watch it
  rise; the area under each curve (lower deletion, higher insertion is better), beside the same curves for a random
  ordering (chance).
- Cascading model randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", section 3.1): re-initialise
  the weight layers from the output down, one more per stage, and compare each map with the original by Spearman
  rank correlation (of absolute values and of signed values) and SSIM. A method that explains the model must lose
  the resemblance; an edge detector (:func:`edge_detector`) never does.
- IG completeness (Sundararajan et al. 2017, proposition 1): carried by every IG :class:`Attribution`.
- Localisation against a known mask: the share of attribution mass inside the mask, and the precision of the top-k
  locations (k = mask size), with the mask's area as the chance level.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from .. import _numerics
from ..core._model import Model, RunResult
from ._result import Attribution
from ._space import space
from ._targets import Logit

Method = Callable[[Model, Any, Any], Attribution]


# --- deletion and insertion ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PerturbationCurves:
    """Deletion and insertion curves for a batch, for the map and for a random ordering (chance)."""

    fractions: Float[Tensor, " steps"]
    """Fraction of pixels deleted (or inserted) at each point."""
    deletion: Float[Tensor, "batch steps"]
    insertion: Float[Tensor, "batch steps"]
    deletion_chance: Float[Tensor, "batch steps"]
    insertion_chance: Float[Tensor, "batch steps"]
    score: str
    """What the curves measure: ``probability`` (softmax of a class logit, as the paper) or ``target``."""

    def auc(self) -> dict[str, float]:
        """Mean area under each curve (trapezoid over the fraction axis)."""
        return {name: float(torch.trapezoid(getattr(self, name), self.fractions).mean())
                for name in ("deletion", "insertion", "deletion_chance", "insertion_chance")}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "fractions": self.fractions.tolist(), "auc": self.auc(),
                "deletion": self.deletion.mean(0).tolist(), "insertion": self.insertion.mean(0).tolist()}  # fmt: skip


def deletion_insertion(
    model: Model,
    inputs: Tensor,
    target: Any,
    attribution: Attribution | Tensor,
    *,
    steps: int = 16,
    baseline: float = 0.0,
    probability: bool = True,
    seed: int = 0,
) -> PerturbationCurves:
    """Deletion and insertion curves of an image attribution (``[batch (c) h w]`` maps at the input's size).

    ``probability``: score a :class:`Logit` target by its softmax probability, as RISE does; other targets are
    scored by their own value. The insertion canvas is the input blurred (Gaussian, sigma = width / 8).
    """
    sp = space(model, inputs, target, "input")
    if sp.x.ndim != 4:
        raise ValueError(f"deletion/insertion perturb image pixels; inputs have shape {list(sp.x.shape)}")
    heat = _heat(attribution)
    if heat.shape != (sp.n, *sp.x.shape[-2:]):
        raise ValueError(f"map {list(heat.shape)} does not cover the inputs' pixels {list(sp.x.shape[-2:])}")
    use_prob = probability and isinstance(sp.target, Logit)
    score = _Probability(sp.target) if isinstance(sp.target, Logit) and use_prob else sp.target
    scored = space(model, inputs, score, "input")
    gen = torch.Generator().manual_seed(seed)
    chance = torch.rand(heat.shape, generator=gen).to(heat)
    canvas_del, canvas_ins = torch.full_like(sp.x, baseline), _blur(sp.x)
    curves = [_curve(scored, sp.x, canvas, order, steps, insert)
              for order in (heat, chance) for canvas, insert in ((canvas_del, False), (canvas_ins, True))]  # fmt: skip
    fractions = torch.linspace(0, 1, steps + 1)
    return PerturbationCurves(fractions, curves[0], curves[1], curves[2], curves[3],
                              "probability" if use_prob else "target")  # fmt: skip


def _curve(sp: Any, x: Tensor, canvas: Tensor, heat: Tensor, steps: int, insert: bool) -> Tensor:
    """Scores ``[batch steps+1]`` as the top-ranked pixels move from ``x`` to ``canvas`` (or back, inserting)."""
    b, hw = heat.shape[0], heat[0].numel()
    rank = heat.reshape(b, -1).argsort(-1, descending=True).argsort(-1)  # 0 = most important pixel
    counts = torch.linspace(0, hw, steps + 1).round().long()
    moved = rank[None] < counts[:, None, None]  # [steps+1 b hw]
    moved = moved.reshape(steps + 1, b, 1, *x.shape[-2:])
    start, end = (canvas, x) if insert else (x, canvas)
    z = torch.where(moved, end[None], start[None]).reshape((steps + 1) * b, *x.shape[1:])
    with torch.no_grad():
        out = torch.cat([sp(part) for part in z.split(sp.chunk_rows(None))])
    return out.reshape(steps + 1, b).T


@dataclass(frozen=True, eq=False)
class _Probability:
    logit: Logit
    sites: tuple[str, ...] = ()

    def __call__(self, result: RunResult) -> Tensor:
        logits = result.logits
        assert logits is not None
        probs = RunResult(logits.softmax(-1), result.cache, result.grads, result.tokens, result.attention_mask)
        return self.logit(probs)

    def __repr__(self) -> str:
        return f"softmax {self.logit!r}"


def _blur(x: Tensor) -> Tensor:
    sigma = x.shape[-1] / 8
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                   groups=c)  # fmt: skip
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                    groups=c)  # fmt: skip


def _heat(attribution: Attribution | Tensor) -> Tensor:
    """``[batch h w]`` from an Attribution or a map (channels summed)."""
    if isinstance(attribution, Attribution):
        return attribution.heatmap().detach()
    return attribution.sum(1) if attribution.ndim == 4 else attribution


# --- model randomisation ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RandomisationCheck:
    """Similarity of a method's maps to the original maps as weight layers are re-initialised from the top."""

    method: str
    stages: tuple[str, ...]
    """Cumulatively randomised layers: stage ``i`` re-initialises ``stages[: i + 1]`` (output side first)."""
    spearman_abs: Float[Tensor, "stages batch"]
    """Spearman rank correlation of ``|map|`` with the original (Adebayo et al.'s main measure)."""
    spearman: Float[Tensor, "stages batch"]
    """Spearman rank correlation of the signed maps."""
    ssim: Float[Tensor, "stages batch"]
    """SSIM of the min-max normalised ``|map|`` heatmaps (7 x 7 windows)."""

    def final(self) -> dict[str, float]:
        """Mean similarity after every layer is randomised."""
        return {"spearman_abs": float(self.spearman_abs[-1].mean()), "spearman": float(self.spearman[-1].mean()),
                "ssim": float(self.ssim[-1].mean())}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "stages": list(self.stages), "final": self.final(),
                "spearman_abs": self.spearman_abs.mean(1).tolist(), "spearman": self.spearman.mean(1).tolist(),
                "ssim": self.ssim.mean(1).tolist()}  # fmt: skip


def randomisation_check(model: Model, inputs: Any, target: Any, method: Method, *, seed: int = 0,
                        layers: list[str] | None = None) -> RandomisationCheck:  # fmt: skip
    """Cascading randomisation of ``model``'s weight layers (a copy; the model is untouched).

    ``method(model, inputs, target)`` returns an :class:`Attribution`, e.g. ``functools.partial(saliency)``.
    ``layers`` defaults to every module with a weight matrix or kernel (conv, linear, embedding), output side
    first; norm layers keep their weights.
    """
    original = method(model, inputs, target)
    ref = _heat(original)
    stages = layers if layers is not None else _weight_layers(model.module)[::-1]
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list[Tensor]] = {"spearman_abs": [], "spearman": [], "ssim": []}
    for name in stages:
        _reinit(twin.module.get_submodule(name), gen)
        heat = _heat(method(twin, inputs, target))
        rows["spearman_abs"].append(spearman(heat.abs(), ref.abs()))
        rows["spearman"].append(spearman(heat, ref))
        rows["ssim"].append(ssim(heat.abs(), ref.abs()))
    stacked = {k: torch.stack(v) for k, v in rows.items()}
    return RandomisationCheck(original.method, tuple(stages), **stacked)


def _weight_layers(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules()
            if isinstance(getattr(m, "weight", None), Tensor) and m.weight.ndim >= 2]  # fmt: skip


@torch.no_grad()
def _reinit(module: nn.Module, gen: torch.Generator) -> None:
    """Fresh Kaiming-uniform weights (PyTorch's conv/linear default) and zero biases, from ``gen``."""
    w = module.weight
    assert isinstance(w, Tensor)
    fan_in = w[0].numel()
    bound = fan_in**-0.5  # PyTorch's kaiming_uniform_(a=sqrt(5)) bound
    w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1).to(w) * bound)
    bias = getattr(module, "bias", None)
    if isinstance(bias, Tensor):
        bias.zero_()


def edge_detector(model: Model, inputs: Any, target: Any = None) -> Attribution:
    """Sobel gradient magnitude of the input image: a map that ignores the model (the sanity-check baseline)."""
    start = time.perf_counter()
    x = model.encode(inputs).tokens
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"the edge detector needs images [batch c h w], got {list(x.shape)}")
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.T])[:, None].repeat(x.shape[1], 1, 1, 1)  # [2c 1 3 3]
    grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=x.shape[1])
    magnitude = grad.unflatten(1, (x.shape[1], 2)).pow(2).sum(2).sqrt()  # [b c h w]
    return Attribution(magnitude, "edge_detector", "none", "input", seconds=time.perf_counter() - start)


# --- similarity measures ---------------------------------------------------------------------------------------


def spearman(a: Tensor, b: Tensor) -> Float[Tensor, " batch"]:
    """Spearman rank correlation per example (ties share their mean rank; 0 where a map is constant)."""
    return _numerics.spearman(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)).nan_to_num(0.0)


def ssim(a: Tensor, b: Tensor, window: int = 7) -> Float[Tensor, " batch"]:
    """Mean structural similarity (Wang et al. 2004) of ``[batch h w]`` maps, each min-max scaled to [0, 1]."""
    a, b = _unit(a)[:, None], _unit(b)[:, None]
    pool = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    mu_a, mu_b = pool(a), pool(b)
    var_a, var_b = pool(a * a) - mu_a**2, pool(b * b) - mu_b**2
    cov = pool(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean((1, 2, 3))


def _unit(t: Tensor) -> Tensor:
    flat = t.reshape(t.shape[0], -1).double()
    lo, hi = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(t.shape)


# --- localisation and completeness -----------------------------------------------------------------------------


def localisation(attribution: Attribution | Tensor, mask: Bool[Tensor, "batch h w"], *,
                 positive: bool = False) -> dict[str, float]:  # fmt: skip
    """Share of attribution mass in ``mask``, top-k precision (k = mask size), and the chance level of both.

    Mass is of ``|map|`` (``positive``: of the positive part only).
    """
    heat = _heat(attribution)
    heat = heat.clamp_min(0) if positive else heat.abs()
    flat, m = heat.reshape(heat.shape[0], -1), mask.reshape(mask.shape[0], -1).to(heat.device)
    mass = (flat * m).sum(-1) / flat.sum(-1).clamp_min(1e-12)
    k = m.sum(-1)
    top = flat.argsort(-1, descending=True).argsort(-1) < k[:, None]
    precision = (top & m).sum(-1) / k.clamp_min(1)
    return {"mass_in_mask": float(mass.mean()), "top_k_precision": float(precision.float().mean()),
            "chance": float(m.float().mean())}  # fmt: skip


def completeness(attribution: Attribution) -> dict[str, float]:
    """IG's completeness: mean and max absolute gap, and the mean gap over the mean ``|f(x) - f(baseline)|``.

    The ratio of means (not a mean of ratios) keeps an example whose output barely changes from dominating.
    """
    gap, change = attribution.completeness_gap, attribution.output_change
    if gap is None or change is None:
        raise ValueError(f"{attribution.method} has no completeness property (only Integrated Gradients)")
    gap = gap.abs()
    return {"mean_abs_gap": float(gap.mean()), "max_abs_gap": float(gap.max()),
            "relative_gap": float(gap.mean() / change.abs().mean().clamp_min(1e-12))}  # fmt: skip


def evaluate(model: Model, inputs: Tensor, target: Any, attribution: Attribution, *,
             mask: Tensor | None = None, steps: int = 16) -> Attribution:  # fmt: skip
    """``attribution`` carrying its quality metrics.

    Deletion/insertion AUC with their chance levels, localisation against ``mask`` when given, and IG's
    completeness when the method has one.
    """
    auc = deletion_insertion(model, inputs, target, attribution, steps=steps).auc()
    metrics: dict[str, Any] = {f"{k}_auc": v for k, v in auc.items()}
    if mask is not None:
        metrics["localisation"] = localisation(attribution, mask)
    if attribution.completeness_gap is not None:
        metrics["completeness"] = completeness(attribution)
    return attribution.with_metrics(**metrics)
