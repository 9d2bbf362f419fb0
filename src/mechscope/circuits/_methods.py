"""The built-in circuit methods, each declared once with its config (read by the CLI, ``find_circuit`` and the bench).

The functions here only unpack a config into the library calls (``eap``, ``eap_ig``, ``acdc``,
``activation_patching``, ``attribution_patching``, ``direct_logit_attribution``), which stay the reference API.
A new method is one more config dataclass and one ``@METHODS.declare`` (or ``NODE_METHODS.declare``) here or in
any module: fields need a default and a docstring (the command line shows it as the option's help).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core._model import Model
from ..data._metrics import logit_diff
from ..data._task import Task
from ._acdc import ACDCResult, acdc
from ._attribution import AttributionResult, attribution_patching
from ._contrast import Metric
from ._dla import DLAResult, direct_logit_attribution
from ._eap import eap, eap_ig
from ._graph import EdgeScores
from ._patching import activation_patching
from ._registry import METHODS, NODE_METHODS
from ._result import PatchingResult

Direction = Literal["denoising", "noising"]


def _check(**values: int) -> None:
    if bad := {k: v for k, v in values.items() if v < 0}:
        raise ValueError(f"these settings cannot be negative: {bad}")


# --- circuit discovery ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EAPConfig:
    """Settings of edge attribution patching (``mechscope.circuits.eap``)."""

    direction: Direction = "denoising"
    """denoising: corrupt run, each edge clean; noising: clean run, each edge corrupted."""
    batch_size: int = 32
    """Prompts per forward and backward pass."""
    verify: int = 0
    """Self-check: really patch this many edges drawn at random and report the agreement with their scores."""
    seed: int = 0
    """Seed of the self-check's sample."""

    def __post_init__(self) -> None:
        _check(verify=self.verify)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class EAPIGConfig(EAPConfig):
    """Settings of EAP with integrated gradients (``mechscope.circuits.eap_ig``)."""

    steps: int = 5
    """EAP-IG integration steps (1 is plain EAP)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")


@METHODS.declare("eap", config=EAPConfig, result=EdgeScores, tags=["edges"])
def eap_method(model: Model, task: Task, config: EAPConfig, *, progress: bool = False) -> EdgeScores:
    """Edge attribution patching (Syed et al. 2023): every edge scored from one forward and backward pass."""
    c = config
    return eap(model, task, direction=c.direction, batch_size=c.batch_size, verify=c.verify, seed=c.seed,
               progress=progress)  # fmt: skip


@METHODS.declare("eap-ig", config=EAPIGConfig, result=EdgeScores, tags=["edges"])
def eap_ig_method(model: Model, task: Task, config: EAPIGConfig, *, progress: bool = False) -> EdgeScores:
    """EAP with integrated gradients (Hanna et al. 2024): gradients averaged on the path from base to source."""
    c = config
    return eap_ig(model, task, steps=c.steps, direction=c.direction, batch_size=c.batch_size, verify=c.verify,
                  seed=c.seed, progress=progress)  # fmt: skip


@dataclass(frozen=True)
class ACDCConfig:
    """Settings of node-level ACDC (``mechscope.circuits.acdc``)."""

    tau: float = 0.01
    """ACDC: a node is removed when removing it moves the score by less than this (KL or metric units)."""
    metric: Literal["kl", "logit_diff"] = "kl"
    """ACDC's score: KL divergence from the clean model's next-token distribution, or the logit difference."""
    ablation: Literal["patch", "mean", "resample"] = "patch"
    """What a removed node outputs: its corrupt run (patch), the corrupt runs' mean, or a random corrupt prompt."""
    seed: int = 0
    """Seed of resample ablation."""

    def __post_init__(self) -> None:
        if self.tau < 0:
            raise ValueError(f"tau cannot be negative, got {self.tau}")


@METHODS.declare("acdc", config=ACDCConfig, result=ACDCResult, tags=["nodes"])
def acdc_method(model: Model, task: Task, config: ACDCConfig, *, progress: bool = False) -> ACDCResult:
    """ACDC (Conmy et al. 2023) over heads and MLPs: remove nodes, last layer first, while the output holds."""
    c = config
    metric: Metric | Literal["kl"] = "kl" if c.metric == "kl" else logit_diff
    return acdc(model, task, tau=c.tau, metric=metric, ablation=c.ablation, seed=c.seed, progress=progress)


# --- node scores ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationConfig:
    """Settings of activation patching (``mechscope.circuits.activation_patching``)."""

    kind: str = "head.z"
    """Node kind: resid_pre | resid_mid | resid_post | attn_out | mlp_out | head.z/q/k/v."""
    direction: Direction = "denoising"
    """denoising: corrupt run, clean activation patched in; noising: clean run, corrupt activation patched in."""
    by_pos: bool | None = None
    """One node per position (default: yes for residual kinds, no for heads)."""
    batch_size: int = 64
    """Rows (prompt copies, one per node) per forward pass."""


@NODE_METHODS.declare("activation", config=ActivationConfig, result=PatchingResult, tags=["patching"])
def activation_method(model: Model, task: Task, config: ActivationConfig, *, progress: bool = False) -> PatchingResult:
    """Activation patching: patch every node of a kind in turn and record the metric."""
    c = config
    return activation_patching(model, task, c.kind, direction=c.direction, by_pos=c.by_pos,
                               batch_size=c.batch_size, progress=progress)  # fmt: skip


@dataclass(frozen=True)
class AttributionConfig:
    """Settings of attribution patching (``mechscope.circuits.attribution_patching``)."""

    kind: str = "head.z"
    """Node kind: resid_pre | resid_mid | resid_post | attn_out | mlp_out | head.z/q/k/v."""
    direction: Direction = "denoising"
    """denoising: corrupt run, clean activation patched in; noising: clean run, corrupt activation patched in."""
    by_pos: bool | None = None
    """One node per position (default: yes for residual kinds, no for heads)."""
    batch_size: int = 32
    """Prompts per forward and backward pass."""
    verify: int = 0
    """Self-check: really patch this many nodes drawn at random and report the agreement with the estimate."""
    seed: int = 0
    """Seed of the self-check's sample."""

    def __post_init__(self) -> None:
        _check(verify=self.verify)


@NODE_METHODS.declare("attribution", config=AttributionConfig, result=AttributionResult, tags=["patching"])
def attribution_method(
    model: Model, task: Task, config: AttributionConfig, *, progress: bool = False
) -> AttributionResult:
    """Attribution patching: every node's patching effect estimated from one forward and backward pass."""
    c = config
    return attribution_patching(model, task, [c.kind], direction=c.direction, by_pos=c.by_pos,
                                batch_size=c.batch_size, verify=c.verify, seed=c.seed, progress=progress)  # fmt: skip


@dataclass(frozen=True)
class DLAConfig:
    """Direct logit attribution has no settings (per-neuron attribution is a library option)."""


@NODE_METHODS.declare("dla", config=DLAConfig, result=DLAResult, tags=["heads"])
def dla_method(model: Model, task: Task, config: DLAConfig, *, progress: bool = False) -> DLAResult:
    """Direct logit attribution: each head's and MLP's direct share of the clean logit difference."""
    return direct_logit_attribution(model, task)
