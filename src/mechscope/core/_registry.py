"""Method registries: every method is declared once — a name, a frozen config dataclass, a function, a result type.

Each method family (circuits, attribution, features, visualize, lenses, …) keeps one ``Registry``. A method joins
it with one declaration next to its code::

    @dataclass(frozen=True)
    class EAPConfig:
        steps: int = 1
        \"\"\"Integration steps (1: plain attribution patching).\"\"\"

    @METHODS.declare("eap", config=EAPConfig, result=EdgeScores)
    def eap(model, task, config: EAPConfig) -> EdgeScores: ...

Everything else is read from that declaration: the command line builds its ``--method`` choices and options from
the config's fields (help from the field docstrings, defaults from the dataclass), the bench scores the method
through its family's one adapter, reports render its result type, and the app serves it. Registration is explicit
and lazy: a registry names the modules that declare its built-in methods and imports them the first time it is
asked for a method, so ``import mechscope`` pays for none of them.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import functools
import importlib
import inspect
import math
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

C = TypeVar("C")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class UnknownMethodError(KeyError):
    """A method name that no registry declares; the message lists the names it does declare."""

    def __str__(self) -> str:  # KeyError quotes its argument; this message is a sentence
        return str(self.args[0])


class ConfigField(NamedTuple):
    """One field of a method's config: what the command line, the app and the docs show for it."""

    name: str
    type: Any
    """The field's annotation, resolved (``int``, ``float | None``, ``Literal["zero", "mean"]``, …)."""
    default: Any
    """The dataclass default (``dataclasses.MISSING`` when the field is required)."""
    help: str
    """The field's docstring (the string literal that follows it in the class body)."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> docstring, read from the class bodies of ``cls`` and its dataclass bases (source needed)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # defined where there is no source (an interactive session)
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, [*body[1:], None], strict=True):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):  # fmt: skip
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def config_fields(cls: type) -> list[ConfigField]:
    """The fields of a config dataclass, with resolved types, defaults and docstrings."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"a method's config must be a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(ConfigField(f.name, hints.get(f.name, Any), default, docs.get(f.name, "")))
    return out


@dataclass(frozen=True)
class MethodSpec(Generic[C, R]):
    """A declared method: everything the CLI, the bench, the report and the app need to run and show it."""

    family: str
    name: str
    config: type[C]
    """Frozen dataclass of the method's settings; ``config()`` must give the defaults."""
    fn: Callable[..., R]
    """The method itself; its last positional parameter is the config (the others depend on the family)."""
    result: type[R] | None
    """What ``fn`` returns (a frozen dataclass / NamedTuple with ``to_dict``), or None where it is not one type."""
    summary: str
    """One line saying what the method does (the function's docstring's first line unless given)."""
    tags: frozenset[str] = frozenset()
    """Free labels a family may use (e.g. ``"edges"``, ``"nodes"``, ``"cnn"``, ``"vit"``, ``"baseline"``)."""

    def fields(self) -> list[ConfigField]:
        """The config's fields (see ``config_fields``)."""
        return config_fields(self.config)

    def make_config(self, **values: Any) -> C:
        """The config with ``values`` set and every other field at its default; unknown names are an error."""
        known = {f.name for f in self.fields()}
        if unknown := sorted(set(values) - known):
            raise ValueError(
                f"{self.family} method {self.name!r} has no setting {', '.join(map(repr, unknown))}; "
                f"its settings are: {', '.join(sorted(known)) or '(none)'}"
            )
        return self.config(**values)

    def describe(self) -> dict[str, Any]:
        """The declaration as plain JSON-able data: name, summary, tags, result type and the config's schema."""
        return {
            "family": self.family,
            "name": self.name,
            "summary": self.summary,
            "tags": sorted(self.tags),
            "result": self.result.__name__ if self.result is not None else None,
            "config": self.config.__name__,
            "fields": [
                {"name": f.name, "type": type_name(f.type), "required": f.default is dataclasses.MISSING,
                 "default": None if f.default is dataclasses.MISSING else plain_value(f.default), "help": f.help}
                for f in self.fields()
            ],
        }  # fmt: skip

    def __call__(self, *args: Any, config: C | None = None, **settings: Any) -> R:
        """Run the method: ``spec(model, task, steps=5)`` or ``spec(model, task, config=cfg)``."""
        if config is not None and settings:
            raise TypeError("give config= or individual settings, not both")
        return self.fn(*args, config if config is not None else self.make_config(**settings))


