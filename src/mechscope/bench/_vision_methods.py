"""Methods scored on the vision organisms: input attributions, two trojan scanners, and baselines.

Every attribution method declared in ``mechscope.attribution.METHODS`` with the tags ``bench`` and ``cnn`` is scored
through one adapter (``attribute``: CAMs at the CNNs' last ReLU, smaller budgets in quick runs), returning the
library's ``Attribution``; declared baselines (the edge detector) are scored as baselines. Beside them: two trojan
scanners, ``insertion_probe`` and ``feature_visualisation``, and the random and oracle baselines.

Every attribution method explains the target logit (trojans) or the label's logit (signal blocks). On a trojaned
organism it gives

- maps on triggered probe images (scored by overlap with the trigger), from the model and from its clean twin;
- a score per candidate trigger: each candidate is put into the same clean images and the score is how
  concentrated the method's map is on it (mass in its region / the region's share of the image). A blend covers the
  whole image, so every candidate scores 1: region-based attribution cannot choose among blends, and says so.

Trojan scanners: ``insertion_probe`` (black box: how much each candidate raises the target's probability in clean
images; the automated form of a user trying candidates) and ``feature_visualisation`` (gradient ascent on the
input for the target logit from noise, Olah et al. 2017 "Feature Visualization"; candidates scored by
normalised cross-correlation with the synthesised images, phase-free spectra for blends: the automated stand-in for
the competition's human judges, Casper et al. 2023, section 4).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attribution import METHODS, Attribution
from ..core import Model
from ..core._registry import MethodSpec
from ..organisms._protocols import AttributionOrganism, TrojanOrganism
from ..organisms._trojan import _wrap
from ._registry import MethodSpec as BenchMethod
from ._registry import RunContext
from ._vision_scorers import AttributionOutput, TrojanOutput, as_attribution, mass_in

CAM_LAYER = "features"
"""Where CAMs look in the bench's CNNs: the last ReLU (8 x 8)."""
QUICK = {"steps": 16, "samples": 10}
"""Quick runs: these settings for every method whose config has them (Integrated Gradients' steps, SmoothGrad's
samples); full runs use the library's defaults."""


def attribute(spec: MethodSpec[Any, Attribution], model: Model, images: Tensor, target: Any,
              quick: bool) -> Attribution:  # fmt: skip
    """Run a declared attribution method as the bench does (the vision families' one adapter)."""
    fields = {f.name for f in spec.fields()}
    settings: dict[str, Any] = {k: v for k, v in QUICK.items() if quick and k in fields}
    if "cam" in spec.tags:
        settings["layer"] = CAM_LAYER
    return spec(model, images, target, config=spec.make_config(**settings))


def _sizes(ctx: RunContext) -> tuple[int, int]:
    """Probe images, and clean images per candidate."""
    return (16, 8) if ctx.quick else (48, 24)


# --- trojans -----------------------------------------------------------------------------------------------------


def _concentration(organism: TrojanOrganism, model: Model, spec: MethodSpec[Any, Attribution], k: int,
                   quick: bool) -> list[float]:  # fmt: skip
    """Per candidate: the map's mass in the candidate's region over the region's share of the image."""
    out = []
    for i in range(len(organism.candidates)):
        x, masks = organism.inserted(i, k)
        heat = attribute(spec, model, x, organism.target, quick).heatmap()
        out.append(mass_in(heat, masks) / float(masks.float().mean()))
    return out


