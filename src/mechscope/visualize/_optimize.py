"""Activation maximisation (Erhan et al. 2009; Olah et al. 2017): optimise an image so that a unit fires.

Each step draws the images from their parametrisation, maps them to the model's input range, applies random
transforms, runs the model to the objective's sites and takes an Adam step on ``-objective`` plus, when asked,
a diversity penalty: the mean pairwise cosine similarity of the images' Gram matrices at a site (Olah et al. 2017,
section "Diversity"; the same aim as Nguyen, Yosinski & Clune 2016, "Multifaceted Feature Visualization").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core import Model
from ._capture import capture
from ._objectives import Objective, as_objective, channel_axis, check_finite
from ._param import InputRange, colour_matrix, make_param
from ._transforms import Transforms


@dataclass(frozen=True)
class VisualizeConfig:
    """How a feature visualisation is optimised."""

    param: Literal["fourier", "pixel"] = "fourier"
    """Image parametrisation: decorrelated Fourier space (Olah et al. 2017) or raw pixels."""
    steps: int = 256
    """Adam steps."""
    lr: float = 0.05
    """Adam learning rate (on the parametrisation's parameters)."""
    n: int = 1
    """Images optimised together (several facets when ``diversity > 0``)."""
    diversity: float = 0.0
    """Weight of the Gram-matrix diversity penalty. Each image's objective is divided by its current size, so a
    weight means the same for every unit; 1 gives distinct facets for about half of a CNN's channels, and higher
    weights start trading a facet's activation away (docs/visualize.md)."""
    diversity_site: str | None = None
    """Site whose Gram matrices are compared (default: the objective's first site)."""
    transforms: Transforms = field(default_factory=Transforms)
    """Random jitter, scale and rotation per step (``Transforms(0, (1, 1), 0)`` turns them off)."""
    decay_power: float = 1.0
    """Fourier spectrum scaling ``1 / f ** decay_power``."""
    seed: int = 0
    """Seeds the initial image and every random transform."""
    progress: bool = True
    """Show a progress bar (tqdm, on stderr)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.n < 1 or self.lr <= 0 or self.diversity < 0:
            raise ValueError(f"need steps >= 1, n >= 1, lr > 0 and diversity >= 0: {self}")
        if self.param not in ("fourier", "pixel"):
            raise ValueError(f"unknown parametrisation {self.param!r}: choose 'fourier' or 'pixel'")


@dataclass(frozen=True, eq=False)
class Visualization:
    """Images optimised for one objective, with the objective's value on each (untransformed) image."""

    unit: str
    images: Float[Tensor, "n c h w"]
    """The images in ``[0, 1]`` (what the PNGs show)."""
    inputs: Float[Tensor, "n c h w"]
    """The same images on the model's input scale."""
    values: Float[Tensor, " n"]
    """Objective per image, without transforms."""
    history: list[float]
    """Mean objective every step (with the step's transforms)."""
    similarity: float
    """Mean pairwise Gram-matrix cosine similarity of the images at the diversity site (nan for one image)."""
    config: VisualizeConfig
    input_range: InputRange
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no image data)."""
        cfg = dataclasses.asdict(self.config)
        return {"unit": self.unit, "values": [round(v, 6) for v in self.values.tolist()],
                "similarity": self.similarity, "first_value": self.history[0], "last_value": self.history[-1],
                "input_range": dataclasses.asdict(self.input_range), "seconds": round(self.seconds, 3),
                "config": cfg}  # fmt: skip


Penalty = Callable[[dict[str, Tensor]], Tensor]
"""Extra loss from captured activations (a scalar); prototype generation passes its path regulariser here."""


def visualize(
    model: Model,
    unit: str | Objective | Sequence[str],
    shape: tuple[int, int, int],
    *,
    input_range: InputRange | None = None,
    config: VisualizeConfig | None = None,
    colour: Tensor | None = None,
    penalty: Penalty | None = None,
    penalty_sites: Sequence[str] = (),
) -> Visualization:
    """Optimise ``config.n`` images of ``shape = (c, h, w)`` to maximise ``unit`` (``"conv3:5"`` or an Objective).

    ``colour`` is the colour-decorrelation matrix (default: :func:`colour_matrix` of nothing, i.e. ImageNet's for
    RGB and the identity for grey); ``input_range`` defaults to ``[0, 1]`` and ``config`` to ``VisualizeConfig()``.
    """
    input_range, config = input_range or InputRange(), config or VisualizeConfig()
    objective = as_objective(unit)
    start = time.perf_counter()
    div_site = config.diversity_site or objective.sites[0]
    sites = list(dict.fromkeys([*objective.sites, *penalty_sites, div_site]))
    colour = colour_matrix(None, shape[0]) if colour is None else colour
    param = make_param(config.param, config.n, shape, colour=colour, decay_power=config.decay_power,
                       seed=config.seed).to(model.device)  # fmt: skip
    opt = torch.optim.Adam(param.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed + 1)
    scale = _validate(model, objective, sites, input_range.to_input(param().detach()))
    history: list[float] = []
    bar = tqdm(range(config.steps), desc=f"visualize {objective}", disable=not config.progress, leave=False)
    for _ in bar:
        history.append(_step(model, objective, param, opt, gen, sites, input_range, config, div_site, penalty, scale))
        bar.set_postfix(objective=f"{history[-1]:.3g}", refresh=False)
    with torch.no_grad():
        images = param().detach()
        inputs = input_range.to_input(images)
        acts = capture(model, inputs, sites)
        values = objective(acts)
        sim = float(_offdiag(gram_cosine(acts[div_site])))
    check_finite(values, objective)
    return Visualization(str(objective), images.cpu(), inputs.cpu(), values.cpu(), history, sim, config, input_range,
                         time.perf_counter() - start)  # fmt: skip


def _step(model: Model, objective: Objective, param: Any, opt: torch.optim.Optimizer, gen: torch.Generator,
          sites: list[str], input_range: InputRange, config: VisualizeConfig, div_site: str,
          penalty: Penalty | None, scale: float) -> float:  # fmt: skip
    x = config.transforms(input_range.to_input(param()), gen)
    acts = capture(model, x, sites)
    value = objective(acts)
    # Each image's objective in units of its current size (never below the objective's size on the initial
    # images): a step raises every image's value by about the same fraction, whatever the unit's scale, so a
    # diversity weight or a penalty means the same for every unit.
    loss = -(value / value.detach().abs().clamp(min=scale)).mean()
    if config.diversity and config.n > 1:
        loss = loss + config.diversity * _offdiag(gram_cosine(acts[div_site]))
    if penalty is not None:
        loss = loss + penalty(acts)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(value.detach().mean())


def _validate(model: Model, objective: Objective, sites: list[str], x: Tensor) -> float:
    """Check the units exist; return the objective's size on the initial images (the loss's unit)."""
    with torch.no_grad():
        acts = capture(model, x, sites)
        objective.check(acts)
        value = objective(acts)
    check_finite(value, objective)
    return max(float(value.abs().mean()), 1e-3)


def gram_cosine(act: Tensor) -> Float[Tensor, "n n"]:
    """Pairwise cosine similarity of per-image Gram matrices (channel x channel, averaged over positions)."""
    x = act.movedim(channel_axis(act), -1)
    x = x.reshape(x.shape[0], -1, x.shape[-1])  # [n positions channel]
    gram = torch.einsum("npc,npd->ncd", x, x) / x.shape[1]
    g = F.normalize(gram.flatten(1), dim=-1)
    return g @ g.T


def _offdiag(sim: Tensor) -> Tensor:
    n = sim.shape[0]
    if n < 2:
        return torch.tensor(float("nan"))
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))
