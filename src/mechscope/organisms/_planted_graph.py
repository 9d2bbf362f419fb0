"""Planted feature graph: a 2-layer transformer whose MLP neurons are, by construction, the true sparse features.

Attribution graphs (Ameisen et al. 2025, "Circuit Tracing") replace each MLP by a transcoder and read off linear
effects between active features. Their ground truth needs a model whose MLPs are *exactly* sparse over known
directions. This one is written, not trained: a GPT-2 (ReLU MLPs, one byte per token) whose every weight is set
from orthonormal directions drawn from the seed, so a ReLU transcoder with the MLP's own weights
(``W_enc = c_fc``, ``W_dec = c_proj``) reproduces each MLP exactly, and the true feature graph of any prompt follows
from the construction:

- token embeddings: each meaningful token (subjects ``a b c d``, attributes ``e f g h``) writes a unit direction of
  its own; every token also writes a large constant direction (``const``) that keeps the norms' scales near fixed;
- layer 0 MLP: one **token feature** per meaningful token, ``relu(2 <tok_i, x> - 1)``: 1 where the token is, exactly
  0 elsewhere, writing a direction ``f0_i`` of its own;
- layer 1 attention, head 0: queries read ``const``, keys read the subject tokens' embeddings, so every position
  attends (almost entirely) to the subject before it; its OV circuit **moves the subject's layer-0 feature**
  ``f0_s`` to a ``moved_s`` direction at the later position. Layer 0's attention and layer 1's other heads are zero;
- layer 1 MLP: one **conjunction feature** per planted (subject, attribute) pair,
  ``relu(<moved_s, x> + <f0_a, x> - threshold)``: positive only where attribute ``a`` follows subject ``s``,
  writing ``f1_k``;
- unembedding: conjunction ``k`` raises its own output token (the digit ``str(k)``).

The directions are orthonormal and orthogonal to the all-ones vector (so LayerNorm's centring leaves them alone, and
its per-position scale only multiplies), hence every path between features that is not planted has weight exactly
zero (up to float rounding) whatever the norm scales: the planted edges are the only edges. Per prompt
(``true_graph``): embedding -> token feature (same position); subject feature -> conjunction feature (through
head 1.0's OV path, from the subject's position); attribute feature -> conjunction feature (same position);
conjunction feature -> its output logit.

Verification (the build fails otherwise) on random prompts with at most one subject: every token feature fires
exactly at its token; every conjunction feature fires exactly where its pair occurs; the top logit there is its
output token; the oracle transcoders reproduce both MLP outputs; and every virtual weight between features that is
not planted is zero while every planted one is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..core._load import from_hf
from ..core._model import Model
from ..core._tiny import byte_tokenizer
from ..features import Dictionary
from ..graphs import relu_mlp_transcoders
from ._organism import Built, Organism, require

N_LAYERS = 2


@dataclass(frozen=True)
class PlantedGraphConfig:
    """Sizes and constants of the planted feature graph."""

    d_model: int = 48
    """Residual width (the 29 planted directions need at least 30)."""
    n_heads: int = 2
    """Heads per layer (head 0 of layer 1 is the mover; the others are zero)."""
    subjects: str = "abcd"
    """Tokens whose layer-0 feature layer 1's head moves forward."""
    attributes: str = "efgh"
    """Tokens whose layer-0 feature meets a moved subject in a conjunction."""
    const: float = 3.0
    """Norm of the constant direction every token embeds (keeps LayerNorm's scales within a few percent)."""
    attn_logit: float = 20.0
    """Attention score of a subject position over any other (about e^20 times the weight)."""
    threshold: float = 1.25
    """Bias of the conjunction features: both inputs (1 each) are needed to cross it."""
    logit_gain: float = 16.0
    """Logit an active conjunction gives its output token per unit of activation (0.75 -> 12: probability > 0.99)."""
    seq_len: int = 16
    """Context length (positions of the model) and length of verification prompts."""
    n_verify: int = 256
    """Random prompts the verification runs."""

    @property
    def n_features(self) -> int:
        """Neurons per MLP: one token feature per meaningful token, as many conjunctions."""
        return len(self.subjects) + len(self.attributes)


class Directions(NamedTuple):
    """The planted unit directions of the residual stream (rows), orthonormal and orthogonal to all-ones."""

    const: Float[Tensor, " d"]
    tok: Float[Tensor, "n_tok d"]
    """One per meaningful token (subjects, then attributes)."""
    f0: Float[Tensor, "n_tok d"]
    """Written by layer 0's token features."""
    moved: Float[Tensor, "n_subj d"]
    """Written by layer 1's head 0 (the moved subject feature)."""
    f1: Float[Tensor, "n_pairs d"]
    """Written by layer 1's conjunction features."""


