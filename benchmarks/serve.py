"""The explorer's latency: a prompt answered over HTTP against the same work in-process; 200 concurrent requests;
a feature page from a database of 10,240 latents; the first page load and a 5,000-edge circuit graph in Chromium.

- ``prompt``: on SmolLM2-135M, the IOI prompt (15 tokens) answered as the prompt lab asks for it: predictions,
  the logit lens at every layer and position, and the attention patterns of one layer — three requests to the
  running server (uvicorn on loopback, one after another), against the same three computations called in-process
  (``mechscope.ui._lab``: equal work, no HTTP, no queue). p50/p95 over ``--repeats`` rounds; ratio explorer/library.
- ``concurrent``: 200 ``POST /api/prompt`` sent at once (httpx, one connection each); how many came back 200, the
  latency distribution, and the wall time. The model worker runs them one at a time, so the last waits for all.
- ``feature page``: ``GET /api/feature`` for random latents of a 10,240-latent database (built here on a tiny
  model's activations; the page's cost is the database read, not the model), against ``FeatureDB.latent``.
- ``browser``: Chromium (Debian's package, via Playwright) loads the page (navigation to load event), then opens a
  circuit run of 5,000 scored edges of SmolLM2's graph (scores drawn at random: this measures drawing, not a
  circuit) and reports the time to draw it and the frame times while the graph is scrolled.

Run: ``.venv/bin/python benchmarks/serve.py [--repeats 20] [--screenshot docs/img/explorer.png]``; writes
``benchmarks/results/serve.json``. ``--screenshot`` also saves the README's picture of the prompt lab.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

import mechscope as ms
from mechscope._machine import machine
from mechscope.ui import Explorer, Roots, _lab, running

ROOT = Path(__file__).resolve().parent.parent
IOI = "When Mary and John went to the store, John gave a drink to"
LAYER = 9


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def rows_of(name: str, metric: str, xs: list[float], unit: str = "s") -> list[dict[str, Any]]:
    return [{"name": name, "metric": f"{metric} p50", "value": statistics.median(xs), "unit": unit},
            {"name": name, "metric": f"{metric} p95", "value": pct(xs, 95), "unit": unit}]  # fmt: skip


def prompt_rounds(url: str, model: ms.Model, repeats: int) -> tuple[list[float], list[float]]:
    http, lib = [], []
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(repeats + 2):  # alternate, the first two rounds warm up
            t0 = time.perf_counter()
            for path, body in (("/api/prompt", {"prompt": IOI, "top_k": 10}), ("/api/lens", {"prompt": IOI}),
                               ("/api/attention", {"prompt": IOI, "layer": LAYER})):  # fmt: skip
                r = c.post(path, json=body)
                r.raise_for_status()
            t1 = time.perf_counter()
            _lab.check_prompt(model, IOI, 128)
            _lab.predictions(model, IOI, 10)
            _lab.lens_grid(model, IOI, 3)
            _lab.attention(model, IOI, LAYER)
            t2 = time.perf_counter()
            if i >= 2:
                http.append(t1 - t0)
                lib.append(t2 - t1)
    return http, lib


async def concurrent(url: str, n: int) -> tuple[int, list[float], float]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as c:

        async def one(i: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            r = await c.post("/api/prompt", json={"prompt": f"{IOI} {i}", "top_k": 5})
            ok = r.status_code == 200 and r.json()["prompt"].endswith(f" {i}")
            return int(ok), time.perf_counter() - t0

        t0 = time.perf_counter()
        out = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return sum(ok for ok, _ in out), [t for _, t in out], wall


def big_feature_db(out: Path) -> Path:
    import mechscope.features as mf
    from mechscope.store import FeatureDBConfig, HarvestConfig, build_feature_db, harvest

    model = ms.tiny("llama")
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "docs.jsonl"
    rng = random.Random(0)
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "a",
        "mat",
        "while",
        "dogs",
        "ran",
        "far",
        "into",
        "old",
        "green",
        "hills",
        "and",
        "rivers",
    ]
    corpus.write_text("".join(json.dumps({"text": " ".join(rng.choices(words, k=40))}) + "\n" for _ in range(300)))
    store = harvest(model, HarvestConfig(("resid_post.1",), corpus=str(corpus), ctx_len=32, batch_size=32,
                                         shard_size=32 * 200), out / "store", progress=False)  # fmt: skip
    d = mf.build_dictionary(mf.DictionaryConfig("relu", d_in=64, d_sae=10240, site="resid_post.1"), seed=0)
    d.init_b_dec_(torch.cat([s.acts for s in store.shards("resid_post.1")]), "mean")
    W_U = model.module.get_output_embeddings().weight.T
    return build_feature_db(store, d.eval(), out / "features.db", FeatureDBConfig(), W_U=W_U,
                            tokenizer=model.tokenizer, progress=False).path  # fmt: skip


def feature_rounds(url: str, db_path: Path, ref: str, n: int) -> tuple[list[float], list[float], int]:
    from mechscope.store import FeatureDB

    with FeatureDB(db_path) as db:
        size = len(db)
    latents = random.Random(1).sample(range(size), n)
    http, lib = [], []
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in latents:
            t0 = time.perf_counter()
            c.get("/api/feature", params={"ref": ref, "latent": i}).raise_for_status()
            t1 = time.perf_counter()
            with FeatureDB(db_path) as db:
                db.latent(i).to_dict()
            lib.append(time.perf_counter() - t1)
            http.append(t1 - t0)
    return http, lib, size


def big_circuit(out: Path, model: ms.Model, n_edges: int) -> Path:
    from mechscope.circuits import Graph

    assert model.cfg is not None
    graph = Graph.of(model.cfg)
    names = random.Random(2).sample(graph.edge_names(), n_edges)
    scores = {name: random.Random(name).gauss(0, 1) for name in names}
    summary = {"method": "random scores (drawing benchmark)", "config": {}, "task": "none", "n_prompts": 0,
               "circuit": {"graph": graph.to_dict(), "n_edges": n_edges, "edges": names, "of_edges": graph.n_edges,
                           "faithfulness": None, "random_faithfulness": []},
               "scores": {}, "edge_scores": scores, "curve": None, "model": model.provenance}  # fmt: skip
    (out / "circuit").mkdir(parents=True, exist_ok=True)
    (out / "circuit" / "summary.json").write_text(json.dumps(summary))
    return out / "circuit" / "summary.json"


def browser(url: str, screenshot: Path | None) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1280, "height": 800})
        loads = []
        for _ in range(5):
            page.goto(url)
            loads.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000)
        page.goto(url + "#circuits")
        page.wait_for_selector("#circuit-list button")
        t0 = time.perf_counter()
        page.click("#circuit-list button")
        page.wait_for_selector("#circuit-svg .edge")
        drawn = page.locator("#circuit-svg .edge").count()
        draw = time.perf_counter() - t0
        frames = page.evaluate("""() => new Promise(done => {
            const box = document.getElementById('graph'); const times = []; let last = performance.now(); let i = 0;
            box.style.maxHeight = '400px';
            function step(now) { times.push(now - last); last = now; box.scrollTop = (i % 20) * 40;
              box.scrollLeft = (i % 10) * 30; if (++i < 60) requestAnimationFrame(step); else done(times.slice(1)); }
            requestAnimationFrame(step); })""")
        if screenshot is not None:
            page.goto(url)
            page.click("#run")
            page.wait_for_selector("#lens td.cell")
            page.click("button.head[data-head='3']")
            page.wait_for_selector("#pattern-svg")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(screenshot))
        b.close()
    return {"load": loads, "draw": draw, "drawn": drawn, "frames_ms": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = ms.load("smollm2-135m")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db_path = big_feature_db(root / "features")
        shutil.rmtree(root / "features" / "store")
        big_circuit(root, model, 5000)
        x = Explorer(model, Roots([root]), port=0)
        with running(x) as url:
            http, lib = prompt_rounds(url, model, args.repeats)
            rows += rows_of("explorer (HTTP)", "prompt", http) + rows_of("library (in-process)", "prompt", lib)
            ok, lat, wall = asyncio.run(concurrent(url, args.concurrent))
            rows += [{"name": "explorer (HTTP)", "metric": f"{args.concurrent} concurrent: answered 200",
                      "value": ok, "unit": "requests"},
                     {"name": "explorer (HTTP)", "metric": f"{args.concurrent} concurrent: wall", "value": wall,
                      "unit": "s"}]  # fmt: skip
            rows += rows_of("explorer (HTTP)", f"{args.concurrent} concurrent: latency", lat)
            rows.append({"name": "explorer (HTTP)", "metric": f"{args.concurrent} concurrent: latency max",
                         "value": max(lat), "unit": "s"})  # fmt: skip
            fh, fl, size = feature_rounds(url, db_path, "0/features/features.db", 50)
            rows += rows_of("explorer (HTTP)", f"feature page ({size} latents)", fh)
            rows += rows_of("library (in-process)", f"feature page ({size} latents)", fl)
            br = browser(url, args.screenshot)
            rows += rows_of("chromium", "first page load", br["load"])
            rows.append({"name": "chromium", "metric": f"draw circuit ({br['drawn']} edges)", "value": br["draw"],
                         "unit": "s"})  # fmt: skip
            rows += rows_of("chromium", f"frame while scrolling the {br['drawn']}-edge graph", br["frames_ms"], "ms")
    p95 = {r["name"]: r["value"] for r in rows if r["metric"] == "prompt p95"}
    doc = {
        "benchmark": f"serve: the explorer on SmolLM2-135M ({args.repeats} rounds; IOI prompt; lens + layer "
        f"{LAYER} patterns), concurrency, feature page, Chromium",
        "machine": machine(),
        "rows": rows,
        "ratios": {"explorer/library (prompt p95)": p95["explorer (HTTP)"] / p95["library (in-process)"]},
    }
    out = ROOT / "benchmarks" / "results" / "serve.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for r in rows:
        print(f"{r['name']:22} {r['metric']:48} {r['value']:.4g} {r['unit']}")
    print(doc["ratios"])


if __name__ == "__main__":
    main()
