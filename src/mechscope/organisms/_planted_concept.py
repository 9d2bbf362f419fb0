"""Planted concept: a 2-layer transformer that computes a known linear concept and reads it out as one behaviour.

Probes (Hewitt & Liang 2019) and steering vectors (Rimsky et al. 2023; Turner et al. 2023) claim to find *the
direction* in which a model represents a concept, and that adding it moves the behaviour the concept drives and
nothing else. Their ground truth needs a model with such a direction, known exactly. This one is written, not
trained: a GPT-2 (one byte per token, no position embeddings) whose every weight is set from orthonormal directions
drawn from the seed:

- token embeddings: every input byte writes a large constant direction (``const``, keeps LayerNorm's scale near
  fixed), its **concept value** ``v_t`` on ``e_v``, an independent **other value** ``o_t`` on ``e_o`` (both drawn
  uniformly from [-1, 1] per byte) and a random **nuisance** vector of its own (norm ``noise``) in the rest of the
  space — token identity the probe's control task can try to memorise;
- layer 0 attention: queries and keys are zero, so every position attends uniformly to itself and all before it;
  head 0's OV circuit moves ``e_v`` to the **concept direction** ``u`` (gain ``gain``), head 1's moves ``e_o`` to
  the **other direction** ``w``. At the last position ``resid_post.0`` holds ``gain * mean(v) * u`` and
  ``gain * mean(o) * w`` plus the last token's own embedding: the label (``mean(v) > 0``) is a known direction
  plus nuisance;
- layer 1 MLP: four ReLU neurons read ``±u`` and ``±w`` and write, in pairs, two output directions; the
  unembedding turns them into the **planted behaviour** (logit of ``+`` minus logit of ``-``, the sign of the
  concept) and the **other behaviour** (logit of ``<`` minus ``>``, the sign of the other value). Layer 1's
  attention is zero.

Every direction is orthogonal to the all-ones vector, so LayerNorm's centring leaves them alone. The truth: the
concept direction ``u`` at ``resid_post.0``; adding ``u`` there moves the planted behaviour and, by construction,
not the other one (and ``w`` the reverse).

Verification (the build fails otherwise) on random prompts: the sign of the planted behaviour is the label and the
sign of the other behaviour is the other value's wherever they are not within ``margin`` of 0; adding
``steer_norm * u`` at ``resid_post.0`` moves the planted behaviour by at least 1 nat and the other by less than
3% of that, and ``steer_norm * w`` the reverse; and ``u`` reads the label at ``resid_post.0`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..core._interventions import Add
from ..core._load import from_hf
from ..core._model import Model
from ..core._tiny import byte_tokenizer
from ._organism import Built, Organism, require

SITE = "resid_post.0"
OUTPUTS = "+-<>"
"""The planted behaviour's tokens (``+`` against ``-``) and the other behaviour's (``<`` against ``>``)."""


@dataclass(frozen=True)
class PlantedConceptConfig:
    """Sizes and constants of the planted-concept transformer."""

    d_model: int = 32
    """Residual width. Small against the ~250 byte types, so a linear probe cannot memorise a label per type."""
    seq_len: int = 12
    """Prompt length (positions of the model)."""
    const: float = 10.0
    """Norm of the constant direction every token embeds (keeps LayerNorm's scale within a few percent)."""
    noise: float = 1.0
    """Norm of each byte's nuisance vector."""
    gain: float = 4.0
    """Norm of ``u`` written per unit of mean concept value (head 0's OV gain; head 1 the same for ``w``)."""
    logit_gain: float = 4.0
    """Logit difference per unit of the MLP's readout."""
    steer_norm: float = 1.0
    """Norm of the vector the bench adds at ``resid_post.0`` (about one standard deviation of the concept there)."""
    margin: float = 0.05
    """Prompts whose mean concept (or other) value is within this of 0 are left out of the sign checks."""
    n_verify: int = 512
    """Random prompts the verification runs."""


@dataclass(frozen=True)
class PlantedConcept(Organism):
    """The planted-concept transformer (see the module docstring)."""

    name: ClassVar[str] = "planted_concept"
    family: ClassVar[str] = "representations"
    cfg: PlantedConceptConfig = PlantedConceptConfig()

    def build(self, seed: int) -> BuiltPlantedConcept:
        module, values = planted_gpt2(self.cfg, seed)
        return BuiltPlantedConcept(self.cfg, seed, module, values)

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltPlantedConcept:
        values = {k: tensors.pop(k) for k in ("concept_values", "other_values", "input_ids")}
        module = _gpt2(self.cfg)
        module.load_state_dict(tensors)
        return BuiltPlantedConcept(self.cfg, seed, module, values)


def _gpt2(cfg: PlantedConceptConfig) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = byte_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok), n_positions=cfg.seq_len, n_embd=cfg.d_model, n_layer=2, n_head=2, n_inner=4,
        activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval().requires_grad_(False)


