"""``mechscope methods``: every family's declared methods and their config schemas, read from the registries."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

import pytest
from typer.testing import CliRunner

from mechscope.cli import app
from mechscope.cli._methods import FAMILIES, registry
from mechscope.core._registry import MethodSpec, plain_value, type_name

runner = CliRunner()


@dataclass(frozen=True)
class EchoConfig:
    """Settings of a plug-in lens that the test declares."""

    scale: float | None = None
    """How much to scale by (None: leave alone)."""
    mode: Literal["first", "last"] = "last"
    """Which position to read."""
    layers: tuple[int, ...] = (0, 2)
    """Layers to read."""


def _echo(model, inputs, config: EchoConfig) -> str:
    return "echo"


ECHO = MethodSpec(
    "lenses", "echo-lens", EchoConfig, _echo, str, "Echo the prompt back (a plug-in).", frozenset({"toy"})
)


def _methods_json(*args: str) -> dict:
    result = runner.invoke(app, ["methods", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_family_is_listed_from_its_registry():
    families = _methods_json()["families"]
    assert list(families) == list(FAMILIES) and {"circuits", "nodes", "attribution", "visualize", "features",
                                                  "lenses"} <= set(families)  # fmt: skip
    for name, described in families.items():
        reg = registry(name)
        assert described["family"] == reg.family
        assert [m["name"] for m in described["methods"]] == reg.names() and reg.names()
        for m, spec in zip(described["methods"], reg.specs(), strict=True):
            assert m["summary"] == spec.summary and m["tags"] == sorted(spec.tags)
            assert [f["name"] for f in m["fields"]] == [f.name for f in spec.fields()]
    eap = next(m for m in families["circuits"]["methods"] if m["name"] == "eap-ig")
    assert eap["result"] == "EdgeScores" and "edges" in eap["tags"]
    steps = next(f for f in eap["fields"] if f["name"] == "steps")
    assert steps["type"] == "int" and steps["default"] == 5 and steps["required"] is False and steps["help"]
    lens = families["lenses"]["methods"][0]
    assert lens["name"] == "logit-lens" and lens["config"] == "LogitLensConfig"
    assert {f["name"]: f["type"] for f in lens["fields"]} == {"answer": "str | None", "pos": "int", "top_k": "int"}


def test_a_plugin_method_appears_with_its_fields():
    with registry("lenses").added(ECHO):
        lenses = _methods_json("lenses")["families"]
        table = runner.invoke(app, ["methods", "lenses"])
        n_methods = len(registry("lenses"))
    assert list(lenses) == ["lenses"]
    echo = next(m for m in lenses["lenses"]["methods"] if m["name"] == "echo-lens")
    assert echo == {
        "family": "lenses", "name": "echo-lens", "summary": "Echo the prompt back (a plug-in).", "tags": ["toy"],
        "result": "str", "config": "EchoConfig",
        "fields": [
            {"name": "scale", "type": "float | None", "required": False, "default": None,
             "help": "How much to scale by (None: leave alone)."},
            {"name": "mode", "type": "Literal['first', 'last']", "required": False, "default": "last",
             "help": "Which position to read."},
            {"name": "layers", "type": "tuple[int, ...]", "required": False, "default": [0, 2],
             "help": "Layers to read."},
        ],
    }  # fmt: skip
    assert table.exit_code == 0 and f"lenses ({n_methods} methods)" in table.stdout and "│ echo-lens " in table.stdout
    assert "echo-lens" not in json.dumps(_methods_json("lenses"))  # gone after the block


def test_unknown_family_is_an_error():
    result = runner.invoke(app, ["methods", "optics"])
    assert result.exit_code == 1 and "unknown method family 'optics'" in result.stderr


@pytest.mark.parametrize(
    ("annotation", "text"),
    [(int, "int"), (float | None, "float | None"), (list[str], "list[str]"), (Literal["a", 1], "Literal['a', 1]"),
     (dict[str, tuple[int, ...]], "dict[str, tuple[int, ...]]")],
)  # fmt: skip
def test_type_names_read_as_written(annotation, text):
    assert type_name(annotation) == text


def test_defaults_become_json():
    assert plain_value((1, 2.5, "x", None)) == [1, 2.5, "x", None]
    assert plain_value(float("inf")) == "inf" and plain_value({"a": (True,)}) == {"a": [True]}
    assert plain_value(dataclasses.MISSING).startswith("<dataclasses._MISSING_TYPE")
