"""Linear probes with a control task: whether a property is linearly readable at a site, and how selectively.

A probe is multinomial logistic regression (L2-regularised, fitted full-batch with L-BFGS in torch) from a site's
vectors to labels, scored by k-fold cross-validated accuracy. A probe can score well because the representation
encodes the property, or because the probe is expressive enough to memorise any labelling of its inputs. The
**control task** of Hewitt & Liang 2019 ("Designing and Interpreting Probes with Control Tasks", section 2) tells
the two apart: every word *type* (here: each distinct ``types`` value, by default the token read) gets a random
label drawn from the real labels' distribution, and the same probe is trained and cross-validated on it.
**Selectivity** is the real accuracy minus the control accuracy: high when the probe reads the property rather
than memorising word identities.

The probe's weights, mapped back from the standardised features it trains on to the site's own coordinates and
normalised, are a direction in the site's space: ``ProbeResult.direction`` (binary labels: class 1 minus class 0)
can be handed to ``attribution.Unit(site, direction=...)`` or to a steering intervention (``core.Add``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core._model import Inputs, Model
from ._registry import METHODS


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of a linear probe (``mechscope probe``)."""

    site: str = "resid_post.0"
    """Site read (one position per prompt, see pos)."""
    pos: int = -1
    """Position read: negative counts back from each prompt's last real token."""
    folds: int = 5
    """Cross-validation folds."""
    l2: float = 1e-3
    """L2 penalty on the weights (per example, on standardised features)."""
    steps: int = 100
    """L-BFGS iterations per fit."""
    control: bool = True
    """Also fit the control task (random labels per word type) and report selectivity."""
    seed: int = 0
    """Seed of the folds and of the control labels."""
    hidden: int = 0
    """0: a linear probe. n > 0: the cross-validated accuracies (task and control) come from an MLP probe with one
    ReLU layer of n units (Hewitt & Liang 2019 §4: more expressive probes gain accuracy and lose selectivity); the
    reported weights and direction stay those of the linear probe."""

    def __post_init__(self) -> None:
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {self.hidden}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.l2 < 0 or self.steps < 1:
            raise ValueError(f"l2 must be >= 0 and steps >= 1, got {self.l2} and {self.steps}")


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`train_probe` returns: cross-validated accuracy, the control task, and the probe's direction."""

    accuracy: float
    """Mean held-out accuracy over the folds."""
    fold_accuracies: tuple[float, ...]
    control_accuracy: float | None
    """The same probe on the control task (None when not run)."""
    selectivity: float | None
    """``accuracy - control_accuracy``."""
    chance: float
    """Accuracy of always predicting the most frequent label."""
    classes: tuple[int, ...]
    """The label values, in the order of ``weight``'s rows."""
    weight: Float[Tensor, "class d"]
    """The probe fitted on all examples, in the site's coordinates: logits are ``x @ weight.T + bias``."""
    bias: Float[Tensor, " class"]
    direction: Float[Tensor, " d"]
    """Unit vector in the site's space: class 1 minus class 0 (binary), else the first class's weight row."""
    n: int
    site: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON (the weights as lists)."""
        return {"method": "probe", "site": self.site, "n": self.n, "accuracy": self.accuracy,
                "fold_accuracies": list(self.fold_accuracies), "control_accuracy": self.control_accuracy,
                "selectivity": self.selectivity, "chance": self.chance, "classes": list(self.classes),
                "direction": self.direction.tolist(), "bias": self.bias.tolist()}  # fmt: skip

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)


def _fit(x: Tensor, y: Tensor, n_classes: int, config: ProbeConfig) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression on ``x`` (standardised inside): ``(weight [class d], bias [class])``, raw x."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    z = (x - mean) / std
    w = torch.zeros(n_classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=config.steps, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(z @ w.T + b, y) + config.l2 * w.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(loss)
    weight = w.detach() / std  # z @ w.T = (x - mean) / std @ w.T
    return weight, b.detach() - weight @ mean


def _fit_mlp(x: Tensor, y: Tensor, n_classes: int, config: ProbeConfig) -> Callable[[Tensor], Tensor]:
    """An MLP probe (standardise, ReLU layer of ``config.hidden``, linear), seeded, fitted like the linear one."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    gen = torch.Generator().manual_seed(config.seed)
    w1 = (torch.randn(config.hidden, x.shape[1], generator=gen, dtype=x.dtype) / x.shape[1] ** 0.5).requires_grad_()
    b1 = torch.zeros(config.hidden, dtype=x.dtype, requires_grad=True)
    w2 = (torch.randn(n_classes, config.hidden, generator=gen, dtype=x.dtype) / config.hidden**0.5).requires_grad_()
    b2 = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)

    def forward(v: Tensor) -> Tensor:
        return torch.relu(((v - mean) / std) @ w1.T + b1) @ w2.T + b2

    opt = torch.optim.LBFGS([w1, b1, w2, b2], max_iter=config.steps, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(forward(x), y) + config.l2 * (w1.pow(2).sum() + w2.pow(2).sum())
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(loss)
    return lambda v: forward(v).detach()


def _cv_accuracy(x: Tensor, y: Tensor, n_classes: int, folds: Tensor, config: ProbeConfig) -> list[float]:
    accs = []
    for k in range(config.folds):
        test = folds == k
        if not bool(test.any()) or bool(test.all()):
            continue
        if config.hidden:
            logits = _fit_mlp(x[~test], y[~test], n_classes, config)(x[test])
        else:
            weight, bias = _fit(x[~test], y[~test], n_classes, config)
            logits = x[test] @ weight.T + bias
        accs.append(float((logits.argmax(-1) == y[test]).float().mean()))
    return accs


@torch.no_grad()
def train_probe(
    acts: Float[Tensor, "n d"], labels: Sequence[int] | Tensor, config: ProbeConfig = ProbeConfig(),
    *, types: Sequence[Any] | Tensor | None = None,
) -> ProbeResult:  # fmt: skip
    """Cross-validated linear probe from ``acts`` to ``labels``, with the control task of Hewitt & Liang 2019.

    ``types`` names each example's word type for the control task (same type, same random label); default: every
    example is its own type, so the control labels are random per example and the control accuracy is chance.
    """
    x = acts.detach().double().cpu()
    raw = torch.as_tensor(labels).flatten().cpu()
    if x.ndim != 2 or len(raw) != len(x):
        raise ValueError(f"a probe needs [n d] activations and n labels, got {list(x.shape)} and {len(raw)} labels")
    classes, y = torch.unique(raw, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("a probe needs at least two distinct labels")
    if len(x) < config.folds:
        raise ValueError(f"{len(x)} examples are fewer than folds={config.folds}")
    gen = torch.Generator().manual_seed(config.seed)
    folds = torch.randperm(len(x), generator=gen) % config.folds  # balanced random folds
    accs = _cv_accuracy(x, y, len(classes), folds, config)
    chance = float(torch.bincount(y).max()) / len(y)
    control = None
    if config.control:
        control_y = control_labels(y, types, gen)
        control = sum(_cv_accuracy(x, control_y, len(classes), folds, config)) / config.folds
    weight, bias = _fit(x, y, len(classes), config)
    direction = weight[1] - weight[0] if len(classes) == 2 else weight[0]
    accuracy = sum(accs) / len(accs)
    return ProbeResult(accuracy, tuple(accs), control, None if control is None else accuracy - control, chance,
                       tuple(int(c) for c in classes), weight.float(), bias.float(),
                       (direction / direction.norm().clamp_min(1e-12)).float(), len(x))  # fmt: skip


def control_labels(
    y: Int[Tensor, " n"], types: Sequence[Any] | Tensor | None, gen: torch.Generator
) -> Int[Tensor, " n"]:
    """Hewitt & Liang's control task: one random label per word type, drawn from the labels' empirical distribution."""
    if types is None:
        type_ids = torch.arange(len(y))
    else:
        keys = types.tolist() if isinstance(types, Tensor) else list(types)
        if len(keys) != len(y):
            raise ValueError(f"types has {len(keys)} entries for {len(y)} examples")
        index: dict[Any, int] = {}
        type_ids = torch.tensor([index.setdefault(k, len(index)) for k in keys])
    n_types = int(type_ids.max()) + 1
    freq = torch.bincount(y).double()
    per_type = torch.multinomial(freq / freq.sum(), n_types, replacement=True, generator=gen)
    return per_type[type_ids]


@torch.no_grad()
def probe(
    model: Model, inputs: Inputs, labels: Sequence[int] | Tensor, config: ProbeConfig = ProbeConfig(),
    *, types: Sequence[Any] | Tensor | None = None,
) -> ProbeResult:  # fmt: skip
    """Probe ``config.site`` at one position per prompt for ``labels`` (one per prompt).

    The control task's word types default to the token read at that position.
    """
    site = model.resolve(config.site)
    if len(site) != 1:
        raise ValueError(f"probe reads one site, but {config.site!r} matches {len(site)}")
    run = model.run(inputs, cache=site[0].name, logits=False)
    assert run.tokens is not None
    act = run.cache[site[0].name]
    if act.ndim < 3:
        raise ValueError(f"site {site[0].name} has shape {list(act.shape)}; a probe reads [batch pos ...] sites")
    last = run.last_pos()
    pos = last + 1 + config.pos if config.pos < 0 else torch.full_like(last, config.pos)
    if bool((pos < 0).any()) or bool((pos >= act.shape[1]).any()):
        raise ValueError(f"pos={config.pos} falls outside some prompt (lengths {(last + 1).tolist()})")
    rows = torch.arange(len(pos))
    x = act[rows, pos].flatten(1)
    result = train_probe(x, labels, config, types=types if types is not None else run.tokens[rows, pos])
    return ProbeResult(**{**result.__dict__, "site": site[0].name})


@METHODS.declare("probe", config=ProbeConfig, result=ProbeResult, tags=("probe",))
def probe_method(model: Model, inputs: Inputs, labels: Sequence[int], config: ProbeConfig) -> ProbeResult:
    """Cross-validated linear probe at a site, with a control task and selectivity (Hewitt & Liang 2019)."""
    return probe(model, inputs, labels, config)
