"""Circuit faithfulness: how much of the model's behaviour a circuit alone carries, as curves over circuit sizes.

A circuit is evaluated by running the clean prompts with every edge *outside* it carrying the corrupt value of
its sender, and every edge inside it the value the sender computes in this very run (Hanna et al. 2024, "Have
Faith in Faithfulness", section 2; Wang et al. 2022, "Interpretability in the Wild", section 4 for node
circuits). Its faithfulness is ``(m(C) - m(empty)) / (m(full) - m(empty))``: 1 for the full graph (the clean
run, untouched) and 0 for the empty graph (every edge ablated). The corrupt value is each prompt's own corrupt
run (``patch``), the corrupt runs' mean per position (``mean``) or a random corrupt prompt (``resample``).

One threshold is one arbitrary point; MIB (Mueller et al. 2025, "MIB: A Mechanistic Interpretability Benchmark",
section 4) scores a method by its whole curve over fixed sizes, 0.1 % to 100 % of edges: CPR, the area under
the faithfulness curve (higher is better), and CMD, the area between the curve and 1 (lower is better), both by
the trapezoidal rule on the fraction axis. Circuits take the top-``n`` edges by |score| (MIB also prunes edges
that cannot reach the logits; they change no number here, only the count). Random circuits of each size are the
baseline every curve is shown against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core._model import Model
from ..core._residual import ResidualModel, residual
from ..data._metrics import logit_diff
from ..data._task import Task
from ._contrast import Contrast, Metric, chunks
from ._edgerun import Ablation, SenderActs, Wiring, reference, run_edges
from ._graph import Circuit, EdgeScores, Graph

SIZES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Circuit sizes of MIB's curves, as fractions of the graph's edges."""


@dataclass(frozen=True, eq=False)
class FaithfulnessCurve:
    """Faithfulness of the top-scoring circuits and of random circuits at fixed sizes."""

    sizes: tuple[float, ...]
    """Fractions of the graph's edges."""
    n_edges: tuple[int, ...]
    """Edges kept at each size (``int(size * total)``, as MIB counts them)."""
    faithfulness: tuple[float, ...]
    random: tuple[tuple[float, ...], ...]
    """Faithfulness of random circuits: one row per seed, one column per size."""
    full_metric: float
    """Mean metric of the full graph (the clean run)."""
    empty_metric: float
    """Mean metric of the empty graph (every edge ablated)."""
    ablation: str
    method: str
    """What ranked the edges (``eap``, ``eap-ig``)."""
    metric: str
    task: str
    model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def cpr(self) -> float:
        """Area under the faithfulness curve (MIB's CPR; higher is better)."""
        return area_under(self.sizes, self.faithfulness)

    @property
    def cmd(self) -> float:
        """Area between the curve and 1 (MIB's CMD; lower is better)."""
        return area_from_one(self.sizes, self.faithfulness)

    @property
    def random_mean(self) -> tuple[float, ...]:
        """Mean faithfulness of the random circuits at each size."""
        return tuple(torch.tensor(self.random).mean(0).tolist()) if self.random else ()

    @property
    def random_cpr(self) -> float:
        return area_under(self.sizes, self.random_mean) if self.random else float("nan")

    @property
    def random_cmd(self) -> float:
        return area_from_one(self.sizes, self.random_mean) if self.random else float("nan")

    def at(self, size: float) -> float:
        """Faithfulness at one of the curve's sizes."""
        return self.faithfulness[self.sizes.index(size)]

    def smallest_faithful(self, at_least: float = 0.8) -> tuple[float, int] | None:
        """``(size, n_edges)`` of the smallest circuit on the curve whose faithfulness reaches ``at_least``."""
        for size, n, f in zip(self.sizes, self.n_edges, self.faithfulness, strict=True):
            if f >= at_least:
                return size, n
        return None

    def reach(self, at_least: float = 0.8) -> str:
        """One sentence: where the curve first reaches ``at_least``, for reports."""
        hit = self.smallest_faithful(at_least)
        if hit is None:
            return f"no circuit on the curve reaches faithfulness {at_least:g}"
        return f"the curve first reaches faithfulness {at_least:g} at {100 * hit[0]:g} % of edges ({hit[1]:,} edges)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": list(self.sizes),
            "n_edges": list(self.n_edges),
            "faithfulness": list(self.faithfulness),
            "random": [list(r) for r in self.random],
            "random_mean": list(self.random_mean),
            "cpr": self.cpr,
            "cmd": self.cmd,
            "random_cpr": self.random_cpr,
            "random_cmd": self.random_cmd,
            "full_metric": self.full_metric,
            "empty_metric": self.empty_metric,
            "ablation": self.ablation,
            "method": self.method,
            "metric": self.metric,
            "task": self.task,
            "model": self.model,
            "seconds": self.seconds,
        }


