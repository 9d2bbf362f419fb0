"""Methods scored on the vision organisms: input attributions, trojan audits and scanners, and baselines.

Every attribution method declared in ``mechscope.attribution.METHODS`` with the tags ``bench`` and ``cnn`` is scored
through one adapter (``attribute``: CAMs at the CNNs' last ReLU, smaller budgets in quick runs), returning the
library's ``Attribution``; declared baselines (the edge detector) are scored as baselines. Every trojan method
declared in ``mechscope.trojans.METHODS`` (trigger searches and feature synthesis) is scored through one adapter
too (``audit_method``: ``trojans.audit`` on the trojaned model and its clean twin). Beside them: two trojan
scanners, ``insertion_probe`` and ``feature_visualisation``, and the random and oracle baselines.

Every attribution method explains the target logit (trojans) or the label's logit (signal blocks). On a trojaned
organism it gives

- maps on triggered probe images (scored by overlap with the trigger), from the model and from its clean twin;
- a score per candidate trigger: each candidate is put into the same clean images and the score is how
  concentrated the method's map is on it (mass in its region / the region's share of the image). A blend covers the
  whole image, so every candidate scores 1: region-based attribution cannot choose among blends, and says so.

Candidates reach the audits and ``feature_visualisation`` as pictures only (``Trigger.image()``), scored by one
similarity that does not know their kind, channels or size (:func:`mechscope.trojans.similarity`: the best
normalised cross-correlation over placements and scales): the automated stand-in for the competition's human
judges (Casper et al. 2023, section 4). ``insertion_probe`` (black box: how much each candidate raises the target's
probability in clean images) is the upper reference; ``feature_visualisation`` is gradient ascent on the input
pixels for the target logit from noise (Olah et al. 2017), for any input shape.
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
from ..trojans import METHODS as TROJAN_METHODS
from ..trojans import anomaly_index, audit, rank_candidates
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


THRESHOLD = 2.0
"""Anomaly index above which the audit calls a class a suspect (Wang et al. 2019)."""


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


def visualise(model: Model, target: int, shape: tuple[int, ...], *, n: int, steps: int, seed: int) -> Tensor:
    """Images of ``shape = (c, h, w)`` maximising ``target``'s log-probability from seeded noise (L2, TV penalties)."""
    gen = torch.Generator().manual_seed(seed)
    x = (0.1 * torch.randn(n, *shape, generator=gen)).requires_grad_(True)
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


def pictures(organism: TrojanOrganism) -> list[Tensor]:
    """The candidates as the pictures a user would hand over (their kind is not passed on)."""
    return [c.image() for c in organism.candidates]


def feature_visualisation(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
    """Synthesise inputs for the target class; candidates ranked by similarity to them (one kind-agnostic measure)."""
    steps = 60 if ctx.quick else 200
    shape = tuple(organism.probe(1)[2].shape[1:])
    candidates = pictures(organism)

    def scores(model: Model) -> list[float]:
        return rank_candidates(visualise(model, organism.target, shape, n=4, steps=steps, seed=ctx.seed), candidates)

    return TrojanOutput(scores(organism.model), scores(organism.twin))


AUDIT = {True: {"steps": 5, "images": 40}, False: {"steps": 60, "images": 128}}
"""Per-class optimisation steps and clean images of the bench's audits (quick, full). Any other key (``restarts``)
goes to the methods whose config has that field."""


def audit_method(spec: MethodSpec[Any, Any]) -> Callable[[TrojanOrganism, RunContext], TrojanOutput]:
    """The bench method of a declared trojan method: ``trojans.audit`` on the trojaned model and on its clean twin.

    Nothing of the truth goes in: the audit sees held-out clean images (every class) and the candidate pictures.
    Out come the class ranking, the twin's suspects, the target class's trigger mask (patch forms) and each
    candidate's similarity to the target class's trigger picture (the 8-way pick, asked for a named target class as
    the competition asks it).
    """

    def method(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
        budget = AUDIT[ctx.quick]
        images = organism.clean(budget["images"])
        settings: dict[str, Any] = {"steps": budget["steps"], "seed": ctx.seed % 2**31}
        fields = {f.name for f in spec.fields()}
        settings |= {k: v for k, v in budget.items() if k not in ("steps", "images") and k in fields}  # restarts
        candidates = pictures(organism)
        mine = audit(organism.model, images, method=spec.name, candidates=candidates, progress=False, **settings)
        twin = audit(organism.twin, images, method=spec.name, candidates=candidates, progress=False, **settings)
        target = mine.triggers[organism.target]
        assert mine.candidate_scores is not None and twin.candidate_scores is not None
        return TrojanOutput(
            candidates=list(mine.candidate_scores[organism.target]),
            twin_candidates=list(twin.candidate_scores[organism.target]),
            ranking=mine.ranking, n_classes=len(mine.triggers), twin_suspects=len(twin.suspects),
            trigger_mask=target.mask if target.mask.numel() > 1 else None,
        )  # fmt: skip

    method.__doc__ = f"trojans.audit with {spec.name}: {spec.summary}"
    return method


def audit_methods() -> list[BenchMethod]:
    """Every declared trojan method (``trojans.METHODS``) as a bench method, read from the registry when called."""
    out = []
    for spec in TROJAN_METHODS.specs():
        method = audit_method(spec)
        out.append(BenchMethod(spec.name, "trojans", method, None, False, (method.__doc__ or "").strip()))
    return out


def random_trojan(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
    """Uniform random candidate scores, maps, class ranking, trigger mask, and trigger sizes for the twin's alarm."""
    gen = torch.Generator().manual_seed(ctx.seed)
    n, m = len(organism.candidates), _sizes(ctx)[0]
    _, masks, clean = organism.probe(m)
    h, w = masks.shape[-2:]
    classes = _classes(organism, clean)
    suspects = sum(a > THRESHOLD for a in anomaly_index(torch.rand(classes, generator=gen).tolist()))
    return TrojanOutput(torch.rand(n, generator=gen).tolist(), torch.rand(n, generator=gen).tolist(),
                        as_attribution(torch.rand(m, h, w, generator=gen), "random"),
                        as_attribution(torch.rand(m, h, w, generator=gen), "random"),
                        ranking=torch.randperm(classes, generator=gen).tolist(), n_classes=classes,
                        twin_suspects=suspects, trigger_mask=torch.rand(h, w, generator=gen))  # fmt: skip


def oracle_trojan(organism: TrojanOrganism, ctx: RunContext) -> TrojanOutput:
    """Reads the ground truth: the planted trigger, its regions, its targets, and that the twin has none."""
    n = _sizes(ctx)[0]
    _, masks, clean = organism.probe(n)
    one_hot = [float(i == organism.answer) for i in range(len(organism.candidates))]
    classes, targets = _classes(organism, clean), list(organism.targets)
    ranking = targets + [c for c in range(classes) if c not in targets]
    return TrojanOutput(one_hot, [0.0] * len(one_hot), as_attribution(masks.float(), "oracle"),
                        as_attribution(torch.ones_like(masks, dtype=torch.float), "oracle"),
                        ranking=ranking, n_classes=classes, twin_suspects=0,
                        trigger_mask=masks.float().mean(0))  # fmt: skip


@torch.no_grad()
def _classes(organism: TrojanOrganism, clean: Tensor) -> int:
    return int(organism.model.module(clean[:1]).shape[-1])


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
