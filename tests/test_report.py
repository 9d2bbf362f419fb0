"""The HTML report: self-contained (no network, plots inline), escaped, written atomically; the demo's sections."""

import base64
import re

import pytest
from matplotlib.figure import Figure

import mechscope as ms
from mechscope.circuits import AnalysisConfig
from mechscope.data.tasks import induction
from mechscope.demo import DemoConfig, run_demo
from mechscope.report import figure_html, png_html, table_html, write_report


def external_references(page: str) -> list[str]:
    """Every src/href that does not stay inside the page (data URIs and #anchors do)."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    return [r for r in refs if not (r.startswith("data:") or r.startswith("#"))]


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_figure_is_embedded_as_png():
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    (png,) = embedded_pngs(figure_html(fig, alt="a line"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_png_html_rejects_other_bytes():
    with pytest.raises(ValueError, match="PNG"):
        png_html(b"GIF89a")


def test_report_escapes_titles_and_cells(tmp_path):
    table = table_html(["<a>"], [["<script>x</script>"], [1.23456]])
    path = write_report(tmp_path / "r.html", "A <b> title", [("Sec <1>", table)])
    page = path.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "A &lt;b&gt; title" in page
    assert ">1.23<" in page and 'id="s1"' in page and 'href="#s1"' in page
    assert not [p for p in tmp_path.iterdir() if p.name != "r.html"]  # no temporary file left behind


def test_report_rejects_malformed_sections(tmp_path):
    with pytest.raises(TypeError, match="section 0"):
        write_report(tmp_path / "r.html", "t", ["just a string"])  # type: ignore[list-item]
    assert not (tmp_path / "r.html").exists()


def test_demo_report_is_self_contained_with_every_section(tmp_path):
    model = ms.tiny("llama")
    task = induction(model.tokenizer, n=4, seq_len=6)
    config = DemoConfig(4, analysis=AnalysisConfig(patch_prompts=2, ig_steps=2, random=1, faithful_at=0.5))
    extra = [("Extra section", "<p>from another method family</p>")]
    result = run_demo(model, tmp_path, prompt="ab ab", answer=" ", task=task, config=config, sections=extra)
    page = result.report.read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    assert titles == ["Next-token prediction and logit lens", "Logit difference over the induction prompts",
                      "Heads: DLA vs activation patching", "EAP-IG circuit", "Faithfulness vs random circuits",
                      "Extra section", "Settings and timings"]  # fmt: skip
    assert external_references(page) == []
    assert "<script" not in page and "<link" not in page and "@import" not in page
    pngs = embedded_pngs(page)
    assert len(pngs) >= 6 and all(p[:4] == b"\x89PNG" for p in pngs)  # lens, histogram, 2 heatmaps, circuit, curve
    assert "CPR" in page and "CMD" in page and "from another method family" in page
    a = result.analysis
    hit = a.curve.smallest_faithful(0.5)
    assert hit is not None and a.circuit_size == hit[0] and a.circuit.n_edges == hit[1] > 0
    assert (
        f"The drawn circuit ({a.circuit.n_edges:,} edges" in page and f"recovers {a.circuit_faithfulness:.2f}" in page
    )
    assert (tmp_path / "circuit.dot").read_text().count("->") == a.circuit.n_edges
    assert "svg" in result.files or "Graphviz <code>dot</code> is not installed" in page


def test_leaderboard_marks_single_seed_rows_instead_of_a_zero_spread():
    from mechscope import bench, report

    scores = [bench.Score("a", "org", s, "m", v, 0.5) for s, v in ((0, 0.6), (1, 0.8))] + [
        bench.Score("b", "org", 0, "m", 0.7, 0.5)
    ]
    lines = report.leaderboard_markdown(bench.Leaderboard(tuple(scores))).splitlines()
    row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| a ") or line.startswith("| b ")}
    assert "0.700 ± 0.141" in row["a"] and "one seed" not in row["a"]
    assert "0.700 (one seed)" in row["b"] and "±" not in row["b"]


def test_leaderboard_shows_tie_order_and_chance_spreads_of_cpr_rows():
    from dataclasses import replace

    from mechscope import bench, report

    base = bench.Score("acdc", "org", 0, "cpr", 0.3, 0.25)
    scores = [replace(base, spread=0.08, chance_spread=0.06), replace(base, seed=1, spread=0.02, chance_spread=0.04),
              replace(base, method="eap", spread=1e-9)]  # fmt: skip
    board = bench.Leaderboard(tuple(scores))
    row = next(r for r in board.rows() if r.method == "acdc")
    assert row.spread == pytest.approx(0.05) and row.chance_spread == pytest.approx(0.05)  # means over seeds
    lines = {line.split("|")[1].strip(): line for line in report.leaderboard_markdown(board).splitlines()
             if line.startswith("| acdc ") or line.startswith("| eap ")}  # fmt: skip
    assert "0.300 ± 0.000 [ties ± 0.050]" in lines["acdc"] and "| 0.250 ± 0.050 |" in lines["acdc"]
    assert "ties" not in lines["eap"]  # a spread that is rounding only is not shown
