"""Circuit faithfulness: how much of the model's behaviour a circuit alone carries, as curves over circuit sizes.

A circuit is evaluated by running the clean prompts with every edge *outside* it carrying the corrupt value of
its sender, and every edge inside it the value the sender computes in this very run (Hanna et al. 2024, "Have
Faith in Faithfulness", section 2; Wang et al. 2022, "Interpretability in the Wild", section 4 for node
circuits). Its faithfulness is ``(m(C) - m(empty)) / (m(full) - m(empty))``: 1 for the full graph (the clean
run, untouched) and 0 for the empty graph (every edge ablated). The corrupt value is each prompt's own corrupt
run (``patch``), the corrupt runs' mean per position (``mean``) or a random corrupt prompt (``resample``).

One threshold is one arbitrary point; MIB (Mueller et al. 2025, "MIB: A Mechanistic Interpretability Benchmark",
section 4) scores a method by its whole curve over fixed sizes, 0.1 % to 100 % of edges: CPR, the area under
the faithfulness curve (higher is better), and CMD, the area between the curve and 1, ``|1 - f|`` (lower is
better), both by the trapezoidal rule on the fraction axis. MIB ranks the edges differently for each: CPR takes
the top edges by *signed* score (``EdgeScores.gain``: positive when keeping the edge raises the metric), since it
rewards circuits that carry the behaviour; CMD takes them by ``|score|``, since an edge that moves the metric
either way decides how close a circuit comes to the model. One method thus yields two curves (``mib_curves``).
MIB also prunes edges that cannot reach the logits; that changes no number here, only the count.

The graphs MIB scores have 30,000 edges and more; on small ones (the induction organism's has 110) three rules
keep the areas honest:

- **Sizes that hold an edge.** Each size keeps ``int(size * n_edges)`` edges, as MIB counts them. A size that
  holds no edge is dropped (it is the empty graph, faithfulness 0 by definition; on 110 edges MIB's 0.1, 0.2
  and 0.5 % are such sizes), and so is a size that holds no more edges than a smaller one (the same circuit
  again; with MIB's sizes, each at least twice the one before, that cannot happen once a size holds an edge).
  The areas run from the first size kept to 1 (``usable_sizes``).
- **Ties in random order.** Tied scores are put in random order ``ties`` times (``tie_orders``), each order's
  curve is measured, and the curve and its areas are the mean over orders, with the areas' spread over them.
  Ties broken by edge index favoured whatever the graph lists first, so an oracle scoring its true edges 1 and
  the rest 0 could fall below a method; its curve is now an expected value, an upper reference. Each distinct
  circuit is run once, so orders cost nothing where the ties they reorder change no circuit.
- **Chance as the mean of random circuits' areas.** Random circuits of the same sizes are the baseline; the
  chance CPR and CMD are the mean of each random circuit's own area (for CMD, whose ``|.|`` is not linear, this
  differs from the area of the mean random curve), with their spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from operator import itemgetter
from typing import Any, NamedTuple

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
"""Circuit sizes of MIB's curves, as fractions of the graph's edges (``usable_sizes`` drops those holding none)."""

TIE_ORDERS = 5
"""Random orders of tied scores a curve averages over (a ranking without ties has one order)."""


@dataclass(frozen=True, eq=False)
class FaithfulnessCurve:
    """Faithfulness of the top-scoring circuits and of random circuits at fixed sizes."""

    sizes: tuple[float, ...]
    """Fractions of the graph's edges: the requested sizes that hold at least one edge (``usable_sizes``)."""
    n_edges: tuple[int, ...]
    """Edges kept at each size (``int(size * total)``, as MIB counts them)."""
    faithfulness: tuple[float, ...]
    """Mean faithfulness over the tie orders (``orders``) at each size."""
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
    orders: tuple[tuple[float, ...], ...] = ()
    """Faithfulness of each random order of tied scores: one row per order (one row when nothing ties); empty in
    a curve saved before tie orders existed (then ``faithfulness`` is its one order)."""
    ranked_by: str = "absolute"
    """How the edges were ranked: ``absolute`` (``|score|``, MIB's ranking for CMD), ``signed`` (``gain``, MIB's
    ranking for CPR), or a caller's own label."""

    @property
    def _rows(self) -> tuple[tuple[float, ...], ...]:
        return self.orders or (self.faithfulness,)

    @property
    def cpr(self) -> float:
        """Area under the curve, mean over tie orders (MIB's CPR when ``ranked_by`` is ``signed``; higher is better)."""
        return statistics.fmean(area_under(self.sizes, row) for row in self._rows)

    @property
    def cmd(self) -> float:
        """Area between the curve and 1, mean over tie orders (MIB's CMD when ``ranked_by`` is ``absolute``)."""
        return statistics.fmean(area_from_one(self.sizes, row) for row in self._rows)

    @property
    def cpr_spread(self) -> float:
        """Standard deviation of the CPR over tie orders (0 when one order)."""
        return _spread([area_under(self.sizes, row) for row in self._rows])

    @property
    def cmd_spread(self) -> float:
        """Standard deviation of the CMD over tie orders (0 when one order)."""
        return _spread([area_from_one(self.sizes, row) for row in self._rows])

    @property
    def random_mean(self) -> tuple[float, ...]:
        """Mean faithfulness of the random circuits at each size (for drawing; chance areas are per circuit)."""
        return tuple(torch.tensor(self.random).mean(0).tolist()) if self.random else ()

    @property
    def random_cpr(self) -> float:
        """Chance CPR: the mean of each random circuit's area under its curve (nan without random circuits)."""
        return statistics.fmean(area_under(self.sizes, r) for r in self.random) if self.random else float("nan")

    @property
    def random_cmd(self) -> float:
        """Chance CMD: the mean of each random circuit's area between its curve and 1."""
        return statistics.fmean(area_from_one(self.sizes, r) for r in self.random) if self.random else float("nan")

    @property
    def random_cpr_spread(self) -> float:
        """Standard deviation of the random circuits' CPR."""
        return _spread([area_under(self.sizes, r) for r in self.random])

    @property
    def random_cmd_spread(self) -> float:
        """Standard deviation of the random circuits' CMD."""
        return _spread([area_from_one(self.sizes, r) for r in self.random])

    def at(self, size: float) -> float:
        """Faithfulness at one of the curve's sizes."""
        if size not in self.sizes:
            raise ValueError(f"{size:g} is not a size of this curve {self.sizes} (sizes holding no edge are dropped)")
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
            "orders": [list(r) for r in self.orders],
            "ranked_by": self.ranked_by,
            "random": [list(r) for r in self.random],
            "random_mean": list(self.random_mean),
            "cpr": self.cpr,
            "cmd": self.cmd,
            "cpr_spread": self.cpr_spread,
            "cmd_spread": self.cmd_spread,
            "random_cpr": self.random_cpr,
            "random_cmd": self.random_cmd,
            "random_cpr_spread": self.random_cpr_spread,
            "random_cmd_spread": self.random_cmd_spread,
            "full_metric": self.full_metric,
            "empty_metric": self.empty_metric,
            "ablation": self.ablation,
            "method": self.method,
            "metric": self.metric,
            "task": self.task,
            "model": self.model,
            "seconds": self.seconds,
        }


