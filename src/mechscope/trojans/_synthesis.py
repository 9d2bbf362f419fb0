"""Feature-synthesis trojan methods: draw what a class responds to, then measure that picture as a trigger.

The competition's tools (Casper et al. 2023, "Red Teaming Deep Neural Networks with Feature Synthesis Tools",
section 3) synthesise images for a class and let a person compare them with candidate triggers. Three are declared
here on the same footing as the trigger searches (``fn(model, images, target, config) -> ReversedTrigger``), so
:func:`mechscope.trojans.audit` runs any of them per class, ranks the classes by the MAD anomaly index of a size,
measures held-out attack success, and compares the pictures with user candidates (:mod:`._similarity`):

- ``class_visualisation``: the class logit maximised by a Fourier-parametrised image under random jitter, zoom and
  rotation (Olah et al. 2017, "Feature Visualization"; the competition's robust feature-level visualisation),
  through :func:`mechscope.visualize.visualize`. Put in as a blend at weight ``alpha``.
- ``prototype``: the same with Prototype Generation's activation-path regulariser (Tagade & Rumbelow 2023),
  fitted on the clean images the model assigns to the class.
- ``trigger_synthesis``: one small patch (a fixed share of the image side) optimised so that pasted at a random
  place on each of many clean images it sends them to the class: a small, localised, transferable adversarial
  patch (Brown et al. 2017, "Adversarial Patch"; the competition's SNAFUE and robust-patch entries search for
  such patches). Measured pasted at the image centre.

The size each ranks classes by is the class's mean cross-entropy on the clean images with the synthesised trigger
put in (lower: a stronger trigger), so a backdoored class, which a picture of its trigger reaches easily, stands
out. The model's parameters are frozen during the optimisation and its mode restored afterwards.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..core import Model
from ..core._sites import module_sites
from ..visualize import (
    Channel,
    InputRange,
    Transforms,
    VisualizeConfig,
    class_paths,
    colour_matrix,
    path_penalty,
    path_sites,
    visualize,
)
from ._cleanse import attack_success, frozen, stamp, value_range
from ._registry import METHODS, ClassVisualisationConfig, PrototypeConfig, TriggerSynthesisConfig
from ._result import ReversedTrigger


@METHODS.declare("class_visualisation", config=ClassVisualisationConfig, result=ReversedTrigger,
                 tags=("synthesis",))  # fmt: skip
def class_visualisation(model: Model | nn.Module, images: Tensor, target: int, config: ClassVisualisationConfig,
                        held_out: Tensor | None = None) -> ReversedTrigger:  # fmt: skip
    """Robust Fourier feature visualisation of the class logit (Olah et al. 2017), measured as a blended trigger."""
    return _visualised(model, images, target, config, held_out, None)


@METHODS.declare("prototype", config=PrototypeConfig, result=ReversedTrigger, tags=("synthesis",))
def prototype(model: Model | nn.Module, images: Tensor, target: int, config: PrototypeConfig,
              held_out: Tensor | None = None) -> ReversedTrigger:  # fmt: skip
    """Prototype Generation (Tagade & Rumbelow 2023): the class visualisation along the class's real path."""
    return _visualised(model, images, target, config, held_out, config.path_weight)


@METHODS.declare("trigger_synthesis", config=TriggerSynthesisConfig, result=ReversedTrigger,
                 tags=("synthesis", "patch"))  # fmt: skip
