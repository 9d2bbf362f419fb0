"""Linear probes against ground truth: a planted direction is recovered, random labels stay at chance, and the
control task (Hewitt & Liang 2019) separates reading a property from memorising word types."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.lenses import METHODS, ProbeConfig, control_labels, probe, train_probe


def _planted(n: int = 400, d: int = 32, noise: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Activations with anisotropic scales, labels = sign(x . u + noise) for a known unit direction u."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=gen)
    u = u / u.norm()
    x = torch.randn(n, d, generator=gen) * torch.linspace(0.5, 2.0, d)
    y = ((x @ u + noise * torch.randn(n, generator=gen)) > 0).long()
    return x, y, u


def test_probe_recovers_a_planted_direction_selectively() -> None:
    x, y, u = _planted()
    types = torch.arange(len(x)) % 200  # 200 word types, each seen twice with unrelated labels
    result = train_probe(x, y, ProbeConfig(), types=types)
    assert float(result.direction @ u) > 0.9
    assert result.accuracy > 0.85
    assert result.control_accuracy is not None and result.selectivity is not None
    assert result.selectivity > 0.25 and result.control_accuracy < 0.7
    assert result.direction.norm() == pytest.approx(1.0, abs=1e-5)


def test_probe_on_random_labels_stays_at_chance() -> None:
    x, _, _ = _planted()
    labels = torch.randint(0, 2, (len(x),), generator=torch.Generator().manual_seed(5))
    result = train_probe(x, labels, ProbeConfig(control=False))
    assert abs(result.accuracy - 0.5) < 0.08 and result.control_accuracy is None


def test_probe_on_separable_data_is_perfect() -> None:
    x, _, u = _planted(n=800, noise=0.0)
    keep = (x @ u).abs() > 1.0  # a wide margin, so held-out points are separated too
    x, y = x[keep], (x[keep] @ u > 0).long()
    result = train_probe(x, y, ProbeConfig(l2=1e-4))
    assert result.accuracy == 1.0 and all(a == 1.0 for a in result.fold_accuracies)


def test_control_task_gives_one_label_per_type_from_the_label_distribution() -> None:
    y = torch.tensor([0, 0, 0, 1] * 250)
    types = torch.arange(1000) % 300
    control = control_labels(y, types, torch.Generator().manual_seed(0))
    for t in range(300):
        assert control[types == t].unique().numel() == 1
    assert 0.1 < float(control.float().mean()) < 0.4  # about the real labels' 25 % of ones


def test_multiclass_probe_and_a_model_site() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(3, 16, generator=gen)
    labels = torch.arange(300) % 3
    result = train_probe(centres[labels] + torch.randn(300, 16, generator=gen), labels, ProbeConfig(control=False))
    assert result.accuracy > 0.95 and result.weight.shape == (3, 16) and result.classes == (0, 1, 2)
    model = ms.tiny("llama")
    words = [f"{a}{b}" for a in "abcdefgh" for b in "xyz"]
    is_x = [int(w.endswith("x")) for w in words]  # readable from the last token's embedding
    read = probe(model, words, is_x, ProbeConfig(site="embed", folds=3, control=False))
    assert read.site == "embed" and read.accuracy == 1.0 and read.direction.shape == (64,)
    assert METHODS["probe"](model, words, is_x, site="embed", folds=3).control_accuracy is not None


def test_mlp_probe_reads_what_a_linear_probe_cannot() -> None:
    """XOR of two coordinates: no linear probe beats chance, a one-layer MLP probe reads it (Hewitt & Liang 2019 §4)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    linear = train_probe(x, y, ProbeConfig(control=False))
    mlp = train_probe(x, y, ProbeConfig(hidden=16, control=True))
    assert linear.accuracy < 0.65 and mlp.accuracy > 0.9
    assert mlp.control_accuracy is not None and mlp.control_accuracy < 0.65  # random labels per example: chance
    assert torch.equal(mlp.weight, linear.weight)  # the reported direction is the linear probe's
    assert train_probe(x, y, ProbeConfig(hidden=16, control=False)).accuracy == mlp.accuracy  # seeded
    with pytest.raises(ValueError, match="hidden"):
        ProbeConfig(hidden=-1)
