"""Path patching: the effect of sender heads on the metric *through* chosen receivers only.

Activation patching a head measures everything downstream of it. Path patching (Wang et al. 2022,
"Interpretability in the Wild", section 3.1 and appendix B; generalised by Goldowsky-Dill et al. 2023, "Localizing
Model Behavior with Path Patching", section 3) restricts the change to paths that end in a set of receivers:

1. run the base prompts with every attention head frozen to its base output, except the senders, which take
   their source output (MLPs recompute, as in Wang et al.; ``freeze_mlps=True`` freezes them too, leaving only
   the direct sender -> receiver edges);
2. record the receivers there (a head's query, key or value, or any site);
3. run the base prompts with only the receivers patched to those values, and measure the metric.

In the denoising direction (default) the base prompts are the corrupt ones and the source the clean ones.
Below the lowest sender (step 1) and the lowest receiver (step 3) both runs equal the base run, so they start
there from its residual stream (a ``Prefix``); step 3 unembeds only each prompt's last real token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core._interventions import Patch
from ..core._model import Model
from ..core._residual import ResidualModel, model_of
from ..data._metrics import logit_diff
from ..data._task import Task
from ._contrast import Contrast, Direction, Metric
from ._prefix import Prefix

HeadReceiver = tuple[int, int, str]


@dataclass(frozen=True)
class PathPatchingResult:
    """The metric with the sender -> receiver paths patched, and the unpatched baselines."""

    senders: tuple[tuple[int, int], ...]
    """``(layer, head)`` of each sender head."""
    receivers: tuple[str, ...]
    """Receivers as patched: ``head.L.q[h]`` (``k``/``v``: key/value head) or a site name."""
    direction: str
    freeze_mlps: bool
    score: float
    """Mean metric of the path-patched run."""
    clean_metric: float
    corrupt_metric: float
    metric: str
    task: str
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def effect(self) -> float:
        """``(score - corrupt) / (clean - corrupt)``: 1 = clean behaviour, 0 = corrupt."""
        gap = self.clean_metric - self.corrupt_metric
        if gap == 0:
            raise ValueError(f"{self.task}: clean and corrupt runs score the same; the effect is undefined")
        return (self.score - self.corrupt_metric) / gap

    def to_dict(self) -> dict[str, Any]:
        gap = self.clean_metric - self.corrupt_metric
        return {**self.__dict__, "senders": [list(s) for s in self.senders], "receivers": list(self.receivers),
                "effect": self.effect if gap != 0 else None}  # fmt: skip


def path_patching(
    model: Model | ResidualModel,
    task: Task,
    senders: Sequence[tuple[int, int]],
    receivers: Sequence[str | HeadReceiver],
    *,
    direction: Direction = "denoising",
    freeze_mlps: bool = False,
    metric: Metric = logit_diff,
) -> PathPatchingResult:
    """Patch the paths from ``senders`` (``(layer, head)``) to ``receivers`` and measure the metric.

    A receiver is ``(layer, head, "q" | "k" | "v")`` — for ``k`` and ``v`` ``head`` is the key/value head under
    grouped-query attention — or a site name (``"resid_post.5"``, ``"head.7.v"``...), patched whole.
    ``model``: a transformer language model or any ``ResidualModel`` adapter (only its sites are used).
    """
    model = model_of(model)
    cfg = model.cfg
    if cfg is None:
        raise TypeError(f"{model.name} is not a transformer language model")
    contrast = Contrast.of(model, task, metric)
    base, source = contrast.base_and_source(direction)
    mask = contrast.attention_mask
    heads = [f"head.{layer}.z" for layer in range(cfg.n_layers)]
    mlps = [f"mlp_out.{layer}" for layer in range(cfg.n_layers)] if freeze_mlps else []
    targets = [_receiver(model, r) for r in receivers]
    source_metric, src = contrast.run(model, source, cache=heads)
    base_metric, frozen = contrast.run(model, base, cache=heads + mlps + Prefix.sites(model, base))
    prefix = Prefix.of(frozen)

    by_layer: dict[int, list[int]] = {}
    for layer, head in senders:
        if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
            raise ValueError(f"sender {(layer, head)} is not a head of {model.name}")
        by_layer.setdefault(layer, []).append(head)
    step1 = []
    for layer, site in enumerate(heads):
        value = frozen[site].clone()  # [batch pos head d_head]
        for h in by_layer.get(layer, []):
            value[:, :, h] = src[site][:, :, h]
        step1.append(Patch(site, value))
    step1 += [Patch(site, frozen[site]) for site in mlps]
    first_receiver = min(_layer(model, site) for site, _ in targets)
    start_at, resid = prefix.start(min([first_receiver, *by_layer])) or (None, None)
    with model.intervene(*step1):
        recorded = model.run(base, cache=sorted({site for site, _ in targets}), attention_mask=mask, logits=False,
                             start_at=start_at, resid=resid).cache  # fmt: skip
    step2 = [Patch(site, recorded[site], heads=sel) for site, sel in targets]
    with model.intervene(*step2):
        score = float(contrast.forward(model, base, start=prefix.start(first_receiver))[0])
    clean, corrupt = (source_metric, base_metric) if direction == "denoising" else (base_metric, source_metric)
    return PathPatchingResult(
        senders=tuple((int(a), int(b)) for a, b in senders),
        receivers=tuple(site if sel is None else f"{site}[{sel[0]}]" for site, sel in targets),
        direction=direction,
        freeze_mlps=freeze_mlps,
        score=score,
        clean_metric=clean,
        corrupt_metric=corrupt,
        metric=getattr(metric, "__name__", repr(metric)),
        task=task.name,
        model=model.provenance,
    )


def _layer(model: Model, site: str) -> int:
    """The block a site belongs to (0 for the embedding, the last block for ``final_norm`` and ``logits``)."""
    assert model.cfg is not None
    numbers = [int(part) for part in site.split(".") if part.isdigit()]
    if numbers:
        return numbers[0]
    return 0 if model.resolve(site)[0].order < 0 else model.cfg.n_layers - 1


def _receiver(model: Model, receiver: str | HeadReceiver) -> tuple[str, list[int] | None]:
    """Site name and head selection of a receiver (checked against the model)."""
    if isinstance(receiver, str):
        return model.resolve(receiver)[0].name, None
    layer, head, part = receiver
    if part not in ("q", "k", "v"):
        raise ValueError(f"receiver {receiver}: part must be 'q', 'k' or 'v'")
    site = model.resolve(f"head.{layer}.{part}")[0]
    n = site.sizes[2]
    if not (n is not None and 0 <= head < n):
        what = "key/value heads" if part != "q" else "heads"
        raise ValueError(f"receiver {receiver}: layer {layer} has {n} {what}")
    return site.name, [head]
