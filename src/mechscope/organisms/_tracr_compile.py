"""Build time of the compiled-transformer organisms: tracr compiles a RASP program, its weights move to torch.

Only ``_tracr.TracrReverse`` & co. call this module, and only when building; it imports tracr and jax (the
``tracr`` extra). It follows ``tracr.compiler.compiling.compile_rasp_to_model`` step by step so that the craft graph
(which RASP operation each block implements, and the layer each was allocated to) stays at hand for the ground truth.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..circuits._ids import EdgeId, NodeId
from ._tracr import BOS, TracrConfig, _programs, all_inputs
from ._tracr_model import CompiledTransformer, Dims, node_of

PAD = "PAD"


@functools.lru_cache(maxsize=8)  # a pure function of its arguments: seeds of one program share one compilation
def compile_program(cfg: TracrConfig, seed: int) -> dict[str, Any]:
    """Compile ``cfg.program``; return the torch state, sizes, verification probe and ground truth (do not mutate)."""
    from tracr.compiler import (
        basis_inference,
        craft_graph_to_model,
        craft_model_to_transformer,
        expr_to_craft_graph,
        nodes,
        rasp_to_graph,
    )
    from tracr.craft import bases
    from tracr.rasp import rasp

    program = _programs()[cfg.program](cfg.max_seq_len)
    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
    basis_inference.infer_bases(graph, sink, set(cfg.vocab), cfg.max_seq_len)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=100
    )
    craft = craft_graph_to_model.craft_graph_to_model(graph, sources)
    assembled = craft_model_to_transformer.craft_model_to_transformer(
        craft_model=craft, graph=graph, sink=sink, max_seq_len=cfg.max_seq_len, compiler_bos=BOS, compiler_pad=PAD
    )
    # The layer of every block: the same (deterministic) allocation craft_graph_to_model used; private in tracr 1.0.
    allocation = craft_graph_to_model._allocate_modules_to_layers(graph, sources)
    components = _components(graph, allocation, nodes.MODEL_BLOCK)

    output_basis = [str(d) for d in sink[nodes.OUTPUT_BASIS]]
    unembed = np.array([[label == out for out in output_basis] for label in assembled.residual_labels], np.float32)
    state, dims = _state(assembled.params, assembled.model_config, unembed)
    module = CompiledTransformer(dims)
    module.load_state_dict(state)
    numerical = not rasp.is_categorical(sink[nodes.EXPR])
    probe = _probe(cfg, seed, program, assembled, unembed, numerical)
    nodes_, edges, true_edges = _edges(module, set(components))
    truth = {
        "program": cfg.program,
        "nodes": nodes_,
        "circuit": sorted(components),
        "edges": edges,
        "circuit_edges": sorted(true_edges),
        "components": components,
        "output_values": [str(v) for v in assembled.output_encoder.encoding_map] if not numerical else [],
        "selectors": _selectors(graph, components, list(assembled.residual_labels)),
    }
    meta = {"dims": dims.__dict__, "numerical": numerical, "truth": truth,
            "residual_labels": list(assembled.residual_labels)}  # fmt: skip
    return {"state": state, "dims": dims, "probe": probe, "meta": meta}


def _components(graph: Any, allocation: dict[int, int], block_key: str) -> dict[str, list[str]]:
    """Site of every emitted head and MLP -> labels of the RASP operations it implements.

    Mirrors how ``craft_graph_to_model`` stacks blocks: allocation layer ``n`` is the attention (even ``n``) or
    MLP (odd ``n``) of transformer layer ``n // 2``; a selector width is an attention at ``n`` and an MLP at
    ``n + 1``; heads of one layer are numbered in allocation order; MLPs of one layer are fused into one.
    """
    from tracr.craft import transformers

    found: dict[str, list[str]] = defaultdict(list)
    heads: dict[int, int] = defaultdict(int)
    for node_id, layer in allocation.items():
        node = graph.nodes[node_id]
        block = node.get(block_key)
        if block is None:
            continue
        parts = [(layer, block)]
        if isinstance(block, transformers.SeriesWithResiduals):
            parts = [(layer, block.blocks[0]), (layer + 1, block.blocks[1])]
        for n, part in parts:
            if isinstance(part, transformers.MLP):
                found[f"blocks.{n // 2}.mlp"].append(str(node_id))
                continue
            for _ in part.as_multi().heads():
                found[f"blocks.{n // 2}.attn.heads.{heads[n // 2]}"].append(str(node_id))
                heads[n // 2] += 1
    return dict(found)


def _selectors(graph: Any, components: dict[str, list[str]], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Every emitted head's compiled selector, and its value map where it aggregates a categorical value.

    Per head site: ``query`` / ``key``, the residual dimensions (indices into the residual labels, e.g.
    ``tokens:3``) of the query and key values' one-hot directions; ``selector[i][j]``, whether query value ``i``
    attends to key value ``j`` (the RASP predicate, ``predicate(key, query)``); ``ov`` for a categorical
    ``Aggregate`` (None otherwise): the ``input`` value dimensions, the ``output`` value dimensions, and ``map[i]``,
    the output index the attended input value ``i`` is written as (the same value; -1 where it has none). Heads
    whose selector is not a plain ``Select`` are left out.
    """
    from tracr.compiler import nodes
    from tracr.craft import bases
    from tracr.rasp import rasp

    index = {label: i for i, label in enumerate(labels)}

    def values(sop: Any) -> list[Any]:
        return sorted(graph.nodes[sop.label][nodes.VALUE_SET], key=lambda v: (str(type(v)), v))

    def dims(sop: Any, vals: list[Any]) -> list[int]:
        return [index[str(bases.BasisDirection(sop.label, v))] for v in vals]

    found: dict[str, dict[str, Any]] = {}
    for site, exprs in components.items():
        expr = graph.nodes[exprs[0]][nodes.EXPR]
        select = getattr(expr, "selector", None)
        if ".attn." not in site or not isinstance(select, rasp.Select):
            continue
        qv, kv = values(select.queries), values(select.keys)
        ov = None
        if isinstance(expr, rasp.Aggregate) and rasp.is_categorical(expr):
            iv, out = values(expr.sop), values(expr)
            ov = {"input": dims(expr.sop, iv), "output": dims(expr, out),
                  "map": [out.index(v) if v in out else -1 for v in iv]}  # fmt: skip
        found[site] = {
            "expr": expr.label,
            "predicate": str(select.predicate),
            "query": dims(select.queries, qv),
            "key": dims(select.keys, kv),
            "selector": [[bool(select.predicate(k, q)) for k in kv] for q in qv],
            "ov": ov,
        }
    return found


