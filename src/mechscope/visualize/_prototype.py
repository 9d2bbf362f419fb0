"""Prototype Generation (Tagade & Rumbelow 2023, arXiv:2309.17144): class prototypes with natural activation paths.

Plain activation maximisation of a class logit can reach the logit through internal activations no real image
produces, which is why feature visualisations have been called untrustworthy. A prototype is optimised for the
class logit *and* for an activation path like the class's real images: at every path site, the per-channel mean and
spread over positions are pulled towards the class's real-image statistics (a relative squared error). The paper
does not publish its regulariser; this statistics-matching one follows DeepInversion's feature-distribution term
(Yin et al. 2020, section 3.2), taken per class instead of from batch-norm buffers.

The paper's measure is the similarity of the prototype's internal activations to natural images of the class.
:func:`path_similarity` is its version here: at each path site, the cosine similarity between an image's
channel vector (activations averaged over positions) and the class's mean channel vector over real images, then
averaged over sites. A real image of the class scored the same way gives the reference level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..core import Model
from ._capture import capture
from ._objectives import Channel, channel_axis
from ._optimize import Visualization, VisualizeConfig, visualize
from ._param import InputRange

_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid)


def path_sites(model: Model) -> list[str]:
    """Default path: the output of every activation-function module (one site per module, aliases skipped)."""
    seen, names = set(), []
    for s in model.resolve("*"):
        module = model.module.get_submodule(s.module) if s.module else model.module
        if isinstance(module, _ACTIVATIONS) and s.module not in seen:
            seen.add(s.module)
            names.append(s.name)
    if not names:
        raise ValueError(f"{model.name} has no activation-function modules: pass path sites explicitly")
    return names


def _pooled(act: Tensor) -> Float[Tensor, "n channel"]:
    """Channel vector per image: activations averaged over every position axis."""
    x = act.movedim(channel_axis(act), -1)
    return x.reshape(x.shape[0], -1, x.shape[-1]).mean(1)


def _spread(act: Tensor) -> Float[Tensor, "n channel"]:
    x = act.movedim(channel_axis(act), -1)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    return x.std(1, unbiased=False) if x.shape[1] > 1 else torch.zeros_like(x[:, 0])


@dataclass(frozen=True, eq=False)
class ClassPaths:
    """Per-class statistics of real images at the path sites: the target of the path regulariser and the metric."""

    sites: tuple[str, ...]
    mean: dict[str, Float[Tensor, "classes channel"]]
    """Class mean of the channel vectors (activations averaged over positions)."""
    spread: dict[str, Float[Tensor, "classes channel"]]
    """Class mean of the per-channel spread over positions."""
    n_per_class: list[int]

    def overall(self, site: str) -> Float[Tensor, " channel"]:
        """Mean channel vector over all classes (classes weighted equally): the centre for centred similarity."""
        return self.mean[site].mean(0)


@torch.no_grad()
def class_paths(model: Model, images: Tensor, labels: Int[Tensor, " n"], sites: Sequence[str],
                batch_size: int = 256) -> ClassPaths:  # fmt: skip
    """Real-image statistics per class at ``sites``."""
    n_classes = int(labels.max()) + 1
    sums: dict[str, list[Tensor]] = {s: [] for s in sites}
    spreads: dict[str, list[Tensor]] = {s: [] for s in sites}
    for chunk in images.split(batch_size):
        acts = capture(model, chunk, sites)
        for s in sites:
            sums[s].append(_pooled(acts[s]).cpu())
            spreads[s].append(_spread(acts[s]).cpu())
    counts = torch.bincount(labels.cpu(), minlength=n_classes)
    if (counts == 0).any():
        raise ValueError(f"every class needs real images; counts per class: {counts.tolist()}")
    onehot = F.one_hot(labels.cpu(), n_classes).float() / counts[None]  # [n classes], columns average a class
    mean = {s: onehot.T @ torch.cat(sums[s]) for s in sites}
    spread = {s: onehot.T @ torch.cat(spreads[s]) for s in sites}
    return ClassPaths(tuple(sites), mean, spread, counts.tolist())


MEASURES = ("cosine", "centred", "distance")
"""Path measures: cosine to the class mean (the paper's kind of similarity), the same after subtracting the
all-class mean (only the class-specific part counts), and distance to the class mean relative to its norm."""


@torch.no_grad()
def path_similarity(model: Model, inputs: Tensor, cls: int, paths: ClassPaths, *,
                    measure: str = "cosine") -> Float[Tensor, "n sites"]:  # fmt: skip
    """Each image's channel vector against class ``cls``'s real mean, per path site (see :data:`MEASURES`).

    ``cosine``: higher is closer. ``centred``: cosine after subtracting the all-class mean from both (after ReLUs
    every channel vector is non-negative, so plain cosines of unrelated images are already high).
    ``distance``: ``|a - mean| / |mean|``, lower is closer; it also sees magnitudes, which cosines ignore.
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}: choose from {MEASURES}")
    acts = capture(model, inputs, paths.sites)
    cols = []
    for s in paths.sites:
        a, target = _pooled(acts[s]).cpu(), paths.mean[s][cls]
        if measure == "distance":
            cols.append((a - target).norm(dim=-1) / target.norm().clamp_min(1e-12))
            continue
        if measure == "centred":
            a, target = a - paths.overall(s), target - paths.overall(s)
        cols.append(F.cosine_similarity(a, target[None], dim=-1))
    return torch.stack(cols, -1)


