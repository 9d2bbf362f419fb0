"""The data of the circuit, bench and feature views, read from files under the run directories.

Each function takes a resolved path (``Roots.resolve``) and returns plain JSON-able data shaped for the page; the
library's own readers do the reading (``circuits.CircuitRun.from_dict``'s format, ``store.FeatureDB``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ._files import read_json
from ._lab import BadRequest

_BUILT_IN_TASKS = ("ioi", "greater_than", "factual_recall", "gendered_pronoun", "subject_verb_agreement", "induction")


def circuit_doc(path: Path) -> dict[str, Any]:
    """The summary a ``mechscope circuit`` run saved (``CircuitRun.to_dict()`` plus its files)."""
    doc = read_json(path)
    if not isinstance(doc, dict) or "circuit" not in doc:
        raise BadRequest(f"{path.name} is not the summary.json of a `mechscope circuit` run")
    return doc


def run_circuit(model: Any, task: str, n: int, method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``circuits.find_circuit`` on a built-in task, as ``mechscope circuit`` runs it (one seed, 0, for all)."""
    from ..circuits import METHODS, FindConfig, find_circuit
    from ..data import tasks

    if task not in _BUILT_IN_TASKS:
        raise BadRequest(f"unknown task {task!r}: choose one of {', '.join(_BUILT_IN_TASKS)}")
    spec = METHODS[method]
    names = {f.name for f in spec.fields()}
    config = spec.make_config(**({"seed": 0} if "seed" in names else {}), **settings)
    built = getattr(tasks, task)(model.tokenizer, n=n, seed=0)
    return find_circuit(model, built, FindConfig(spec.name, config, random=2, seed=0)).to_dict()


def saved_scores(doc: dict[str, Any]) -> dict[str, float]:
    """Every edge score a run saved, by edge name.

    Its ranked edges (``ranked_edges``, up to ``circuits._find.SAVED_EDGES``), its top edges (``scores.top_edges``;
    runs saved before ``ranked_edges`` existed hold only these) and its circuit's (``edge_scores``).
    """
    scores = {str(name): float(s) for name, s in (doc.get("scores", {}).get("top_edges") or [])}
    scores.update({str(name): float(s) for name, s in (doc.get("ranked_edges") or [])})
    scores.update({k: float(v) for k, v in (doc.get("edge_scores") or {}).items()})
    return scores


def circuit_view(doc: dict[str, Any]) -> dict[str, Any]:
    """A circuit run (``circuit_doc``) laid out as a layered graph, with every edge whose score the run saved.

    ``edges`` are the scored edges (``saved_scores``) and the circuit's, strongest first; ``n_scored`` how many of
    the graph's edges have a saved score; the ``curve`` gives faithfulness at fixed sizes beside random circuits.
    """
    from ..circuits import EdgeId, Graph, NodeId

    c = doc["circuit"]
    graph = Graph.from_dict(c["graph"])
    scores = saved_scores(doc)
    in_circuit = set(c.get("edges", []))
    edges = []
    for name in sorted(set(scores) | in_circuit, key=lambda n: (-abs(scores.get(n, 0.0)), n)):
        e = EdgeId.parse(name)
        edges.append(
            {
                "name": name,
                "sender": e.sender.format(),
                "receiver": e.receiver.format(),
                "part": e.part,
                "score": scores.get(name),
                "in_circuit": name in in_circuit,
            }
        )
    nodes = [{"id": "input", "row": 0, "col": 0, "cols": 1}]
    for layer in range(graph.n_layers):
        heads = [NodeId.head(layer, h).format() for h in range(graph.n_heads)]
        if graph.n_kv_heads != graph.n_heads:
            heads += [NodeId("kv", layer, k).format() for k in range(graph.n_kv_heads)]
        nodes += [{"id": h, "row": 2 * layer + 1, "col": i, "cols": len(heads)} for i, h in enumerate(heads)]
        nodes.append({"id": NodeId.mlp(layer).format(), "row": 2 * layer + 2, "col": 0, "cols": 1})
    nodes.append({"id": "logits", "row": 2 * graph.n_layers + 1, "col": 0, "cols": 1})
    curve = doc.get("curve")
    return {
        "method": doc.get("method"),
        "task": doc.get("task"),
        "n_prompts": doc.get("n_prompts"),
        "model": doc.get("model", {}),
        "config": doc.get("config", {}),
        "n_edges": c.get("n_edges"),
        "of_edges": c.get("of_edges", graph.n_edges),
        "n_scored": len(scores),
        "faithfulness": c.get("faithfulness"),
        "random_faithfulness": c.get("random_faithfulness", []),
        "nodes": nodes,
        "edges": edges,
        "curve": None
        if curve is None
        else {
            k: curve[k]
            for k in (
                "sizes",
                "n_edges",
                "faithfulness",
                "random_mean",
                "random",
                "cpr",
                "cmd",
                "random_cpr",
                "random_cmd",
            )
            if k in curve
        },
        "check": doc.get("scores", {}).get("check"),
    }


@functools.cache
def organism_families() -> dict[str, str]:
    """Organism name -> its method family, from the bench's default suite (read once)."""
    from ..bench import default_suite

    return {name: o.family for name, o in default_suite().organisms.items()}


