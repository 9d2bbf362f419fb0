"""The method families' commands, registered by name and imported only when used.

Each family's commands live in their own module with a ``register(app)`` function, and those modules import torch
and the family. The top-level group lists them by the one-line summaries below without importing anything; a
command's module is imported when the command runs, when its own ``--help`` is asked, or when the shell completes
its options. ``tests/test_startup.py`` checks that this table names every command the modules register, with the
first paragraph of each command's own help.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from ._errors import debugging, passes_through, report, report_usage, reset, wants_json

# Click's classes are typed loosely (Any) here: typer 0.29 vendors its own click (typer._click), older ones use click.

# command -> (module that registers it, the first paragraph of its help); in the order the top-level help lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "harvest": ("_features", "Harvest activations at SITES over a corpus into a sharded, resumable safetensors store."),
    "dict": ("_features", "Train and evaluate sparse dictionaries on an activation store."),
    "features": ("_features", "Build and browse a feature database."),
    "explain": (
        "_autointerp",
        "Explain every latent of a feature database in words (resumable; rows stored in the database).",
    ),
    "score": (
        "_autointerp",
        "Score an explainer's stored explanations (with chance level and a shuffled-explanation baseline).",
    ),
    "attribute": (
        "_attribution",
        "Explain a vision model's decisions on images (PNG overlays), or a language model's tokens (HTML).",
    ),
    "patch": (
        "_circuits",
        "Patch every node of KIND for a task's clean/corrupt pairs; save a heatmap and the effects (1 = clean).",
    ),
    "circuit": (
        "_circuits",
        "Find a circuit for a task (EAP, EAP-IG, ACDC, …) and measure its faithfulness against random circuits.",
    ),
    "visualize": (
        "_visualize",
        "Feature visualisation of UNIT (and its dataset exemplars), and/or class prototypes; PNGs + JSON.",
    ),
    "lens": (
        "_lenses",
        "Every layer's top next tokens after PROMPT, read through a lens (table or JSON), and their heatmap PNG.",
    ),
    "train-lens": (
        "_lenses",
        "Train a tuned lens (resumable), then score it against the logit lens on held-out text (table/JSON + PNG).",
    ),
    "serve": (
        "_serve",
        "Start the explorer, a local web app: prompt lab, attention, logit lens, circuits, graphs, bench, features.",
    ),
    "weights": (
        "_weights",
        "Read attention heads from the weights: OV/QK singular directions as tokens, composition, or head types.",
    ),
    "similarity": (
        "_weights",
        "Linear CKA (debiased) or SVCCA between every pair of sites, over the tokens of a corpus; heatmap PNG.",
    ),
    "probe": (
        "_weights",
        "Cross-validated linear probe at a site for labelled texts, with a control task and selectivity.",
    ),
    "audit-trojans": (
        "_trojans",
        "Reverse-engineer a trigger per class of an image classifier (Neural Cleanse); name anomalous classes.",
    ),
    "steer": (
        "_weights",
        "CAA steering vectors from a task's pairs at every layer, swept over scales: behaviour change vs damage (KL).",
    ),
    "graph": (
        "_graphs",
        "Build the attribution graph of PROMPT from per-layer transcoders; prune, score, save JSON and HTML.",
    ),
    "methods": (
        "_methods",
        "List every family's declared methods: summary, tags, result type and settings (--json: config schemas).",
    ),
}


def load(module: str) -> dict[str, Any]:
    """The click commands that ``mechscope.cli.<module>.register`` adds, by name."""
    registers = typer.Typer()
    importlib.import_module(f"{__package__}.{module}").register(registers)
    return dict(typer.main.get_group(registers).commands)


class _Deferred(TyperCommand):
    """Stands for a command whose module is not imported yet: lists with its summary, loads when used."""

    def __init__(self, name: str, summary: str, group: LazyGroup) -> None:
        super().__init__(name, help=summary)
        self._group = group

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        # Every way in (running, its --help, shell completion) makes a context first: hand it the real command's.
        real = self._group.real_command(self.name or "")
        return real.make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """The top-level group: its own commands, plus the families' commands of ``COMMANDS``, imported when used."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (_, summary) in COMMANDS.items():
            self.commands.setdefault(name, _Deferred(name, summary, self))

    def parse_args(self, ctx: Any, args: list[str]) -> Any:
        reset(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; whatever it raises becomes one line (or JSON) and a documented exit status."""
        try:
            return super().invoke(ctx)
        except BaseException as err:
            if debugging():
                raise
            if passes_through(err):
                if wants_json() and hasattr(err, "format_message"):  # a usage error, as JSON
                    raise typer.Exit(report_usage(err)) from None
                raise
            raise typer.Exit(report(err)) from None

    def real_command(self, name: str) -> Any:
        """The command ``name``, importing its module (and registering all of that module's commands) if needed."""
        command = self.commands[name]
        if isinstance(command, _Deferred):
            loaded = load(COMMANDS[name][0])
            for other, real in loaded.items():
                if isinstance(self.commands.get(other), _Deferred):
                    self.commands[other] = real
            command = self.commands[name]
            if isinstance(command, _Deferred):
                raise RuntimeError(f"mechscope.cli.{COMMANDS[name][0]} registers no command {name!r}")
        return command