def trigger_synthesis(model: Model | nn.Module, images: Float[Tensor, "batch c h w"], target: int,
                      config: TriggerSynthesisConfig, held_out: Tensor | None = None) -> ReversedTrigger:  # fmt: skip
    """A small patch that sends clean images to ``target`` wherever it is pasted (a transferable adversarial patch)."""
    module = model.module if isinstance(model, Model) else model
    lo, hi = value_range(images)
    c, h, w = images.shape[1:]
    k = max(1, round(config.patch * min(h, w)))
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + target)
    raw = (torch.randn(c, k, k, generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=config.lr, betas=(0.5, 0.9))
    labels = torch.full((config.batch,), target, dtype=torch.long)
    start = time.perf_counter()
    with frozen(module):
        for _ in range(config.steps):
            x = images[torch.randint(len(images), (config.batch,), generator=gen)]
            loss = F.cross_entropy(module(_paste(x, _bounded(raw, lo, hi), gen)), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        optimised = time.perf_counter() - start
        patch = _bounded(raw.detach(), lo, hi)
        with torch.no_grad():
            fit = images[:256]
            size = float(F.cross_entropy(module(_paste(fit, patch, gen)), torch.full((len(fit),), target)))
        pattern, mask = torch.zeros(c, h, w), torch.zeros(h, w)
        r, s = (h - k) // 2, (w - k) // 2
        pattern[:, r : r + k, s : s + k], mask[r : r + k, s : s + k] = patch, 1.0
        start = time.perf_counter()
        rate = attack_success(module, held_out if held_out is not None else images, target, pattern, mask)
        evaluated = time.perf_counter() - start
    return ReversedTrigger(target, "patch", pattern, mask, size, True, rate, config.steps, optimised, evaluated)


def _bounded(raw: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    return lo + (hi - lo) * (torch.tanh(raw) + 1) / 2


def _paste(x: Float[Tensor, "batch c h w"], patch: Float[Tensor, "c k k"], gen: torch.Generator) -> Tensor:
    """``x`` with ``patch`` pasted at a random place in each image (drawn from ``gen``)."""
    n, _, h, w = x.shape
    k = patch.shape[-1]
    rows = torch.randint(h - k + 1, (n,), generator=gen).tolist()
    cols = torch.randint(w - k + 1, (n,), generator=gen).tolist()
    out = x.clone()
    for i, (r, s) in enumerate(zip(rows, cols, strict=True)):
        out[i, :, r : r + k, s : s + k] = patch
    return out


def _visualised(model: Model | nn.Module, images: Float[Tensor, "batch c h w"], target: int,
                config: ClassVisualisationConfig, held_out: Tensor | None,
                path_weight: float | None) -> ReversedTrigger:  # fmt: skip
    module = model.module if isinstance(model, Model) else model
    named = model if isinstance(model, Model) else Model(module, module_sites(module), name=type(module).__name__)
    c, h, w = images.shape[1:]
    vis_config = VisualizeConfig(
        steps=config.steps, lr=config.lr, n=1, decay_power=config.decay_power, progress=False,
        transforms=Transforms(config.jitter, (1 - config.zoom, 1 + config.zoom), config.rotate),
        seed=config.seed * 1_000_003 + target,
    )  # fmt: skip
    input_range = InputRange(float(images.amin()), float(images.amax()))
    start = time.perf_counter()
    with frozen(module):
        penalty, sites = None, ()
        if path_weight is not None:
            penalty, sites = _path_term(named, images, target, path_weight)
        vis = visualize(named, Channel("logits", target), (c, h, w), input_range=input_range, config=vis_config,
                        colour=colour_matrix(images, c), penalty=penalty, penalty_sites=sites)  # fmt: skip
        optimised = time.perf_counter() - start
        pattern, mask = vis.inputs[0].to(images), torch.full((1, 1), config.alpha)
        with torch.no_grad():
            fit = images[:256]
            size = float(F.cross_entropy(module(stamp(fit, pattern, mask)), torch.full((len(fit),), target)))
        start = time.perf_counter()
        rate = attack_success(module, held_out if held_out is not None else images, target, pattern, mask)
        evaluated = time.perf_counter() - start
    return ReversedTrigger(target, "blend", pattern, mask, size, True, rate, config.steps, optimised, evaluated)


def _path_term(model: Model, images: Tensor, target: int, weight: float):
    """The path regulariser towards the clean images the model assigns to ``target``."""
    with torch.no_grad():
        predicted = model.module(images).argmax(-1)
    mine = predicted == target
    if not mine.any():
        raise ValueError(f"no clean image is classified as class {target}, so prototype has no real path to follow; "
                         "give more images (a few per class), or use class_visualisation")  # fmt: skip
    sites = path_sites(model)
    # Two groups (0: the class, 1: the rest): the regulariser reads only the class's statistics, and no other class
    # needs images of its own.
    paths = class_paths(model, images, (~mine).long(), sites)
    return path_penalty(paths, 0, weight), paths.sites