def _state(params: Any, config: Any, unembed: np.ndarray) -> tuple[dict[str, Tensor], Dims]:
    """The haiku parameters as a ``CompiledTransformer`` state dict (haiku ``w`` is ``[in out]``, torch's ``[out in]``).

    tracr fuses the heads of a layer into one projection; each head's slice becomes its own ``Head`` module.
    """
    p = {k: {n: torch.tensor(np.asarray(v)) for n, v in d.items()} for k, d in params.items()}
    tok, pos = p["token_embed"]["embeddings"], p["pos_embed"]["embeddings"]
    dk, n_heads = config.key_size, config.num_heads
    dims = Dims(tok.shape[0], pos.shape[0], tok.shape[1], config.num_layers, n_heads, dk, config.mlp_hidden_size,
                unembed.shape[1])  # fmt: skip
    state = {"token_embed.weight": tok, "pos_embed.weight": pos, "unembed.weight": torch.tensor(unembed.T)}
    for i in range(config.num_layers):
        attn, mlp = f"transformer/layer_{i}/attn", f"transformer/layer_{i}/mlp"
        for h in range(n_heads):
            cols = slice(h * dk, (h + 1) * dk)  # head h's columns of the fused projections
            for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
                state[f"blocks.{i}.attn.heads.{h}.{ours}.weight"] = p[f"{attn}/{theirs}"]["w"][:, cols].T
                state[f"blocks.{i}.attn.heads.{h}.{ours}.bias"] = p[f"{attn}/{theirs}"]["b"][cols]
            state[f"blocks.{i}.attn.heads.{h}.o.weight"] = p[f"{attn}/linear"]["w"][cols, :].T
        state[f"blocks.{i}.attn.bias"] = p[f"{attn}/linear"]["b"]
        for ours, theirs in (("up", "linear_1"), ("down", "linear_2")):
            state[f"blocks.{i}.mlp.{ours}.weight"] = p[f"{mlp}/{theirs}"]["w"].T
            state[f"blocks.{i}.mlp.{ours}.bias"] = p[f"{mlp}/{theirs}"]["b"]
    return {k: v.float().contiguous() for k, v in state.items()}, dims