class MIBCurves(NamedTuple):
    """One method's two curves as MIB scores them: CPR from the ``signed`` ranking, CMD from the ``absolute`` one.

    Both share the same random circuits (the chance levels).
    """

    signed: FaithfulnessCurve
    absolute: FaithfulnessCurve

    @property
    def cpr(self) -> float:
        """MIB's CPR: area under the curve of the top edges by signed score (higher is better)."""
        return self.signed.cpr

    @property
    def cmd(self) -> float:
        """MIB's CMD: area between 1 and the curve of the top edges by ``|score|`` (lower is better)."""
        return self.absolute.cmd


def _spread(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def area_under(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoidal area under ``values`` over ``sizes`` (MIB's CPR when ``sizes`` are ``SIZES``)."""
    if len(sizes) != len(values):
        raise ValueError(f"{len(sizes)} sizes but {len(values)} values")
    pairs = zip(sizes[:-1], sizes[1:], values[:-1], values[1:], strict=True)
    return sum((x2 - x1) * (y1 + y2) / 2 for x1, x2, y1, y2 in pairs)


def area_from_one(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoidal area of ``|1 - values|`` over ``sizes`` (MIB's CMD)."""
    return area_under(sizes, [abs(1.0 - v) for v in values])


def usable_sizes(sizes: Sequence[float], n_edges: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The sizes whose circuits hold at least one edge, and more edges than any smaller size; with their counts.

    A size keeps ``int(size * n_edges)`` edges (MIB's count). One holding none is the empty graph; one holding no
    more than a smaller size is the same circuit again: both are dropped. Sizes must increase.
    """
    if any(b <= a for a, b in pairwise(sizes)):
        raise ValueError(f"circuit sizes must increase, got {tuple(sizes)}")
    kept: list[float] = []
    counts: list[int] = []
    for size in sizes:
        n = min(int(size * n_edges), n_edges)
        if n >= 1 and (not counts or n > counts[-1]):
            kept.append(size)
            counts.append(n)
    if not kept:
        raise ValueError(f"no size in {tuple(sizes)} holds an edge of a {n_edges}-edge graph; add larger sizes")
    return tuple(kept), tuple(counts)


def tie_orders(key: Tensor, orders: int = TIE_ORDERS, seed: int = 0) -> list[Tensor]:
    """Edge indices from the highest ``key`` down, each group of tied values in random order.

    One ranking when no two values tie; else ``orders`` rankings, drawn with seed ``seed``.
    """
    if orders < 1:
        raise ValueError(f"need at least one tie order, got {orders}")
    key = key.detach().flatten().cpu()
    values = key.sort().values
    if len(key) < 2 or not bool((values[1:] == values[:-1]).any()):
        return [torch.sort(key, descending=True, stable=True).indices]
    gen = torch.Generator().manual_seed(seed)
    rankings = []
    for _ in range(orders):
        perm = torch.randperm(len(key), generator=gen)
        rankings.append(perm[torch.sort(key[perm], descending=True, stable=True).indices])
    return rankings


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
    ties: int = TIE_ORDERS,
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> FaithfulnessCurve:
    """Faithfulness of the top-``n`` circuits of ``scores`` at each size, and of ``random`` random circuits each.

    ``absolute``: rank edges by ``|score|`` (default; MIB's ranking for CMD) or by ``scores.gain`` (signed, MIB's
    ranking for CPR; ``mib_curves`` measures both). Tied scores take ``ties`` random orders (seed ``seed``).
    Random circuit ``i`` uses seed ``seed + i``.
    """
    key = scores.scores.abs() if absolute else scores.gain
    return ranking_curve(model, task, scores.graph, tie_orders(key, ties, seed), scores.method, sizes=sizes,
                         random=random, ablation=ablation, metric=metric, seed=seed, batch_size=batch_size,
                         progress=progress, ranked_by="absolute" if absolute else "signed")  # fmt: skip


def mib_curves(
    model: Model | ResidualModel,
    task: Task,
    graph: Graph,
    gain: Tensor,
    method: str,
    *,
    magnitude: Tensor | None = None,
    ties: int = TIE_ORDERS,
    sizes: Sequence[float] = SIZES,
    random: int = 3,
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> MIBCurves:
    """MIB's CPR and CMD curves of one method's edge scores, and random circuits, through the same runs.

    ``gain``: one signed score per edge of ``graph``, positive when keeping the edge raises the metric
    (``EdgeScores.gain``); it ranks the CPR curve. ``magnitude`` (default ``|gain|``) ranks the CMD curve. Ties
    take ``ties`` random orders (seed ``seed``); random circuit ``i`` uses seed ``seed + i``.
    """
    if gain.shape != (graph.n_edges,) or (magnitude is not None and magnitude.shape != (graph.n_edges,)):
        raise ValueError(f"need one score per edge of {graph} ({graph.n_edges}), got {tuple(gain.shape)}")
    magnitude = gain.abs() if magnitude is None else magnitude
    rankings = {"signed": tie_orders(gain, ties, seed), "absolute": tie_orders(magnitude, ties, seed)}
    curves = ranking_curves(model, task, graph, rankings, method, sizes=sizes, random=random, ablation=ablation,
                            metric=metric, seed=seed, batch_size=batch_size, progress=progress)  # fmt: skip
    return MIBCurves(curves["signed"], curves["absolute"])


def ranking_curve(
    model: Model | ResidualModel,
    task: Task,
    graph: Graph,
    ranking: Tensor | Sequence[Tensor],
    method: str,
    *,
    sizes: Sequence[float] = SIZES,
    random: int = 3,
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    ranked_by: str = "absolute",
) -> FaithfulnessCurve:
    """Faithfulness of the first ``int(size * n_edges)`` edges of ``ranking`` at each size, and of random circuits.

    Any ranking of the graph's edges: edge scores' (``faithfulness_curve``), or a node circuit's edges first; or
    several (e.g. ``tie_orders``), whose curves are averaged. Random circuit ``i`` uses seed ``seed + i``.
    """
    return ranking_curves(model, task, graph, {ranked_by: ranking}, method, sizes=sizes, random=random,
                          ablation=ablation, metric=metric, seed=seed, batch_size=batch_size,
                          progress=progress)[ranked_by]  # fmt: skip


def ranking_curves(
    model: Model | ResidualModel,
    task: Task,
    graph: Graph,
    rankings: Mapping[str, Tensor | Sequence[Tensor]],
    method: str,
    *,
    sizes: Sequence[float] = SIZES,
    random: int = 3,
    ablation: Ablation = "patch",
    metric: Metric = logit_diff,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, FaithfulnessCurve]:
    """One curve per named ranking (or list of tie orders), sharing random circuits; each distinct circuit runs once."""
    start = time.perf_counter()
    model = residual(model)  # read once, shared with circuit_metrics
    sizes, counts = usable_sizes(sizes, graph.n_edges)
    masks: list[Tensor] = []
    slots: dict[bytes, int] = {}

    def slot(mask: Tensor) -> int:
        """Index of ``mask`` among the distinct circuits to run."""
        key = mask.numpy().tobytes()
        if key not in slots:
            slots[key] = len(masks)
            masks.append(mask)
        return slots[key]

    def top(order: Tensor, n: int) -> Tensor:
        return torch.zeros(graph.n_edges, dtype=torch.bool).index_fill_(0, order[:n], True)

    layout = {}
    for name, given in rankings.items():
        orders = [given] if isinstance(given, Tensor) else list(given)
        if not orders:
            raise ValueError(f"ranking {name!r} has no order")
        layout[name] = [[slot(top(order, n)) for n in counts] for order in orders]
    randoms = [[slot(Circuit.random(graph, n, seed=seed + i).edges) for n in counts] for i in range(random)]
    distinct = [Circuit(graph, mask) for mask in masks]
    full, empty, values = circuit_metrics(model, task, distinct, ablation=ablation, metric=metric, seed=seed,
                                          batch_size=batch_size, progress=progress)  # fmt: skip
    faith = [_normalise(v, full, empty) for v in values]
    random_rows = tuple(tuple(faith[j] for j in row) for row in randoms)
    seconds = time.perf_counter() - start
    curves = {}
    for name, rows in layout.items():
        measured = tuple(tuple(faith[j] for j in row) for row in rows)
        curves[name] = FaithfulnessCurve(
            sizes=sizes,
            n_edges=counts,
            faithfulness=tuple(statistics.fmean(column) for column in zip(*measured, strict=True)),
            random=random_rows,
            full_metric=full,
            empty_metric=empty,
            ablation=ablation,
            method=method,
            metric=getattr(metric, "__name__", repr(metric)),
            task=task.name,
            model=model.model.provenance,
            seconds=seconds,
            orders=measured,
            ranked_by=name,
        )
    return curves


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
