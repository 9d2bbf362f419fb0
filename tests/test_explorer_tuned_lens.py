"""The explorer's tuned-lens view: with a tuned lens (``serve --tuned-lens DIR``) the lens grid carries its
predictions beside the logit lens's, on the same axes, equal to the library's ``tuned_lens_grid``."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("starlette", reason="the explorer's extra is not installed: pip install -e '.[serve,browser]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx: pip install -e '.[serve,browser]'")

from starlette.testclient import TestClient

import mechscope as ms
from mechscope._errors import MismatchError
from mechscope.lenses import TunedLens, load_tuned_lens, logit_lens_grid, save_tuned_lens, tuned_lens_grid
from mechscope.ui import Explorer, create_app

BASE = "http://127.0.0.1:8000"
PROMPT = "hello world"


@pytest.fixture(scope="module")
def model() -> ms.Model:
    return ms.tiny("gpt2")


@pytest.fixture(scope="module")
def lens(model, tmp_path_factory) -> TunedLens:
    """A lens whose translators are far from the identity, saved and loaded as ``serve --tuned-lens`` does."""
    lens = TunedLens.for_model(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lens.weight.copy_(torch.randn(lens.weight.shape, generator=gen))
        lens.bias.copy_(3 * torch.randn(lens.bias.shape, generator=gen))
    lens.provenance.update(corpus="test", tokens=123)
    folder = tmp_path_factory.mktemp("tuned")
    save_tuned_lens(lens, folder)
    return load_tuned_lens(folder)


@pytest.fixture(scope="module")
def client(model, lens) -> TestClient:
    with TestClient(create_app(Explorer(model, tuned_lens=lens, max_tokens=64)), base_url=BASE) as c:
        yield c


def _ids(grid: dict) -> list:
    return [[[c["id"] for c in cell] for cell in layer] for layer in grid["top"]]


def test_lens_grid_carries_the_tuned_lens_beside_the_logit_lens(client, model, lens):
    out = client.post("/api/lens", json={"prompt": PROMPT, "top_k": 3}).json()
    logit, tuned = logit_lens_grid(model, PROMPT, top_k=3), tuned_lens_grid(model, lens, PROMPT, top_k=3)
    assert _ids(out) == logit.top_ids.tolist()  # the logit lens is still the top-level grid
    got = out["tuned"]
    assert got["method"] == "tuned_lens_grid" and got["tokens"] == out["tokens"] and got["layers"] == out["layers"]
    assert _ids(got) == tuned.top_ids.tolist()
    assert [c["prob"] for c in got["top"][0][-1]] == pytest.approx(tuned.top_probs[0, -1].tolist())
    assert _ids(got)[0] != _ids(out)[0]  # layer 0 is read through a (far from identity) translator
    assert _ids(got)[-1] == _ids(out)[-1]  # the last layer is the model's own output under both lenses
    assert got["lens"]["corpus"] == "test" and got["lens"]["tokens"] == 123


def test_status_names_the_tuned_lens_and_a_server_without_one_sends_no_tuned_grid(client, model):
    assert client.get("/api/status").json()["tuned_lens"]["tokens"] == 123
    with TestClient(create_app(Explorer(model, max_tokens=64)), base_url=BASE) as plain:
        assert plain.get("/api/status").json()["tuned_lens"] is None
        assert "tuned" not in plain.post("/api/lens", json={"prompt": PROMPT, "top_k": 2}).json()


def test_a_tuned_lens_of_another_model_is_refused_when_the_explorer_starts(model):
    other = TunedLens(model.cfg.n_layers + 1, model.cfg.d_model)
    with pytest.raises(MismatchError, match="translators of width"):
        Explorer(model, tuned_lens=other)


def test_serve_refuses_a_tuned_lens_of_another_model_before_listening(model, tmp_path):
    from typer.testing import CliRunner

    from mechscope.cli import app

    save_tuned_lens(TunedLens(model.cfg.n_layers + 1, model.cfg.d_model), tmp_path)
    result = CliRunner().invoke(app, ["serve", "--model", "tiny-gpt2", "--tuned-lens", str(tmp_path)])
    assert result.exit_code not in (0, None)  # the user-error exit of a mismatch, before any server starts
    assert "translators of width" in result.output


@pytest.mark.slow
def test_the_prompt_lab_draws_the_tuned_grid_under_the_logit_grid(model, lens):
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from mechscope.ui import running

    with running(Explorer(model, port=0, tuned_lens=lens)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(url)
        page.fill("#prompt", PROMPT)
        page.click("#run")
        page.wait_for_selector("#lens table[data-lens='tuned'] td.cell")
        n = len(PROMPT)  # one byte per token
        assert page.locator("#lens table[data-lens='logit'] td.cell").count() == 2 * n
        assert page.locator("#lens table[data-lens='tuned'] td.cell").count() == 2 * n
        assert "123 tokens" in page.text_content("#lens")  # the lens's provenance in its title
        want = tuned_lens_grid(model, lens, PROMPT, top_k=5).top_tokens[0][3][0].replace(" ", "·")
        assert page.text_content("#lens table[data-lens='tuned'] td.cell[data-layer='0'][data-pos='3']") == want
        browser.close()
        assert not errors, errors


def test_the_declared_tuned_lens_reads_a_lens_folder_only_inside_the_run_directories(model, lens, tmp_path):
    from mechscope.lenses import tuned_lens
    from mechscope.ui import Roots

    save_tuned_lens(lens, tmp_path / "runs" / "lens")
    outside = tmp_path / "elsewhere"
    save_tuned_lens(lens, outside)
    explorer = Explorer(model, Roots([tmp_path / "runs"]), max_tokens=64)
    with TestClient(create_app(explorer), base_url=BASE) as c:
        out = c.post("/api/lenses/tuned-lens", json={"prompt": PROMPT, "settings": {"tuned": "0/lens"}})
        assert out.status_code == 200, out.text
        want = tuned_lens(model, lens, PROMPT, top_k=5)
        assert out.json()["top"][0][-1][0]["id"] == int(want.top_ids[0, -1, 0])
        refused = c.post("/api/lenses/tuned-lens", json={"prompt": PROMPT, "settings": {"tuned": str(outside)}})
        assert refused.status_code == 403 and "unknown root" in refused.json()["error"]