class PlantedEdge(NamedTuple):
    """One edge of a prompt's true feature graph. Nodes are ``(kind, layer, position, index)``."""

    source: tuple[str, int, int, int]
    """``("embed", -1, pos, token_id)`` or ``("feature", layer, pos, neuron)``."""
    target: tuple[str, int, int, int]
    """``("feature", layer, pos, neuron)`` or ``("logit", 2, pos, token_id)``."""


@dataclass(frozen=True)
class PlantedGraph(Organism):
    """The planted feature graph (see the module docstring)."""

    name: ClassVar[str] = "planted_graph"
    family: ClassVar[str] = "graphs"
    quick_seeds: ClassVar[tuple[int, ...] | None] = (0,)
    cfg: PlantedGraphConfig = PlantedGraphConfig()

    def build(self, seed: int) -> BuiltPlantedGraph:
        return BuiltPlantedGraph(self.cfg, seed, planted_gpt2(self.cfg, seed))

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltPlantedGraph:
        module = _gpt2(self.cfg)
        module.load_state_dict(tensors)
        return BuiltPlantedGraph(self.cfg, seed, module)


def pairs_of(cfg: PlantedGraphConfig, seed: int) -> list[tuple[int, int]]:
    """The planted (subject index, attribute index) pairs: each subject with two attributes, shuffled by ``seed``."""
    n = len(cfg.subjects)
    perm = torch.randperm(len(cfg.attributes), generator=torch.Generator().manual_seed(seed)).tolist()
    return [(s, perm[(s + j) % len(cfg.attributes)]) for s in range(n) for j in range(2)][: cfg.n_features]


def directions(cfg: PlantedGraphConfig, seed: int) -> Directions:
    """Orthonormal directions drawn from ``seed``, all orthogonal to the all-ones vector."""
    n_tok, n_subj = cfg.n_features, len(cfg.subjects)
    need = 1 + 2 * n_tok + n_subj + cfg.n_features
    if need > cfg.d_model - 1:
        raise ValueError(f"d_model {cfg.d_model} holds {cfg.d_model - 1} centred directions; {need} are needed")
    gen = torch.Generator().manual_seed(seed)
    basis = torch.cat([torch.ones(cfg.d_model, 1), torch.randn(cfg.d_model, need, generator=gen, dtype=torch.float64)
                       .float()], dim=1)  # fmt: skip
    q = torch.linalg.qr(basis.double())[0][:, 1:].T.float()  # [need d], each orthogonal to ones
    cuts = torch.tensor([1, n_tok, n_tok, n_subj, cfg.n_features]).cumsum(0).tolist()
    const, tok, f0, moved, f1 = (q[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True))
    return Directions(const[0], tok, f0, moved, f1)


def _gpt2(cfg: PlantedGraphConfig) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = byte_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok), n_positions=cfg.seq_len, n_embd=cfg.d_model, n_layer=N_LAYERS, n_head=cfg.n_heads,
        n_inner=cfg.n_features, activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=False, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval().requires_grad_(False)


def token_ids(cfg: PlantedGraphConfig) -> tuple[list[int], list[int]]:
    """Byte-token ids of the meaningful tokens (subjects then attributes) and of the output digits."""
    tok = byte_tokenizer()
    ids = [tok.convert_tokens_to_ids(ch) for ch in cfg.subjects + cfg.attributes]
    outs = [tok.convert_tokens_to_ids(str(k)) for k in range(cfg.n_features)]
    return ids, outs


