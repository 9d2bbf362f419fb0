"""Dictionary kinds: one registry of the activation rules a sparse dictionary can have, each with its config.

A kind is declared once, on its ``Dictionary`` subclass (the registry's ``fn`` is the class, built as
``fn(cfg, seed=seed)``)::

    @dataclass(frozen=True)
    class ReLU6Config:
        cap: float = 6.0
        \"\"\"Largest latent value.\"\"\"

    @KINDS.declare("relu6", config=ReLU6Config)
    class ReLU6Dictionary(Dictionary):
        def activate(self, pre_acts):
            return pre_acts.clamp(0, self.settings.cap)

``build_dictionary``, ``train``, ``load_dictionary`` and ``mechscope dict train --kind`` (choices, and one option
per config field with the field's docstring and default) all read this registry.

A kind's config holds its own settings. Fields named like a ``DictionaryConfig`` field (``k``,
``jumprelu_bandwidth``, …) are stored there, fields named like a ``TrainConfig`` field (the penalty weights
``l1_coeff``, ``l0_coeff``) set the training run, and any other field is kept in ``DictionaryConfig.options`` (so
it is saved with the dictionary). ``Dictionary.settings`` gives the kind's config back, typed. The defaults of the
built-in kinds' settings live here, once: ``DictionaryConfig`` and ``TrainConfig`` take theirs from these configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core._registry import Registry

if TYPE_CHECKING:
    from ._dictionary import DictionaryConfig
    from ._train import TrainConfig

KINDS: Registry[Any, Any] = Registry("dictionary kind", builtins=("mechscope.features._dictionary",))
"""Dictionary kinds by name (``relu``, ``topk``, ``batchtopk``, ``jumprelu`` built in)."""


@dataclass(frozen=True)
class ReLUConfig:
    """Settings of a ReLU dictionary."""

    l1_coeff: float = 1e-2
    """Weight of the decoder-norm-weighted L1 penalty; in units of 1 / activation norm."""

    def __post_init__(self) -> None:
        if self.l1_coeff < 0:
            raise ValueError(f"l1_coeff must be >= 0, got {self.l1_coeff}")


@dataclass(frozen=True)
class TopKConfig:
    """Settings of a TopK dictionary."""

    k: int = 32
    """Active latents per row (TopK), or on average per row over a training batch (BatchTopK)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class BatchTopKConfig(TopKConfig):
    """Settings of a BatchTopK dictionary."""

    batchtopk_threshold_lr: float = 0.01
    """Step of the moving average that estimates the inference threshold from the smallest positive latent of each
    training batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.batchtopk_threshold_lr <= 1:
            raise ValueError(f"batchtopk_threshold_lr must be in (0, 1], got {self.batchtopk_threshold_lr}")


@dataclass(frozen=True)
class JumpReLUConfig:
    """Settings of a JumpReLU dictionary."""

    jumprelu_init_threshold: float = 0.001
    """Initial threshold (Rajamanoharan et al. 2024 use 0.001 on inputs scaled to E|x|² = d_in)."""
    jumprelu_bandwidth: float = 0.001
    """Width ε of the rectangle kernel in the straight-through estimators (pre-activation units)."""
    l0_coeff: float = 1e-3
    """Weight of the straight-through L0 penalty."""

    def __post_init__(self) -> None:
        if self.jumprelu_init_threshold <= 0 or self.jumprelu_bandwidth <= 0 or self.l0_coeff < 0:
            raise ValueError(f"need positive threshold and bandwidth and l0_coeff >= 0: {self}")


def kind_settings(cfg: DictionaryConfig) -> Any:
    """The config of ``cfg.kind`` as stored in ``cfg``: its fields and ``cfg.options`` (penalties at defaults)."""
    spec = KINDS[cfg.kind]
    values = {}
    for f in spec.fields():
        if f.name in cfg.options:
            values[f.name] = cfg.options[f.name]
        elif hasattr(cfg, f.name):
            values[f.name] = getattr(cfg, f.name)
    return spec.make_config(**values)


def train_config(kind: str, d_in: int, d_sae: int, settings: Any = None, *, d_out: int | None = None,
                 site: str | None = None, target_site: str | None = None, **train: Any) -> TrainConfig:  # fmt: skip
    """A ``TrainConfig`` for a dictionary of ``kind`` with the kind's ``settings`` (its config; default: defaults).

    ``train`` sets the other ``TrainConfig`` fields (``lr``, ``batch_size``, ``n_tokens``, …). A transcoder
    (``d_out`` set) does not subtract ``b_dec`` from its input.
    """
    from ._dictionary import DictionaryConfig
    from ._train import TrainConfig

    spec = KINDS[kind]
    settings = spec.make_config() if settings is None else settings
    if not isinstance(settings, spec.config):
        raise TypeError(f"settings of kind {kind!r} must be a {spec.config.__name__}, got {type(settings).__name__}")
    values = dataclasses.asdict(settings)
    dict_fields = {f.name for f in dataclasses.fields(DictionaryConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    dictionary = DictionaryConfig(
        kind, d_in=d_in, d_sae=d_sae, d_out=d_out, apply_b_dec_to_input=d_out is None, site=site,
        target_site=target_site, **{k: v for k, v in values.items() if k in dict_fields},
        options={k: v for k, v in values.items() if k not in dict_fields and k not in train_fields},
    )  # fmt: skip
    return TrainConfig(dictionary, **{**{k: v for k, v in values.items() if k in train_fields}, **train})