def input_ids() -> list[int]:
    """Byte-token ids prompts are drawn from: every byte but the four output tokens."""
    tok = byte_tokenizer()
    outs = set(output_ids())
    return [i for i in range(256) if i not in outs and i != tok.eos_token_id]


def output_ids() -> list[int]:
    """Token ids of ``+ - < >``."""
    tok = byte_tokenizer()
    return [tok.convert_tokens_to_ids(ch) for ch in OUTPUTS]


def _directions(d: int, n: int, gen: torch.Generator) -> Tensor:
    """``n`` orthonormal directions ``[n d]``, each orthogonal to the all-ones vector."""
    basis = torch.cat([torch.ones(d, 1, dtype=torch.float64), torch.randn(d, n, generator=gen, dtype=torch.float64)], 1)
    return torch.linalg.qr(basis)[0][:, 1:].T.float()


def planted_gpt2(cfg: PlantedConceptConfig, seed: int) -> tuple[nn.Module, dict[str, Tensor]]:
    """The GPT-2 with every weight set from the planted directions, and the bytes' concept and other values."""
    gen = torch.Generator().manual_seed(seed)
    named = 7  # const, e_v, e_o, u, w, z_planted, z_other
    if cfg.d_model < named + 4:
        raise ValueError(f"d_model {cfg.d_model} is too small: the planted directions need at least {named + 4}")
    q = _directions(cfg.d_model, cfg.d_model - 1, gen)  # an orthonormal basis of the centred space
    const, e_v, e_o, u, w, z_p, z_o = q[:named]
    rest = q[named:]  # nuisance lives here, orthogonal to every planted direction
    ids = torch.tensor(input_ids())
    concept = torch.rand(len(ids), generator=gen, dtype=torch.float64).float() * 2 - 1
    other = torch.rand(len(ids), generator=gen, dtype=torch.float64).float() * 2 - 1
    nuisance = torch.randn(len(ids), len(rest), generator=gen, dtype=torch.float64).float()
    nuisance = cfg.noise * nuisance / nuisance.norm(dim=-1, keepdim=True) @ rest
    module = _gpt2(cfg)
    for p in module.parameters():
        p.zero_()
    t, d, d_head = module.transformer, cfg.d_model, cfg.d_model // 2
    t.wte.weight[ids] = cfg.const * const + concept[:, None] * e_v + other[:, None] * e_o + nuisance
    # LayerNorm maps a centred x to gain * sqrt(d) * x / |x|; a gain of |x| / sqrt(d) (expected) keeps x about as it is
    t.h[0].ln_1.weight.fill_(((cfg.const**2 + 2 / 3 + cfg.noise**2) / d) ** 0.5)
    late = ((cfg.const**2 + 2 / 3 + cfg.noise**2 + 2 * cfg.gain**2 / 3 / cfg.seq_len) / d) ** 0.5
    t.h[1].ln_2.weight.fill_(late)
    t.ln_f.weight.fill_(late)
    t.h[0].ln_2.weight.fill_(1.0)  # these two read nothing (layer 0's MLP and layer 1's attention are zero)
    t.h[1].ln_1.weight.fill_(1.0)
    attn = t.h[0].attn
    w_v = attn.c_attn.weight[:, 2 * d :]  # [d d] view: value projections of both heads (Conv1D weights are [in out])
    w_v[:, 0], w_v[:, d_head] = e_v, e_o
    attn.c_proj.weight[0], attn.c_proj.weight[d_head] = cfg.gain * u, cfg.gain * w
    mlp = t.h[1].mlp
    mlp.c_fc.weight[:] = torch.stack([u, -u, w, -w], 1)
    mlp.c_proj.weight[:] = torch.stack([z_p, -z_p, z_o, -z_o])  # relu(a) - relu(-a) = a: the readout is linear
    plus, minus, less, more = output_ids()
    half = cfg.logit_gain / 2
    for token, row in ((plus, half * z_p), (minus, -half * z_p), (less, half * z_o), (more, -half * z_o)):
        module.lm_head.weight[token] = row
    values = {"concept_values": concept, "other_values": other, "input_ids": ids}
    return module, values


