"""Edge attribution patching (EAP) and EAP with integrated gradients (EAP-IG) over the whole graph.

Patching edge ``u -> r`` moves receiver ``r``'s input by ``a_u(source) - a_u(base)``, so to first order the metric
moves by ``(a_u(source) - a_u(base)) . dM/dx_r``, where ``x_r`` is ``r``'s own copy of the residual stream (Syed,
Rager & Conmy 2023, "Attribution Patching Outperforms Automated Circuit Discovery", section 3). One forward pass
of the source prompts caches every sender's output; one forward and backward pass of the base prompts gives the
gradient at every receiver's input; a matrix product per layer scores every edge.

Receiver gradients come from gradients the model already computes, without rerunning any module:

- logits: the gradient at the last ``resid_post`` (only the final norm reads it);
- MLP ``L``: the gradient at its residual input minus the gradient that bypasses it,
  ``dM/dresid_mid.L - dM/dresid_post.L`` (parallel blocks: ``dM/dresid_pre.L - dM/dresid_post.L`` minus the
  attention receivers below, which share that input);
- a head's query, key or value: the gradient at ``head.L.q/k/v`` for that (key/value) head, pulled back through
  the head's slice of the projection (a fixed matrix) and through the attention's input norm at this prompt's
  residual (its vector-Jacobian product, by autograd through the model's own norm module, one copy of the
  residual per receiver). Summed over receivers this is ``dM/dresid_pre.L - dM/dresid_mid.L``; the tests check
  every receiver against gradients taken by hand.

EAP-IG (Hanna, Pezzelle & Belinkov 2024, "Have Faith in Faithfulness", section 3) replaces the gradient at the
base run by its average along the straight line from the base to the source input embeddings: ``steps`` copies of
the prompts with input ``x_base + (k / steps)(x_source - x_base)``, ``k = 0 .. steps - 1`` (their left Riemann
sum, so ``steps=1`` is EAP), all in one batched forward and backward pass.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import einops
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core._interventions import Replace
from ..core._model import Model, RunResult
from ..core._residual import PARTS, ResidualModel, residual
from ..data._metrics import logit_diff
from ..data._task import Task
from ._contrast import Contrast, Direction, Metric, chunks
from ._edgerun import Ablation, EdgePrefix, SenderActs, Wiring, reference, run_edges
from ._graph import EdgeScores
from ._selfcheck import pearson, spearman


def eap(
    model: Model | ResidualModel,
    task: Task,
    *,
    direction: Direction = "denoising",
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    batch_size: int = 32,
    verify: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> EdgeScores:
    """Score every edge of the model's graph by edge attribution patching (Syed et al. 2023).

    ``direction="denoising"`` estimates, per edge, the corrupt run with that edge clean minus the corrupt run;
    ``"noising"`` the clean run with that edge corrupted minus the clean run. ``ablation`` is the corrupt value
    (``patch``: each prompt's corrupt run; ``mean``: the corrupt runs' mean per position, as mean ablation;
    ``resample``: a random corrupt prompt, ``seed``); the corrupt side's gradients are taken at the model run on
    the corrupt input of that kind. ``batch_size`` prompts per pass. ``verify=n`` really patches ``n`` edges drawn
    at random (``seed``, ``patch`` ablation only) and reports the agreement in ``check``. ``model``: a model of a
    known family or any ``ResidualModel`` adapter.
    """
    return _edge_scores(model, task, 1, direction, ablation, metric, batch_size, verify, seed, progress)


def eap_ig(
    model: Model | ResidualModel,
    task: Task,
    *,
    steps: int = 5,
    direction: Direction = "denoising",
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    batch_size: int = 32,
    verify: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> EdgeScores:
    """Score every edge by EAP with integrated gradients at the input embeddings (Hanna et al. 2024).

    Like ``eap``, with the gradient averaged over ``steps`` points between the base and source inputs (with
    ``ablation="mean"`` in the denoising direction: from the mean corrupt input to each clean input). A pass
    holds ``steps`` copies of ``batch_size // steps`` prompts.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return _edge_scores(model, task, steps, direction, ablation, metric, batch_size, verify, seed, progress)


