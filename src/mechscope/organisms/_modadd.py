"""Modular-addition organism: a one-hidden-layer network that computes (a + b) mod p with a few Fourier frequencies.

Networks trained with weight decay on modular addition generalise by embedding each number as waves
``cos(w_k a), sin(w_k a)`` at a few *key frequencies* ``w_k = 2 pi k / p`` and combining them with trigonometric
identities (Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability", sections 4-5;
the same algorithm appears in one-hidden-layer MLPs, Gromov 2023, "Grokking modular arithmetic"). This organism
is such an MLP, the smallest model with the mechanism: ``logits = W_U relu(W_in (E[a] + E[b]) + b_in) + b_U``,
trained full-batch with AdamW and strong weight decay on 60% of all pairs, so it trains in seconds; its modules
(``embed``, ``mlp``, ``unembed``) are its sites (``ms.wrap``).

Ground truth: the key frequencies, read from the discrete Fourier transform of the embedding over the token axis
(Nanda et al. 2023, section 4.1): frequencies whose share of the embedding's power is at least half the largest
share. Verification: the network is accurate on every pair (held-out ones included); projecting the key
frequencies out of the embedding destroys accuracy; projecting out *every other* frequency keeps it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core._load import wrap
from ..core._model import Model
from ._organism import Built, Organism, require


@dataclass(frozen=True)
class ModAddConfig:
    """Size and training of the modular-addition organism, and its verification thresholds."""

    p: int = 31
    """The prime modulus."""
    d_embed: int = 32
    """Embedding width."""
    d_mlp: int = 128
    """Hidden neurons."""
    train_fraction: float = 0.6
    """Share of the p*p pairs trained on; the rest test generalisation."""
    steps: int = 1500
    """Full-batch AdamW steps."""
    lr: float = 3e-3
    """Learning rate."""
    weight_decay: float = 3.0
    """Weight decay: what makes the embedding sparse in frequency (and the network generalise)."""
    min_test_accuracy: float = 0.9
    """Accuracy on held-out pairs must reach this."""
    max_key_ablated: float = 0.25
    """Accuracy with the key frequencies projected out must fall below this."""
    min_others_ablated: float = 0.9
    """Accuracy with every other frequency projected out must stay above this."""


class ModAddNet(nn.Module):
    """``logits = unembed(mlp(embed(a) + embed(b)))`` for token pairs ``[batch 2]``."""

    def __init__(self, cfg: ModAddConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.p, cfg.d_embed)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_embed, cfg.d_mlp), nn.ReLU())
        self.unembed = nn.Linear(cfg.d_mlp, cfg.p)

    def forward(self, pairs: Tensor) -> Float[Tensor, "batch p"]:
        return self.unembed(self.mlp(self.embed(pairs).sum(1)))


@dataclass(frozen=True)
class ModularAddition(Organism):
    """The modular-addition organism (see the module docstring)."""

    name: ClassVar[str] = "modular_addition"
    family: ClassVar[str] = "frequencies"
    cfg: ModAddConfig = ModAddConfig()

    def build(self, seed: int) -> BuiltModAdd:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ModAddNet(self.cfg)
            train = torch.randperm(self.cfg.p**2)[: int(self.cfg.train_fraction * self.cfg.p**2)]
        pairs, answers = all_pairs(self.cfg.p)
        opt = torch.optim.AdamW(net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        for _ in range(self.cfg.steps):
            loss = nn.functional.cross_entropy(net(pairs[train]), answers[train])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        is_train = torch.zeros(self.cfg.p**2, dtype=torch.bool)
        is_train[train] = True
        return BuiltModAdd(self.cfg, seed, net.eval().requires_grad_(False), is_train)

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltModAdd:
        net = ModAddNet(self.cfg)
        is_train = tensors.pop("is_train").bool()
        net.load_state_dict(tensors)
        return BuiltModAdd(self.cfg, seed, net.eval().requires_grad_(False), is_train)


class BuiltModAdd(Built):
    """A trained modular-addition network: ``model``, ``p``, and the true ``key_frequencies``."""

    organism = "modular_addition"

    def __init__(self, cfg: ModAddConfig, seed: int, net: ModAddNet, is_train: Tensor) -> None:
        self.cfg, self.seed, self.net, self.is_train = cfg, seed, net, is_train
        self.p = cfg.p
        self.model: Model = wrap(net, name=f"organism-modadd-s{seed}")
        self.verification = {}

    @property
    def frequencies(self) -> list[int]:
        """Candidate frequencies ``1 .. (p-1)/2`` (a real signal's spectrum is symmetric; 0 is the constant)."""
        return list(range(1, (self.p - 1) // 2 + 1))

    def power(self) -> Float[Tensor, " freq"]:
        """Share of the embedding's non-constant power at each candidate frequency (sums to 1)."""
        coeffs = fourier_basis(self.p)[:, 1:].T @ self.net.embed.weight  # [2*freq d_embed], cos/sin pairs
        power = coeffs.pow(2).sum(-1).unflatten(0, (-1, 2)).sum(-1)  # [freq]
        return power / power.sum()

    @property
    def key_frequencies(self) -> list[int]:
        """Frequencies holding at least half the largest frequency's share of the embedding power."""
        power = self.power()
        return [k for k, share in zip(self.frequencies, power.tolist(), strict=True) if share >= 0.5 * power.max()]

    @property
    def truth(self) -> dict[str, Any]:
        return {"p": self.p, "key_frequencies": self.key_frequencies,
                "embedding_power": [round(v, 5) for v in self.power().tolist()]}  # fmt: skip

    def tensors(self) -> dict[str, Tensor]:
        return {**self.net.state_dict(), "is_train": self.is_train.to(torch.uint8)}

    def accuracy(self, without: Sequence[int] = (), held_out: bool = False) -> float:
        """Accuracy over all pairs (or the held-out ones) with frequencies ``without`` projected out of the embedding.

        The projection acts on the token axis of the embedding matrix, ``E - F F^T E`` with ``F`` the orthonormal
        cos/sin columns of those frequencies, so it is applied to a copy of the network's weights.
        """
        net = self.net
        if without:
            net = copy.deepcopy(self.net)
            basis = fourier_basis(self.p)
            cols = [c for k in without for c in (2 * k - 1, 2 * k)]
            f = basis[:, cols]  # [p 2*len(without)]
            net.embed.weight.data -= f @ (f.T @ net.embed.weight.data)
        pairs, answers = all_pairs(self.p)
        rows = ~self.is_train if held_out else slice(None)
        return float((net(pairs[rows]).argmax(-1) == answers[rows]).float().mean())

    def verify(self) -> dict[str, float]:
        key = self.key_frequencies
        others = [k for k in self.frequencies if k not in key]
        c = self.cfg
        n = {
            "test_accuracy": self.accuracy(held_out=True),
            "accuracy": self.accuracy(),
            "accuracy_key_ablated": self.accuracy(key),
            "accuracy_others_ablated": self.accuracy(others),
            "n_key_frequencies": float(len(key)),
            "key_power_share": float(self.power()[[k - 1 for k in key]].sum()),
        }
        checks = {
            f"held-out accuracy >= {c.min_test_accuracy}": n["test_accuracy"] >= c.min_test_accuracy,
            f"key-frequencies-ablated accuracy < {c.max_key_ablated}": n["accuracy_key_ablated"] < c.max_key_ablated,
            f"other-frequencies-ablated accuracy >= {c.min_others_ablated}":
                n["accuracy_others_ablated"] >= c.min_others_ablated,
            "key frequencies are a minority (a sparse spectrum)": len(key) <= len(self.frequencies) // 2,
        }  # fmt: skip
        return require(self.organism, self.seed, n, checks)


def all_pairs(p: int) -> tuple[Tensor, Tensor]:
    """Every ``(a, b)`` as ``[p*p 2]`` token pairs, and ``(a + b) mod p``."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    pairs = torch.stack([a.flatten(), b.flatten()], 1)
    return pairs, pairs.sum(1) % p


def fourier_basis(p: int) -> Float[Tensor, "p p"]:
    """Orthonormal real Fourier basis over ``0..p-1`` (p odd): columns ``1, cos w_1 x, sin w_1 x, cos w_2 x, ...``."""
    x = torch.arange(p, dtype=torch.float32)
    cols = [torch.ones(p)]
    for k in range(1, (p - 1) // 2 + 1):
        cols += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(cols, 1)
    return basis / basis.norm(dim=0, keepdim=True)
