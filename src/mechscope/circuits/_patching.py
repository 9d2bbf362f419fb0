"""Activation patching: run one input, overwrite one node with its value from another input, measure the metric.

Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", section 2.1) and path
patching's node-level special case (Wang et al. 2022, "Interpretability in the Wild", section 3) both reduce to
this sweep; Heimersheim & Nanda 2024 ("How to use and interpret activation patching") discuss how to read it.

Sweeps are batched without changing what is measured: a chunk of nodes runs as one forward pass whose batch
stacks one copy of the prompts per node, and each node is a ``Replace`` intervention that overwrites its site's
region only in its own copy's rows. Every other entry keeps the value the patched run computes, so a node's copy
is exactly the single-node patched run (up to floating-point differences between batch sizes).

A pass computes only what patching changes. Below the chunk's lowest layer every copy equals the unpatched run,
so the pass starts there from that run's residual stream (a ``Prefix``, cached once), and only each prompt's last
real token is unembedded (``Model.run(logits="final")``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import einops
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core._interventions import Replace
from ..core._model import Model
from ..data._metrics import logit_diff
from ..data._task import Task
from ._contrast import Contrast, Direction, Metric, Start
from ._nodes import Node, layout
from ._prefix import Prefix
from ._result import PatchingResult


def activation_patching(
    model: Model,
    task: Task,
    kind: str = "resid_pre",
    *,
    direction: Direction = "denoising",
    by_pos: bool | None = None,
    metric: Metric = logit_diff,
    batch_size: int = 64,
    progress: bool = True,
) -> PatchingResult:
    """Patch every node of ``kind`` in turn and record the metric.

    ``kind`` is a site name without its layer: ``resid_pre`` / ``resid_mid`` / ``resid_post`` / ``attn_out`` /
    ``mlp_out`` (grid ``[layer pos]``; ``by_pos=False`` patches all positions at once: ``[layer]``) or
    ``head.z`` / ``head.q`` (``[layer head]``, all positions; ``by_pos=True``: ``[layer head pos]``) or
    ``head.k`` / ``head.v`` (``[layer kv_head]``: with grouped-query attention one key/value head serves several
    query heads, so it is patched as one node). ``direction="denoising"`` runs the corrupt prompts and patches in
    clean activations; ``"noising"`` the reverse. ``batch_size`` bounds the rows of one forward pass (copies of
    the prompts, one per node; at least one copy). Positions index the right-padded batch: with prompts of
    different lengths a position is a token slot, not a role.
    """
    start = time.perf_counter()
    contrast = Contrast.of(model, task, metric)
    assert model.cfg is not None
    grid = layout(kind, model.cfg, contrast.pos_labels(model), by_pos)
    scores, clean, corrupt = patch_nodes(
        model, contrast, grid.nodes(), direction, batch_size=batch_size, progress=progress, desc=f"patch {kind}"
    )
    return PatchingResult(
        kind=kind,
        method="activation",
        direction=direction,
        scores=scores.reshape(grid.shape),
        axes=grid.axes,
        labels=grid.labels,
        clean_metric=clean,
        corrupt_metric=corrupt,
        metric=getattr(metric, "__name__", repr(metric)),
        task=task.name,
        model=model.provenance,
        seconds=time.perf_counter() - start,
    )


def patch_nodes(
    model: Model,
    contrast: Contrast,
    nodes: list[Node],
    direction: Direction,
    *,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "patching",
) -> tuple[Float[Tensor, " node"], float, float]:
    """Metric after patching each node on its own, plus the clean and corrupt metrics of the unpatched runs."""
    base, source = contrast.base_and_source(direction)
    sites = sorted({n.site for n in nodes})
    base_metric, prefix_cache = contrast.run(model, base, cache=Prefix.sites(model, base))
    prefix = Prefix.of(prefix_cache)
    source_metric, cache = contrast.run(model, source, cache=sites)
    per_pass = max(1, batch_size // contrast.n_prompts)
    out = torch.empty(len(nodes))
    with tqdm(total=len(nodes), desc=desc, disable=not progress, leave=False) as bar:
        for i in range(0, len(nodes), per_pass):
            chunk = nodes[i : i + per_pass]
            start = prefix.start(min(n.layer for n in chunk))
            out[i : i + len(chunk)] = _patch_chunk(model, contrast, base, cache, chunk, start)
            bar.update(len(chunk))
    clean, corrupt = (source_metric, base_metric) if direction == "denoising" else (base_metric, source_metric)
    return out, clean, corrupt


def _patch_chunk(
    model: Model, contrast: Contrast, base: Tensor, cache: dict[str, Tensor], chunk: list[Node], start: Start | None
) -> Tensor:
    """One forward pass (from ``start``): copy ``c`` of the prompts has node ``chunk[c]`` patched from ``cache``."""
    copies, b = len(chunk), contrast.n_prompts
    by_site: dict[str, list[tuple[int, Node]]] = defaultdict(list)
    for c, node in enumerate(chunk):
        by_site[node.site].append((c, node))
    interventions = []
    for site, members in by_site.items():
        source = cache[site]  # [batch pos d] or [batch pos head d_head]
        mask = torch.zeros((copies * b, *source.shape[1:-1], 1), dtype=torch.bool, device=source.device)
        for c, node in members:
            mask[(slice(c * b, (c + 1) * b), *node.region())] = True
        stacked = einops.repeat(source, "b ... -> (c b) ...", c=copies)
        interventions.append(Replace(site, _splice(mask, stacked)))
    with model.intervene(*interventions):
        return contrast.forward(model, base, copies, start)


def _splice(mask: Bool[Tensor, "rows ..."], source: Tensor) -> Callable[[Tensor], Tensor]:
    """``Replace`` function writing ``source`` where ``mask`` is set and keeping the live activation elsewhere."""

    def fn(act: Tensor) -> Tensor:
        return torch.where(mask, source, act)

    return fn
