"""Attribution patching: a first-order estimate of every node's patching effect from one forward and backward.

Patching node ``n`` replaces its activation ``a_base`` by ``a_source``. To first order the metric moves by
``grad_n M(base) . (a_source - a_base)``, summed over the node's entries (Nanda 2023, "Attribution Patching:
Activation Patching At Industrial Scale"; Syed, Rager & Conmy 2023, "Attribution Patching Outperforms
Automated Circuit Discovery", section 3). One backward pass gives the gradient at every site, so every node of
every kind is scored at the cost of about three forward passes. The estimate is exact for nodes the metric
depends on linearly and can be badly wrong where attention saturates or a nonlinearity switches (Kramár et al.
2024, "AtP*", section 3); ``verify`` measures how wrong on a sample of real interventions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import einops
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core._model import Model, RunResult
from ..data._metrics import logit_diff
from ..data._task import Task
from . import _selfcheck
from ._contrast import Contrast, Direction, Metric, chunks
from ._nodes import layout, site_name
from ._result import PatchingResult
from ._selfcheck import SelfCheck

DEFAULT_KINDS = ("resid_pre", "attn_out", "mlp_out", "head.z")


@dataclass(frozen=True, eq=False)
class AttributionResult:
    """Attribution-patching grids, one per kind, shaped exactly like ``activation_patching``'s."""

    grids: dict[str, PatchingResult]
    """Estimated grid per kind (``method="attribution"``)."""
    check: SelfCheck | None = None
    """Agreement with real patching on a random sample of nodes, when asked for (``verify=n``)."""

    def __getitem__(self, kind: str) -> PatchingResult:
        return self.grids[kind]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "grids": {k: g.to_dict() for k, g in self.grids.items()},
            "check": self.check.to_dict() if self.check is not None else None,
        }


def attribution_patching(
    model: Model,
    task: Task,
    kinds: str | Sequence[str] = DEFAULT_KINDS,
    *,
    direction: Direction = "denoising",
    by_pos: bool | None = None,
    metric: Metric = logit_diff,
    batch_size: int = 32,
    verify: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> AttributionResult:
    """Estimate the patching effect of every node of ``kinds`` (see ``activation_patching`` for the grids).

    Per batch of ``batch_size`` prompts: one forward pass of the source prompts (caching activations) and one
    forward and backward pass of the patched-into prompts (caching activations and gradients). ``verify=n``
    then really patches ``n`` randomly drawn nodes (``seed``) and reports the agreement in ``check``.
    """
    start = time.perf_counter()
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    contrast = Contrast.of(model, task, metric)
    assert model.cfg is not None
    sites = [site_name(k, layer) for k in kinds for layer in range(model.cfg.n_layers)]
    contrib, base_metric, source_metric = _contributions(model, contrast, sites, direction, batch_size, progress)
    clean, corrupt = (source_metric, base_metric) if direction == "denoising" else (base_metric, source_metric)
    labels = contrast.pos_labels(model)
    seconds = time.perf_counter() - start
    grids = {}
    for kind in kinds:
        grid = layout(kind, model.cfg, labels, by_pos)
        nodes = grid.nodes()
        deltas = torch.stack([contrib[n.site][n.region()].sum() for n in nodes]) if nodes else torch.zeros(0)
        grids[kind] = PatchingResult(
            kind=kind,
            method="attribution",
            direction=direction,
            scores=(base_metric + deltas).reshape(grid.shape),
            axes=grid.axes,
            labels=grid.labels,
            clean_metric=clean,
            corrupt_metric=corrupt,
            metric=getattr(metric, "__name__", repr(metric)),
            task=task.name,
            model=model.provenance,
            seconds=seconds,
        )
    result = AttributionResult(grids)
    if verify:
        check = _selfcheck.verify(result, model, task, sample=verify, seed=seed, metric=metric, progress=progress)
        result = AttributionResult(grids, check)
    return result


def _contributions(
    model: Model, contrast: Contrast, sites: list[str], direction: Direction, batch_size: int, progress: bool
) -> tuple[dict[str, Tensor], float, float]:
    """Per site, ``grad . (source - base)`` summed over prompts and the model axis: ``[pos]`` or ``[pos head]``.

    Also returns the mean metric of the base and source runs. The gradient is that of the mean metric over all
    prompts, so the per-batch sums add up to the estimate for the whole task.
    """
    base, source = contrast.base_and_source(direction)
    n = contrast.n_prompts
    contrib: dict[str, Tensor] = {}
    base_total = source_total = 0.0
    for rows in tqdm(chunks(n, batch_size), desc="attribution", disable=not progress, leave=False):
        mask = contrast.attention_mask[rows]
        src = model.run(source[rows], cache=sites, attention_mask=mask, logits=contrast.readout)
        size = rows.stop - rows.start
        source_total += float(contrast.score_run(src, rows=rows)[0]) * size

        def mean_metric(out: RunResult, rows: slice = rows, size: int = size) -> Tensor:
            return contrast.score_run(out, rows=rows)[0] * (size / n)

        run = model.run(base[rows], cache=sites, grad_at=sites, grad_of=mean_metric, attention_mask=mask,
                        logits=contrast.readout)  # fmt: skip
        base_total += float(contrast.score_run(run, rows=rows)[0]) * size
        for site in sites:
            delta = src.cache[site] - run.cache[site]
            part = einops.reduce(run.grads[site] * delta, "batch pos ... d -> pos ...", "sum")
            contrib[site] = contrib[site] + part if site in contrib else part
    return contrib, base_total / n, source_total / n
