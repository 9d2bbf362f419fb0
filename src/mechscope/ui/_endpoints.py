"""The explorer's JSON endpoints: one handler per endpoint and the table (``ENDPOINTS``) that declares them.

Each handler takes the explorer and its parsed arguments (``_api.parse``) and returns JSON-able data; those that
touch the model hand a ``*_job`` function to the one model worker. The router, ``/api`` and the OpenAPI document
are made from the table (``_app.create_app``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core._model import Model
from . import _graphs, _lab, _views, _vision
from ._api import Endpoint, Param
from ._explorer import Explorer
from ._worker import checkpoint_modules

# --- handlers: each takes the explorer and its parsed arguments ----------------------------------------------------


async def _status(x: Explorer) -> dict[str, Any]:
    import mechscope

    model = _lab.model_info(x.model, x.max_tokens) if x.model is not None else None
    dictionary = None if x.dictionary is None else {"site": x.dictionary.cfg.site, "d_sae": x.dictionary.cfg.d_sae}
    return {
        "version": mechscope.__version__,
        "model": model,
        "dictionary": dictionary,
        "tuned_lens": None if x.tuned_lens is None else x.tuned_lens.provenance,
        "worker": {**x.worker.stats.to_dict(), "jobs": x.worker.jobs()},
        "roots": x.roots.describe(),
        "token_required": x.token is not None,
    }


async def _cancel(x: Explorer, id: int) -> dict[str, Any]:
    return {"id": id, "was": x.worker.cancel(id)}


async def _methods(x: Explorer) -> dict[str, Any]:
    from ..cli._methods import describe

    return describe()


async def _method(x: Explorer, family: str, name: str) -> dict[str, Any]:
    from ..cli._methods import registry

    return dict(registry(family)[name].describe())


async def _runs(x: Explorer) -> dict[str, Any]:
    found = [f.to_dict() for f in await asyncio.to_thread(x.roots.scan)]
    ran = [
        {"ref": ref, "kind": "circuit", "title": f"{ref}: {d['method']} on {d['task']}"} for ref, d in x.runs.items()
    ]
    return {"roots": x.roots.describe(), "found": found + ran}


def _prompt_job(model: Model, prompt: str, top_k: int, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, prompt, max_tokens)
    return _lab.predictions(model, prompt, top_k)


async def _prompt(x: Explorer, prompt: str, top_k: int) -> dict[str, Any]:
    return await x.on_model("prompt", _prompt_job, prompt, top_k, x.max_tokens)


def _lens_job(model: Model, prompt: str, top_k: int, max_tokens: int, tuned: Any) -> dict[str, Any]:
    _lab.check_prompt(model, prompt, max_tokens)
    return _lab.lens_grid(model, prompt, top_k, tuned)


async def _lens(x: Explorer, prompt: str, top_k: int) -> dict[str, Any]:
    return await x.on_model("lens", _lens_job, prompt, top_k, x.max_tokens, x.tuned_lens)


def _attention_job(model: Model, prompt: str, layer: int, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, prompt, max_tokens)
    return _lab.attention(model, prompt, layer)


async def _attention(x: Explorer, prompt: str, layer: int) -> dict[str, Any]:
    return await x.on_model("attention", _attention_job, prompt, layer, x.max_tokens)


def _dla_job(model: Model, prompt: str, answer: str, wrong: str, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, prompt, max_tokens)
    return _lab.dla(model, prompt, answer, wrong)


async def _dla(x: Explorer, prompt: str, answer: str, wrong: str) -> dict[str, Any]:
    return await x.on_model("dla", _dla_job, prompt, answer, wrong, x.max_tokens)


def _sites_job(model: Model, pattern: str) -> list[dict[str, str]]:
    return [row._asdict() for row in model.sites(pattern)]


async def _sites(x: Explorer, pattern: str) -> dict[str, Any]:
    return {"pattern": pattern, "sites": await x.on_model("sites", _sites_job, pattern)}


def _lens_method_job(model: Model, name: str, prompt: str, settings: dict[str, Any], max_tokens: int) -> Any:
    """Run a lenses method by its calling convention (see ``lenses._registry``).

    Weight readings and steering sweeps take no prompt, similarity reads the prompt's positions, probes need
    labelled inputs (not offered here).
    """
    from ..lenses import METHODS

    _lab.check_prompt(model, prompt, max_tokens)
    spec = METHODS[name]
    config = spec.make_config(**settings)
    if "probe" in spec.tags:
        raise ValueError(f"{name} needs labelled inputs, which a prompt is not: run it with `mechscope probe`")
    if spec.tags & {"weights", "steering"}:
        return spec(model, config=config).to_dict()
    return spec(model, prompt, config=config).to_dict()


async def _run_lens(x: Explorer, name: str, prompt: str, settings: dict[str, Any]) -> Any:
    if isinstance(settings.get("tuned"), str) and settings["tuned"]:  # a lens folder: only inside the run directories
        ref = settings["tuned"].rstrip("/")
        settings = {**settings, "tuned": str(x.roots.resolve(f"{ref}/config.json").parent)}
    return await x.on_model(f"lens {name}", _lens_method_job, name, prompt, settings, x.max_tokens)


async def _circuit(x: Explorer, ref: str) -> dict[str, Any]:
    doc = await asyncio.to_thread(x.circuit, ref)
    return _views.circuit_view(doc)


async def _run_circuit(x: Explorer, task: str, n: int, method: str, settings: dict[str, Any]) -> dict[str, Any]:
    doc = await x.on_model(f"circuit {method}", _views.run_circuit, task, n, method, settings)
    ref = f"run:{len(x.runs)}"
    x.runs[ref] = doc
    return {"ref": ref, **_views.circuit_view(doc)}


async def _verify(x: Explorer, ref: str, edge: str) -> dict[str, Any]:
    doc = await asyncio.to_thread(x.circuit, ref)
    return await x.on_model("verify edge", _views.verify_edge, doc, edge)


def _try_job(model: Model, dictionary: Any, text: str, latent: int, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, text, max_tokens)
    return _lab.try_feature(model, dictionary, text, latent)


async def _try(x: Explorer, text: str, latent: int) -> dict[str, Any]:
    return await x.on_model("try feature", _try_job, x.dictionary, text, latent, x.max_tokens)


def _steer_job(model: Model, dictionary: Any, args: tuple[Any, ...], max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, args[0], max_tokens)
    return _lab.steer(model, dictionary, *args)


async def _steer(x: Explorer, prompt: str, latent: int, how: str, value: float, max_new_tokens: int) -> Any:
    args = (prompt, latent, how, value, max_new_tokens)
    return await x.on_model("steer", _steer_job, x.dictionary, args, x.max_tokens)


def _attribute_job(model: Model, args: tuple[Any, ...], max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, args[0] + (args[1] or ""), max_tokens)
    return _lab.token_attribution(model, *args)


async def _attribute(x: Explorer, prompt: str, continuation: str | None, max_new_tokens: int, method: str) -> Any:
    args = (prompt, continuation, max_new_tokens, method)
    return await x.on_model("token attribution", _attribute_job, args, x.max_tokens)


async def _vision_gallery(x: Explorer, organism: str, n: int) -> dict[str, Any]:
    return await x.worker.run(f"vision {organism}", _vision.gallery, organism, n)


async def _vision_attribute(
    x: Explorer, organism: str, image: int | None, png: str | None, methods: list[Any], target: str, sanity: bool
) -> dict[str, Any]:
    org = await x.worker.run(f"vision {organism}", _vision.organism, organism)
    args = (organism, image, png, methods, target, sanity)
    return await x.worker.run("image attribution", _vision.attribute, *args, modules=checkpoint_modules(org.module))


async def _bench(x: Explorer, ref: str) -> dict[str, Any]:
    return await asyncio.to_thread(_views.bench_view, x.roots.resolve(ref))


async def _features(x: Explorer, ref: str, by: str, n: int) -> dict[str, Any]:
    return await asyncio.to_thread(_views.feature_list, x.roots.resolve(ref), by, n)


async def _feature(x: Explorer, ref: str, latent: int) -> dict[str, Any]:
    return await asyncio.to_thread(_views.feature_card, x.roots.resolve(ref), latent)


async def _feature_search(x: Explorer, ref: str, text: str, n: int, by: str) -> dict[str, Any]:
    return await asyncio.to_thread(_views.feature_search, x.roots.resolve(ref), text, n, by)


async def _graphs_list(x: Explorer) -> dict[str, Any]:
    found = [f.to_dict() for f in await asyncio.to_thread(x.roots.scan) if f.kind == "graph"]
    held = [{"ref": ref, "kind": "graph", "title": f"{ref}: {g.prompt!r}"} for ref, g in x.graphs.items()
            if ref.startswith("graph:")]  # fmt: skip
    return {**_graphs.describe(x.transcoders), "found": found + held}


def _graph_job(model: Model, rm: Any, prompt: str, target: str | None, settings: dict[str, Any], most: int) -> Any:
    _lab.check_prompt(model, prompt, most)
    return _graphs.run(rm, prompt, target, settings)


async def _graph_run(
    x: Explorer, prompt: str, target: str | None, settings: dict[str, Any], node_threshold: float | None,
    edge_threshold: float | None,
) -> dict[str, Any]:  # fmt: skip
    rm = x.replacement
    graph = await x.on_model("graph", _graph_job, rm, prompt, target, settings, x.max_tokens)
    ref = f"graph:{sum(r.startswith('graph:') for r in x.graphs)}"
    x.graphs[ref] = graph
    nt = graph.config.get("node_threshold", 0.8) if node_threshold is None else node_threshold
    et = graph.config.get("edge_threshold", 0.98) if edge_threshold is None else edge_threshold
    return await asyncio.to_thread(_graphs.view, graph, ref, nt, et)


async def _graph(x: Explorer, ref: str, node_threshold: float, edge_threshold: float) -> dict[str, Any]:
    graph = await asyncio.to_thread(x.graph, ref)
    return await asyncio.to_thread(_graphs.view, graph, ref, node_threshold, edge_threshold)


async def _graph_node(x: Explorer, ref: str, node: str, k: int) -> dict[str, Any]:
    graph = await asyncio.to_thread(x.graph, ref)
    return await asyncio.to_thread(_graphs.node, graph, node, k)


async def _graph_supernode(x: Explorer, ref: str, name: str, nodes: list[Any]) -> dict[str, Any]:
    graph = await asyncio.to_thread(x.graph, ref)
    x.graphs[ref] = _graphs.supernode(graph, name, nodes)
    return {"ref": ref, "supernodes": {k: list(v) for k, v in x.graphs[ref].supernodes.items()}}


async def _graph_json(x: Explorer, ref: str) -> dict[str, Any]:
    graph = await asyncio.to_thread(x.graph, ref)
    return await asyncio.to_thread(graph.to_dict)


def _graph_verify_job(model: Model, rm: Any, graph: Any, node: str, factor: float, value: float | None) -> Any:
    _graphs.check_model(graph, model)
    return _graphs.verify_node(rm, graph, node, factor, value)


async def _graph_verify(x: Explorer, ref: str, node: str, factor: float, value: float | None) -> dict[str, Any]:
    graph = await asyncio.to_thread(x.graph, ref)
    rm = x.replacement
    return await x.on_model("graph verify", _graph_verify_job, rm, graph, node, factor, value)


_PROMPT = Param("prompt", "body", str, "The prompt (at most the server's token limit; see /api/status).", required=True)
_REF = Param("ref", "query", str, "A file reference ROOT/PATH, as /api/runs lists them.", required=True)

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/api/status", "The model, the worker's queue and the run directories.", _status),
    Endpoint(
        "POST",
        "/api/jobs/cancel",
        "Cancel a queued or running model job (its caller gets a 409 error); ids are in /api/status.",
        _cancel,
        (Param("id", "body", int, "The job's id (/api/status lists worker.jobs).", required=True, minimum=1),),
    ),
    Endpoint("GET", "/api/methods", "Every family's declared methods (the registries' describe()).", _methods),
    Endpoint(
        "GET",
        "/api/methods/{family}/{name}",
        "One declared method: summary, tags, result and settings.",
        _method,
        (Param("family", "path", str, "Method family (see /api/methods)."), Param("name", "path", str, "Method name.")),
    ),
    Endpoint("GET", "/api/runs", "Circuit runs, leaderboards and feature databases under the run directories.", _runs),
    Endpoint(
        "POST",
        "/api/prompt",
        "The prompt's tokens and the top-k next tokens with probabilities.",
        _prompt,
        (_PROMPT, Param("top_k", "body", int, "How many next tokens.", 10, minimum=1, maximum=100)),
        True,
    ),
    Endpoint(
        "POST",
        "/api/lens",
        "Logit lens at every layer and position: the top tokens of each cell; with the server's tuned lens "
        "(serve --tuned-lens DIR), its grid on the same axes under 'tuned'.",
        _lens,
        (_PROMPT, Param("top_k", "body", int, "Top tokens per cell.", 3, minimum=1, maximum=20)),
        True,
    ),
    Endpoint(
        "POST",
        "/api/attention",
        "Every head's attention pattern at one layer: patterns[head][query][key].",
        _attention,
        (_PROMPT, Param("layer", "body", int, "Layer.", required=True)),
        True,
    ),
    Endpoint(
        "POST",
        "/api/dla",
        "Direct logit attribution of every head and MLP to answer minus wrong.",
        _dla,
        (
            _PROMPT,
            Param("answer", "body", str, "Answer token, e.g. ' Mary'.", required=True),
            Param("wrong", "body", str, "Alternative token, e.g. ' John'.", required=True),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/tokens/attribute",
        "Token attribution: each new token's attribution to every context token (IG or input x gradient).",
        _attribute,
        (
            _PROMPT,
            Param("continuation", "body", str, "Text to attribute (default: the model's greedy continuation)."),
            Param(
                "max_new_tokens", "body", int, "Greedy tokens when no continuation is given.", 4, minimum=1, maximum=16
            ),
            Param("method", "body", str, "integrated_gradients | input_x_gradient.", "integrated_gradients"),
        ),
        True,
    ),
    Endpoint(
        "GET",
        "/api/sites",
        "The model's sites matching a name or glob (unknown names get suggestions).",
        _sites,
        (Param("pattern", "query", str, "Site name or glob, e.g. 'head.0.*'.", "*"),),
        True,
    ),
    Endpoint(
        "POST",
        "/api/lenses/{name}",
        "Run any declared lens on a prompt, with its settings.",
        _run_lens,
        (
            Param("name", "path", str, "Lens name (see /api/methods)."),
            _PROMPT,
            Param("settings", "body", dict, "The lens's settings by name (its config fields).", {}),
        ),
        True,
    ),
    Endpoint(
        "GET",
        "/api/circuit",
        "A circuit run as a layered graph with its edges' scores and the curve.",
        _circuit,
        (_REF,),
    ),
    Endpoint(
        "POST",
        "/api/circuit/run",
        "Find a circuit on a built-in task with any declared circuit method (kept in memory as run:N).",
        _run_circuit,
        (
            Param(
                "task",
                "body",
                str,
                "ioi | greater_than | factual_recall | gendered_pronoun | subject_verb_agreement | induction.",
                required=True,
            ),
            Param("n", "body", int, "Prompt pairs.", 8, minimum=1, maximum=64),
            Param("method", "body", str, "Circuit method (see /api/methods, family circuits).", "eap"),
            Param("settings", "body", dict, "The method's settings by name (its config fields).", {}),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/circuit/verify",
        "Patch one edge of a saved run for real: its effect beside its score's estimate (normalised).",
        _verify,
        (
            Param("ref", "body", str, "The run's reference (see /api/runs).", required=True),
            Param("edge", "body", str, "Edge name, e.g. 'a0.h1->a1.h3<k>'.", required=True),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/feature/try",
        "A latent's activation on every token of a text (needs --dictionary).",
        _try,
        (
            Param("text", "body", str, "Text to run.", required=True),
            Param("latent", "body", int, "Latent index.", required=True, minimum=0),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/feature/steer",
        "Greedy continuations with a latent clamped or scaled, beside the plain one (needs --dictionary).",
        _steer,
        (
            _PROMPT,
            Param("latent", "body", int, "Latent index.", required=True, minimum=0),
            Param("how", "body", str, "clamp (set the latent to value) or scale (multiply it by value).", "clamp"),
            Param("value", "body", float, "The value or factor.", required=True, minimum=-1000, maximum=1000),
            Param("max_new_tokens", "body", int, "Tokens to generate.", 20, minimum=1, maximum=64),
        ),
        True,
    ),
    Endpoint(
        "GET",
        "/api/vision",
        "A vision organism: its held-out images (PNG), classes, accuracy and the attribution methods declared for it.",
        _vision_gallery,
        (
            Param("organism", "query", str, "shapes-cnn | shapes-vit | blocks-cnn.", "shapes-cnn"),
            Param("n", "query", int, "How many held-out images.", 12, minimum=1, maximum=256),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/vision/attribute",
        "Attribution maps of one image (an organism's or an uploaded PNG) with their quality metrics.",
        _vision_attribute,
        (
            Param("organism", "body", str, "shapes-cnn | shapes-vit | blocks-cnn.", "shapes-cnn"),
            Param("image", "body", int, "Index of a held-out image (see GET /api/vision).", minimum=0),
            Param("png", "body", str, "Or an uploaded PNG: base64 or a data:image/png;base64 URI (<= 128 KB)."),
            Param("methods", "body", list, "Attribution methods (see GET /api/vision).", ["saliency", "grad_cam"]),
            Param("target", "body", str, "The class explained: pred | label | a class index.", "pred"),
            Param("sanity", "body", bool, "Also run the randomisation sanity check (slower).", True),
        ),
        True,
    ),
    Endpoint(
        "GET",
        "/api/graphs",
        "The declared attribution-graph method (its settings), the server's transcoders and the graphs to open.",
        _graphs_list,
    ),
    Endpoint(
        "POST",
        "/api/graph/run",
        "Compute a prompt's attribution graph with the server's transcoders (held in memory as graph:N).",
        _graph_run,
        (
            _PROMPT,
            Param("target", "body", str, "A single-token target logit, e.g. ' Paris' (default: the top logits)."),
            Param("settings", "body", dict, "The method's settings by name (its config fields).", {}),
            Param(
                "node_threshold",
                "body",
                float,
                "Pruning of the view returned (default: the config's).",
                minimum=0,
                maximum=1,
            ),
            Param(
                "edge_threshold",
                "body",
                float,
                "Pruning of the view returned (default: the config's).",
                minimum=0,
                maximum=1,
            ),
        ),
        True,
    ),
    Endpoint(
        "GET",
        "/api/graph",
        "A graph (graph:N or a graph.json reference) pruned at these thresholds: nodes, edges, scores, supernodes.",
        _graph,
        (
            Param("ref", "query", str, "graph:N or a file reference (see /api/graphs).", required=True),
            Param(
                "node_threshold", "query", float, "Share of influence the kept nodes hold.", 0.8, minimum=0, maximum=1
            ),
            Param(
                "edge_threshold",
                "query",
                float,
                "Share of edge influence the kept edges hold.",
                0.98,
                minimum=0,
                maximum=1,
            ),
        ),
    ),
    Endpoint(
        "GET",
        "/api/graph/node",
        "One node of the full graph: activation, influence, strongest incoming and outgoing edges.",
        _graph_node,
        (
            Param("ref", "query", str, "graph:N or a file reference (see /api/graphs).", required=True),
            Param("node", "query", str, "Node id, e.g. 'feature:0:5@2'.", required=True),
            Param("k", "query", int, "Edges listed each way.", 10, minimum=1, maximum=100),
        ),
    ),
    Endpoint(
        "POST",
        "/api/graph/supernode",
        "Group nodes into a named supernode, saved with the graph (download it from /api/graph/json).",
        _graph_supernode,
        (
            Param("ref", "body", str, "graph:N or a file reference (see /api/graphs).", required=True),
            Param("name", "body", str, "The supernode's name (an existing one is replaced).", required=True),
            Param("nodes", "body", list, "Node ids.", required=True),
        ),
    ),
    Endpoint(
        "GET",
        "/api/graph/json",
        "The whole graph with its supernodes, in mechscope's graph.json format (AttributionGraph.from_json).",
        _graph_json,
        (Param("ref", "query", str, "graph:N or a file reference (see /api/graphs).", required=True),),
    ),
    Endpoint(
        "POST",
        "/api/graph/verify",
        "Ablate (or scale, or clamp) one feature node in the real model: the graph's predicted changes beside the "
        "real ones (needs --transcoders).",
        _graph_verify,
        (
            Param("ref", "body", str, "graph:N or a file reference (see /api/graphs).", required=True),
            Param("node", "body", str, "A feature node's id.", required=True),
            Param("factor", "body", float, "Multiply the feature by this (0: ablate).", 0.0, minimum=-100, maximum=100),
            Param("value", "body", float, "Or clamp it to this value.", minimum=-1e6, maximum=1e6),
        ),
        True,
    ),
    Endpoint("GET", "/api/bench", "A leaderboard's rows with families, chance and baselines.", _bench, (_REF,)),
    Endpoint(
        "GET",
        "/api/features",
        "A feature database's latents ranked by a statistic.",
        _features,
        (
            _REF,
            Param("by", "query", str, "frequency | mean_activation | max_activation | n_active.", "frequency"),
            Param("n", "query", int, "How many latents.", 50, minimum=1, maximum=1000),
        ),
    ),
    Endpoint(
        "GET",
        "/api/feature",
        "One latent's page: statistics, histogram, top contexts, logit effects.",
        _feature,
        (_REF, Param("latent", "query", int, "Latent index.", required=True, minimum=0)),
    ),
    Endpoint(
        "GET",
        "/api/features/search",
        "Latents that promote a token most, or whose explanation contains some words.",
        _feature_search,
        (
            _REF,
            Param("text", "query", str, "A token (with or without its leading space), or words.", required=True),
            Param(
                "by",
                "query",
                str,
                "token (latents promoting it) | explanation (explanations with every word).",
                "token",
            ),
            Param("n", "query", int, "How many latents.", 20, minimum=1, maximum=1000),
        ),
    ),
]
"""The JSON API: the router, ``/api`` and ``/api/openapi.json`` are made from this table."""