class BuiltPlantedConcept(Built):
    """A planted concept: ``model``, the ``direction`` at ``site``, labelled prompts and the two behaviours."""

    organism = "planted_concept"
    site = SITE

    def __init__(self, cfg: PlantedConceptConfig, seed: int, module: nn.Module, values: dict[str, Tensor]) -> None:
        self.cfg, self.seed = cfg, seed
        self.gpt2: Any = module
        """The Hugging Face GPT-2 itself (``model.module``), typed loosely for its attribute paths."""
        self.model: Model = from_hf(module, byte_tokenizer(), name=f"organism-planted-concept-s{seed}")
        self.values = values
        self.verification = {}

    # --- truth -----------------------------------------------------------------------------------------------

    @property
    def direction(self) -> Float[Tensor, " d"]:
        """The concept direction ``u`` at ``site`` (unit norm): what head 0 writes, what the MLP reads."""
        u = self.gpt2.transformer.h[0].attn.c_proj.weight[0]
        return u / u.norm()

    @property
    def other_direction(self) -> Float[Tensor, " d"]:
        """The other value's direction ``w`` at ``site`` (unit norm)."""
        w = self.gpt2.transformer.h[0].attn.c_proj.weight[self.cfg.d_model // 2]
        return w / w.norm()

    @property
    def steer_norm(self) -> float:
        """Norm of the steering vector the bench adds at ``site``."""
        return self.cfg.steer_norm

    @property
    def truth(self) -> dict[str, Any]:
        return {"site": SITE, "direction": self.direction.tolist(), "other_direction": self.other_direction.tolist(),
                "planted_behaviour": "logit(+) - logit(-)", "other_behaviour": "logit(<) - logit(>)"}  # fmt: skip

    def tensors(self) -> dict[str, Tensor]:
        return {**self.gpt2.state_dict(), **self.values}

    # --- data ------------------------------------------------------------------------------------------------

    def prompts(self, n: int, seed: int) -> Int[Tensor, "n pos"]:
        """``n`` random prompts of ``seq_len`` bytes (never an output token; seeded)."""
        gen = torch.Generator().manual_seed(seed)
        ids = self.values["input_ids"]
        return ids[torch.randint(len(ids), (n, self.cfg.seq_len), generator=gen)]

    def concept(self, tokens: Int[Tensor, "n pos"]) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
        """The mean concept value and mean other value of each prompt (what the model computes at the last token)."""
        lookup = torch.zeros(int(self.values["input_ids"].max()) + 1, 2)
        lookup[self.values["input_ids"]] = torch.stack([self.values["concept_values"], self.values["other_values"]], 1)
        means = lookup[tokens].mean(1)
        return means[:, 0], means[:, 1]

    def labelled(self, n: int, seed: int) -> tuple[Int[Tensor, "n pos"], Int[Tensor, " n"]]:
        """``n`` random prompts and their labels (1 where the mean concept value is positive)."""
        tokens = self.prompts(n, seed)
        return tokens, (self.concept(tokens)[0] > 0).long()

    def pairs(self, n: int, seed: int) -> tuple[Int[Tensor, "n pos"], Int[Tensor, "n pos"]]:
        """``n`` contrastive pairs (positive-concept prompt, negative-concept prompt), each from random prompts."""
        tokens, labels = self.labelled(4 * n + 16, seed)
        pos, neg = tokens[labels == 1], tokens[labels == 0]
        if min(len(pos), len(neg)) < n:
            raise ValueError(f"seed {seed} drew too few prompts of one sign for {n} pairs")
        return pos[:n], neg[:n]

    @torch.no_grad()
    def behaviours(self, tokens: Int[Tensor, "n pos"]) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
        """The planted behaviour (logit ``+`` minus ``-``) and the other (``<`` minus ``>``) at the last position.

        Read under whatever interventions are active (``model.intervene``).
        """
        plus, minus, less, more = output_ids()
        logits = self.model.run(tokens, logits="final").final_logits().float()
        return logits[:, plus] - logits[:, minus], logits[:, less] - logits[:, more]

    def steer_effect(self, vector: Float[Tensor, " d"], tokens: Int[Tensor, "n pos"]) -> tuple[float, float]:
        """Mean change of the planted and the other behaviour when ``vector`` is added at ``site`` (every position)."""
        plain = self.behaviours(tokens)
        with self.model.intervene(Add(SITE, vector.float())):
            steered = self.behaviours(tokens)
        return float((steered[0] - plain[0]).mean()), float((steered[1] - plain[1]).mean())

    # --- verification ----------------------------------------------------------------------------------------

    def verify(self) -> dict[str, float]:
        c = self.cfg
        tokens = self.prompts(c.n_verify, 30_000 + self.seed)
        concept, other = self.concept(tokens)
        planted, side = self.behaviours(tokens)
        sure, sure_other = concept.abs() > c.margin, other.abs() > c.margin
        run = self.model.run(tokens, cache=SITE, logits=False)
        read = run.cache[SITE][:, -1].float() @ self.direction
        u_moves = self.steer_effect(c.steer_norm * self.direction, tokens)
        w_moves = self.steer_effect(c.steer_norm * self.other_direction, tokens)
        numbers = {
            "planted_sign_accuracy": float(((planted > 0) == (concept > 0))[sure].float().mean()),
            "other_sign_accuracy": float(((side > 0) == (other > 0))[sure_other].float().mean()),
            "direction_reads_label": float(((read > 0) == (concept > 0))[sure].float().mean()),
            "concept_std_at_site": float(read.std()),
            "u_moves_planted": u_moves[0],
            "u_moves_other": u_moves[1],
            "w_moves_planted": w_moves[0],
            "w_moves_other": w_moves[1],
            "positive_share": float((concept > 0).float().mean()),
        }
        return require(self.organism, self.seed, numbers, {
            "the planted behaviour's sign is the label": numbers["planted_sign_accuracy"] == 1.0,
            "the other behaviour's sign is the other value's": numbers["other_sign_accuracy"] == 1.0,
            "the concept direction reads the label at the site": numbers["direction_reads_label"] == 1.0,
            "adding u moves the planted behaviour": u_moves[0] > 1.0,
            "adding u leaves the other behaviour": abs(u_moves[1]) < 0.03 * u_moves[0],
            "adding w moves the other behaviour and not the planted one":
                w_moves[1] > 1.0 and abs(w_moves[0]) < 0.03 * w_moves[1],
            "both labels occur": 0.2 < numbers["positive_share"] < 0.8,
        })  # fmt: skip
