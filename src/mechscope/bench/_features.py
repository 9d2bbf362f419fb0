"""The features family's one adapter: every declared dictionary kind, trained on the features organisms, scored as is.

Each kind declared in ``mechscope.features.KINDS`` (``relu``, ``topk``, ``batchtopk``, ``jumprelu``, or a plug-in's)
becomes one bench method, ``<kind>_sae``, that trains a dictionary of that kind on the organism's activations
(``organism.data.x``) with ``mechscope.features.train_config`` / ``train``, at the kind's defaults but for what the
organism dictates:

- ``d_in`` = the data's width, ``d_sae`` = ``SAE_EXPANSION`` × ``d_in``;
- ``k`` = ``SAE_K`` wherever the kind has a ``k`` (TopK, BatchTopK), as many as the random-dictionary baseline fires;
- the training budget from the run's ``RunContext``: ``QUICK_STEPS`` or ``FULL_STEPS`` steps of 256 rows at
  ``lr`` 3e-3, seeded with ``ctx.seed``.

The method returns the library's own ``TrainResult`` (the trained dictionary and its training history); the
features scorers read its dictionary (``_scorers.features_scores``) and ``mechscope.report.dictionary_section``
renders it. The kinds are listed from the registry each time the bench asks, so a kind declared later is scored
too.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..core._registry import MethodSpec as Declared
from ..features._kinds import KINDS, train_config
from ..features._train import TrainConfig, TrainResult, train
from ..organisms._protocols import FeaturesOrganism
from ._registry import MethodSpec, RunContext

FAMILY = "features"
"""The organism family these methods run on (organisms with synthetic ``data`` and its true features)."""

SAE_EXPANSION = 4
"""Latents per input dimension of the bench's dictionaries (and of the random-dictionary baseline)."""
SAE_K = 3
"""Active latents per row of the kinds that have a ``k`` (and of the random-dictionary baseline)."""
QUICK_STEPS, FULL_STEPS = 300, 2000
"""Optimiser steps of a quick and of a full run."""
BATCH = 256
"""Rows per step."""


def method_name(kind: str) -> str:
    """The bench method of dictionary kind ``kind`` (``topk`` -> ``topk_sae``)."""
    return f"{kind}_sae"


def bench_config(spec: Declared[Any, Any], d_in: int, ctx: RunContext) -> TrainConfig:
    """The ``TrainConfig`` the bench trains kind ``spec`` with on data of width ``d_in`` (module docstring)."""
    settings = spec.make_config(**({"k": SAE_K} if "k" in {f.name for f in spec.fields()} else {}))
    steps = QUICK_STEPS if ctx.quick else FULL_STEPS
    return train_config(
        spec.name, d_in, SAE_EXPANSION * d_in, settings, lr=3e-3, batch_size=BATCH, n_tokens=BATCH * steps,
        dead_after_tokens=BATCH * 50, seed=ctx.seed, checkpoint_every=10**9, log_every=max(1, steps // 10),
    )  # fmt: skip


def train_declared(spec: Declared[Any, Any], organism: FeaturesOrganism, ctx: RunContext) -> TrainResult:
    """Train a dictionary of kind ``spec`` on a features organism's activations; returns the training result."""
    config = bench_config(spec, organism.data.x.shape[1], ctx)
    return train(config, organism.data.x, ctx.workdir / "sae", progress=False)


def dictionary_methods() -> list[MethodSpec]:
    """One bench method per declared dictionary kind (read from the registry now)."""
    return [MethodSpec(method_name(s.name), FAMILY, partial(train_declared, s), None, False,
                       f"{s.summary.rstrip('.')}: a {s.name} dictionary trained by mechscope.features.train")
            for s in KINDS.specs()]  # fmt: skip
