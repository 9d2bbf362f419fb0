"""Induction organism: a 2-layer attention-only transformer with one previous-token head and one induction head.

Induction heads (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits", section "Induction
Heads"; Olsson et al. 2022, "In-context Learning and Induction Heads") complete ``[A][B] ... [A] -> [B]``: a
previous-token head in layer 0 writes each token's predecessor into its residual stream, and an induction head
in layer 1 finds, through K-composition with that head, the position after the earlier ``[A]`` and copies its
token.

The model is a Hugging Face Llama with 2 layers and no MLPs (their weights are zero and frozen, so ``mlp_out`` is
exactly 0 and every uniform site exists), rotary positions and a byte vocabulary, so all of mechscope's
transformer methods apply unchanged. It trains on sequences with a random repeat period per sequence, so position
alone predicts nothing.

Left to itself such a model spreads induction over all of its heads, which leaves no unique circuit to score. The
build therefore *plants* the circuit by routing what each weight learns from (in the spirit of Cloud et al. 2024,
"Gradient Routing"), in three phases: a seeded choice of one layer-0 head and one layer-1 head, with the
embeddings, norms and unembedding, learns the repeats while the six other heads stay frozen; then the six other
heads alone learn a distractor task (tokens drawn from a small per-sequence set, best predicted by attending to
every earlier token and copying); then the planted heads adapt to the trained distractors. The distractor heads
are thus trained and active, but the repeat task does not need them.

Verification (on fresh repeated sequences, heads mean-ablated over batch and positions): clean in-context
accuracy is high; ablating the planted heads, or either of them, destroys it; ablating all six other heads at
once does not; the planted heads have previous-token and induction attention patterns and are the heads with the
highest such scores; and removing only the previous-token head's contribution to the induction head's keys
destroys accuracy, which verifies the K-composition edge. Finally the seven true edges of the graph (the planted
heads' inputs and the induction head's output; see ``BuiltInduction.circuit``), with every other edge patched to
its corrupt value, must keep at least half of the task's logit difference: the ground truth that edge scorers and
the oracle's faithfulness curve use is verified to carry the behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Int
from torch import Tensor, nn

from ..circuits._faithfulness import faithfulness
from ..circuits._graph import Circuit, Graph
from ..circuits._nodes import Node
from ..core._interventions import Ablate, Patch
from ..core._load import from_hf
from ..core._model import Model
from ..core._tiny import byte_tokenizer
from ..data._task import Task
from ..data._task_gen import induction as induction_task
from ._organism import Built, Organism, require
from ._truth import CircuitTruth

N_TOKENS = 256
"""Sequences use the byte tokens (ids 0-255), never end-of-text or padding. With only 64 tokens the model finds a
shortcut instead of induction (predicting the least recently seen token works on periodic sequences)."""


@dataclass(frozen=True)
class InductionConfig:
    """Size, data and training of the induction organism, and the thresholds its verification applies."""

    d_model: int = 64
    """Residual width."""
    n_heads: int = 4
    """Heads per layer."""
    d_head: int = 32
    """Width of each head: one head must tell 256 tokens apart in its QK circuit, which 16 dimensions cannot."""
    seq_len: int = 32
    """Training and verification sequence length."""
    periods: tuple[int, int] = (4, 16)
    """Repeat period of a sequence, drawn uniformly from this inclusive range."""
    steps: int = 400
    """Steps of the first phase: the planted heads, embeddings and unembedding learn the repeats."""
    distractor_steps: int = 100
    """Steps of the second phase: the other heads alone learn the distractor task."""
    circuit_steps: int = 100
    """Steps of the third phase: as the first, adapting to the trained distractors."""
    batch_size: int = 64
    """Sequences per batch."""
    lr: float = 3e-3
    """AdamW learning rate."""
    task_len: int = 8
    """Length of the segment repeated in the ``Task`` given to circuit methods."""
    n_task: int = 32
    """Prompts in that task."""
    min_accuracy: float = 0.6
    """Clean in-context accuracy must reach this."""
    max_ablated: float = 0.4
    """Accuracy with the circuit (or one of its heads, or its K edge) ablated must fall below this fraction of the
    clean accuracy."""
    min_kept: float = 0.8
    """Accuracy with all other heads ablated must stay above this fraction of the clean accuracy."""
    min_faithfulness: float = 0.5
    """The true edges alone, every other edge patched to its corrupt value, must keep this fraction of the task's
    logit difference (measured 0.75 and 0.78 on seeds 0 and 1; the distractor heads carry some of the rest)."""


@dataclass(frozen=True)
class Induction(Organism):
    """The induction organism (see the module docstring)."""

    name: ClassVar[str] = "induction"
    family: ClassVar[str] = "circuits"
    quick_seeds: ClassVar[tuple[int, ...] | None] = (0,)
    """Its build (600 steps, 1-5 minutes on a loaded core) dominates a quick run; the full run builds seeds 0-4."""
    cfg: InductionConfig = InductionConfig()

    def build(self, seed: int) -> BuiltInduction:
        gen = torch.Generator().manual_seed(seed)
        planted = (int(torch.randint(self.cfg.n_heads, (1,), generator=gen)),
                   int(torch.randint(self.cfg.n_heads, (1,), generator=gen)))  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = _llama(self.cfg)
        _fit(module, self.cfg, self.cfg.steps, gen, "circuit", planted)
        _fit(module, self.cfg, self.cfg.distractor_steps, gen, "others", planted)
        _fit(module, self.cfg, self.cfg.circuit_steps, gen, "circuit", planted)
        return BuiltInduction(self.cfg, seed, module, *planted)

    def load(self, seed: int, tensors: dict[str, Tensor]) -> BuiltInduction:
        module = _llama(self.cfg)
        heads = tensors.pop("planted_heads").tolist()
        module.load_state_dict(tensors)
        return BuiltInduction(self.cfg, seed, module, int(heads[0]), int(heads[1]))


class BuiltInduction(Built):
    """A trained induction organism: ``model`` (a mechscope Model), ``task`` and ``circuit`` (the truth)."""

    organism = "induction"

    def __init__(self, cfg: InductionConfig, seed: int, module: nn.Module, prev_head: int, ind_head: int) -> None:
        self.cfg, self.seed = cfg, seed
        self.prev_head, self.ind_head = prev_head, ind_head
        self.model: Model = from_hf(module, byte_tokenizer(), name=f"organism-induction-s{seed}")
        self.verification = {}

    @property
    def task(self) -> Task:
        """Clean/corrupt induction prompts (``mechscope.data.tasks.induction``) for circuit methods."""
        return induction_task(self.model.tokenizer, n=self.cfg.n_task, seq_len=self.cfg.task_len, seed=self.seed)

    @property
    def circuit(self) -> CircuitTruth:
        """The true circuit: the two planted heads, and the seven edges of the model's graph that carry it.

        The candidates are every edge of ``mechscope.circuits.Graph``. The true edges are the previous-token
        head's query, key and value inputs from the embeddings; the induction head's key input from the
        embeddings and from the previous-token head (K-composition) and its value input (the token it copies);
        and the induction head's output to the logits. The induction head's query input from the embeddings is
        part of the mechanism but left out of ``circuit_edges``: the task's clean and corrupt prompts end in the
        same token, so no patching method can see it. It is the truth's ``unseen_edges``, and the bench also
        scores edges against the full truth (``edge_auroc_full``), so what this choice hides stays visible.
        ``verify`` checks that the seven edges alone carry the behaviour.
        """
        n_heads = self.cfg.n_heads
        nodes = tuple(Node("head.z", layer, h).label() for layer in range(2) for h in range(n_heads))
        prev, ind = Node("head.z", 0, self.prev_head).label(), Node("head.z", 1, self.ind_head).label()
        assert self.model.cfg is not None
        edges = tuple(Graph.of(self.model.cfg).edge_names())
        p, i = f"a0.h{self.prev_head}", f"a1.h{self.ind_head}"
        true_edges = {f"input->{p}<q>", f"input->{p}<k>", f"input->{p}<v>", f"input->{i}<k>", f"input->{i}<v>",
                      f"{p}->{i}<k>", f"{i}->logits"}  # fmt: skip
        return CircuitTruth(nodes, frozenset({prev, ind}), edges, frozenset(true_edges), frozenset({f"input->{i}<q>"}))

    @property
    def truth(self) -> dict[str, Any]:
        return {"previous_token_head": [0, self.prev_head], "induction_head": [1, self.ind_head],
                **self.circuit.to_dict()}  # fmt: skip

    def tensors(self) -> dict[str, Tensor]:
        return {**self.model.module.state_dict(), "planted_heads": torch.tensor([self.prev_head, self.ind_head])}

    def verify(self) -> dict[str, float]:
        gen = torch.Generator().manual_seed(10_000 + self.seed)
        tokens, periods = repeated(256, self.cfg.seq_len, self.cfg.periods, gen)
        acc = _Accuracy(self.model, tokens, periods)
        p, i = (0, self.prev_head), (1, self.ind_head)
        others = [(layer, h) for layer in range(2) for h in range(self.cfg.n_heads) if (layer, h) not in (p, i)]
        prev_scores, ind_scores = head_scores(self.model, tokens, periods)
        n = {
            "accuracy": acc(),
            "accuracy_circuit_ablated": acc(p, i),
            "accuracy_prev_head_ablated": acc(p),
            "accuracy_induction_head_ablated": acc(i),
            "accuracy_others_ablated": acc(*others),
            "accuracy_k_edge_ablated": acc.without_k_edge(self.prev_head, self.ind_head),
            "prev_token_score": float(prev_scores[self.prev_head]),
            "induction_score": float(ind_scores[self.ind_head]),
            "true_circuit_faithfulness": self._circuit_faithfulness(),
        }
        c = self.cfg
        low, high = c.max_ablated * n["accuracy"], c.min_kept * n["accuracy"]
        checks = {
            f"clean accuracy >= {c.min_accuracy}": n["accuracy"] >= c.min_accuracy,
            **{f"{what}-ablated accuracy < {c.max_ablated} x clean": n[f"accuracy_{key}_ablated"] < low
               for what, key in _ABLATIONS},
            f"others-ablated accuracy >= {c.min_kept} x clean": n["accuracy_others_ablated"] >= high,
            "planted layer-0 head has the top previous-token score": int(prev_scores.argmax()) == self.prev_head,
            "planted layer-1 head has the top induction score": int(ind_scores.argmax()) == self.ind_head,
            f"the true edges alone carry >= {c.min_faithfulness} of the task's logit difference":
                n["true_circuit_faithfulness"] >= c.min_faithfulness,
        }  # fmt: skip
        return require(self.organism, self.seed, n, checks)

    def _circuit_faithfulness(self) -> float:
        """Faithfulness of the true edges on ``task``: every other edge carries its corrupt value."""
        truth = self.circuit
        keep = torch.tensor([e in truth.circuit_edges for e in truth.edges])  # truth.edges is the graph's order
        assert self.model.cfg is not None
        return faithfulness(self.model, self.task, Circuit(Graph.of(self.model.cfg), keep), progress=False)[0]


_ABLATIONS = (("circuit", "circuit"), ("prev-head", "prev_head"), ("induction-head", "induction_head"),
              ("K-edge", "k_edge"))  # fmt: skip


def repeated(
    n: int, seq_len: int, periods: tuple[int, int], gen: torch.Generator
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """``n`` sequences repeating a segment of distinct random tokens with a random period each."""
    period = torch.randint(periods[0], periods[1] + 1, (n,), generator=gen)
    perm = torch.argsort(torch.rand(n, N_TOKENS, generator=gen), dim=1)  # distinct tokens per row
    return perm.gather(1, torch.arange(seq_len)[None, :] % period[:, None]), period


def predictable(periods: Tensor, seq_len: int) -> Tensor:
    """``[batch pos-1]`` mask of the positions whose next token repeats an earlier one."""
    return torch.arange(1, seq_len)[None, :] >= periods[:, None]


def head_scores(model: Model, tokens: Tensor, periods: Tensor) -> tuple[Tensor, Tensor]:
    """Mean attention of each layer-0 head to the previous token, and of each layer-1 head to the induction target.

    The induction target of query position ``t >= period`` is ``t - period + 1``: the token after the earlier
    occurrence of the current token.
    """
    pats = model.run(tokens, cache=["head.0.pattern", "head.1.pattern"]).cache  # [batch head qpos kpos]
    t = torch.arange(tokens.shape[1])
    prev = pats["head.0.pattern"][:, :, t[1:], t[1:] - 1].mean((0, 2))
    q = t[None, :].expand(len(tokens), -1)  # [batch pos]
    k = (q - periods[:, None] + 1).clamp(min=0)
    rows = torch.arange(len(tokens))[:, None]
    to_target = pats["head.1.pattern"].permute(0, 2, 1, 3)[rows, q, :, k]  # [batch pos head]
    valid = (q >= periods[:, None]).float()[..., None]
    return prev, (to_target * valid).sum((0, 1)) / valid.sum()


class _Accuracy:
    """Top-1 accuracy on the predictable positions of fixed sequences, under head ablations."""

    def __init__(self, model: Model, tokens: Tensor, periods: Tensor) -> None:
        self.model, self.tokens = model, tokens
        self.mask = predictable(periods, tokens.shape[1])

    def score(self, logits: Tensor | None) -> float:
        assert logits is not None
        right = logits[:, :-1].argmax(-1) == self.tokens[:, 1:]
        return float((right & self.mask).sum() / self.mask.sum())

    def __call__(self, *heads: tuple[int, int]) -> float:
        """Accuracy with ``(layer, head)`` pairs mean-ablated over batch and positions."""
        ablations = [Ablate(f"head.{layer}.z", heads=[h], how="mean", reference=self.tokens, over="batch_pos")
                     for layer, h in heads]  # fmt: skip
        with self.model.intervene(*ablations):
            return self.score(self.model.run(self.tokens).logits)

    def without_k_edge(self, prev_head: int, ind_head: int) -> float:
        """Accuracy when the induction head's keys are computed from the residual minus the prev-token head's output."""
        module: Any = self.model.module
        block = module.model.layers[1]
        cache = self.model.run(self.tokens, cache=["head.0.z", "resid_pre.1"]).cache
        d_head = self.model.cfg.d_head if self.model.cfg else 0
        w_o = module.model.layers[0].self_attn.o_proj.weight[:, prev_head * d_head : (prev_head + 1) * d_head]
        written = cache["head.0.z"][:, :, prev_head] @ w_o.T  # [batch pos d_model]
        with torch.no_grad():
            keys = block.self_attn.k_proj(block.input_layernorm(cache["resid_pre.1"] - written))
        keys = keys.unflatten(-1, (-1, d_head))  # [batch pos head d_head]
        with self.model.intervene(Patch("head.1.k", keys, heads=[ind_head])):
            return self.score(self.model.run(self.tokens).logits)


# --- model and training ----------------------------------------------------------------------------------------


def _llama(cfg: InductionConfig) -> nn.Module:
    """A 2-layer Llama whose MLPs are zero and frozen: attention-only, with every uniform site present."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.d_model, intermediate_size=1, num_hidden_layers=2,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, head_dim=cfg.d_head,
        max_position_embeddings=cfg.seq_len, tie_word_embeddings=False, bos_token_id=None,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    module = LlamaForCausalLM(config)
    for layer in module.model.layers:
        for param in layer.mlp.parameters():
            param.data.zero_()
    return module.eval().requires_grad_(False)