def area_under(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoidal area under ``values`` over ``sizes`` (MIB's CPR when ``sizes`` are ``SIZES``)."""
    if len(sizes) != len(values):
        raise ValueError(f"{len(sizes)} sizes but {len(values)} values")
    pairs = zip(sizes[:-1], sizes[1:], values[:-1], values[1:], strict=True)
    return sum((x2 - x1) * (y1 + y2) / 2 for x1, x2, y1, y2 in pairs)


def area_from_one(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoidal area of ``|1 - values|`` over ``sizes`` (MIB's CMD)."""
    return area_under(sizes, [abs(1.0 - v) for v in values])


def faithfulness(
    model: Model | ResidualModel,
    task: Task,
    circuits: Circuit | Sequence[Circuit],
    *,
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> list[float]:
    """Faithfulness of each circuit (1 = full graph, 0 = empty graph)."""
    circuits = [circuits] if isinstance(circuits, Circuit) else list(circuits)
    full, empty, values = circuit_metrics(model, task, circuits, ablation=ablation, metric=metric, seed=seed,
                                          batch_size=batch_size, progress=progress)  # fmt: skip
    return [_normalise(v, full, empty) for v in values]


def faithfulness_curve(
    model: Model | ResidualModel,
    task: Task,
    scores: EdgeScores,
    *,
    sizes: Sequence[float] = SIZES,
    random: int = 3,
    absolute: bool = True,
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> FaithfulnessCurve:
    """Faithfulness of the top-``n`` circuits of ``scores`` at each size, and of ``random`` random circuits each.

    ``absolute``: rank edges by ``|score|`` (default) or by signed score. Random circuit ``i`` uses seed
    ``seed + i``.
    """
    return ranking_curve(model, task, scores.graph, scores.ranking(absolute), scores.method, sizes=sizes,
                         random=random, ablation=ablation, metric=metric, seed=seed, batch_size=batch_size,
                         progress=progress)  # fmt: skip


def ranking_curve(
    model: Model | ResidualModel,
    task: Task,
    graph: Graph,
    ranking: Tensor,
    method: str,
    *,
    sizes: Sequence[float] = SIZES,
    random: int = 3,
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> FaithfulnessCurve:
    """Faithfulness of the first ``int(size * n_edges)`` edges of ``ranking`` at each size, and of random circuits.

    Any ranking of the graph's edges: edge scores' (``faithfulness_curve``), or a node circuit's edges first.
    Random circuit ``i`` uses seed ``seed + i``.
    """
    start = time.perf_counter()
    model = residual(model)  # read once, shared with circuit_metrics
    counts = [int(s * graph.n_edges) for s in sizes]
    circuits = []
    for n in counts:
        mask = torch.zeros(graph.n_edges, dtype=torch.bool)
        mask[ranking[: max(0, n)]] = True
        circuits.append(Circuit(graph, mask))
    circuits += [Circuit.random(graph, n, seed=seed + i) for i in range(random) for n in counts]
    full, empty, values = circuit_metrics(model, task, circuits, ablation=ablation, metric=metric, seed=seed,
                                          batch_size=batch_size, progress=progress)  # fmt: skip
    faith = [_normalise(v, full, empty) for v in values]
    k = len(sizes)
    return FaithfulnessCurve(
        sizes=tuple(sizes),
        n_edges=tuple(counts),
        faithfulness=tuple(faith[:k]),
        random=tuple(tuple(faith[k * (i + 1) : k * (i + 2)]) for i in range(random)),
        full_metric=full,
        empty_metric=empty,
        ablation=ablation,
        method=method,
        metric=getattr(metric, "__name__", repr(metric)),
        task=task.name,
        model=model.model.provenance,
        seconds=time.perf_counter() - start,
    )


def circuit_metrics(
    model: Model | ResidualModel,
    task: Task,
    circuits: Sequence[Circuit],
    *,
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[float, float, list[float]]:
    """Mean metric of the full graph, of the empty graph and of each circuit, all through the same runs.

    A pass holds ``batch_size`` rows: several circuits (one copy of the prompts each) or a slice of the prompts.
    """
    wiring = Wiring.of(model)
    model = wiring.model
    contrast = Contrast.of(model, task, metric)
    g = wiring.graph
    for c in circuits:
        if c.graph != g:
            raise ValueError(f"a circuit of {c.graph} cannot be evaluated on {model.name} ({g})")
    n, mask = contrast.n_prompts, contrast.attention_mask
    sites = SenderActs.sites(g.n_layers) + wiring.attn_out_sites()
    corrupt = model.run(contrast.corrupt, cache=sites, attention_mask=mask).cache
    wiring.check_additive([(corrupt, mask)])
    ref = reference(SenderActs.of(corrupt, g.n_layers), ablation, mask, n, seed)
    swaps = [circuit_swap(Circuit.full(g)), circuit_swap(Circuit.empty(g))] + [circuit_swap(c) for c in circuits]
    totals = torch.zeros(len(swaps))
    rows_per_pass = min(n, max(1, batch_size))
    copies = max(1, batch_size // rows_per_pass)
    passes = [(rows, i) for rows in chunks(n, rows_per_pass) for i in range(0, len(swaps), copies)]
    for rows, i in tqdm(passes, desc="circuits", disable=not progress, leave=False):
        swap = torch.stack(swaps[i : i + copies]).to(mask.device)
        fixed = ref.map(itemgetter(rows))
        logits = run_edges(wiring, contrast.clean[rows], mask[rows], fixed, swap, final=contrast.readout == "final")
        size = rows.stop - rows.start
        totals[i : i + len(swap)] += contrast.score_readout(logits, copies=len(swap), rows=rows).cpu() * size
    means = (totals / n).tolist()
    return means[0], means[1], means[2:]


def _normalise(value: float, full: float, empty: float) -> float:
    if full == empty:
        raise ValueError(f"the full and the empty graph score the same ({full}): faithfulness is undefined")
    return (value - empty) / (full - empty)


def circuit_swap(circuit: Circuit) -> Tensor:
    """``[sender receiver]`` mask of the edges a circuit ablates (for ``run_edges``)."""
    g = circuit.graph
    return g.upstream.float() * (1 - g.dense(circuit.edges.float()))
