"""Typed results of the trojan audit: one reverse-engineered trigger per class, and the audit across classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

TriggerForm = Literal["patch", "blend"]


@dataclass(frozen=True)
class ReversedTrigger:
    """The smallest trigger a search found that sends clean images to ``target``.

    Both forms put it in as ``x' = (1 - mask) x + mask pattern``: ``patch`` with a mask per pixel (Neural Cleanse),
    ``blend`` with one weight for the whole image.
    """

    target: int
    form: TriggerForm
    pattern: Float[Tensor, "c h w"]
    """The values put in, in the images' units."""
    mask: Float[Tensor, "h w"] | Float[Tensor, "1 1"]
    """In [0, 1]: per pixel (patch) or one blend weight (blend)."""
    size: float
    """What the audit ranks classes by, smaller = easier to reach: the mask's L1 norm in pixels (``neural_cleanse``),
    the blend weight (``blend``), the target's cross-entropy with the synthesised trigger put in (the synthesis
    methods)."""
    found: bool
    """Whether some step reached the config's attack success with this trigger (else it is the last one tried)."""
    attack_success: float
    """Share of held-out clean images (not already of class ``target``) the trigger sends to ``target``."""
    steps: int
    optimisation_s: float
    """Seconds spent optimising (forward, backward and update passes)."""
    evaluation_s: float = 0.0
    """Seconds spent measuring attack success on the held-out images."""

    def apply(self, images: Float[Tensor, "batch c h w"]) -> Float[Tensor, "batch c h w"]:
        """``images`` with the trigger put in."""
        m = self.mask.to(images)
        return (1 - m) * images + m * self.pattern.to(images)

    def picture(self) -> Float[Tensor, "c h w"]:
        """What the trigger shows: the pattern times the mask (a blend: the pattern), compared with candidates."""
        return self.pattern * self.mask if self.mask.numel() > 1 else self.pattern.clone()

    def spectrum(self) -> Float[Tensor, "h w2"]:
        """Magnitude of the 2-D Fourier transform of the trigger's pattern (times the mask), summed over channels."""
        signal = self.pattern * self.mask
        signal = signal - signal.mean(dim=(-2, -1), keepdim=True)
        return torch.fft.rfft2(signal).abs().sum(0)

    def peak_frequency(self) -> tuple[int, int]:
        """(vertical, horizontal) cycles per image of the spectrum's largest component (DC excluded)."""
        spec = self.spectrum()
        spec[0, 0] = 0
        row, col = divmod(int(spec.argmax()), spec.shape[1])
        return (row if row <= spec.shape[0] // 2 else row - spec.shape[0], col)

    def to_dict(self, tensors: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target, "form": self.form, "size": self.size, "found": self.found,
            "attack_success": self.attack_success, "steps": self.steps, "optimisation_s": self.optimisation_s,
            "evaluation_s": self.evaluation_s, "peak_frequency": list(self.peak_frequency()),
        }  # fmt: skip
        if tensors:
            out["pattern"] = self.pattern.tolist()
            out["mask"] = self.mask.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReversedTrigger:
        return cls(int(d["target"]), d["form"], torch.tensor(d["pattern"]),
                   torch.tensor(d["mask"]), float(d["size"]), bool(d["found"]),
                   float(d["attack_success"]), int(d["steps"]), float(d["optimisation_s"]),
                   float(d.get("evaluation_s", 0.0)))  # fmt: skip


@dataclass(frozen=True)
class TrojanAudit:
    """One method's reverse-engineered trigger for every class, and which classes stand out as trojan targets.

    The anomaly index of class ``c`` is ``(median - size_c) / (1.4826 MAD)`` over the classes' trigger sizes
    (Wang et al. 2019, section IV-C): how many robust standard deviations smaller than typical its trigger is.
    Classes above ``threshold`` (2 in the paper: a 95% chance of an outlier under normality) are suspects. With
    ``audit(..., relative=True)`` the sizes are ``log(size_c / reference size_c)`` against a clean reference model.
    """

    method: str
    model: str
    triggers: tuple[ReversedTrigger, ...]
    """One per class, in class order."""
    anomaly: tuple[float, ...]
    """Anomaly index per class (positive: a smaller trigger than the median class needs)."""
    threshold: float
    reference_success: tuple[float, ...] | None = None
    """Attack success of each class's trigger on the reference (clean) model, when one was given."""
    config: dict[str, Any] = field(default_factory=dict)
    candidate_scores: tuple[tuple[float, ...], ...] | None = None
    """When candidates were given: per class, the similarity of its trigger's picture to each candidate
    (:func:`mechscope.trojans.similarity`, in [-1, 1])."""
    reference_triggers: tuple[ReversedTrigger, ...] | None = None
    """With ``audit(..., relative=True)``: the same search's trigger per class on the reference model; the anomaly
    index is then over ``log(size / reference size)``."""

    def pick(self, cls: int | None = None) -> list[int]:
        """Candidates from most to least like class ``cls``'s trigger (default: the most anomalous class)."""
        if self.candidate_scores is None:
            raise ValueError("this audit was run without candidates: pass candidates=[...] to audit()")
        row = self.candidate_scores[self.ranking[0] if cls is None else cls]
        return sorted(range(len(row)), key=lambda i: -row[i])

    @property
    def ranking(self) -> list[int]:
        """Classes from most to least anomalous."""
        return sorted(range(len(self.anomaly)), key=lambda c: -self.anomaly[c])

    @property
    def suspects(self) -> list[int]:
        """Classes whose anomaly index exceeds the threshold, most anomalous first."""
        return [c for c in self.ranking if self.anomaly[c] > self.threshold]

    @property
    def optimisation_s(self) -> float:
        return sum(t.optimisation_s for t in self.triggers)

    @property
    def evaluation_s(self) -> float:
        return sum(t.evaluation_s for t in self.triggers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "model": self.model, "threshold": self.threshold, "suspects": self.suspects,
            "ranking": self.ranking, "anomaly": list(self.anomaly),
            "reference_success": None if self.reference_success is None else list(self.reference_success),
            "optimisation_s": self.optimisation_s, "evaluation_s": self.evaluation_s, "config": self.config,
            "candidate_scores": None if self.candidate_scores is None else [list(r) for r in self.candidate_scores],
            "pick": None if self.candidate_scores is None else self.pick(),
            "triggers": [t.to_dict() for t in self.triggers],
            "reference_triggers": None if self.reference_triggers is None
            else [t.to_dict() for t in self.reference_triggers],
        }  # fmt: skip