def _fit(
    module: Any, cfg: InductionConfig, steps: int, gen: torch.Generator, phase: Literal["circuit", "others"],
    planted: tuple[int, int],
) -> None:  # fmt: skip
    """One training phase (Adam, a fresh optimiser per phase).

    ``circuit``: the planted heads, embeddings, norms and unembedding learn the repeats; the other heads are frozen.
    ``others``: only the other heads learn, on the distractor task.
    """
    params = {n: p for n, p in module.named_parameters() if ".mlp." not in n}
    planted_entries = _routing_masks(cfg, planted)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=0.0)
    for _ in range(steps):
        if phase == "others":
            grads = _grads(module, params, *_distractor_batch(cfg.batch_size, cfg.seq_len, gen))
        else:
            repeats, periods = repeated(cfg.batch_size, cfg.seq_len, cfg.periods, gen)
            grads = _grads(module, params, repeats, predictable(periods, cfg.seq_len))
        for name, p in params.items():
            mask = planted_entries.get(name)
            if phase == "circuit":
                p.grad = grads[name] if mask is None else grads[name] * mask
            else:  # frozen weights get no gradient at all, so Adam leaves them exactly as they are
                p.grad = None if mask is None else grads[name] * ~mask
        opt.step()
    module.eval().requires_grad_(False)


