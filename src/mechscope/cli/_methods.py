"""Command line: ``mechscope methods [FAMILY] [--json]``, every family's declared methods, read from the registries.

``FAMILIES`` names each family's registry as ``"module:attribute"``, so listing the families imports nothing; a
registry is imported when its family is listed. Every name, summary, tag, result type and config field shown comes
from the declarations (``Registry.describe``); ``--json`` prints that document as it is.
"""

from __future__ import annotations

import importlib
import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ._common import JsonOpt, user_errors
from ._common import out_console as _out

# family -> "module:attribute" of its registry, in the order `mechscope methods` lists them
FAMILIES: dict[str, str] = {
    "circuits": "mechscope.circuits._registry:METHODS",
    "nodes": "mechscope.circuits._registry:NODE_METHODS",
    "attribution": "mechscope.attribution._registry:METHODS",
    "visualize": "mechscope.visualize._registry:METHODS",
    "features": "mechscope.features._kinds:KINDS",
    "lenses": "mechscope.lenses._registry:METHODS",
    "explainers": "mechscope.autointerp._explainers:EXPLAINERS",
    "scorers": "mechscope.autointerp._scorers:SCORERS",
    "trojans": "mechscope.trojans._registry:METHODS",
    "graphs": "mechscope.graphs._registry:METHODS",
}


def registry(family: str) -> Any:
    """The registry of ``family`` (a key of ``FAMILIES``), imported now."""
    if family not in FAMILIES:
        raise ValueError(f"unknown method family {family!r}; choose from {', '.join(FAMILIES)}")
    module, _, attribute = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), attribute)


def describe(families: list[str] | None = None) -> dict[str, Any]:
    """The declared methods of ``families`` (default: all), as plain data: family -> ``Registry.describe()``."""
    return {"families": {name: registry(name).describe() for name in families or FAMILIES}}


def methods(
    family: Annotated[str | None, typer.Argument(help=f"Only this family: {', '.join(FAMILIES)}.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List every family's declared methods: summary, tags, result type and settings (--json: config schemas)."""
    with user_errors():
        document = describe([family] if family is not None else None)
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    console = _out()
    for name, described in document["families"].items():
        table = Table(title=f"[bold]{escape(name)}[/] ({len(described['methods'])} methods)", title_justify="left")
        for column, style in (("method", "bold cyan"), ("summary", ""), ("tags", "dim"), ("result", ""),
                              ("settings", "dim")):  # fmt: skip
            table.add_column(column, style=style, no_wrap=column == "method")
        for m in described["methods"]:
            fields = "\n".join(f"{f['name']}: {f['type']}" + ("" if f["required"] else f" = {f['default']!r}")
                               for f in m["fields"])  # fmt: skip
            table.add_row(
                *(escape(x) for x in (m["name"], m["summary"], ", ".join(m["tags"]), m["result"] or "", fields))
            )
        console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``methods`` to the main CLI."""
    app.command(name="methods")(methods)