def planted_gpt2(cfg: PlantedGraphConfig, seed: int) -> nn.Module:
    """The GPT-2 with every weight set from the planted directions (see the module docstring)."""
    module = _gpt2(cfg)
    dirs, pairs = directions(cfg, seed), pairs_of(cfg, seed)
    ids, outs = token_ids(cfg)
    n_subj, d, d_head = len(cfg.subjects), cfg.d_model, cfg.d_model // cfg.n_heads
    for p in module.parameters():
        p.zero_()
    t = module.transformer
    t.wte.weight[:] = cfg.const * dirs.const
    t.wte.weight[ids] += dirs.tok
    # LayerNorm maps a centred x to gain * sqrt(d) * x / |x|; choose each gain so the expected residual is unchanged
    norms = {"0.ln_2": 1, "1.ln_1": 2, "1.ln_2": 3, "ln_f": 4}  # unit-norm planted components present there
    for name, n_units in norms.items():
        ln = t.ln_f if name == "ln_f" else getattr(t.h[int(name[0])], name[2:])
        ln.weight.fill_(((cfg.const**2 + n_units) / d) ** 0.5)
    t.h[0].ln_1.weight.fill_(1.0)
    mlp0, mlp1, attn1 = t.h[0].mlp, t.h[1].mlp, t.h[1].attn
    mlp0.c_fc.weight[:] = 2 * dirs.tok.T  # Conv1D weights are [in out]
    mlp0.c_fc.bias.fill_(-1.0)
    mlp0.c_proj.weight[:] = dirs.f0
    w_q, w_k, w_v = attn1.c_attn.weight.split(d, dim=1)  # views into [d 3d]
    w_q[:, 0] = cfg.attn_logit * d_head**0.5 / cfg.const * dirs.const
    w_k[:, 0] = dirs.tok[:n_subj].sum(0)
    for s in range(n_subj):
        w_v[:, 1 + s] = dirs.f0[s]
        attn1.c_proj.weight[1 + s] = dirs.moved[s]
    for k, (s, a) in enumerate(pairs):
        mlp1.c_fc.weight[:, k] = dirs.moved[s] + dirs.f0[n_subj + a]
        mlp1.c_proj.weight[k] = dirs.f1[k]
    mlp1.c_fc.bias.fill_(-cfg.threshold)
    module.lm_head.weight[outs] = cfg.logit_gain * dirs.f1
    return module