def _grads(module: Any, params: dict[str, nn.Parameter], tokens: Tensor, mask: Tensor) -> dict[str, Tensor]:
    logits = module(input_ids=tokens).logits[:, :-1]
    logp = logits.log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]  # [batch pos-1]
    loss = -(logp * mask).sum() / mask.sum()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


def _distractor_batch(n: int, seq_len: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Tokens drawn i.i.d. from a random set of 3-6 tokens per sequence: best predicted by copying any earlier one."""
    sets = torch.argsort(torch.rand(n, N_TOKENS, generator=gen), dim=1)[:, :6]
    sizes = torch.randint(3, 7, (n, 1), generator=gen)
    picks = (torch.rand(n, seq_len, generator=gen) * sizes).long()  # [batch pos] index into each set
    return sets.gather(1, picks), torch.ones(n, seq_len - 1, dtype=torch.bool)


def _routing_masks(cfg: InductionConfig, planted: tuple[int, int]) -> dict[str, Tensor]:
    """Per attention weight, True where the entry belongs to a planted head."""
    width = cfg.n_heads * cfg.d_head
    masks = {}
    for layer, head in enumerate(planted):
        rows = torch.zeros(width, dtype=torch.bool)
        rows[head * cfg.d_head : (head + 1) * cfg.d_head] = True
        prefix = f"model.layers.{layer}.self_attn"
        for proj in ("q_proj", "k_proj", "v_proj"):
            masks[f"{prefix}.{proj}.weight"] = rows[:, None].expand(width, cfg.d_model)
        masks[f"{prefix}.o_proj.weight"] = rows[None, :].expand(cfg.d_model, width)
    return masks