def _probe(cfg: TracrConfig, seed: int, program: Any, assembled: Any, unembed: np.ndarray,
           numerical: bool) -> dict[str, Tensor]:  # fmt: skip
    """Verification inputs with the RASP program's outputs (evaluated by tracr's interpreter) and jax's logits."""
    import jax.numpy as jnp
    from tracr.rasp import rasp

    inputs = all_inputs(list(cfg.vocab), cfg.max_seq_len, cfg.max_inputs, seed)
    width = cfg.max_seq_len + 1
    enc = assembled.input_encoder.encoding_map
    tokens = torch.full((len(inputs), width), enc[PAD], dtype=torch.long)
    expected = torch.zeros(len(inputs), width)
    jax_logits = torch.zeros(len(inputs), width, unembed.shape[1])
    out_ids: dict[Any, int] = {} if numerical else assembled.output_encoder.encoding_map
    for row, x in enumerate(inputs):
        tokens[row, : len(x) + 1] = torch.tensor(assembled.input_encoder.encode([BOS, *x]))
        values = rasp.evaluate(program, list(x))
        expected[row, 1 : len(x) + 1] = torch.tensor([float(v) if numerical else out_ids[v] for v in values])
    lengths = torch.tensor([len(x) for x in inputs])
    for n in sorted(set(lengths.tolist())):  # one jax call per length: tracr models have no padding mask
        rows = lengths == n
        out = assembled.forward(assembled.params, jnp.asarray(tokens[rows, : n + 1].numpy()))
        resid = np.asarray(out.transformer_output.output)  # [batch pos d_model]
        jax_logits[rows, : n + 1] = torch.tensor(resid @ unembed)
    return {"tokens": tokens, "lengths": lengths, "expected": expected, "jax_logits": jax_logits}


def _edges(module: CompiledTransformer, emitted: set[str]) -> tuple[list[str], list[str], set[str]]:
    """Candidate nodes and edges of ``module``, and the true edges: emitted sender writes what emitted receiver reads.

    tracr gives every value of the program its own residual dimensions, so a dimension written by one block and
    read by a later one is an edge of the program's data flow. Senders: ``input`` (embeddings), heads, MLPs;
    receivers: heads' ``<q>``, ``<k>``, ``<v>``, MLPs, ``logits``; an edge goes forward only.
    """

    def cols(w: Tensor) -> set[int]:  # residual dimensions a [out d_model] weight reads
        return set(torch.nonzero(w.abs().sum(0)).flatten().tolist())

    def rows(w: Tensor) -> set[int]:  # residual dimensions a [d_model in] weight writes
        return set(torch.nonzero(w.abs().sum(1)).flatten().tolist())

    senders: list[tuple[NodeId, int, set[int], bool]] = [
        (NodeId("input"), -1, rows(module.token_embed.weight.T) | rows(module.pos_embed.weight.T), True)
    ]
    receivers: list[tuple[NodeId, Any, int, set[int], bool]] = []  # node, part, position, reads, emitted
    for site, component in module.components().items():
        mod: Any = component  # a Head or an MLP
        node, on = node_of(site), site in emitted
        assert node.layer is not None
        if node.kind == "mlp":
            senders.append((node, 2 * node.layer + 1, rows(mod.down.weight), on))
            receivers.append((node, None, 2 * node.layer + 1, cols(mod.up.weight), on))
            continue
        senders.append((node, 2 * node.layer, rows(mod.o.weight), on))
        receivers += [(node, x, 2 * node.layer, cols(getattr(mod, x).weight), on) for x in "qkv"]
    receivers.append((NodeId("logits"), None, 10**9, cols(module.unembed.weight), True))
    edges, true = [], set()
    for r_node, part, r_at, reads, r_on in receivers:
        for s_node, s_at, writes, s_on in senders:
            if s_at < r_at:
                edges.append(EdgeId(s_node, r_node, part).format())
                if s_on and r_on and writes & reads:
                    true.add(edges[-1])
    return list(module.components()), edges, true
