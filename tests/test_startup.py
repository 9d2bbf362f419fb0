"""Fast start: ``import mechscope`` and ``mechscope --help`` import no heavy dependency; lazy names still resolve."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mechscope as ms

SRC = Path(ms.__file__).resolve().parent.parent
HEAVY = ("torch", "captum", "matplotlib", "jax", "scipy", "sklearn", "sqlite3", "transformers", "mechscope.core")


def _modules_after(code: str, *args: str) -> tuple[set[str], str]:
    """Modules loaded after running ``code`` (given ``args``) in a fresh interpreter, and what it printed."""
    probe = f"import sys, json\ntry:\n    {code}\nexcept SystemExit:\n    pass\nprint(json.dumps(list(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True, check=True)
    printed, _, last = done.stdout.rstrip("\n").rpartition("\n")
    return set(json.loads(last)), printed


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY}


def test_import_mechscope_imports_no_heavy_dependency():
    modules, _ = _modules_after("import mechscope")
    assert "mechscope" in modules
    assert _heavy(modules) == set()


def test_method_families_import_no_plotting_or_heavy_optional_dependency():
    families = ("circuits", "features", "attribution", "visualize", "lenses", "trojans", "graphs", "organisms", "bench")
    modules, _ = _modules_after("; ".join(f"import mechscope.{f}" for f in families))
    assert {m.split(".")[0] for m in modules} & {"captum", "matplotlib", "jax", "tracr", "scipy", "sklearn"} == set()


def test_top_level_help_imports_no_torch_and_lists_every_command():
    from mechscope.cli._lazy import COMMANDS

    modules, printed = _modules_after("from mechscope.cli import app; app()", "--help")
    assert _heavy(modules) == set()
    for name in ("sites", "run", "demo", "bench", *COMMANDS):
        assert f" {name} " in printed


def test_a_family_command_imports_only_its_own_module():
    modules, printed = _modules_after("from mechscope.cli import app; app()", "circuit", "--help")
    assert "--method" in printed
    assert "mechscope.cli._circuits" in modules
    assert {"mechscope.cli._features", "mechscope.cli._attribution", "mechscope.cli._visualize"}.isdisjoint(modules)


def test_lazy_command_table_matches_what_the_modules_register():
    from mechscope.cli._lazy import COMMANDS, load

    for module in sorted({module for module, _ in COMMANDS.values()}):
        registered = load(module)
        assert sorted(registered) == sorted(n for n, (m, _) in COMMANDS.items() if m == module), module
        for name, command in registered.items():
            first_paragraph = " ".join((command.help or "").split("\n\n")[0].split())
            assert COMMANDS[name][1] == first_paragraph, f"update the summary of {name!r} in cli/_lazy.py"


def test_cli_default_model_is_the_cores():
    from mechscope.cli._common import DEFAULT_MODEL
    from mechscope.core import DEFAULT_MODEL as CORE_DEFAULT

    assert DEFAULT_MODEL == CORE_DEFAULT


def test_public_names_resolve_lazily_and_are_listed():
    import mechscope.core

    assert set(ms.__all__) <= set(dir(ms))
    for name in ms.__all__:
        value = getattr(ms, name)
        assert value is getattr(mechscope.core, name, None) or value.__name__ == f"mechscope.{name}"
    namespace: dict = {}
    exec("from mechscope import *", namespace)
    assert set(ms.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ms.nonexistent  # noqa: B018