def bench_view(path: Path) -> dict[str, Any]:
    """A leaderboard's rows, each with its organism's family, and the filter choices."""
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise BadRequest(f"{path.name} is not a bench leaderboard (a JSON object with 'rows')")
    families = organism_families()
    rows = [{**r, "family": families.get(r.get("organism", ""), "other")} for r in doc["rows"] if isinstance(r, dict)]
    return {
        "rows": rows,
        "families": sorted({r["family"] for r in rows}),
        "organisms": sorted({str(r.get("organism")) for r in rows}),
        "methods": sorted({str(r.get("method")) for r in rows}),
        "run": doc.get("run", {}),
        "quick": doc.get("quick"),
        "errors": doc.get("errors", []),
        "skipped": doc.get("skipped", []),
    }


def feature_list(path: Path, by: str, n: int) -> dict[str, Any]:
    """The database's description and its ``n`` latents with the largest ``by``."""
    from ..store import FeatureDB

    with FeatureDB(path) as db:
        try:
            top = db.top_latents(by, n)
        except ValueError as err:
            raise BadRequest(str(err)) from None
        return {
            "n_latents": len(db),
            "site": db.meta.get("site"),
            "meta": {k: db.meta.get(k) for k in ("site", "dictionary", "config")},
            "latents": [t._asdict() for t in top],
        }


def feature_search(path: Path, text: str, n: int, by: str = "token") -> dict[str, Any]:
    """Latents that promote the token ``text`` most (``by="token"``), or whose explanation holds its words."""
    from ..store import FeatureDB

    if by not in ("token", "explanation"):
        raise BadRequest(f"by must be 'token' or 'explanation', got {by!r}")
    with FeatureDB(path) as db:
        if by == "explanation":
            matches = [e._asdict() for e in db.search_explanations(text, n)]
        else:
            matches = [m._asdict() for m in db.search_token(text, n)]
        return {"by": by, "text": text, "token": text, "matches": matches}


def feature_card(path: Path, latent: int) -> dict[str, Any]:
    """Everything the database holds about one latent (``FeatureDB.latent``), with its explanations."""
    from ..store import FeatureDB

    with FeatureDB(path) as db:
        if not 0 <= latent < len(db):
            raise BadRequest(
                f"latent {latent} is out of range: the dictionary has {len(db)} latents (0..{len(db) - 1})"
            )
        return {**db.latent(latent).to_dict(), "explanations": [e._asdict() for e in db.explanations(latent)]}


def verify_edge(model: Any, doc: dict[str, Any], edge: str) -> dict[str, Any]:
    """Patch one edge of a saved circuit run for real and compare with its score (the self-check, for one edge).

    The run's task is rebuilt as ``mechscope circuit`` built it (the built-in task by name, ``n_prompts`` pairs, the
    method's ``seed``); the rebuilt clean and corrupt metrics must equal the saved ones, and the model must be the
    run's (same weights checksum), or the request is refused. Effects are normalised: 1 = clean, 0 = corrupt.
    """
    from ..circuits import EdgeId, Graph, patch_edges
    from ..data import tasks

    saved = doc.get("model", {}).get("weights_sha256")
    if saved != model.provenance["weights_sha256"]:
        raise BadRequest(
            f"this run was computed on {doc.get('model', {}).get('model')!r} (weights {str(saved)[:12]}…); "
            f"the server's model is {model.name!r}: start the server with the run's model to verify"
        )
    scores = doc.get("scores", {})
    known = saved_scores(doc)
    if edge not in known:
        raise BadRequest(f"edge {edge!r} has no saved score in this run (it saved {len(known)}; see /api/circuit)")
    if doc.get("task") not in _BUILT_IN_TASKS or "clean_metric" not in scores:
        raise BadRequest(
            f"only edge-method runs on a built-in task ({', '.join(_BUILT_IN_TASKS)}) can be rebuilt "
            f"and verified; this run's task is {doc.get('task')!r}"
        )
    config = doc.get("config", {})
    task = getattr(tasks, doc["task"])(model.tokenizer, n=doc["n_prompts"], seed=config.get("seed", 0))
    graph = Graph.from_dict(doc["circuit"]["graph"])
    index = graph.edge_names().index(EdgeId.parse(edge).format())
    direction = config.get("direction", "denoising")
    actual, clean, corrupt = patch_edges(model, task, [index], direction, progress=False)
    if abs(clean - scores["clean_metric"]) > 1e-3 * max(1.0, abs(clean)) or abs(
        corrupt - scores["corrupt_metric"]
    ) > 1e-3 * max(1.0, abs(corrupt)):
        raise BadRequest(
            f"the rebuilt task does not reproduce the run's metrics (clean {clean:.4f} vs saved "
            f"{scores['clean_metric']:.4f}): cannot verify this run here"
        )
    gap = clean - corrupt
    base = corrupt if direction == "denoising" else clean
    return {
        "edge": edge,
        "score": known[edge],
        "direction": direction,
        "clean_metric": clean,
        "corrupt_metric": corrupt,
        "estimate": (base + known[edge] - corrupt) / gap,
        "actual": (float(actual[0]) - corrupt) / gap,
    }
