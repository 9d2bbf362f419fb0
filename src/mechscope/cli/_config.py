"""Command-line options built from method configs: one declaration gives ``--method`` choices and every option.

``method_options(registry)`` decorates a typer command. It adds one ``--field-name`` option for every field of every
declared method's config (help from the field's docstring, the default shown per method), and passes the values the
user gave as ``settings`` (a dict of field name -> value) to the command, which builds the chosen method's config
with ``config_for(spec, settings)``. An option that does not belong to the chosen method is an error naming the
methods it does belong to. Fields whose type cannot be typed on a command line (tensors, callables) are not offered.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..core._registry import ConfigField, MethodSpec, Registry, plain_type

_SIMPLE = (int, float, str, bool)


def _cli_type(annotation: Any) -> Any | None:
    """The type an option of this annotation takes (typer turns a ``Literal`` into choices), or None if none."""
    inner, _ = plain_type(annotation)
    if typing.get_origin(inner) is typing.Literal:
        choices = typing.get_args(inner)
        return inner if all(isinstance(c, str | int) and not isinstance(c, bool) for c in choices) else None
    return inner if inner in _SIMPLE else None


def _fields_by_name(
    specs: Sequence[MethodSpec[Any, Any]], skip: Sequence[str]
) -> dict[str, list[tuple[str, ConfigField]]]:
    by_name: dict[str, list[tuple[str, ConfigField]]] = {}
    for spec in specs:
        for f in spec.fields():
            if f.name not in skip and _cli_type(f.type) is not None:
                by_name.setdefault(f.name, []).append((spec.name, f))
    return by_name


def _help(uses: list[tuple[str, ConfigField]], n_methods: int) -> str:
    text = next((f.help for _, f in uses if f.help), "").replace("\n", " ")
    defaults = {repr(f.default) for _, f in uses if f.default is not dataclasses.MISSING}
    if len(uses) == n_methods and len(defaults) == 1:
        return escape(f"{text} [default: {defaults.pop()}]")
    each = ", ".join(f"{m}: {f.default!r}" if f.default is not dataclasses.MISSING else m for m, f in uses)
    return escape(f"{text} [{each}]")


def method_choice(registry: Registry[Any, Any], *, tag: str | None = None) -> Any:
    """A ``Literal`` of the declared method names (typer shows and checks them as choices)."""
    return typing.Literal[tuple(registry.names(tag=tag))]


def method_options(
    registry: Registry[Any, Any], *, skip: Sequence[str] = (), choice: str = "method", tag: str | None = None
) -> Callable[[Callable[..., Any]], Any]:
    """Add the options of every method declared in ``registry`` to a command that takes ``settings``.

    The command's parameter named ``choice`` (if any) takes the declared names (those with ``tag`` when given) as
    its choices. Options and choices are read from the registry each time typer builds the command line, so a
    method declared after the command (a plug-in, a test's ``registry.added(spec)``) is offered too.
    """

    def wrap(command: Callable[..., Any]) -> Any:
        return _MethodCommand(command, registry, tuple(skip), choice, tag)

    return wrap


class _MethodCommand:
    """A command whose signature is the command's own plus one option per config field of the registry's methods."""

    def __init__(
        self, command: Callable[..., Any], registry: Registry[Any, Any], skip: tuple[str, ...], choice: str,
        tag: str | None,
    ) -> None:  # fmt: skip
        self._command, self._registry, self._skip, self._choice, self._tag = command, registry, skip, choice, tag
        self.__name__, self.__qualname__ = command.__name__, command.__qualname__
        self.__doc__, self.__module__ = command.__doc__, command.__module__

    def _fields(self) -> dict[str, list[tuple[str, ConfigField]]]:
        return _fields_by_name(self._registry.specs(), self._skip)

    @property
    def __signature__(self) -> inspect.Signature:  # read by typer when it builds the command line
        by_name, n_specs = self._fields(), len(self._registry)
        base = inspect.signature(self._command)
        hints = typing.get_type_hints(self._command, include_extras=True)
        params = [p.replace(annotation=self._annotation(p.name, hints.get(p.name, p.annotation)))
                  for p in base.parameters.values() if p.name != "settings"]  # fmt: skip
        taken = {p.name for p in params}
        for name, uses in by_name.items():
            if name in taken:
                raise ValueError(f"{self._registry.family} config field {name!r} clashes with an option of the command")
            py = _cli_type(uses[0][1].type)
            assert py is not None  # _fields_by_name keeps only the fields that have a CLI type
            flag = name.replace("_", "-")
            option = typer.Option(
                f"--{flag}/--no-{flag}" if py is bool else f"--{flag}",
                help=_help(uses, n_specs),
                show_default=False,
                rich_help_panel="Method settings",
            )
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[py | None, option]))  # fmt: skip
        return base.replace(parameters=params)

    def _annotation(self, name: str, annotation: Any) -> Any:
        """The choice parameter's annotation with today's method names; any other annotation unchanged."""
        if name != self._choice:
            return annotation
        names = method_choice(self._registry, tag=self._tag)
        inner, meta = annotation, ()
        if typing.get_origin(annotation) is Annotated:
            inner, meta = typing.get_args(annotation)[0], annotation.__metadata__
        base, optional = plain_type(inner)
        if typing.get_origin(base) is list:  # typer takes no list of choices: the registry checks each name instead
            return annotation
        choice: Any = names
        if optional:
            choice = choice | None
        return Annotated[(choice, *meta)] if meta else choice

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return {p.name: p.annotation for p in self.__signature__.parameters.values()}

    def __call__(self, **kwargs: Any) -> Any:
        by_name = self._fields()
        settings = {n: kwargs.pop(n) for n in by_name if kwargs.get(n) is not None}
        for n in by_name:
            kwargs.pop(n, None)
        return self._command(settings=settings, **kwargs)


def config_for(spec: MethodSpec[Any, Any], settings: dict[str, Any], *, option_owner: Registry[Any, Any]) -> Any:
    """``spec``'s config from command-line ``settings``; an option of another method is an error saying whose."""
    known = {f.name: f for f in spec.fields()}
    for name in settings:
        if name not in known:
            owners = [s.name for s in option_owner.specs() if name in {f.name for f in s.fields()}]
            raise ValueError(f"--{name.replace('_', '-')} is a setting of {', '.join(owners)}, not of {spec.name}")
    return spec.make_config(**settings)


def configs_for(
    specs: Sequence[MethodSpec[Any, Any]], settings: dict[str, Any], *, option_owner: Registry[Any, Any]
) -> list[Any]:
    """One config per chosen method (a command that runs several): each takes the settings its config has.

    A setting that none of the chosen methods has is an error saying whose it is.
    """
    names = {s.name for s in specs}
    for name in settings:
        if not any(name in {f.name for f in s.fields()} for s in specs):
            owners = [s.name for s in option_owner.specs() if name in {f.name for f in s.fields()}]
            raise ValueError(f"--{name.replace('_', '-')} is a setting of {', '.join(owners)}, not of "
                             f"{', '.join(sorted(names))}")  # fmt: skip
    return [s.make_config(**{k: v for k, v in settings.items() if k in {f.name for f in s.fields()}}) for s in specs]