class BuiltPlantedGraph(Built):
    """A planted feature graph: ``model``, its oracle ``transcoders`` and the true graph of any prompt."""

    organism = "planted_graph"

    def __init__(self, cfg: PlantedGraphConfig, seed: int, module: nn.Module) -> None:
        self.cfg, self.seed = cfg, seed
        self.gpt2: Any = module
        """The Hugging Face GPT-2 itself (``model.module``), typed loosely for its attribute paths."""
        self.model: Model = from_hf(module, byte_tokenizer(), name=f"organism-planted-graph-s{seed}")
        self.pairs = pairs_of(cfg, seed)
        self.token_ids, self.output_ids = token_ids(cfg)
        self.verification = {}

    # --- truth -----------------------------------------------------------------------------------------------

    def transcoders(self) -> dict[int, Dictionary]:
        """The oracle transcoders: per layer, a ReLU transcoder ``ln2.L -> mlp_out.L`` holding the MLP's own weights.

        Latent ``i`` of layer ``L`` is neuron ``i`` (``mlp.L.post``); with them the replacement model is exact.
        """
        return relu_mlp_transcoders(self.gpt2)

    def feature_names(self) -> dict[tuple[int, int], str]:
        """A readable name per (layer, neuron): ``tok:a`` (token feature), ``a&e->3`` (conjunction to output 3)."""
        c = self.cfg
        names = {(0, i): f"tok:{ch}" for i, ch in enumerate(c.subjects + c.attributes)}
        names |= {(1, k): f"{c.subjects[s]}&{c.attributes[a]}->{k}" for k, (s, a) in enumerate(self.pairs)}
        return names

    def planted_weights(self) -> dict[str, Tensor]:
        """Virtual weights between feature kinds through the residual stream and head 1.0's OV circuit (norms aside).

        ``embed->0 [n_tok n0]``, ``embed->1``, ``0->1`` (residual), ``0->1 ov`` (through layer 1's attention, all
        heads), ``embed->1 ov``, ``1->logit [n1 n_out]``, ``0->logit``, ``embed->logit``: the planted entries are
        non-zero, every other one is zero by construction.
        """
        t = self.gpt2.transformer
        emb = t.wte.weight[self.token_ids]  # [n_tok d]; the constant part reaches no feature (checked in verify)
        dec0, dec1 = t.h[0].mlp.c_proj.weight, t.h[1].mlp.c_proj.weight  # [n d]
        enc0, enc1 = t.h[0].mlp.c_fc.weight, t.h[1].mlp.c_fc.weight  # [d n]
        d = self.cfg.d_model
        ov = t.h[1].attn.c_attn.weight[:, 2 * d :] @ t.h[1].attn.c_proj.weight  # [d d], all heads summed
        unembed = t.ln_f.weight[:, None] * self.gpt2.lm_head.weight[self.output_ids].T  # [d n_out]
        return {
            "embed->0": emb @ enc0,
            "embed->1": emb @ enc1,
            "embed->1 ov": emb @ ov @ enc1,
            "0->1": dec0 @ enc1,
            "0->1 ov": dec0 @ ov @ enc1,
            "0->logit": dec0 @ unembed,
            "embed->logit": emb @ unembed,
            "1->logit": dec1 @ unembed,
        }

    def planted_mask(self) -> dict[str, Tensor]:
        """Which entries of ``planted_weights`` are planted (True) — the design, independent of the weights."""
        n_tok, n_subj, n1 = self.cfg.n_features, len(self.cfg.subjects), self.cfg.n_features
        m = {k: torch.zeros(v.shape, dtype=torch.bool) for k, v in self.planted_weights().items()}
        m["embed->0"][range(n_tok), range(n_tok)] = True
        for k, (s, a) in enumerate(self.pairs):
            m["0->1 ov"][s, k] = True
            m["0->1"][n_subj + a, k] = True
        m["1->logit"][range(n1), range(n1)] = True
        return m

    def true_graph(self, tokens: Int[Tensor, " pos"], *, min_attention: float = 0.01) -> TrueGraph:
        """The true feature graph of one prompt: its active features (from the real run) and the planted edges.

        Nodes are ``(kind, layer, pos, index)`` (``PlantedEdge``); logits are those of the output tokens of the
        conjunctions active at the last position. A subject -> conjunction edge needs head 1.0 to give the
        subject's position at least ``min_attention`` of the target position's attention.
        """
        tokens = tokens.reshape(-1)
        run = self.model.run(tokens[None], cache=["mlp.0.post", "mlp.1.post", "head.1.pattern"])
        acts = [run.cache[f"mlp.{layer}.post"][0] for layer in range(N_LAYERS)]  # [pos n]
        pattern = run.cache["head.1.pattern"][0, 0]  # [q k] of head 0
        n_subj, last = len(self.cfg.subjects), len(tokens) - 1
        edges: list[PlantedEdge] = []
        for p, token in enumerate(tokens.tolist()):
            for i, tid in enumerate(self.token_ids):
                if tid == token and acts[0][p, i] > 0:
                    edges.append(PlantedEdge(("embed", -1, p, token), ("feature", 0, p, i)))
        for q in range(len(tokens)):
            for k, (s, a) in enumerate(self.pairs):
                if acts[1][q, k] <= 0:
                    continue
                target = ("feature", 1, q, k)
                if acts[0][q, n_subj + a] > 0:
                    edges.append(PlantedEdge(("feature", 0, q, n_subj + a), target))
                for p in range(q + 1):
                    if acts[0][p, s] > 0 and pattern[q, p] >= min_attention:
                        edges.append(PlantedEdge(("feature", 0, p, s), target))
                if q == last:
                    edges.append(PlantedEdge(target, ("logit", N_LAYERS, last, self.output_ids[k])))
        active = {(layer, p, int(i)) for layer in range(N_LAYERS) for p, i in (acts[layer] > 0).nonzero().tolist()}
        return TrueGraph(tokens, frozenset(active), tuple(edges), run.logits[0, -1])  # type: ignore[index]

    def prompts(self, n: int, seed: int, *, length: int | None = None) -> Int[Tensor, "n pos"]:
        """``n`` random prompts: neutral letters, at most one subject, attributes anywhere (seeded)."""
        c, length = self.cfg, length or self.cfg.seq_len
        gen = torch.Generator().manual_seed(seed)
        tok = byte_tokenizer()
        neutral = [tok.convert_tokens_to_ids(ch) for ch in "xyzuvw"]
        subj, attr = self.token_ids[: len(c.subjects)], self.token_ids[len(c.subjects) :]
        pool = torch.tensor(neutral + attr)
        out = pool[torch.randint(len(pool), (n, length), generator=gen)]
        has = torch.rand(n, generator=gen) < 0.75
        where = torch.randint(length - 1, (n,), generator=gen)
        which = torch.tensor(subj)[torch.randint(len(subj), (n,), generator=gen)]
        out[has, where[has]] = which[has]
        return out

    def prompt(self, subject: str, attribute: str, *, length: int = 8, seed: int = 0) -> Int[Tensor, " pos"]:
        """A prompt ending in ``attribute`` with ``subject`` earlier, neutral letters elsewhere (seeded)."""
        tok = byte_tokenizer()
        gen = torch.Generator().manual_seed(seed)
        letters = "xyzuvw"
        text = [letters[i] for i in torch.randint(len(letters), (length,), generator=gen).tolist()]
        text[int(torch.randint(length - 2, (1,), generator=gen))] = subject
        text[-1] = attribute
        return torch.tensor([tok.convert_tokens_to_ids(ch) for ch in text])

    def graph_prompts(self, n: int, seed: int, *, length: int = 8) -> Int[Tensor, "n pos"]:
        """``n`` prompts ending in a planted pair's attribute with its subject earlier (pairs in turn; seeded)."""
        c = self.cfg
        rows = []
        for i in range(n):
            s, a = self.pairs[i % len(self.pairs)]
            rows.append(self.prompt(c.subjects[s], c.attributes[a], length=length, seed=seed * 10_000 + i))
        return torch.stack(rows)

    @property
    def truth(self) -> dict[str, Any]:
        c = self.cfg
        return {"pairs": [[c.subjects[s], c.attributes[a], str(k)] for k, (s, a) in enumerate(self.pairs)],
                "features": {f"{layer}.{i}": name for (layer, i), name in self.feature_names().items()}}  # fmt: skip

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.gpt2.state_dict())

    # --- verification ----------------------------------------------------------------------------------------

    def expected(self, tokens: Int[Tensor, "n pos"]) -> tuple[Tensor, Tensor]:
        """Where each token feature and each conjunction should fire, from the tokens alone (at most one subject)."""
        n_subj = len(self.cfg.subjects)
        ids = torch.tensor(self.token_ids)
        tok_on = tokens[..., None] == ids  # [n pos n_tok]
        seen = tok_on[..., :n_subj].cumsum(1) > 0  # subject s at or before each position
        conj = torch.stack([seen[..., s] & tok_on[..., n_subj + a] for s, a in self.pairs], -1)
        return tok_on, conj

    def verify(self) -> dict[str, float]:
        c = self.cfg
        tokens = self.prompts(c.n_verify, 20_000 + self.seed)
        run = self.model.run(tokens, cache=["ln2.0", "ln2.1", "mlp.0.post", "mlp.1.post", "mlp_out.0", "mlp_out.1"])
        tok_on, conj = self.expected(tokens)
        a0, a1 = run.cache["mlp.0.post"], run.cache["mlp.1.post"]
        tcs = self.transcoders()
        errors = []
        for layer, tc in tcs.items():
            x, y = run.cache[f"ln2.{layer}"].flatten(0, 1), run.cache[f"mlp_out.{layer}"].flatten(0, 1)
            errors.append(float((tc.decode(tc.encode(x)) - y).abs().max()))
        logits = run.logits  # [n pos vocab]
        assert logits is not None
        top = logits.argmax(-1)
        want = torch.tensor(self.output_ids)[conj.float().argmax(-1)]
        fired_any = conj.any(-1)
        weights, mask = self.planted_weights(), self.planted_mask()
        off = max(float(w[~mask[k]].abs().max()) if (~mask[k]).any() else 0.0 for k, w in weights.items())
        on = min(float(w[mask[k]].abs().min()) for k, w in weights.items() if mask[k].any())
        numbers = {
            "token_feature_errors": float(((a0 > 0) != tok_on).sum()),
            "token_feature_min_on": float(a0[tok_on].min()),
            "conjunction_errors": float(((a1 > 0) != conj).sum()),
            "conjunction_min_on": float(a1[conj].min()) if conj.any() else 0.0,
            "conjunctions_seen": float(conj.sum()),
            "top_logit_accuracy": float((top[fired_any] == want[fired_any]).float().mean()),
            "transcoder_max_error": max(errors),
            "max_unplanted_weight": off,
            "min_planted_weight": on,
        }
        return require(self.organism, self.seed, numbers, {
            "token features fire exactly at their tokens": numbers["token_feature_errors"] == 0,
            "conjunctions fire exactly where their pairs occur": numbers["conjunction_errors"] == 0
                and numbers["conjunctions_seen"] > 0,
            "an active conjunction's output token is the top logit": numbers["top_logit_accuracy"] == 1.0,
            "the oracle transcoders reproduce the MLPs": numbers["transcoder_max_error"] < 1e-4,
            "unplanted virtual weights are zero (float rounding)": off < 1e-4,
            "planted virtual weights are not": on > 0.1,
        })  # fmt: skip


class TrueGraph(NamedTuple):
    """The true feature graph of one prompt."""

    tokens: Int[Tensor, " pos"]
    active: frozenset[tuple[int, int, int]]
    """Active features as ``(layer, pos, neuron)``."""
    edges: tuple[PlantedEdge, ...]
    """The planted edges between the prompt's active nodes."""
    logits: Float[Tensor, " vocab"]
    """The real model's logits at the last position."""
