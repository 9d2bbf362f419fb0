"""The explorer's JSON API through Starlette's TestClient: every endpoint against the library's own numbers, the
bad inputs (with the sentence they get back), and the security rules (Host, Origin, token, paths, headers)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

pytest.importorskip("starlette", reason="the explorer's extra is not installed: pip install -e '.[serve,browser]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx: pip install -e '.[serve,browser]'")

from _explorer_data import XSS, circuit_run, feature_db, leaderboard
from starlette.testclient import TestClient

import mechscope as ms
from mechscope.core._registry import MethodSpec
from mechscope.ui import (
    ENDPOINTS,
    Explorer,
    PathRefused,
    Roots,
    _lab,
    create_app,
)
from mechscope.ui._worker import Worker

BASE = "http://127.0.0.1:8000"
IOI = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def model() -> ms.Model:
    return ms.tiny("gpt2")  # the circuit run's model too, so its edges can be verified


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model) -> Path:
    root = tmp_path_factory.mktemp("runs")
    circuit_run(model, root / "circuit")
    leaderboard(root / "bench")
    feature_db(model, root / "features")
    return root


@pytest.fixture(scope="module")
def explorer(model, run_dir) -> Explorer:
    from mechscope.features import load_dictionary

    return Explorer(
        model, Roots([run_dir]), max_tokens=64, dictionary=load_dictionary(run_dir / "features" / "dictionary")
    )


@pytest.fixture(scope="module")
def client(explorer) -> TestClient:
    with TestClient(create_app(explorer), base_url=BASE) as c:
        yield c


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


# --- the prompt lab: each endpoint equals the library's numbers -----------------------------------------------------


def test_prompt_predictions_are_the_models_own(client, model):
    out = client.post("/api/prompt", json={"prompt": "hello world", "top_k": 5}).json()
    assert [t["text"] for t in out["tokens"]] == list("hello world")
    probs = model.run("hello world").logits[0, -1].softmax(-1)
    top = probs.topk(5)
    assert [p["id"] for p in out["predictions"]] == top.indices.tolist()
    assert [p["prob"] for p in out["predictions"]] == pytest.approx(top.values.tolist())


def test_lens_grid_last_layer_is_the_prediction(client):
    lens = client.post("/api/lens", json={"prompt": "hello world", "top_k": 3}).json()
    pred = client.post("/api/prompt", json={"prompt": "hello world", "top_k": 3}).json()["predictions"]
    assert lens["layers"] == [0, 1] and len(lens["top"][1]) == len("hello world")
    assert [c["id"] for c in lens["top"][-1][-1]] == [p["id"] for p in pred]


def test_attention_patterns_are_the_cached_site(client, model):
    out = client.post("/api/attention", json={"prompt": "hello", "layer": 1}).json()
    real = model.run("hello", cache="head.1.pattern").cache["head.1.pattern"][0]
    torch.testing.assert_close(torch.tensor(out["patterns"]), real, atol=1e-5, rtol=0)
    assert out["tokens"] == list("hello")


def test_attention_unknown_layer_names_the_closest_sites(client):
    message = error_of(client.post("/api/attention", json={"prompt": "hello", "layer": 7}), 400)
    assert "head.7.pattern" in message and "head.1.pattern" in message


def test_dla_adds_up_to_the_logit_difference(client, model):
    out = client.post("/api/dla", json={"prompt": "hello", "answer": " ", "wrong": "x"}).json()
    logits = model.run("hello").logits[0, -1]
    real = float(logits[model.to_single_token(" ")] - logits[model.to_single_token("x")])
    assert out["logit_diff"] == pytest.approx(real, abs=1e-4)
    assert out["total"] == pytest.approx(real, abs=1e-4)
    assert len(out["heads"]) == 2 and len(out["heads"][0]) == 4


def test_dla_refuses_a_multi_token_answer(client):
    message = error_of(client.post("/api/dla", json={"prompt": "hello", "answer": "ab", "wrong": "x"}), 400)
    assert "single token" in message


def test_sites_unknown_name_gets_suggestions(client):
    assert client.get("/api/sites", params={"pattern": "head.0.*"}).json()["sites"][0]["name"].startswith("head.0")
    message = error_of(client.get("/api/sites", params={"pattern": "resid_psot.1"}), 400)
    assert "resid_post.1" in message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt": "x" * 65}, "65 tokens; at most 64"),
        ({"prompt": ""}, "non-empty string"),
        ({"prompt": 3}, "must be a string"),
        ({"prompt": "hi", "top_k": "ten"}, "must be an integer"),
        ({"prompt": "hi", "top_k": 0}, "between 1"),
        ({"prompt": "hi", "top_k": True}, "must be an integer"),
        ({"prompt": "hi", "temperature": 2}, "no body argument 'temperature'"),
        ({}, "missing argument 'prompt'"),
    ],
)
def test_prompt_bad_inputs_get_a_sentence(client, body, needle):
    assert needle in error_of(client.post("/api/prompt", json=body), 400)


def test_prompt_longer_than_the_models_context_is_refused(model):
    x = Explorer(model, max_tokens=10_000)
    with TestClient(create_app(x), base_url=BASE) as c:
        message = error_of(c.post("/api/prompt", json={"prompt": "y" * 300}), 400)
    assert "300 tokens; at most 256" in message and "context" in message


def test_post_needs_a_json_body(client):
    r = client.post("/api/prompt", content="prompt=hi", headers={"content-type": "application/x-www-form-urlencoded"})
    assert "application/json" in error_of(r, 400)
    r = client.post("/api/prompt", content="{not json", headers={"content-type": "application/json"})
    assert "not JSON" in error_of(r, 400)


def test_unknown_endpoint_points_to_the_listing(client):
    assert "/api" in error_of(client.get("/api/nothing"), 404)


# --- methods come from the registries -----------------------------------------------------------------------------


def test_methods_are_the_registries_describe(client):
    from mechscope.cli._methods import describe

    assert client.get("/api/methods").json() == json.loads(json.dumps(describe()))
    one = client.get("/api/methods/lenses/logit-lens").json()
    assert one["name"] == "logit-lens" and {f["name"] for f in one["fields"]} == {"answer", "pos", "top_k"}
    assert "did you mean 'logit-lens'" in error_of(client.get("/api/methods/lenses/logit-lenz"), 404)


@dataclass(frozen=True)
class _ConstConfig:
    scale: float = 1.0
    """Multiplier."""


@dataclass(frozen=True)
class _ConstResult:
    value: float

    def to_dict(self):
        return {"value": self.value}


def test_a_new_lens_shows_up_and_runs_without_app_code(client):
    from mechscope.lenses import METHODS

    def const(model, inputs, config):
        """A plug-in lens that reports a constant."""
        return _ConstResult(2.0 * config.scale)

    spec = MethodSpec("lenses", "const-lens", _ConstConfig, const, _ConstResult, "A plug-in lens.")
    with METHODS.added(spec):
        names = [m["name"] for m in client.get("/api/methods").json()["families"]["lenses"]["methods"]]
        assert "const-lens" in names
        out = client.post("/api/lenses/const-lens", json={"prompt": "hi", "settings": {"scale": 3.0}}).json()
        assert out == {"value": 6.0}
        assert "its settings are: scale" in error_of(
            client.post("/api/lenses/const-lens", json={"prompt": "hi", "settings": {"steps": 3}}), 400
        )
    assert "unknown lenses method" in error_of(client.post("/api/lenses/const-lens", json={"prompt": "hi"}), 404)


def test_declared_logit_lens_runs_with_its_settings(client, model):
    from mechscope.lenses import logit_lens

    out = client.post("/api/lenses/logit-lens", json={"prompt": "hello", "settings": {"top_k": 2}}).json()
    assert out["top"][0][-1][0]["id"] == int(logit_lens(model, "hello", top_k=2).top_ids[0, -1, 0])


def test_lens_methods_run_by_their_calling_convention(client, model):
    from mechscope.lenses import HeadTypesConfig, head_type_scores

    out = client.post("/api/lenses/head-types", json={"prompt": "hi", "settings": {"rep_len": 4, "n_seqs": 2}}).json()
    assert out["induction"] == head_type_scores(model, HeadTypesConfig(rep_len=4, n_seqs=2)).induction.tolist()
    sim = client.post("/api/lenses/similarity", json={"prompt": "hello world", "settings": {}}).json()
    assert sim["n"] == len("hello world")  # one row per position of the prompt
    assert "mechscope probe" in error_of(client.post("/api/lenses/probe", json={"prompt": "hi"}), 400)


# --- files: circuit runs, leaderboards, feature databases ----------------------------------------------------------


def test_runs_lists_what_the_directories_hold(client):
    found = {f["kind"]: f["ref"] for f in client.get("/api/runs").json()["found"] if not f["ref"].startswith("run:")}
    assert found == {"circuit": "0/circuit/summary.json", "leaderboard": "0/bench/leaderboard.json",
                     "features": "0/features/features.db"}  # fmt: skip


def test_circuit_view_matches_the_saved_run(client, run_dir):
    summary = json.loads((run_dir / "circuit" / "summary.json").read_text())
    c = client.get("/api/circuit", params={"ref": "0/circuit/summary.json"}).json()
    assert c["task"] == summary["task"] and c["faithfulness"] == summary["circuit"]["faithfulness"]
    scores = [e["score"] for e in c["edges"]]
    assert [abs(s) for s in scores] == sorted((abs(s) for s in scores), reverse=True)
    saved = {**dict(summary["ranked_edges"]), **summary["edge_scores"]}
    assert {e["name"]: e["score"] for e in c["edges"]} == pytest.approx(saved)
    assert len(c["edges"]) == c["n_scored"] == c["of_edges"]  # every edge of the tiny graph: any size can be drawn
    assert {e["name"] for e in c["edges"] if e["in_circuit"]} == set(summary["circuit"]["edges"])
    assert c["curve"]["faithfulness"] == summary["curve"]["faithfulness"]
    ids = {n["id"] for n in c["nodes"]}
    assert {"input", "logits", "a0.h0", "a1.h3", "m1"} <= ids
    assert all(e["sender"] in ids and e["receiver"] in ids for e in c["edges"])


def test_bench_rows_carry_their_family(client, run_dir):
    doc = json.loads((run_dir / "bench" / "leaderboard.json").read_text())
    b = client.get("/api/bench", params={"ref": "0/bench/leaderboard.json"}).json()
    assert len(b["rows"]) == len(doc["rows"])
    by = {(r["organism"], r["method"], r["metric"]): r for r in b["rows"]}
    assert by[("induction", "eap-ig", "cpr")]["family"] == "circuits"
    assert by[("trojan_patch", "grad_cam", "trigger_overlap")]["family"] == "trojans" if (
        "trojan_patch", "grad_cam", "trigger_overlap") in by else True  # fmt: skip
    assert by[(XSS, XSS, "cpr")]["family"] == "other" and "circuits" in b["families"]


def test_feature_endpoints_read_the_database(client, run_dir):
    from mechscope.store import FeatureDB

    ref = "0/features/features.db"
    listed = client.get("/api/features", params={"ref": ref, "n": 5}).json()
    with FeatureDB(run_dir / "features" / "features.db") as db:
        assert listed["n_latents"] == len(db)
        assert [r["latent"] for r in listed["latents"]] == [r.latent for r in db.top_latents("frequency", 5)]
        card = client.get("/api/feature", params={"ref": ref, "latent": 3}).json()
        assert card == json.loads(json.dumps({**db.latent(3).to_dict(), "explanations": []}))
        found = client.get("/api/features/search", params={"ref": ref, "text": "e"}).json()
        assert [m["latent"] for m in found["matches"]] == [m.latent for m in db.search_token("e", 20)]
    assert "out of range" in error_of(client.get("/api/feature", params={"ref": ref, "latent": 999}), 400)
    assert "by must be one of" in error_of(client.get("/api/features", params={"ref": ref, "by": "x"}), 400)


def test_feature_search_by_explanation_text(model, run_dir, tmp_path):
    import shutil

    from mechscope.store import Explanation, add_explanations

    shutil.copy(run_dir / "features" / "features.db", tmp_path / "features.db")
    add_explanations(tmp_path / "features.db", [
        Explanation(3, "digits at the end of a number", "llm", 0.8, "detection"),
        Explanation(5, f"the word 'number' {XSS}", "top_tokens", 0.3, "detection"),
        Explanation(3, "numbers", "human"),
    ])  # fmt: skip
    with TestClient(create_app(Explorer(model, Roots([tmp_path]))), base_url=BASE) as c:
        search = lambda text: c.get("/api/features/search", params={"ref": "0/features.db", "text": text,  # noqa: E731
                                                                     "by": "explanation"})  # fmt: skip
        found = search("NUMBER").json()
        assert found["by"] == "explanation"
        assert [(m["latent"], m["explainer"], m["score"]) for m in found["matches"]] == [
            (3, "llm", 0.8), (5, "top_tokens", 0.3), (3, "human", None)]  # fmt: skip
        assert [m["latent"] for m in search("digits number").json()["matches"]] == [3]
        assert search("no such words").json()["matches"] == []
        assert "search text is empty" in error_of(search(" "), 400)
        card = c.get("/api/feature", params={"ref": "0/features.db", "latent": 3}).json()
        assert [(e["text"], e["scorer"]) for e in card["explanations"]] == [
            ("digits at the end of a number", "detection"), ("numbers", None)]  # fmt: skip
        bad = c.get("/api/features/search", params={"ref": "0/features.db", "text": "x", "by": "colour"})
        assert "by must be 'token' or 'explanation'" in error_of(bad, 400)


@pytest.mark.parametrize(
    "ref",
    ["0/../../../etc/passwd", "0/circuit/../../x", "/etc/passwd", "0//etc/passwd", "1/x", "x/summary.json",
     "0/circuit\\..\\..\\x"],
)  # fmt: skip
def test_paths_outside_the_run_directories_are_refused(client, ref):
    message = error_of(client.get("/api/circuit", params={"ref": ref}), 403)
    assert "refused" in message or "unknown root" in message


def test_a_link_out_of_the_run_directory_is_refused(tmp_path):
    inside = tmp_path / "runs"
    inside.mkdir()
    (tmp_path / "secret.json").write_text("{}")
    (inside / "link.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(PathRefused, match="outside"):
        Roots([inside]).resolve("0/link.json")
    with TestClient(create_app(Explorer(None, Roots([inside]))), base_url=BASE) as c:
        assert "outside" in error_of(c.get("/api/bench", params={"ref": "0/link.json"}), 403)
        assert "no file" in error_of(c.get("/api/bench", params={"ref": "0/missing.json"}), 404)
        assert "no model" in error_of(c.post("/api/prompt", json={"prompt": "hi"}), 400)


# --- attribution & vision ------------------------------------------------------------------------------------------


def _png_b64(pixels) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_vision_gallery_lists_the_organisms_images_and_declared_methods(client):
    import base64

    from mechscope.attribution import METHODS
    from mechscope.organisms import vision_organism

    g = client.get("/api/vision", params={"organism": "blocks-cnn", "n": 3}).json()
    org = vision_organism("blocks-cnn")
    assert g["classes"] == list(org.test.classes) and g["accuracy"] == org.accuracy
    assert [m["name"] for m in g["methods"]] == [s.name for s in METHODS if "cnn" in s.tags]
    assert [i["label"] for i in g["images"]] == org.test.labels[:3].tolist()
    assert all(base64.b64decode(i["png"].split(",")[1])[:4] == b"\x89PNG" for i in g["images"])
    assert "unknown vision organism" in error_of(client.get("/api/vision", params={"organism": "nope"}), 400)


def test_image_attribution_carries_the_librarys_metrics(client):
    from mechscope import attribution as at
    from mechscope.organisms import vision_organism

    body = {"organism": "blocks-cnn", "image": 2, "methods": ["saliency", "edge_detector"], "target": "label"}
    d = client.post("/api/vision/attribute", json=body).json()
    org = vision_organism("blocks-cnn")
    x, y, mask = org.test.images[2:3], org.test.labels[2:3], org.test.masks[2:3]
    assert d["label"] == d["target"] == int(y[0]) and d["mask"]["area"] == pytest.approx(float(mask.float().mean()))
    assert d["probs"] == pytest.approx(org.module(x).softmax(-1)[0].tolist(), abs=1e-6)
    mine = at.evaluate(org.model, x, y, at.saliency(org.model, x, y), mask=mask).metrics
    got = {m["method"]: m for m in d["methods"]}
    assert got["saliency"]["metrics"]["deletion_auc"] == pytest.approx(mine["deletion_auc"], abs=1e-6)
    assert got["saliency"]["metrics"]["localisation"] == pytest.approx(mine["localisation"], abs=1e-6)
    assert got["saliency"]["overlay"].startswith("data:image/png;base64,")
    # the sanity check: the edge detector ignores the model, so its map survives randomised weights; saliency's not
    assert got["edge_detector"]["randomisation"]["final"]["spearman_abs"] > 0.99
    assert got["saliency"]["randomisation"]["final"]["spearman_abs"] < 0.9
    assert len(got["saliency"]["randomisation"]["stages"]) == 5  # 4 convs and the head, output side first


def test_a_trojaned_cnn_is_localised_against_its_trigger(client):
    from mechscope.organisms import TrojanPatch, obtain

    t = obtain(TrojanPatch(), 0)
    g = client.get("/api/vision", params={"organism": "trojan_patch", "n": 2}).json()
    assert "trojan_patch" in g["organisms"] and g["accuracy_name"] == "attack success"
    assert t.trigger.name in g["masks"]
    d = client.post("/api/vision/attribute", json={"organism": "trojan_patch", "image": 0, "methods": ["grad_cam"],
                                                   "sanity": False}).json()  # fmt: skip
    _, region, _ = t.probe(1)
    assert d["predicted"] == t.target and d["mask"]["area"] == pytest.approx(float(region.float().mean()))
    where = d["methods"][0]["metrics"]["localisation"]
    assert where["chance"] == pytest.approx(float(region.float().mean()))
    assert where["mass_in_mask"] > 3 * where["chance"]  # the map finds the trigger (measured 0.26 vs 0.035)


def test_an_uploaded_png_is_attributed_and_bad_uploads_are_refused(client):
    import base64

    import numpy as np

    from mechscope.data.images import to_pixels
    from mechscope.organisms import vision_organism

    org = vision_organism("shapes-cnn")
    grey = (to_pixels(org.test.images[0, 0]).numpy() * 255).round().astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)

    def post(**kw):
        return client.post("/api/vision/attribute", json={"organism": "shapes-cnn", "methods": ["saliency"],
                                                          "sanity": False, **kw})  # fmt: skip

    d = post(png="data:image/png;base64," + _png_b64(rgb)).json()
    assert d["image"]["upload"]["note"] == "3 channel(s) (RGB) converted to grey" and d["mask"] is None
    assert d["predicted"] == int(org.module(org.test.images[:1]).argmax()) and d["label"] is None
    assert "localisation" not in d["methods"][0]["metrics"]
    big = np.random.default_rng(0).integers(0, 255, (220, 220, 3), dtype=np.uint8)  # noise: does not compress
    sixteen = _png_b64(np.full((8, 8), 300, dtype=np.uint16))
    for kwargs, message in [
        ({"png": "not base64!"}, "base64"),
        ({"png": base64.b64encode(b"\xff\xd8\xff\xe0 jpeg").decode()}, "a JPEG: only PNG"),
        ({"png": "data:image/jpeg;base64,AAAA"}, "image/jpeg data URI"),
        ({"png": _png_b64(big)}, "at most 131,072 are accepted"),
        ({"png": sixteen}, "mode is I;16"),
        ({"png": base64.b64encode(b"\x89PNG\r\n\x1a\ngarbage").decode()}, "cannot be read"),
        ({"png": _png_b64(rgb), "target": "label"}, "an upload carries no label"),
        ({"png": _png_b64(rgb), "image": 0}, "either image"),
        ({}, "either image"),
        ({"image": 9999}, "out of range"),
        ({"image": 0, "methods": ["nope"]}, "choose from"),
        ({"image": 0, "methods": "saliency"}, "must be an array"),
        ({"image": 0, "target": "7"}, "class index 0..3"),
    ]:
        assert message in error_of(post(**kwargs), 400), kwargs


# --- security ------------------------------------------------------------------------------------------------------


def test_foreign_host_is_refused(explorer):
    with TestClient(create_app(explorer), base_url="http://evil.example:8000") as c:
        assert "Host" in error_of(c.get("/api/status"), 403)
        assert "Host" in error_of(c.get("/"), 403)


def test_foreign_origin_is_refused_and_own_origin_allowed(client):
    r = client.post("/api/prompt", json={"prompt": "hi"}, headers={"origin": "http://evil.example"})
    assert "origin" in error_of(r, 403)
    r = client.get("/api/status", headers={"origin": "http://127.0.0.1:9999"})  # another port is another origin
    assert r.status_code == 403
    assert client.get("/api/status", headers={"origin": BASE}).status_code == 200


def test_non_loopback_needs_a_token(model):
    with pytest.raises(ValueError, match="token is required"):
        Explorer(model, host="0.0.0.0")
    x = Explorer(model, host="0.0.0.0", port=8000, token="s3cret")
    app = create_app(x)
    with TestClient(app, base_url="http://192.168.1.20:8000") as c:
        assert "token" in error_of(c.get("/api/status"), 401)
        assert "token" in error_of(c.get("/"), 401)
        assert c.get("/api/status", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/status", headers={"authorization": "Bearer s3cret"}).status_code == 200
        first = c.get("/?token=s3cret")  # the printed URL: sets the cookie the page's own requests then carry
        assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
        assert c.get("/api/status").status_code == 200
        assert c.get("/api/status", headers={"host": "evil.example"}).status_code == 200  # any name, with the token
    with TestClient(app, base_url="http://192.168.1.20:8000") as fresh:
        assert fresh.get("/api/status", headers={"origin": "http://evil.example"}).status_code == 403


def test_every_response_forbids_inline_script(client):
    for r in (client.get("/"), client.get("/static/app.js"), client.get("/api/status"), client.get("/api/x"),
              client.post("/api/prompt", json={})):  # fmt: skip
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


def test_the_page_has_no_inline_script_and_writes_no_markup(client):
    html = client.get("/").text
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S):
        assert 'src="/static/' in attrs and not body.strip()
    assert not re.search(r"\son[a-z]+=", html) and " style=" not in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
    js = client.get("/static/app.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink


def test_the_xss_payload_comes_back_as_data(client):
    c = client.get("/api/circuit", params={"ref": "0/circuit/summary.json"}).json()
    assert c["method"].endswith(XSS)  # JSON carries it verbatim; the page writes it with textContent


def test_openapi_and_listing_cover_every_endpoint(client):
    doc = client.get("/api/openapi.json").json()
    listed = client.get("/api").json()["endpoints"]
    for e in ENDPOINTS:
        assert e.method.lower() in doc["paths"][e.path]
    assert [(e["method"], e["path"]) for e in listed] == [(e.method, e.path) for e in ENDPOINTS]
    assert doc["paths"]["/api/prompt"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"] == ["prompt"]  # fmt: skip


# --- the worker: one job at a time, failures answered, the server goes on ------------------------------------------


def test_a_failing_job_is_answered_and_the_server_keeps_serving(client, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(_lab, "predictions", broken)
    assert "RuntimeError: boom" in error_of(client.post("/api/prompt", json={"prompt": "hi"}), 500)
    monkeypatch.undo()
    assert client.post("/api/prompt", json={"prompt": "hi"}).status_code == 200
    assert client.get("/api/status").json()["worker"]["failed"] >= 1


def test_worker_runs_jobs_one_at_a_time_in_order():
    worker, active, peak, order = Worker(), [0], [0], []
    lock = threading.Lock()

    def job(i):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        order.append(i)
        with lock:
            active[0] -= 1
        if i == 3:
            raise ValueError("job 3 fails")
        return i

    async def main():
        return await asyncio.gather(*(worker.run(f"j{i}", job, i) for i in range(8)), return_exceptions=True)

    out = asyncio.run(main())
    assert peak[0] == 1 and order == list(range(8))
    assert isinstance(out[3], ValueError) and [o for i, o in enumerate(out) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    assert worker.stats.to_dict()["failed"] == 1 and worker.stats.to_dict()["done"] == 7
    worker.close()


def test_a_cancelled_queued_job_never_runs():
    worker, ran = Worker(), []
    gate = threading.Event()

    async def main():
        first = asyncio.ensure_future(worker.run("block", gate.wait, 5))
        second = asyncio.ensure_future(worker.run("late", ran.append, "late"))
        await asyncio.sleep(0.05)
        second.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await second

    asyncio.run(main())
    assert ran == [] and worker.stats.to_dict()["cancelled"] == 1
    worker.close()


def test_a_running_job_is_stopped_at_its_next_forward_pass():
    from mechscope.ui._worker import JobCancelled, checkpoint_modules

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ModuleList([torch.nn.Linear(4, 4)]))
    worker, started, passes = Worker(), threading.Event(), []

    def job():
        started.set()
        for _ in range(2000):  # ~20 s unless stopped
            net[0](torch.ones(4))
            passes.append(1)
            time.sleep(0.01)
        return "finished"

    async def main():
        task = asyncio.ensure_future(worker.run("loop", job, modules=checkpoint_modules(net)))
        while not started.is_set():
            await asyncio.sleep(0.01)
        assert [j["state"] for j in worker.jobs()] == ["running"]
        assert worker.cancel(worker.jobs()[0]["id"]) == "running"
        with pytest.raises(JobCancelled, match="loop"):
            await task
        return await worker.run("next", lambda: "next runs")

    t0 = time.perf_counter()
    assert asyncio.run(main()) == "next runs"
    assert time.perf_counter() - t0 < 5 and len(passes) < 500  # stopped, not run to the end
    assert all(not m._forward_pre_hooks for m in net.modules())  # the checkpoints are gone
    stats = worker.stats.to_dict()
    assert stats["cancelled"] == 1 and stats["failed"] == 0 and stats["done"] == 1 and worker.jobs() == []
    with pytest.raises(KeyError, match="no job 99"):
        worker.cancel(99)
    worker.close()


def test_cancel_endpoint_stops_a_running_request_and_the_server_goes_on(model, monkeypatch):
    import httpx

    from mechscope.ui import running

    started, answers = threading.Event(), []

    def endless(model, prompt, top_k):  # a model job that keeps running forward passes until stopped
        started.set()
        for _ in range(5000):
            model.run(prompt, logits=False)
        return {"prompt": prompt}

    monkeypatch.setattr(_lab, "predictions", endless)
    x = Explorer(model, port=0)
    with running(x) as url:
        post = lambda: answers.append(httpx.post(url + "api/prompt", json={"prompt": "hi"}, timeout=60))  # noqa: E731
        first = threading.Thread(target=post)
        first.start()
        assert started.wait(20)
        jobs = httpx.get(url + "api/status").json()["worker"]["jobs"]
        assert [(j["name"], j["state"]) for j in jobs] == [("prompt", "running")]
        out = httpx.post(url + "api/jobs/cancel", json={"id": jobs[0]["id"]})
        assert out.json() == {"id": jobs[0]["id"], "was": "running"}
        first.join(20)
        assert answers[0].status_code == 409 and "was cancelled" in answers[0].json()["error"]
        assert httpx.post(url + "api/jobs/cancel", json={"id": jobs[0]["id"]}).status_code == 400
        monkeypatch.undo()
        again = httpx.post(url + "api/prompt", json={"prompt": "hi"}, timeout=30)
        status = httpx.get(url + "api/status").json()["worker"]
    assert again.status_code == 200 and status["cancelled"] == 1 and status["jobs"] == []
    assert all(not m._forward_pre_hooks for m in model.module.modules())
    plain = model.module(torch.tensor([[1, 2, 3]])).logits
    assert torch.equal(model.run(torch.tensor([[1, 2, 3]])).logits, plain)


# --- the command ---------------------------------------------------------------------------------------------------


def test_serve_command_prints_a_token_url_beyond_loopback(monkeypatch, run_dir):
    import uvicorn
    from typer.testing import CliRunner

    from mechscope.cli import app

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kw: served.update(app=asgi, **kw))
    result = CliRunner().invoke(app, ["serve", str(run_dir), "--model", "tiny-llama", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    token = re.search(r"\?token=([\w-]+)", result.output)[1]
    assert served["host"] == "0.0.0.0" and len(token) >= 40
    with TestClient(served["app"], base_url="http://10.0.0.5:8000") as c:
        assert c.get("/api/status").status_code == 401
        assert c.get("/api/runs", headers={"authorization": f"Bearer {token}"}).json()["found"]
    db, dictionary = run_dir / "features" / "features.db", run_dir / "features" / "dictionary"
    result = CliRunner().invoke(app, ["serve", "--model", "tiny-gpt2", "--features", str(db), "--dictionary",
                                      str(dictionary)])  # fmt: skip
    assert "http://127.0.0.1:8000/" in result.output and "token" not in result.output
    with TestClient(served["app"], base_url=BASE) as c:
        assert c.get("/api/status").json()["dictionary"] == {"site": "resid_post.1", "d_sae": 32}
        assert [f["kind"] for f in c.get("/api/runs").json()["found"]] == ["features"]
    result = CliRunner().invoke(app, ["serve", "/no/such/dir", "--model", "tiny-llama"])
    assert result.exit_code == 3 and "no such run directory" in result.output  # 3: not found


@pytest.mark.real
def test_smollm2_predicts_mary_first_on_ioi(smol):
    with TestClient(create_app(Explorer(smol)), base_url=BASE) as c:
        out = c.post("/api/prompt", json={"prompt": IOI, "top_k": 5}).json()
    assert out["predictions"][0]["token"] == " Mary" and out["predictions"][0]["prob"] > 0.5


def test_docs_list_every_endpoint():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "explorer.md").read_text()
    for e in ENDPOINTS:
        assert f"`{e.method} {e.path}`" in docs, f"docs/explorer.md does not list {e.method} {e.path}"


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_request_whose_client_leaves_is_cancelled_before_it_runs(model, monkeypatch):
    import socket

    import httpx

    from mechscope.ui import running

    gate, ran = threading.Event(), []

    def slow(model, prompt, top_k):
        ran.append(prompt)
        gate.wait(10)
        return {"prompt": prompt}

    monkeypatch.setattr(_lab, "predictions", slow)
    x = Explorer(model, port=0)
    with running(x) as url:
        first = threading.Thread(target=lambda: httpx.post(url + "api/prompt", json={"prompt": "first"}, timeout=30))
        first.start()
        while not ran:
            time.sleep(0.01)
        body = json.dumps({"prompt": "second"}).encode()
        with socket.create_connection(("127.0.0.1", x.port)) as s:  # queued behind "first", then the client leaves
            s.sendall(b"POST /api/prompt HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (x.port, len(body), body))  # fmt: skip
            wait_until(lambda: x.worker.stats.submitted == 2)  # queued
        wait_until(lambda: x.worker.stats.cancelled == 1)  # the server polls for the disconnect every 0.2 s
        gate.set()
        first.join()
        ok = httpx.post(url + "api/prompt", json={"prompt": "third"}, timeout=30)
    assert ok.status_code == 200 and ran == ["first", "third"]
    assert x.worker.stats.to_dict()["cancelled"] == 1


def test_a_running_request_whose_client_leaves_is_stopped(model, monkeypatch):
    import socket

    import httpx

    from mechscope.ui import running

    started, passes = threading.Event(), []

    def endless(model, prompt, top_k):
        started.set()
        for _ in range(5000):
            model.run(prompt, logits=False)
            passes.append(1)
        return {"prompt": prompt}

    monkeypatch.setattr(_lab, "predictions", endless)
    x = Explorer(model, port=0)
    with running(x) as url:
        body = json.dumps({"prompt": "hi"}).encode()
        with socket.create_connection(("127.0.0.1", x.port)) as s:
            s.sendall(b"POST /api/prompt HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (x.port, len(body), body))  # fmt: skip
            assert started.wait(20)
        wait_until(lambda: x.worker.stats.cancelled == 1)  # noticed within a poll (0.2 s), stopped at a checkpoint
        stopped_at = len(passes)
        monkeypatch.undo()
        assert httpx.post(url + "api/prompt", json={"prompt": "hi"}, timeout=30).status_code == 200
    assert stopped_at < 5000 and len(passes) == stopped_at and x.worker.stats.to_dict()["failed"] == 0


def test_verify_an_edge_by_real_patching(client, model, run_dir):
    from mechscope.circuits import Graph, patch_edges
    from mechscope.data import tasks

    summary = json.loads((run_dir / "circuit" / "summary.json").read_text())
    edge, score = summary["scores"]["top_edges"][1]
    out = client.post("/api/circuit/verify", json={"ref": "0/circuit/summary.json", "edge": edge}).json()
    task = tasks.induction(model.tokenizer, n=4, seed=0)  # as the run built it
    index = Graph.from_dict(summary["circuit"]["graph"]).edge_names().index(edge)
    actual, clean, corrupt = patch_edges(model, task, [index], "denoising", progress=False)
    assert out["actual"] == pytest.approx((float(actual[0]) - corrupt) / (clean - corrupt), abs=1e-5)
    assert out["estimate"] == pytest.approx(score / (clean - corrupt), abs=1e-5)
    assert out["clean_metric"] == pytest.approx(summary["scores"]["clean_metric"], abs=1e-4)
    message = error_of(
        client.post("/api/circuit/verify", json={"ref": "0/circuit/summary.json", "edge": "a9.h0->m9"}), 400
    )
    assert "no saved score" in message
    with TestClient(create_app(Explorer(ms.tiny("llama"), Roots([run_dir]))), base_url=BASE) as other:
        r = other.post("/api/circuit/verify", json={"ref": "0/circuit/summary.json", "edge": edge})
        assert "computed on 'tiny-gpt2-s0'" in error_of(r, 400)


def test_try_a_feature_on_text(client, explorer, model):
    out = client.post("/api/feature/try", json={"text": "the cat sat", "latent": 5}).json()
    acts = model.run("the cat sat", cache="resid_post.1").cache["resid_post.1"][0]
    with torch.no_grad():
        real = explorer.dictionary.encode(acts)[:, 5]
    assert out["tokens"] == list("the cat sat") and out["activations"] == pytest.approx(real.tolist(), abs=1e-6)
    assert "out of range" in error_of(client.post("/api/feature/try", json={"text": "x", "latent": 32}), 400)


def test_steer_a_feature(client):
    body = {"prompt": "the dog", "latent": 3, "max_new_tokens": 8}
    same = client.post("/api/feature/steer", json={**body, "how": "scale", "value": 1.0}).json()
    assert same["steered"] == same["plain"]  # scaling by 1 leaves the model unchanged (the error term is kept)
    moved = client.post("/api/feature/steer", json={**body, "how": "clamp", "value": 200.0}).json()
    assert moved["plain"] == same["plain"] and moved["steered"] != moved["plain"]
    assert "clamp" in moved["intervention"]
    assert "between -1000" in error_of(client.post("/api/feature/steer", json={**body, "value": 1e6}), 400)
    assert "clamp' or 'scale'" in error_of(
        client.post("/api/feature/steer", json={**body, "how": "add", "value": 1}), 400
    )
    with TestClient(create_app(Explorer(ms.tiny("gpt2"))), base_url=BASE) as c:
        assert "--dictionary" in error_of(c.post("/api/feature/steer", json={**body, "value": 1.0}), 400)


def test_token_attribution_is_the_librarys(client, model):
    from mechscope.attribution import token_attribution

    body = {"prompt": "hello", "continuation": " wo", "method": "input_x_gradient"}
    out = client.post("/api/tokens/attribute", json=body).json()
    real = token_attribution(model, "hello", continuation=" wo", method="input_x_gradient")
    assert out["tokens"] == real.tokens and out["n_prompt"] == 5
    torch.testing.assert_close(torch.tensor(out["scores"]), real.scores.float(), atol=1e-5, rtol=1e-4)
    greedy = client.post("/api/tokens/attribute", json={"prompt": "hello", "max_new_tokens": 2}).json()
    assert len(greedy["scores"]) == 2 and greedy["completeness_gap"] is not None
    assert "between 1 and 16" in error_of(
        client.post("/api/tokens/attribute", json={**body, "max_new_tokens": 99}), 400
    )
    assert "method must be" in error_of(client.post("/api/tokens/attribute", json={**body, "method": "lime"}), 400)


def test_run_a_circuit_from_the_app(client, model):
    from mechscope.circuits import EAPConfig, FindConfig, find_circuit
    from mechscope.data import tasks

    body = {"task": "induction", "n": 4, "method": "eap", "settings": {"batch_size": 8}}
    c = client.post("/api/circuit/run", json=body).json()
    real = find_circuit(model, tasks.induction(model.tokenizer, n=4, seed=0),
                        FindConfig("eap", EAPConfig(batch_size=8, seed=0), random=2, seed=0))  # fmt: skip
    assert c["faithfulness"] == pytest.approx(real.faithfulness, abs=1e-6)
    assert c["curve"]["faithfulness"] == pytest.approx(list(real.curve.faithfulness), abs=1e-6)
    assert {"ref": c["ref"], "kind": "circuit", "title": f"{c['ref']}: eap on induction"} in client.get(
        "/api/runs"
    ).json()["found"]
    assert client.get("/api/circuit", params={"ref": c["ref"]}).json()["edges"] == c["edges"]
    edge = c["edges"][0]["name"]
    v = client.post("/api/circuit/verify", json={"ref": c["ref"], "edge": edge}).json()
    assert v["edge"] == edge and "actual" in v
    assert "did you mean 'eap'" in error_of(client.post("/api/circuit/run", json={**body, "method": "eapp"}), 404)
    assert "has no setting 'steps'" in error_of(
        client.post("/api/circuit/run", json={**body, "settings": {"steps": 3}}), 400
    )
    assert "unknown task" in error_of(client.post("/api/circuit/run", json={**body, "task": "sorting"}), 400)
    assert "no circuit run 'run:99'" in error_of(client.get("/api/circuit", params={"ref": "run:99"}), 404)