def trojan_method(spec: MethodSpec[Any, Attribution]) -> Callable[[TrojanOrganism, RunContext], TrojanOutput]:
    """The bench method of a declared attribution method on a trojaned organism and its clean twin."""

    def method(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
        n, k = _sizes(ctx)
        triggered, _, _ = organism.probe(n)
        return TrojanOutput(
            candidates=_concentration(organism, organism.model, spec, k, ctx.quick),
            twin_candidates=_concentration(organism, organism.twin, spec, k, ctx.quick),
            maps=attribute(spec, organism.model, triggered, organism.target, ctx.quick),
            twin_maps=attribute(spec, organism.twin, triggered, organism.target, ctx.quick),
        )

    method.__doc__ = f"{spec.summary} Maps on triggered images; candidates by how much of the map they draw."
    return method


@torch.no_grad()
def _insertion(organism: TrojanOrganism, model: Model, k: int) -> list[float]:
    base = F.softmax(model.module(organism.probe(k)[2]), -1)[:, organism.target]  # the same clean images
    gains = []
    for i in range(len(organism.candidates)):
        x, _ = organism.inserted(i, k)
        gains.append(float((F.softmax(model.module(x), -1)[:, organism.target] - base).mean()))
    return gains


def insertion_probe(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
    """Baseline (an upper reference): each candidate's mean gain in the target's probability in clean images.

    It repeats the organism's build-time verification (the trigger put into clean images raises the target), so its
    pick is right by construction; the leaderboard shows it beside the methods, as it shows the oracle.
    """
    k = _sizes(ctx)[1] * 2
    return TrojanOutput(_insertion(organism, organism.model, k), _insertion(organism, organism.twin, k))


def visualise(model: Model, target: int, *, n: int, steps: int, seed: int) -> Tensor:
    """Images maximising ``target``'s log-probability from seeded noise, with L2 and total-variation penalties."""
    gen = torch.Generator().manual_seed(seed)
    x = (0.1 * torch.randn(n, 1, 32, 32, generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    module = model.module
    for _ in range(steps):
        logp = F.log_softmax(module(x), -1)[:, target]
        tv = (x.diff(dim=2).abs().mean() + x.diff(dim=3).abs().mean()) / 2
        loss = -logp.mean() + 1e-3 * x.pow(2).mean() + 0.05 * tv
        opt.zero_grad()
        loss.backward()
        opt.step()
    return x.detach()


def similarity(images: Tensor, pattern: Tensor, kind: str) -> float:
    """How much ``images`` look like a trigger, mean over images.

    The best normalised cross-correlation of the pattern (patch, natural), or the cosine of the amplitude spectra,
    which ignores phase (blend).
    """
    if kind == "blend":
        a = torch.fft.rfft2(images[:, 0] - images.mean((2, 3))[:, 0, None, None]).abs().flatten(1)
        b = torch.fft.rfft2(pattern - pattern.mean()).abs().flatten()
        return float(F.cosine_similarity(a, b[None], dim=1).mean())
    p = pattern - pattern.mean()
    p = p / p.norm().clamp_min(1e-12)
    k = p.shape[-1]
    dots = F.conv2d(images, p[None, None])  # [n 1 h-k+1 w-k+1]
    patches = F.unfold(images, k)  # [n k*k positions]
    norms = (patches - patches.mean(1, keepdim=True)).norm(dim=1).reshape(dots.shape)
    return float((dots / norms.clamp_min(1e-6)).flatten(1).max(1).values.mean())


def feature_visualisation(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
    """Synthesise inputs for the target class; candidates ranked by similarity to them."""
    steps = 60 if ctx.quick else 200

    def scores(model: Model) -> list[float]:
        x = visualise(model, organism.target, n=4, steps=steps, seed=ctx.seed)
        return [similarity(x, c.pattern, c.kind) for c in organism.candidates]

    return TrojanOutput(scores(organism.model), scores(organism.twin))


def random_trojan(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
    """Uniform random candidate scores and maps, for the model and its twin."""
    gen = torch.Generator().manual_seed(ctx.seed)
    n, m = len(organism.candidates), _sizes(ctx)[0]
    return TrojanOutput(torch.rand(n, generator=gen).tolist(), torch.rand(n, generator=gen).tolist(),
                        as_attribution(torch.rand(m, 32, 32, generator=gen), "random"),
                        as_attribution(torch.rand(m, 32, 32, generator=gen), "random"))  # fmt: skip


def oracle_trojan(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
    """Reads the ground truth: the planted trigger, its regions, and that the twin has none."""
    n = _sizes(ctx)[0]
    _, masks, _ = organism.probe(n)
    one_hot = [float(i == organism.answer) for i in range(len(organism.candidates))]
    return TrojanOutput(one_hot, [0.0] * len(one_hot), as_attribution(masks.float(), "oracle"),
                        as_attribution(torch.ones_like(masks, dtype=torch.float), "oracle"))  # fmt: skip


# --- attribution (signal blocks) ---------------------------------------------------------------------------------


def randomised(model: Model, seed: int) -> Model:
    """A copy of ``model`` with every conv and linear layer re-initialised (PyTorch's defaults, from ``seed``).

    The cascading randomisation of Adebayo et al. 2018, section 3.1, taken to its end. Norm layers are kept.
    """
    module = copy.deepcopy(model.module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.reset_parameters()
    return _wrap(module.requires_grad_(False), f"{model.name}-randomised")


def block_method(spec: MethodSpec[Any, Attribution]) -> Callable[[AttributionOrganism, RunContext], AttributionOutput]:
    """The bench method of a declared attribution method on a signal-block organism, its twin and randomised."""

    def method(organism: AttributionOrganism, ctx: RunContext) -> AttributionOutput:
        n = _sizes(ctx)[0]
        p, q = organism.probe(n), organism.twin_probe(n)
        return AttributionOutput(
            maps=attribute(spec, organism.model, p.images, p.labels, ctx.quick),
            twin_maps=attribute(spec, organism.twin, q.images, q.labels, ctx.quick),
            randomised_maps=attribute(spec, randomised(organism.model, ctx.seed), p.images, p.labels, ctx.quick),
        )

    method.__doc__ = f"{spec.summary} For the label's logit."
    return method


def attribution_methods() -> list[BenchMethod]:
    """Declared attribution methods tagged ``bench`` and ``cnn``, as bench methods on the trojan and block organisms.

    Read from the registry when called, so a method declared later is scored too (the organisms are CNNs).
    """
    out = []
    for spec in [s for s in METHODS.specs(tag="bench") if "cnn" in s.tags]:
        baseline = "baseline" in spec.tags
        for family, make in (("trojans", trojan_method), ("attribution", block_method)):
            method = make(spec)
            out.append(BenchMethod(spec.name, family, method, None, baseline, (method.__doc__ or "").strip()))
    return out


def random_attribution(organism: AttributionOrganism, ctx: RunContext) -> AttributionOutput:
    """Uniform random maps."""
    gen = torch.Generator().manual_seed(ctx.seed)
    n = _sizes(ctx)[0]
    return AttributionOutput(*(as_attribution(torch.rand(n, 32, 32, generator=gen), "random") for _ in range(3)))


def oracle_attribution(organism: AttributionOrganism, ctx: RunContext) -> AttributionOutput:
    """Reads the ground truth: the signal block of each model; uniform noise for the randomised model."""
    n = _sizes(ctx)[0]
    gen = torch.Generator().manual_seed(ctx.seed)
    return AttributionOutput(as_attribution(organism.probe(n).masks.float(), "oracle"),
                             as_attribution(organism.twin_probe(n).masks.float(), "oracle"),
                             as_attribution(torch.rand(n, 32, 32, generator=gen), "oracle"))  # fmt: skip
