"""The explorer in a real Chromium (Debian's ``chromium`` package driven by Playwright for Python): each view opens
and draws what its API returned, clicks and hovers work, and XSS payloads in every kind of text stay text.

Screenshots of each view go to ``out/explorer/`` (not committed). Locally the tests skip, with the reason, when
chromium or playwright is missing; ``.ci/run`` installs both, and under CI (``CI`` set) a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the explorer's extra is not installed: pip install -e '.[serve,browser]'")
pytest.importorskip("uvicorn", reason="the explorer's extra is not installed: pip install -e '.[serve,browser]'")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

_MISSING = (
    "playwright is not installed (pip install -e '.[browser]')"
    if sync_playwright is None
    else "Debian's chromium is not installed (apt-get install -y chromium)"
    if CHROMIUM is None
    else None
)
if _MISSING is not None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {_MISSING}", pytrace=False)
    pytest.skip(_MISSING, allow_module_level=True)

from _explorer_data import XSS, circuit_run, feature_db, graph_file, leaderboard, transcoders  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.ui import Explorer, Roots, running  # noqa: E402

pytestmark = pytest.mark.slow
SHOTS = Path(__file__).resolve().parent.parent / "out" / "explorer"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    model = ms.tiny("gpt2")  # the circuit run's model too, so its edges can be verified
    circuit_run(model, root / "circuit")
    leaderboard(root / "bench")
    feature_db(model, root / "features")
    from mechscope.features import load_dictionary
    from mechscope.store import Explanation, add_explanations

    add_explanations(root / "features" / "features.db", [
        Explanation(2, "digits of a number", "llm", 0.7, "detection"),
        Explanation(2, f"numbers {XSS}", "human"),
    ])  # fmt: skip

    dictionary = load_dictionary(root / "features" / "dictionary")
    coders = transcoders(model)
    graph_file(model, coders, root / "graph")
    with running(Explorer(model, Roots([root]), port=0, dictionary=dictionary, transcoders=coders)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    assert sync_playwright is not None and CHROMIUM is not None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("dialog", lambda dialog: problems.append(f"dialog opened: {dialog.message}"))
    page.problems = problems
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert page.evaluate("window.__xss") is None, "an XSS payload ran"
    assert not problems, problems
    context.close()


def test_prompt_lab_predicts_and_draws_the_lens(page, server):
    page.goto(server)
    page.fill("#prompt", "When Mary and John went to the store, John gave a drink to")
    page.click("#run")
    page.wait_for_selector("#lens td.cell")
    api = page.evaluate(
        """fetch('/api/prompt', {method: 'POST', headers: {'content-type': 'application/json'},
           body: JSON.stringify({prompt: document.getElementById('prompt').value, top_k: 10})}).then(r => r.json())"""
    )
    first = page.locator("#predictions tr").first
    assert first.locator(".pred-token").text_content() == api["predictions"][0]["token"].replace(" ", "·")
    assert page.locator("#predictions tr").count() == 10
    n_tokens = len(api["tokens"])
    assert page.locator("#tokens .tok").count() == n_tokens
    assert page.locator("#lens td.cell").count() == 2 * n_tokens  # the tiny model's 2 layers x every position
    page.hover("#lens td.cell[data-layer='1'][data-pos='3']")
    assert page.is_visible("#tip") and "layer 1" in page.text_content("#tip")
    page.screenshot(path=str(SHOTS / "prompt_lab.png"), full_page=True)


def test_attention_head_pattern_is_drawn(page, server):
    page.goto(server)
    page.fill("#prompt", "hello world")
    page.click("#run")
    page.wait_for_selector("button.head")
    assert page.locator("button.head").count() == 4
    page.click("button.head[data-head='2']")
    page.wait_for_selector("#pattern-svg")
    n = len("hello world")
    assert page.locator("#pattern-svg rect.att").count() == n * (n + 1) // 2  # causal: keys up to the query
    assert page.get_attribute("#pattern-svg", "data-head") == "2"
    page.hover("#pattern .attn-tokens .tok >> nth=5")  # the query's keys light up
    lit = page.evaluate(
        "[...document.querySelectorAll('#pattern .attn-tokens .tok')].map(s => s.style.backgroundColor !== '')"
    )
    assert lit == [True] * 6 + [False] * (n - 6)
    page.select_option("#att-layer", "1")
    page.wait_for_selector("button.head canvas[title='head 1.0']")  # (wait_for_function would need unsafe-eval)
    page.select_option("#att-layer", "all")  # the head grid: every layer's heads
    page.wait_for_selector(".head-row button.head[data-layer='1'][data-head='3']")
    assert page.locator(".head-row").count() == 2 and page.locator(".head-row button.head").count() == 8
    page.click(".head-row button.head[data-layer='1'][data-head='0']")
    page.wait_for_selector("#pattern h3")
    assert page.text_content("#pattern h3").startswith("head 1.0")
    page.screenshot(path=str(SHOTS / "attention.png"), full_page=True)


def test_direct_logit_attribution_grid(page, server):
    page.goto(server)
    page.fill("#prompt", "hello")
    page.fill("#dla-answer", " ")
    page.fill("#dla-wrong", "x")
    page.click("#dla-run")
    page.wait_for_selector("rect.dla-head")
    assert page.locator("rect.dla-head").count() == 8 and page.locator("rect.dla-mlp").count() == 2
    page.fill("#attr-continuation", " wo")  # token attribution: one row per new token, context highlighted
    page.select_option("#attr-method", "input_x_gradient")
    page.click("#attr-run")
    page.wait_for_selector("#attribution .attr-row")
    assert page.locator("#attribution .attr-row").count() == 3
    assert page.locator("#attribution .attr-row >> nth=2").locator(".attr-tok").count() == len("hello wo") - 1
    page.fill("#dla-answer", "two")  # several tokens: the error is shown, nothing breaks
    page.click("#dla-run")
    page.wait_for_selector("#dla .error")
    assert "single token" in page.text_content("#dla .error")
    page.problems.clear()  # the 400 of that request is logged by the browser as a failed resource


def test_circuit_edge_click_shows_its_score(page, server):
    page.goto(server + "#circuits")
    page.click("#circuit-list button")
    page.wait_for_selector("#circuit-svg .edge")
    data = page.evaluate(
        "fetch('/api/circuit?ref=' + encodeURIComponent(document.querySelector('#circuit-list button').dataset.ref))"
        ".then(r => r.json())"
    )
    top = data["edges"][0]
    page.click(f"#circuit-svg .edge[data-edge='{top['name']}']", force=True)
    assert page.text_content("#edge-info h3") == top["name"]
    assert float(page.text_content("#edge-score").split()[1]) == pytest.approx(top["score"], rel=1e-3)
    page.click("#verify")  # the edge patched for real, beside its score's estimate
    page.wait_for_selector("#verify-actual")
    verified = page.evaluate(
        """fetch('/api/circuit/verify', {method: 'POST', headers: {'content-type': 'application/json'},
           body: JSON.stringify({ref: document.querySelector('#circuit-list button').dataset.ref,
                                 edge: document.querySelector('#edge-info h3').textContent})}).then(r => r.json())"""
    )
    assert page.text_content("#verify-actual") == f"patched for real: effect {verified['actual']:.3f}".replace(
        "-0.000", "0.000"
    )
    # the slider: the largest size draws every saved edge, the label reads the curve at that size
    page.fill("#size", str(len(data["curve"]["sizes"]) - 1))
    page.dispatch_event("#size", "input")
    assert page.locator("#circuit-svg .edge").count() == len(data["edges"])
    assert "faithfulness 1.000" in page.text_content("#size-label")
    page.fill("#size", "0")
    page.dispatch_event("#size", "input")
    assert page.locator("#circuit-svg .edge").count() == min(data["curve"]["n_edges"][0], len(data["edges"]))
    assert XSS in page.text_content("#circuit p")  # the poisoned method name, shown as text
    page.screenshot(path=str(SHOTS / "circuit.png"), full_page=True)


def test_run_a_circuit_from_the_app(page, server):
    page.goto(server + "#circuits")
    page.wait_for_selector("#run-method option[value='eap-ig']", state="attached")  # from the registry
    page.select_option("#run-task", "induction")
    page.select_option("#run-method", "eap")
    page.fill("#run-n", "4")
    page.click("#run-circuit")
    page.wait_for_selector("#circuit-list button[data-ref='run:0']", timeout=120_000)
    page.wait_for_selector("#circuit-svg .edge")
    assert page.text_content("#circuit p").startswith("eap on induction (4 prompt pairs")


def test_bench_filters(page, server):
    page.goto(server + "#bench")
    page.wait_for_selector("tr.bench-row")
    total = page.locator("tr.bench-row").count()
    page.select_option("#f-family", "circuits")
    families = page.eval_on_selector_all("tr.bench-row td:first-child", "tds => tds.map(t => t.textContent)")
    assert families and set(families) == {"circuits"} and len(families) < total
    page.select_option("#f-method", "eap-ig")
    methods = page.eval_on_selector_all("tr.bench-row td:nth-child(3)", "tds => tds.map(t => t.textContent)")
    assert set(methods) == {"eap-ig"}
    assert all(c != "–" for c in page.eval_on_selector_all("tr.bench-row td.chance", "t => t.map(x => x.textContent)"))
    page.select_option("#f-family", "")
    page.select_option("#f-method", "")
    page.select_option("#f-organism", XSS)  # the poisoned organism name is an option's text, and a cell's
    assert page.locator("tr.bench-row").count() == 1 and page.text_content("tr.bench-row td:nth-child(2)") == XSS
    page.screenshot(path=str(SHOTS / "bench.png"), full_page=True)


def test_feature_page_highlights_contexts_as_text(page, server):
    page.goto(server + "#features")
    page.wait_for_selector("button.latent")
    page.click("button.latent >> nth=0")
    page.wait_for_selector("#contexts .context")
    lit = page.eval_on_selector_all("#contexts .ctx-tok", "s => s.filter(x => x.style.backgroundColor).length")
    assert lit > 0
    texts = page.eval_on_selector_all("#contexts .ctx-tok", "s => s.map(x => x.textContent)")
    assert XSS.replace(" ", "·") in texts  # the poisoned vocabulary entry, as the text of one token
    assert page.locator("#contexts img, #contexts script").count() == 0
    assert page.locator("svg.hist rect").count() > 0
    page.fill("#try-text", "the cat sat")  # try it: the latent on the user's own text
    page.click("#try-go")
    page.wait_for_selector("#try-out .try-tok")
    assert page.locator("#try-out .try-tok").count() == len("the cat sat")
    page.fill("#steer-value", "200")  # steer: the continuation changes beside the plain one
    page.click("#steer-go")
    page.wait_for_selector("#steer-steered")
    assert page.text_content("#steer-steered") != page.text_content("#steer-plain")
    page.screenshot(path=str(SHOTS / "feature.png"), full_page=True)


def test_feature_search_by_explanation_shows_explanations_as_text(page, server):
    page.goto(server + "#features")
    page.wait_for_selector("button.latent")
    page.fill("#feature-words", "NUMBER")
    page.click("#feature-words-go")
    page.wait_for_selector(".explained button.latent[data-latent='2']")
    assert page.locator(".explained").count() == 2  # both explanations of latent 2 match
    assert page.text_content(".explained .explanation-text >> nth=0") == "digits of a number"  # best score first
    page.click(".explained button.latent >> nth=0")
    page.wait_for_selector("#explanations tr")
    rows = page.eval_on_selector_all("#explanations tr", "rs => rs.map(r => r.textContent)")
    assert rows == ["digits of a numberllmdetection 0.700", f"numbers {XSS}humannot scored"]
    assert page.locator("#explanations img, #explanations script").count() == 0
    page.screenshot(path=str(SHOTS / "feature_explanations.png"), full_page=True)


def test_attribution_view_shows_overlays_with_their_metrics(page, server, tmp_path):
    import numpy as np
    from PIL import Image

    page.goto(server + "#vision")
    page.wait_for_selector("#vision-images button.thumb[data-index='3']", timeout=120_000)
    assert page.locator("#vision-images button.thumb").count() == 12
    checked = page.eval_on_selector_all(".vision-method:checked", "cs => cs.map(c => c.value)")
    assert checked == ["saliency", "integrated_gradients", "grad_cam", "edge_detector"]
    page.uncheck(".vision-method[value='integrated_gradients']")
    page.click("#vision-images button.thumb[data-index='3']")
    page.click("#vision-run")
    page.wait_for_selector(".vision-card img.overlay", timeout=120_000)
    cards = page.eval_on_selector_all(".vision-card", "cs => cs.map(c => c.dataset.method)")
    assert cards == ["saliency", "grad_cam", "edge_detector"]
    decoded = page.eval_on_selector_all(".vision-card img.overlay", "is => is.map(i => i.complete && i.naturalWidth)")
    assert decoded == [128, 128, 128]  # 32 x 32 maps, 4 x 4 pixels each, decoded by the browser
    for method in cards:  # deletion, insertion, localisation (the shape's mask) and the randomisation check
        assert page.locator(f".vision-card[data-method='{method}'] table.metrics tbody tr").count() == 5
    assert "held-out image 3" in page.text_content(".vision-input p")
    page.screenshot(path=str(SHOTS / "attribution.png"), full_page=True)
    grey = np.zeros((32, 32), dtype=np.uint8)
    grey[8:24, 8:24] = 255  # a square
    Image.fromarray(grey).save(tmp_path / "square.png")
    page.set_input_files("#vision-upload", str(tmp_path / "square.png"))
    page.uncheck("#vision-sanity")
    page.wait_for_timeout(200)  # the file is read as a data URI
    page.click("#vision-run")
    page.wait_for_selector(".vision-input p >> text=your PNG")
    assert page.locator(".vision-card").count() == 3
    assert page.locator(".vision-card[data-method='saliency'] table.metrics tbody tr").count() == 2  # no mask
    page.set_input_files("#vision-upload", {"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"})
    page.wait_for_timeout(200)
    page.click("#vision-run")
    page.wait_for_selector("#vision-error .error")
    assert "only PNG images are accepted" in page.text_content("#vision-error")
    page.problems.clear()  # the 400 of that request is logged by the browser as a failed resource


def test_cancel_a_running_image_attribution(page, server):
    import time

    page.goto(server + "#vision")
    page.wait_for_selector("#vision-images button.thumb")
    for box in page.query_selector_all(".vision-method"):  # every method with the sanity check: about a minute
        box.check()
    page.click("#vision-run")
    page.wait_for_selector("#vision-busy button.cancel")
    status = "fetch('/api/status').then(r => r.json()).then(s => s.worker.jobs.map(j => j.name + ':' + j.state))"
    deadline = time.monotonic() + 60
    while "image attribution:running" not in page.evaluate(status):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page.click("#vision-busy button.cancel")
    page.wait_for_selector("#vision-error .error")
    assert "was cancelled" in page.text_content("#vision-error")
    assert page.evaluate(status) == []
    for box in page.query_selector_all(".vision-method"):
        box.uncheck()
    page.check(".vision-method[value='saliency']")
    page.click("#vision-run")  # the server goes on
    page.wait_for_selector(".vision-card[data-method='saliency'] img.overlay")
    page.problems.clear()  # the 409 of the cancelled request is logged by the browser as a failed resource


def test_api_view_lists_the_registries(page, server):
    page.goto(server + "#api")
    page.wait_for_selector("tr.method[data-method='logit-lens']")
    assert page.locator("tr.method[data-method='eap-ig']").count() == 1
    assert page.locator("#endpoints tr").count() > 10


def test_graph_view_draws_prunes_clicks_groups_and_verifies(page, server):
    from playwright.sync_api import expect

    page.goto(server + "#graphs")
    ref = "0/graph/graph.json"
    page.click(f"#graph-list button.item[data-ref='{ref}']")
    page.wait_for_selector("#graph-svg .gnode")

    def view(nt: float, et: float) -> dict:
        return page.evaluate(f"fetch('/api/graph?ref={ref}&node_threshold={nt}&edge_threshold={et}')"
                             ".then(r => r.json())")  # fmt: skip

    d = view(0.8, 0.98)  # the config's thresholds, where the view opens
    expect(page.locator("#graph-svg .gnode")).to_have_count(len(d["nodes"]))
    expect(page.locator("#graph-svg .gedge")).to_have_count(len(d["edges"]))
    assert page.locator("#graph-svg .gnode.feature").count() == sum(n["kind"] == "feature" for n in d["nodes"])
    assert XSS in page.text_content("#supernode-list")  # the file's supernode name, as text
    # the node slider prunes: the page draws what the server kept at the new threshold
    tight = view(0.7, 0.98)
    assert len(tight["nodes"]) < len(d["nodes"])
    page.fill("#graph-node-threshold", "0.7")
    expect(page.locator("#graph-svg .gnode")).to_have_count(len(tight["nodes"]))
    expect(page.locator("#graph-svg .gedge")).to_have_count(len(tight["edges"]))
    # click a feature: its activation and strongest edges; then verify it by ablation in the real model
    first = page.locator("#graph-svg .gnode.feature").first
    node = first.get_attribute("data-node")
    first.click()
    expect(page.locator("#graph-node-id")).to_have_text(node)
    act = next(n["activation"] for n in tight["nodes"] if n["id"] == node)
    assert f"activation {act:.4f}" in page.text_content("#graph-node-activation")
    assert page.locator("#graph-node table.edges tr").count() > 0
    assert "lit" in (page.locator(f"#graph-svg .gedge[data-source='{node}']").first.get_attribute("class") or "")
    page.click("#graph-verify")
    page.wait_for_selector("#graph-verify-summary")
    assert "correlation of predicted and real" in page.text_content("#graph-verify-summary")
    assert page.locator("#graph-verify-table tbody tr").count() > 0
    # shift-click two features into a supernode, saved with the graph
    features = page.locator("#graph-svg .gnode.feature")
    picked = [features.nth(i).get_attribute("data-node") for i in range(2)]
    for i in range(2):
        features.nth(i).click(modifiers=["Shift"])
    assert page.locator("#graph-svg .gnode.picked").count() == 2
    page.fill("#supernode-name", "pair")
    page.click("#supernode-save")
    page.wait_for_selector("#supernode-list li[data-supernode='pair']")
    saved = page.evaluate(f"fetch('/api/graph/json?ref={ref}').then(r => r.json())")
    assert saved["supernodes"]["pair"] == picked
    page.screenshot(path=str(SHOTS / "graph.png"), full_page=True)


def test_compute_a_graph_from_the_form(page, server):
    from playwright.sync_api import expect

    page.goto(server + "#graphs")
    page.wait_for_selector(".graph-setting[data-name='max_feature_nodes']")
    page.fill(".graph-setting[data-name='max_feature_nodes']", "12")
    page.fill("#graph-prompt", f"a {XSS}")
    page.click("#graph-run")
    page.wait_for_selector("#graph-svg .gnode")
    assert page.text_content("#graph-summary").startswith("graph:0")
    assert "(12 features)" in page.text_content("#graph-summary")
    expect(page.locator("#graph-list button.item[data-ref='graph:0']")).to_have_count(1)


def test_xss_in_the_prompt_is_inert(page, server):
    page.goto(server)
    page.fill("#prompt", "<img src=x onerror=window.__xss=1>")
    page.click("#run")
    page.wait_for_selector("#lens td.cell")
    assert page.locator("#tokens img, #lens img, #predictions img").count() == 0
    assert "".join(page.eval_on_selector_all("#tokens .tok", "s => s.map(x => x.textContent)")) == (
        "<img·src=x·onerror=window.__xss=1>"
    )
    page.wait_for_timeout(200)  # an onerror would have fired by now
