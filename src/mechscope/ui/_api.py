"""The JSON API's declarations: one table of endpoints makes the router, the checks, ``/api`` and the OpenAPI.

An endpoint declares its path, HTTP method, summary and parameters (name, where it comes from, type, range, help).
``parse`` reads a request's arguments against them: an unknown name, a missing one, a wrong type or a number out
of range is a 400 with a sentence saying what to send. Handlers receive the parsed arguments only.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request

from ._lab import BadRequest

Where = Literal["query", "body", "path"]
_TYPES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
}
MAX_BODY = 256 * 1024
"""Largest JSON body accepted (bytes)."""


@dataclass(frozen=True)
class Param:
    """One argument of an endpoint."""

    name: str
    where: Where
    type: type
    help: str
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": _TYPES[self.type], "description": self.help}
        if self.default is not None:
            s["default"] = self.default
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        return s


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """A JSON endpoint: ``handler(**arguments)`` returns JSON-able data."""

    method: Literal["GET", "POST"]
    path: str
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    model: bool = False
    """Whether it runs on the model worker (queued, one at a time)."""

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "summary": self.summary,
            "uses_model": self.model,
            "params": [{"name": p.name, "in": p.where, **p.schema(), "required": p.required} for p in self.params],
        }


async def parse(endpoint: Endpoint, request: Request) -> dict[str, Any]:
    """The endpoint's arguments from the request, checked (BadRequest otherwise)."""
    given: dict[str, Any] = {}
    body: dict[str, Any] = {}
    if endpoint.method == "POST":
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise BadRequest("send the arguments as a JSON object with Content-Type: application/json")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise BadRequest(f"the request body is {len(raw):,} bytes; at most {MAX_BODY:,} are accepted")
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as err:
            raise BadRequest(f"the request body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object of named arguments")
    query = {k: v for k, v in request.query_params.items() if k != "token"}
    known = {p.name for p in endpoint.params}
    for where, values in (("query", query), ("body", body)):
        if unknown := sorted(set(values) - {p.name for p in endpoint.params if p.where == where}):
            raise BadRequest(
                f"{endpoint.method} {endpoint.path} takes no {where} argument "
                f"{', '.join(map(repr, unknown))}; it takes: {', '.join(sorted(known)) or 'none'}"
            )
    for p in endpoint.params:
        source: dict[str, Any] = (
            dict(request.path_params) if p.where == "path" else query if p.where == "query" else body
        )
        if p.name not in source:
            if p.required:
                raise BadRequest(f"missing argument {p.name!r} ({p.help})")
            given[p.name] = p.default
            continue
        given[p.name] = _coerce(p, source[p.name], from_text=p.where != "body")
    return given


def _coerce(p: Param, value: Any, *, from_text: bool) -> Any:
    kind = ("an " if _TYPES[p.type][0] in "aeiou" else "a ") + _TYPES[p.type]
    try:
        if from_text and p.type in (int, float):
            value = p.type(value)
        elif from_text and p.type is bool:
            value = {"true": True, "1": True, "false": False, "0": False}[str(value).lower()]
    except (ValueError, KeyError):
        raise BadRequest(f"argument {p.name!r} must be {kind}, got {value!r}") from None
    ok = isinstance(value, p.type) and not (p.type is int and isinstance(value, bool))
    if p.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise BadRequest(f"argument {p.name!r} must be {kind}, got {type(value).__name__} {value!r}"[:300])
    if (p.minimum is not None and value < p.minimum) or (p.maximum is not None and value > p.maximum):
        raise BadRequest(f"argument {p.name!r} must be between {p.minimum} and {p.maximum}, got {value!r}")
    return value


def openapi(endpoints: list[Endpoint], title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document of the endpoints (responses are JSON; errors are ``{"error": message}``)."""
    paths: dict[str, Any] = {}
    error = {
        "description": "refused, with a sentence saying why",
        "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}},
    }
    for e in endpoints:
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.method.lower()
            + "_"
            + "_".join(e.path.strip("/").replace("{", "").replace("}", "").split("/")),
            "parameters": [
                {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "schema": p.schema()}
                for p in e.params
                if p.where != "body"
            ],
            "responses": {
                "200": {"description": "JSON", "content": {"application/json": {"schema": {}}}},
                "400": error,
                "401": error,
                "403": error,
                "404": error,
                "500": error,
            },
        }
        if body := [p for p in e.params if p.where == "body"]:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {p.name: p.schema() for p in body},
                            "required": [p.name for p in body if p.required],
                            "additionalProperties": False,
                        }
                    }
                },
            }
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths}