class Registry(Generic[C, R]):
    """The declared methods of one family, by name; built-in declarations are imported on first use."""

    def __init__(self, family: str, builtins: Sequence[str] = ()) -> None:
        self.family = family
        self._builtins = tuple(builtins)
        self._specs: dict[str, MethodSpec[Any, Any]] = {}
        self._loaded = not self._builtins

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self.names())})"

    def declare(
        self,
        name: str,
        *,
        config: type[Any],
        result: type[Any] | None = None,
        summary: str | None = None,
        tags: Sequence[str] = (),
    ) -> Callable[[F], F]:
        """Decorator: declare ``fn`` as this family's method ``name`` (see the module docstring)."""

        def add(fn: F) -> F:
            doc = inspect.getdoc(fn) or ""
            line = summary if summary is not None else (doc.strip().splitlines() or [""])[0]
            self.add(MethodSpec(self.family, name, config, fn, result, line, frozenset(tags)))
            return fn

        return add

    def add(self, spec: MethodSpec[Any, Any]) -> MethodSpec[Any, Any]:
        """Add (or replace) a method; its config must build with defaults alone."""
        if spec.family != self.family:
            raise ValueError(f"method {spec.name!r} is of family {spec.family!r}, not {self.family!r}")
        config_fields(spec.config)  # a dataclass, or a clear error now rather than at first use
        self._specs[spec.name] = spec
        return spec

    def remove(self, name: str) -> None:
        """Forget a method (plug-ins in tests)."""
        self._specs.pop(name, None)

    @contextmanager
    def added(self, spec: MethodSpec[Any, Any]) -> Iterator[MethodSpec[Any, Any]]:
        """Declare ``spec`` for the duration of a block (tests, notebooks), restoring what was there before."""
        self._load()
        before = self._specs.get(spec.name)
        self.add(spec)
        try:
            yield spec
        finally:
            if before is None:
                self._specs.pop(spec.name, None)
            else:
                self._specs[spec.name] = before

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first, so a declaring module that asks the registry does not recurse
            for module in self._builtins:
                importlib.import_module(module)

    def names(self, *, tag: str | None = None) -> list[str]:
        """Declared method names, in declaration order (only those with ``tag`` when given)."""
        self._load()
        return [n for n, s in self._specs.items() if tag is None or tag in s.tags]

    def specs(self, *, tag: str | None = None) -> list[MethodSpec[Any, Any]]:
        """Declared methods, in declaration order (only those with ``tag`` when given)."""
        return [self._specs[n] for n in self.names(tag=tag)]

    def __getitem__(self, name: str) -> MethodSpec[Any, Any]:
        self._load()
        if (spec := self._specs.get(name)) is not None:
            return spec
        alt = self._specs.get(name.replace("-", "_")) or self._specs.get(name.replace("_", "-"))
        if alt is not None:
            return alt
        close = difflib.get_close_matches(name, list(self._specs), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownMethodError(
            f"unknown {self.family} method {name!r}{hint} (declared: {', '.join(self._specs) or 'none'})"
        )

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._specs

    def __iter__(self) -> Iterator[MethodSpec[Any, Any]]:
        return iter(self.specs())

    def __len__(self) -> int:
        return len(self.names())

    def describe(self) -> dict[str, Any]:
        """Every declared method as plain JSON-able data (see ``MethodSpec.describe``), in declaration order."""
        return {"family": self.family, "methods": [spec.describe() for spec in self.specs()]}


def plain_type(annotation: Any) -> tuple[Any, bool]:
    """``(inner type, optional)`` of an annotation: ``int | None`` -> ``(int, True)``, ``Literal[...]`` unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def type_name(annotation: Any) -> str:
    """An annotation as a person writes it: ``int``, ``float | None``, ``Literal['zero', 'mean']``, ``list[str]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    if isinstance(annotation, list):  # the parameters of a Callable
        return "[" + ", ".join(map(type_name, annotation)) + "]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(map(type_name, args))
    if origin is typing.Literal:
        return "Literal[" + ", ".join(map(repr, args)) + "]"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", None) or repr(origin).removeprefix("typing.")
        return f"{name}[{', '.join(map(type_name, args))}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).removeprefix("typing.")


def plain_value(value: Any) -> Any:
    """A config default as JSON-able data.

    Numbers, strings, booleans and None stay as they are, sequences become lists, mappings dicts, enums their value;
    non-finite floats and anything else become their ``repr``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return plain_value(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_value(v) for v in (sorted(value, key=repr) if isinstance(value, set | frozenset) else value)]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    return repr(value)
