"""Run directories for the explorer's tests: a real circuit run, a leaderboard and a feature database, each carrying
an XSS payload in a text field, so the tests can check that text is shown as text."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import torch

import mechscope as ms

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
REPO = Path(__file__).resolve().parent.parent


def circuit_run(model: ms.Model, out: Path) -> Path:
    """``mechscope circuit``'s files for EAP on the induction task of a tiny model, its method name poisoned."""
    from mechscope.circuits import EAPConfig, FindConfig, find_circuit
    from mechscope.data import tasks
    from mechscope.report import write_run_files

    task = tasks.induction(model.tokenizer, n=4, seed=0)
    run = find_circuit(model, task, FindConfig("eap", EAPConfig(), top=6, random=2))
    write_run_files(run, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["method"] = f"eap {XSS}"
    (out / "summary.json").write_text(json.dumps(summary))
    return out / "summary.json"


def leaderboard(out: Path) -> Path:
    """The committed leaderboard plus one row whose organism and method names are an XSS payload."""
    doc = json.loads((REPO / "docs" / "leaderboard.json").read_text())
    doc["rows"].append(
        {
            "organism": XSS,
            "metric": "cpr",
            "method": XSS,
            "baseline": False,
            "mean": 0.5,
            "std": 0.0,
            "n": 1,
            "chance": 0.25,
            "higher_is_better": True,
            "baselines": {"random": 0.3},
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "leaderboard.json"
    path.write_text(json.dumps(doc))
    return path


def feature_db(model: ms.Model, out: Path) -> Path:
    """A small feature database over a tiny model, one of its vocabulary entries replaced by the XSS payload."""
    import mechscope.features as mf
    from mechscope.store import FeatureDBConfig, HarvestConfig, build_feature_db, harvest

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "docs.jsonl"
    lines = [f"the cat sat on the mat number {i}; the dog ate the bone {i * 7}." for i in range(40)]
    corpus.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    store = harvest(
        model,
        HarvestConfig(("resid_post.1",), corpus=str(corpus), ctx_len=16, batch_size=16, shard_size=16 * 40),
        out / "store",
        progress=False,
    )
    d = mf.build_dictionary(mf.DictionaryConfig("topk", d_in=64, d_sae=32, k=4, site="resid_post.1"), seed=1)
    d.init_b_dec_(torch.cat([s.acts for s in store.shards("resid_post.1")]), "mean")
    W_U = model.module.get_output_embeddings().weight.T
    config = FeatureDBConfig(top_k=5, window=8, before=5, n_quantiles=3, samples_per_quantile=4, n_logits=6)
    path = build_feature_db(
        store, d.eval(), out / "features.db", config, W_U=W_U, tokenizer=model.tokenizer, progress=False
    ).path
    shutil.rmtree(out / "store")
    mf.save_dictionary(d.eval(), out / "dictionary")
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE vocab SET text = ? WHERE token_id = ?", (XSS, model.tokenizer.encode("t")[0]))
    con.close()
    return path


def transcoders(model: ms.Model, d_sae: int = 32) -> dict:
    """Untrained per-layer ReLU transcoders of a tiny model (random, with a positive bias: many active features)."""
    from mechscope.features import DictionaryConfig, build_dictionary

    assert model.cfg is not None
    d = model.cfg.d_model
    out = {}
    for layer in range(model.cfg.n_layers):
        cfg = DictionaryConfig("relu", d_in=d, d_sae=d_sae, d_out=d, apply_b_dec_to_input=False,
                               target_site=f"mlp_out.{layer}")  # fmt: skip
        tc = build_dictionary(cfg, seed=layer)
        gen = torch.Generator().manual_seed(100 + layer)
        with torch.no_grad():
            tc.W_dec.mul_(0.05)
            tc.b_enc.copy_(0.1 * torch.randn(d_sae, generator=gen).abs())
        out[layer] = tc.eval()
    return out


def graph_file(model: ms.Model, coders: dict, out: Path, prompt: str = "The cat sat on") -> Path:
    """``mechscope graph``'s graph.json for a prompt, with a supernode whose name is an XSS payload."""
    from mechscope.graphs import GraphConfig, attribute

    graph = attribute(model, prompt, coders, GraphConfig(max_feature_nodes=16))
    top = [n.id for n in graph.nodes if n.kind == "feature"][:2]
    out.mkdir(parents=True, exist_ok=True)
    (out / "graph.json").write_text(graph.with_supernodes(**{XSS: top}).to_json())
    return out / "graph.json"