def _edge_scores(
    model: Model | ResidualModel,
    task: Task,
    steps: int,
    direction: Direction,
    ablation: Ablation,
    metric: Metric,
    batch_size: int,
    verify: int,
    seed: int,
    progress: bool,
) -> EdgeScores:
    start = time.perf_counter()
    if verify and ablation != "patch":
        raise ValueError(f"verify patches edges with each prompt's own corrupt run: it needs ablation='patch', "
                         f"not {ablation!r}")  # fmt: skip
    model = residual(model)
    wiring = Wiring.of(model)
    contrast = Contrast.of(wiring.model, task, metric)
    g = wiring.graph
    base, source = contrast.base_and_source(direction)
    n = contrast.n_prompts
    ref = _reference(wiring, contrast, ablation, seed)
    scores = torch.zeros(len(g.senders), len(g.receivers))
    totals = {"base": 0.0, "source": 0.0}
    for rows in tqdm(chunks(n, max(1, batch_size // steps)), desc="EAP", disable=not progress, leave=False):
        ref_rows = None if ref is None else ref.map(itemgetter(rows))
        sides = _Sides(base[rows], source[rows], ref_rows, corrupt_is_base=direction == "denoising")
        part = _batch(wiring, contrast, sides, rows, steps, totals, check=rows.start == 0)
        scores += part.cpu()
    base_metric, source_metric = totals["base"] / n, totals["source"] / n
    clean, corrupt = (source_metric, base_metric) if direction == "denoising" else (base_metric, source_metric)
    result = EdgeScores(
        graph=g,
        scores=g.flat(scores),
        method="eap" if steps == 1 else "eap-ig",
        direction=direction,
        steps=steps,
        clean_metric=clean,
        corrupt_metric=corrupt,
        metric=getattr(metric, "__name__", repr(metric)),
        task=task.name,
        model=wiring.model.provenance,
        seconds=time.perf_counter() - start,
    )
    if verify:
        check = verify_edges(result, model, task, sample=verify, seed=seed, metric=metric, progress=progress)
        result = dataclasses.replace(result, check=check)
    return result


def _reference(wiring: Wiring, contrast: Contrast, ablation: Ablation, seed: int) -> SenderActs | None:
    """The corrupt side's sender outputs and input under ``ablation`` (None for ``patch``: each prompt's run)."""
    if ablation == "patch":
        return None
    n_layers, mask = wiring.graph.n_layers, contrast.attention_mask
    cache = wiring.model.run(contrast.corrupt, cache=SenderActs.sites(n_layers), attention_mask=mask).cache
    return reference(SenderActs.of(cache, n_layers), ablation, mask, contrast.n_prompts, seed)


@dataclass(frozen=True)
class _Sides:
    """One batch's base and source token ids, and the corrupt side's reference (None: its own run)."""

    base: Tensor
    source: Tensor
    corrupt: SenderActs | None
    corrupt_is_base: bool
    """Denoising: the base run is the corrupt side."""

    def input_of(self, base: bool) -> Tensor | None:
        """The input the base (or source) run starts from, when it is the reference's rather than its own."""
        if self.corrupt is None or self.corrupt_is_base != base:
            return None
        return self.corrupt.input


def _batch(
    wiring: Wiring,
    contrast: Contrast,
    sides: _Sides,
    rows: slice,
    steps: int,
    totals: dict[str, float],
    check: bool,
) -> Tensor:
    """``[sender receiver]`` scores of one batch of prompts (summing to the estimate over all prompts)."""
    model, g = wiring.model, wiring.graph
    n_layers, b, n = g.n_layers, sides.base.shape[0], contrast.n_prompts
    mask = contrast.attention_mask[rows]
    senders = SenderActs.sites(n_layers) + wiring.attn_out_sites()
    start = sides.input_of(base=False)
    with model.intervene(*([Replace("resid_pre.0", _fixed(start))] if start is not None else [])):
        src = model.run(sides.source, cache=senders, attention_mask=mask, logits=contrast.readout)
    totals["source"] += float(contrast.score_run(src, rows=rows)[0]) * b
    source = sides.corrupt if start is not None and sides.corrupt is not None else SenderActs.of(src.cache, n_layers)

    def mean_metric(out: RunResult) -> Tensor:  # gradient of the mean over prompts (and over IG steps)
        return contrast.score_run(out, copies=steps, rows=rows).mean() * (b / n)

    mlp_in = "resid_pre" if g.parallel else "resid_mid"
    grad_at = [f"head.{i}.{p}" for i in range(n_layers) for p in "qkv"]
    grad_at += [f"{s}.{i}" for i in range(n_layers) for s in (mlp_in, "resid_post")]
    cache = senders + [f"resid_pre.{i}" for i in range(n_layers)]
    stacked = einops.repeat(sides.base, "b p -> (c b) p", c=steps)
    begin = sides.input_of(base=True)
    moved = steps > 1 or begin is not None
    interpolate = [Replace("resid_pre.0", _interpolation(begin, source.input, steps))] if moved else []
    with model.intervene(*interpolate):
        run = model.run(stacked, cache=cache, grad_at=grad_at, grad_of=mean_metric, logits=contrast.readout,
                        attention_mask=einops.repeat(mask, "b p -> (c b) p", c=steps))  # fmt: skip
    totals["base"] += float(contrast.score_run(run, copies=steps, rows=rows)[0]) * b  # copy 0 is the base run
    base_cache = {k: v[:b] for k, v in run.cache.items()}
    if check:
        wiring.check_additive([(src.cache, mask), (base_cache, mask)])
    base = sides.corrupt if begin is not None and sides.corrupt is not None else SenderActs.of(base_cache, n_layers)
    diffs = _sender_diffs(wiring, source, base)
    return _scores(wiring, run, diffs, steps)


def _fixed(value: Tensor) -> Callable[[Tensor], Tensor]:
    """``Replace`` function: the run's input becomes ``value`` (a reference input instead of the prompts')."""
    return lambda act: value.to(act.dtype).expand_as(act)


def _interpolation(begin: Tensor | None, end: Tensor, steps: int) -> Callable[[Tensor], Tensor]:
    """``Replace`` function: copy ``k`` of the stacked inputs is ``begin + (k / steps)(end - begin)``.

    ``begin`` None: the run's own input (the base prompts').
    """

    def fn(act: Tensor) -> Tensor:
        x = act.unflatten(0, (steps, -1))
        start = x if begin is None else begin.to(x.dtype).expand_as(x)
        alpha = torch.arange(steps, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1) / steps
        return (start + alpha * (end - start)).flatten(0, 1)

    return fn


def _sender_diffs(wiring: Wiring, source: SenderActs, base: SenderActs) -> Tensor:
    """``[sender batch pos d_model]``: each sender's output in the source run minus the base run."""
    g = wiring.graph
    out = source.input.new_empty((len(g.senders), *source.input.shape))
    torch.sub(source.input, base.input, out=out[0])
    for layer in range(g.n_layers):
        first = g.head_index(layer, 0)
        heads = wiring.head_out(layer, source.z[layer] - base.z[layer])  # [batch pos head d_model]
        out[first : first + g.n_heads] = heads.permute(2, 0, 1, 3)
        torch.sub(source.mlp[layer], base.mlp[layer], out=out[g.mlp_index(layer)])
    return out


def _scores(wiring: Wiring, run: RunResult, diffs: Tensor, steps: int) -> Tensor:
    """``diffs . dM/dx_r`` for every sender and receiver, receivers' gradients taken layer by layer."""
    g = wiring.graph
    scores = diffs.new_zeros(len(g.senders), len(g.receivers))
    flat = diffs.flatten(1)  # [sender batch*pos*d_model]
    mlp_in = "resid_pre" if g.parallel else "resid_mid"
    col = 0
    for layer in range(g.n_layers):
        attn = _qkv_grads(wiring, run, layer)  # [recv copy*batch pos d_model]
        mlp = run.grads[f"{mlp_in}.{layer}"] - run.grads[f"resid_post.{layer}"]
        if g.parallel:
            mlp = mlp - attn.sum(0)
        for grads in (attn, mlp[None]):
            n_up = g.receivers[col].n_upstream
            per_prompt = grads.unflatten(1, (steps, -1)).sum(1) if steps > 1 else grads  # sum over IG copies
            scores[:n_up, col : col + len(grads)] = flat[:n_up] @ per_prompt.flatten(1).T
            col += len(grads)
    last = run.grads[f"resid_post.{g.n_layers - 1}"]
    last = last.unflatten(0, (steps, -1)).sum(0) if steps > 1 else last
    scores[:, col] = flat @ last.flatten()
    return scores


def _qkv_grads(wiring: Wiring, run: RunResult, layer: int) -> Tensor:
    """Gradient at each q/k/v receiver's own copy of ``resid_pre.layer``: ``[recv rows pos d_model]``.

    ``dM/dq_h`` is pulled back through head ``h``'s slice of the projection (``W[:, h] @ g``) and then through the
    input norm's Jacobian at this residual, by autograd through the model's norm module.
    """
    x = run.cache[f"resid_pre.{layer}"]
    at_norm = []
    for part in PARTS:
        weight = wiring.residual.qkv(layer, part)[0]  # [d_model head d_head]
        at_norm.append(einops.einsum(run.grads[f"head.{layer}.{part}"], weight, "b s h e, d h e -> h b s d"))
    v = torch.cat(at_norm)
    with torch.enable_grad():
        copies = x.detach().expand(len(v), *x.shape).clone().requires_grad_(True)
        normed = wiring.norm(layer).forward(copies)  # forward(): no hooks
        (grad,) = torch.autograd.grad(normed, copies, grad_outputs=v.to(normed.dtype))
    return grad.to(x.dtype)


# --- self-check ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedEdge:
    """One sampled edge: its estimated and measured effect (normalised: 1 = clean, 0 = corrupt)."""

    edge: str
    estimate: float
    actual: float


@dataclass(frozen=True)
class EdgeCheck:
    """Agreement of edge scores with really patching a sample of edges, one at a time."""

    direction: str
    seed: int
    edges: tuple[CheckedEdge, ...]
    pearson: float
    spearman: float
    mean_abs_error: float
    """Mean |estimate - actual| in normalised effect units."""

    @property
    def n(self) -> int:
        return len(self.edges)

    def to_dict(self) -> dict[str, Any]:
        rows = [{"edge": e.edge, "estimate": e.estimate, "actual": e.actual} for e in self.edges]
        return {"direction": self.direction, "seed": self.seed, "n": self.n, "pearson": self.pearson,
                "spearman": self.spearman, "mean_abs_error": self.mean_abs_error, "edges": rows}  # fmt: skip


def verify_edges(
    scores: EdgeScores,
    model: Model | ResidualModel,
    task: Task,
    *,
    sample: int = 32,
    top: int = 0,
    seed: int = 0,
    metric: Metric = logit_diff,
    batch_size: int = 64,
    progress: bool = True,
) -> EdgeCheck:
    """Patch ``top`` highest-|score| edges and ``sample`` more drawn at random (``seed``), each alone, and compare.

    Patching an edge runs the base prompts with that one receiver reading the sender's source output instead of
    its base output (same direction as the scores). Uniform samples are mostly near-zero edges; ``top`` adds the
    edges a circuit would be built from.
    """
    name = getattr(metric, "__name__", repr(metric))
    if scores.metric != name or scores.task != task.name:
        raise ValueError(f"verify_edges: scores were computed with metric {scores.metric!r} on task "
                         f"{scores.task!r}; got metric {name!r} and task {task.name!r}")  # fmt: skip
    g = scores.graph
    ranked = scores.ranking()[:top].tolist()
    rest = sorted(set(range(g.n_edges)) - set(ranked))
    picked = ranked + random.Random(seed).sample(rest, min(sample, len(rest)))
    actual, clean, corrupt = patch_edges(model, task, picked, scores.direction, metric=metric,
                                         batch_size=batch_size, progress=progress)  # fmt: skip
    gap = clean - corrupt
    base_metric = corrupt if scores.direction == "denoising" else clean
    estimate = (base_metric + scores.scores[picked] - corrupt) / gap
    actual = (actual - corrupt) / gap
    names = g.edge_names()
    triples = zip(picked, estimate.tolist(), actual.tolist(), strict=True)
    rows = tuple(CheckedEdge(names[i], e, a) for i, e, a in triples)
    return EdgeCheck(scores.direction, seed, rows, pearson(estimate, actual), spearman(estimate, actual),
                     float((estimate - actual).abs().mean()))  # fmt: skip


def patch_edges(
    model: Model | ResidualModel,
    task: Task,
    edges: list[int],
    direction: Direction = "denoising",
    *,
    metric: Metric = logit_diff,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[Tensor, float, float]:
    """Mean metric after patching each edge (by index) alone, and the clean and corrupt metrics."""
    wiring = Wiring.of(model)
    model = wiring.model
    contrast = Contrast.of(model, task, metric)
    g = wiring.graph
    base, source = contrast.base_and_source(direction)
    mask = contrast.attention_mask
    n_layers = g.n_layers
    base_metric, base_cache = contrast.run(model, base, cache=EdgePrefix.sites(model, base))
    prefix = EdgePrefix.of(base_cache, n_layers)
    source_metric, cache = contrast.run(model, source, cache=SenderActs.sites(n_layers) + wiring.attn_out_sites())
    wiring.check_additive([(cache, mask)])
    fixed = SenderActs.of(cache, n_layers)
    per_pass = max(1, batch_size // contrast.n_prompts)
    pairs = torch.nonzero(g.upstream.T).flip(1)  # [edge 2]: (sender, receiver) in edge order
    out = torch.empty(len(edges))
    with tqdm(total=len(edges), desc="edge patching", disable=not progress, leave=False) as bar:
        for i in range(0, len(edges), per_pass):
            chunk = edges[i : i + per_pass]
            swap = torch.zeros(len(chunk), len(g.senders), len(g.receivers))
            for c, e in enumerate(chunk):
                swap[c, pairs[e, 0], pairs[e, 1]] = 1.0
            logits = run_edges(wiring, base, mask, fixed, swap, final=contrast.readout == "final", prefix=prefix)
            out[i : i + len(chunk)] = contrast.score_readout(logits, copies=len(chunk)).cpu()
            bar.update(len(chunk))
    clean, corrupt = (source_metric, base_metric) if direction == "denoising" else (base_metric, source_metric)
    return out, clean, corrupt
