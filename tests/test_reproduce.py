"""The bench's reproduction check: a run against the committed leaderboard, each row within its tolerance."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechscope import bench, organisms
from mechscope.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _board(*rows: tuple[str, float, float]) -> dict:
    return {"quick": True, "rows": [{"organism": "o", "metric": "m", "method": name, "mean": mean, "chance": chance}
                                    for name, mean, chance in rows]}  # fmt: skip


def test_rows_within_tolerance_reproduce_and_rows_beyond_it_are_named():
    reference = _board(("a", 0.80, 0.5), ("b", 0.40, 0.5))
    table = {"o/m/a": {"tolerance": 0.05, "chance_tolerance": 0.0}, "o/m/b": {"tolerance": 0.3}}
    ok = bench.compare(_board(("a", 0.84, 0.5), ("b", 0.65, 0.5)), reference, table)
    assert ok.ok and ok.checked == 2 and not ok.untabled
    moved = bench.compare(_board(("a", 0.86, 0.5), ("b", 0.65, 0.5)), reference, table)
    assert not moved.ok
    (drift,) = moved.drifts
    assert (drift.key, drift.quantity, drift.reference, drift.measured, drift.tolerance) == ("o/m/a", "score", 0.8,
                                                                                              0.86, 0.05)  # fmt: skip
    assert "o/m/a score: 0.8 committed, 0.86 now" in moved.lines()[0]
    # the chance level is checked too, with its own tolerance
    chance = bench.compare(_board(("a", 0.80, 0.51), ("b", 0.40, 0.5)), reference, table)
    assert [(d.key, d.quantity) for d in chance.drifts] == [("o/m/a", "chance")]


def test_rows_missing_or_new_fail_and_untabled_rows_use_the_floor():
    reference = _board(("a", 0.8, 0.5), ("b", 0.4, 0.5))
    result = bench.compare(_board(("a", 0.8, 0.5), ("c", 0.1, 0.5)), reference, {})
    assert result.missing == ("o/m/b",) and result.extra == ("o/m/c",) and not result.ok
    assert result.untabled == ("o/m/a",)
    only_missing = bench.compare(_board(("a", 0.8, 0.5)), reference, {})
    assert only_missing.missing == ("o/m/b",) and not only_missing.extra and not only_missing.ok
    only_new = bench.compare(_board(("a", 0.8, 0.5), ("b", 0.4, 0.5), ("c", 0.1, 0.5)), reference, {})
    assert only_new.extra == ("o/m/c",) and not only_new.missing and not only_new.ok
    floor = bench.compare(_board(("a", 0.8 + 0.02, 0.5)), _board(("a", 0.8, 0.5)), {})
    beyond = bench.compare(_board(("a", 0.8 + 0.04, 0.5)), _board(("a", 0.8, 0.5)), {})
    assert floor.ok and not beyond.ok


def test_nan_equals_nan_only():
    table = {"o/m/a": {"tolerance": 1.0, "chance_tolerance": 1.0}}
    assert bench.compare(_board(("a", math.nan, 0.5)), _board(("a", math.nan, 0.5)), table).ok
    assert not bench.compare(_board(("a", 0.5, 0.5)), _board(("a", math.nan, 0.5)), table).ok
    assert not bench.compare(_board(("a", math.nan, 0.5)), _board(("a", 0.5, 0.5)), table).ok


def test_quick_and_full_runs_cannot_be_compared():
    full = {**_board(("a", 0.8, 0.5)), "quick": False}
    with pytest.raises(ValueError, match="--quick but the reference is --full"):
        bench.compare(_board(("a", 0.8, 0.5)), full, {})


def test_the_committed_leaderboard_and_its_tolerance_table_name_the_same_rows():
    board = json.loads((DOCS / "leaderboard.json").read_text())
    table = bench.load_tolerances(DOCS / "leaderboard-tolerances.json")
    assert {bench.row_key(r) for r in board["rows"]} == set(table), "regenerate both with the same suite"
    for key, row in table.items():
        assert 0.0 < row["tolerance"] <= 1.0 and 0.0 < row["chance_tolerance"] <= 1.0, key


def test_cli_check_passes_on_its_own_run_and_fails_on_a_moved_row(tmp_path, monkeypatch):
    full = bench.default_suite()
    small = bench.Suite(scorers=full.scorers)
    small.add_organism(organisms.NumericFunctions())
    small.methods = {k: m for k, m in full.methods.items() if m.family == "descriptions"}
    monkeypatch.setattr(bench, "default_suite", lambda: small)
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    first = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path / "ref")])
    assert first.exit_code == 0, first.output
    reference = json.loads((tmp_path / "ref" / "leaderboard.json").read_text())
    rows = {bench.row_key(r): {"tolerance": 0.03, "chance_tolerance": 0.03} for r in reference["rows"]}
    (tmp_path / "ref" / "leaderboard-tolerances.json").write_text(json.dumps({"rows": rows}))

    again = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path / "a"),
                                "--check", str(tmp_path / "ref" / "leaderboard.json")])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert f"reproduces {tmp_path / 'ref' / 'leaderboard.json'}: {len(rows)} rows" in again.stdout

    moved = copy.deepcopy(reference)
    row = next(r for r in moved["rows"] if r["method"] == "jump_detector")
    row["mean"] -= 0.2
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    tables = tmp_path / "ref" / "leaderboard-tolerances.json"
    failed = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path / "b"),
                                 "--check", str(tmp_path / "moved.json"), "--tolerances", str(tables)])  # fmt: skip
    assert failed.exit_code == 1, failed.output
    assert f"moved: {bench.row_key(row)} score" in failed.stderr
    assert "does not reproduce" in failed.stderr

    # --json: the leaderboard and the check as one object; a failed check as an error object, same status.
    ok = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path / "c"), "--json",
                             "--check", str(tmp_path / "ref" / "leaderboard.json")])  # fmt: skip
    payload = json.loads(ok.stdout)
    assert ok.exit_code == 0 and payload["check"] == {"reference": str(tmp_path / "ref" / "leaderboard.json"),
                                                      "checked": len(rows), "untabled": 0, "ok": True}  # fmt: skip
    assert len(payload["leaderboard"]["rows"]) == len(reference["rows"])
    failed = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path / "d"), "--json",
                                 "--check", str(tmp_path / "moved.json"), "--tolerances", str(tables)])  # fmt: skip
    error = json.loads(failed.stdout)["error"]
    assert failed.exit_code == 1 and error["type"] == "CheckFailed" and "does not reproduce" in error["message"]


def test_cli_check_names_a_missing_tolerance_table(tmp_path):
    (tmp_path / "leaderboard.json").write_text(json.dumps(_board(("a", 0.8, 0.5))))
    result = CliRunner().invoke(app, ["bench", "--quick", "--check", str(tmp_path / "leaderboard.json")])
    assert result.exit_code == 3  # not found
    assert "no tolerance table at" in result.stderr and "bench_tolerance.py" in result.stderr