def path_penalty(paths: ClassPaths, cls: int, weight: float):
    """The path regulariser: relative squared error of channel means and spreads to class ``cls``, per site."""

    def penalty(acts: dict[str, Tensor]) -> Tensor:
        total = torch.zeros(())
        for s in paths.sites:
            mu, sd = paths.mean[s][cls].to(acts[s]), paths.spread[s][cls].to(acts[s])
            m, v = _pooled(acts[s]), _spread(acts[s])
            total = total + ((m - mu).pow(2).sum(-1) / mu.pow(2).sum()).mean()
            total = total + ((v - sd).pow(2).sum(-1) / sd.pow(2).sum().clamp_min(1e-12)).mean()
        return weight * total / len(paths.sites)

    return penalty


@dataclass(frozen=True)
class PrototypeConfig(VisualizeConfig):
    """How a class prototype is optimised: a feature visualisation of the class logit, plus the path term."""

    path_weight: float = 10.0
    """Weight of the activation-path regulariser (0: plain activation maximisation)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.path_weight < 0:
            raise ValueError(f"path_weight must be >= 0, got {self.path_weight}")


KINDS = ("prototype", "activation_max", "real", "other_classes")
"""Images scored on the path: prototypes, plain activation maximisation, held-out real images of the class (the
level a natural path reaches) and of the other classes against this class's mean (the level of a wrong-class
path)."""


@dataclass(frozen=True, eq=False)
class PrototypeResult:
    """A class prototype against plain activation maximisation of the same logit, scored on the activation path."""

    cls: int
    prototype: Visualization
    activation_max: Visualization
    sites: tuple[str, ...]
    """Sites the similarities are measured on."""
    scores: dict[str, dict[str, Float[Tensor, "n sites"]]]
    """``scores[measure][kind]``: path measure per image and site, for each of :data:`MEASURES` and :data:`KINDS`."""
    prob: dict[str, Float[Tensor, " n"]]
    """Softmax probability of ``cls`` on the prototypes and on the activation-maximisation images."""
    path_weight: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Mean of each path measure (over images and sites) per kind, and the class probabilities.

        Keys: ``prototype``, ``activation_max``, ``real``, ``other_classes`` (cosine), the same with ``_centred``
        and ``_distance`` appended, and ``prototype_prob``, ``activation_max_prob``.
        """
        out: dict[str, float] = {}
        for measure, by_kind in self.scores.items():
            suffix = "" if measure == "cosine" else f"_{measure}"
            out |= {f"{k}{suffix}": float(v.mean()) for k, v in by_kind.items()}
        return out | {f"{k}_prob": float(v.mean()) for k, v in self.prob.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary, per-site similarities included."""

        def per_site(t: Tensor) -> dict[str, float]:
            return {s: round(float(v), 6) for s, v in zip(self.sites, t.mean(0).tolist(), strict=True)}

        return {"class": self.cls, "path_weight": self.path_weight, **self.summary(),
                "per_site": {m: {k: per_site(v) for k, v in by_kind.items()} for m, by_kind in self.scores.items()},
                "prototype_run": self.prototype.to_dict(), "activation_max_run": self.activation_max.to_dict(),
                **self.extra}  # fmt: skip


def prototype(
    model: Model,
    cls: int,
    paths: ClassPaths,
    *,
    held_out: tuple[Tensor, Tensor],
    shape: tuple[int, int, int],
    input_range: InputRange,
    config: VisualizeConfig | None = None,
    path_weight: float = PrototypeConfig.path_weight,
    logit_site: str = "logits",
    score: ClassPaths | None = None,
) -> PrototypeResult:
    """Prototype of class ``cls`` and plain activation maximisation of its logit, both scored on the path.

    ``paths`` (fitted on real images) drives the regulariser; ``held_out = (images, labels)`` are other real images,
    scored the same way for the reference level (so the reference is not fitted on the images it scores).
    ``score`` sets the sites the similarity is measured on (default: ``paths``); scoring sites that the
    regulariser does not see checks that the path is natural beyond what was optimised.
    """
    score, config = paths if score is None else score, config or VisualizeConfig()
    unit = Channel(logit_site, cls)
    proto = visualize(model, unit, shape, input_range=input_range, config=config,
                      penalty=path_penalty(paths, cls, path_weight), penalty_sites=paths.sites)  # fmt: skip
    plain = visualize(model, unit, shape, input_range=input_range, config=config)
    images, labels = held_out
    if not (labels == cls).any():
        raise ValueError(f"held_out has no image of class {cls}")
    batches = dict(zip(KINDS, (proto.inputs, plain.inputs, images[labels == cls], images[labels != cls]),
                       strict=True))  # fmt: skip
    return PrototypeResult(
        cls, proto, plain, score.sites,
        {m: {k: path_similarity(model, x, cls, score, measure=m) for k, x in batches.items()} for m in MEASURES},
        {k: _prob(model, batches[k], cls, logit_site) for k in KINDS[:2]},
        path_weight, {"config": dataclasses.asdict(config), "regularised_sites": list(paths.sites)},
    )  # fmt: skip


@torch.no_grad()
def _prob(model: Model, x: Tensor, cls: int, logit_site: str) -> Tensor:
    return capture(model, x, [logit_site])[logit_site].softmax(-1)[:, cls].cpu()
