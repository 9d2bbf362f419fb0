"""Representation similarity against its definitions: linear CKA (biased and debiased) and SVCCA."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.lenses import METHODS, SimilarityConfig, linear_cka, site_similarity, svcca


def _gram_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> float:
    """CKA from n x n Gram matrices, written as the papers write it (the reference for the feature-space code)."""
    x, y = x.double(), y.double()
    n = len(x)
    k, ll = x @ x.T, y @ y.T
    ones = torch.ones(n, dtype=torch.float64)

    def hsic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not debiased:  # Kornblith et al. 2019, eq. 3: tr(K H L H) / (n-1)^2
            h = torch.eye(n, dtype=torch.float64) - 1 / n
            return torch.trace(a @ h @ b @ h) / (n - 1) ** 2
        a, b = a - torch.diag(a.diagonal()), b - torch.diag(b.diagonal())  # Song et al. 2012, eq. 5
        return (torch.trace(a @ b) + (ones @ a @ ones) * (ones @ b @ ones) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (ones @ a @ b @ ones)) / (n * (n - 3))  # fmt: skip

    return float(hsic(k, ll) / (hsic(k, k) * hsic(ll, ll)).sqrt())


@pytest.fixture
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 20, generator=gen)
    return x, x @ torch.randn(20, 30, generator=gen) + 0.5 * torch.randn(60, 30, generator=gen) + 3


@pytest.mark.parametrize("debiased", [True, False])
def test_cka_equals_the_gram_matrix_definition(xy: tuple[torch.Tensor, torch.Tensor], debiased: bool) -> None:
    x, y = xy
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(_gram_cka(x, y, debiased), rel=1e-9)


@pytest.mark.parametrize("debiased", [True, False])
def test_cka_invariances(xy: tuple[torch.Tensor, torch.Tensor], debiased: bool) -> None:
    x, _ = xy
    gen = torch.Generator().manual_seed(1)
    rotation = torch.linalg.qr(torch.randn(20, 20, generator=gen)).Q
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3.5 * x @ rotation, debiased=debiased) == pytest.approx(1.0, abs=1e-6)
    stretch = rotation @ torch.diag(torch.logspace(-1, 1, 20))  # invertible, not a similarity transform
    assert linear_cka(x, x @ stretch, debiased=debiased) < 0.8


def test_debiased_cka_of_independent_matrices_is_near_zero() -> None:
    """Few inputs, many features: the biased estimator calls independent noise similar, the debiased one does not."""
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(100, 500, generator=gen), torch.randn(100, 500, generator=gen)
    assert abs(linear_cka(a, b)) < 0.05
    assert linear_cka(a, b, debiased=False) > 0.5


def test_svcca_is_invariant_to_invertible_maps_and_low_for_noise(xy: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = xy
    gen = torch.Generator().manual_seed(3)
    stretch = torch.randn(20, 20, generator=gen)
    assert svcca(x, x @ stretch + 1, keep=1.0) == pytest.approx(1.0, abs=1e-6)
    noise = torch.randn(60, 5, generator=gen)
    assert svcca(x[:, :5] + 0 * noise, noise, keep=1.0) < 0.5


def test_site_similarity_of_one_model_and_of_two() -> None:
    model = ms.tiny("gpt2")
    prompts = ["The cat sat on the mat.", "Representations are compared token by token."]
    config = SimilarityConfig(sites="embed,resid_post.*")
    one = site_similarity(model, prompts, config)
    assert one.rows == one.cols == ("embed", "resid_post.0", "resid_post.1")
    torch.testing.assert_close(one.values, one.values.T)
    torch.testing.assert_close(one.values.diagonal(), torch.ones(3), atol=1e-6, rtol=0)
    assert one.n == sum(len(p) for p in prompts)  # byte tokens, padding left out
    two = site_similarity(model, prompts, config, other=ms.tiny("gpt2", seed=1), other_sites="resid_post.1")
    assert two.cols == ("resid_post.1",) and two.values.shape == (3, 1)
    assert float(two.values.max()) < 0.99  # a differently seeded model is not the same representation
    assert METHODS["similarity"](model, prompts, sites="resid_post.*", measure="svcca").values.shape == (2, 2)
