"""The explorer's ASGI app: the page, its static files, and the JSON API of ``ENDPOINTS``.

``create_app(Explorer(...))`` builds a Starlette app wrapped in the security guard (``_security.Guard``). The model
is given once; every endpoint that touches it runs on the one model worker (``_worker.Worker``). Errors come back
as ``{"error": sentence}`` with 400 (bad input), 401/403 (refused), 404 (no such file or method) or 500 (a job
failed); the server keeps serving either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..core._model import Model
from . import _lab, _views
from ._api import Endpoint, Param, openapi, parse
from ._files import PathRefused, Roots
from ._lab import BadRequest
from ._security import Guard, allowed_hosts, is_loopback
from ._worker import Worker

STATIC = Path(__file__).parent / "static"
DISCONNECT_POLL = 0.2
"""Seconds between checks, while a model job waits or runs, that its caller is still connected."""


@dataclass
class Explorer:
    """What the server holds: the model (loaded once), the run directories, the worker, and the access rules."""

    model: Model | None = None
    roots: Roots = field(default_factory=lambda: Roots([]))
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    """Required on every request when set; ``mechscope serve`` generates one for a non-loopback host."""
    max_tokens: int = _lab.DEFAULT_MAX_TOKENS
    dictionary: Any = None
    """A sparse dictionary (``features.load_dictionary``) for the feature pages' *try it* and *steer*."""
    worker: Worker = field(default_factory=Worker)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Circuit runs started from the app (``run:N``), kept in memory for this server's life."""

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"--host {self.host} reaches beyond this machine: an access token is required")

    def circuit(self, ref: str) -> dict[str, Any]:
        """A circuit run's summary: one started from the app (``run:N``) or a file under the roots."""
        if ref.startswith("run:"):
            if ref not in self.runs:
                raise FileNotFoundError(f"no circuit run {ref!r} on this server (see /api/runs)")
            return self.runs[ref]
        return _views.circuit_doc(self.roots.resolve(ref))

    def need_model(self) -> Model:
        if self.model is None:
            raise BadRequest("this server has no model loaded (start it with --model NAME)")
        return self.model

    async def on_model(self, name: str, fn: Any, *args: Any) -> Any:
        model = self.need_model()
        return await self.worker.run(name, fn, model, *args)


# --- handlers: each takes the explorer and its parsed arguments ----------------------------------------------------


async def _status(x: Explorer) -> dict[str, Any]:
    import mechscope

    model = _lab.model_info(x.model, x.max_tokens) if x.model is not None else None
    dictionary = None if x.dictionary is None else {"site": x.dictionary.cfg.site, "d_sae": x.dictionary.cfg.d_sae}
    return {
        "version": mechscope.__version__,
        "model": model,
        "dictionary": dictionary,
        "worker": x.worker.stats.to_dict(),
        "roots": x.roots.describe(),
        "token_required": x.token is not None,
    }


async def _methods(x: Explorer) -> dict[str, Any]:
    from ..cli._methods import describe

    return describe()


async def _method(x: Explorer, family: str, name: str) -> dict[str, Any]:
    from ..cli._methods import registry

    return dict(registry(family)[name].describe())


async def _runs(x: Explorer) -> dict[str, Any]:
    found = [f.to_dict() for f in await asyncio.to_thread(x.roots.scan)]
    ran = [
        {"ref": ref, "kind": "circuit", "title": f"{ref}: {d['method']} on {d['task']}"} for ref, d in x.runs.items()
    ]
    return {"roots": x.roots.describe(), "found": found + ran}


def _prompt_job(model: Model, prompt: str, top_k: int, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, prompt, max_tokens)
    return _lab.predictions(model, prompt, top_k)


async def _prompt(x: Explorer, prompt: str, top_k: int) -> dict[str, Any]:
    return await x.on_model("prompt", _prompt_job, prompt, top_k, x.max_tokens)


def _lens_job(model: Model, prompt: str, top_k: int, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, prompt, max_tokens)
    return _lab.lens_grid(model, prompt, top_k)


async def _lens(x: Explorer, prompt: str, top_k: int) -> dict[str, Any]:
    return await x.on_model("lens", _lens_job, prompt, top_k, x.max_tokens)


def _attention_job(model: Model, prompt: str, layer: int, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, prompt, max_tokens)
    return _lab.attention(model, prompt, layer)


async def _attention(x: Explorer, prompt: str, layer: int) -> dict[str, Any]:
    return await x.on_model("attention", _attention_job, prompt, layer, x.max_tokens)


def _dla_job(model: Model, prompt: str, answer: str, wrong: str, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, prompt, max_tokens)
    return _lab.dla(model, prompt, answer, wrong)


async def _dla(x: Explorer, prompt: str, answer: str, wrong: str) -> dict[str, Any]:
    return await x.on_model("dla", _dla_job, prompt, answer, wrong, x.max_tokens)


def _sites_job(model: Model, pattern: str) -> list[dict[str, str]]:
    return [row._asdict() for row in model.sites(pattern)]


async def _sites(x: Explorer, pattern: str) -> dict[str, Any]:
    return {"pattern": pattern, "sites": await x.on_model("sites", _sites_job, pattern)}


def _lens_method_job(model: Model, name: str, prompt: str, settings: dict[str, Any], max_tokens: int) -> Any:
    from ..lenses import METHODS

    _lab.check_prompt(model, prompt, max_tokens)
    spec = METHODS[name]
    return spec(model, prompt, config=spec.make_config(**settings)).to_dict()


async def _run_lens(x: Explorer, name: str, prompt: str, settings: dict[str, Any]) -> Any:
    return await x.on_model(f"lens {name}", _lens_method_job, name, prompt, settings, x.max_tokens)


async def _circuit(x: Explorer, ref: str) -> dict[str, Any]:
    doc = await asyncio.to_thread(x.circuit, ref)
    return _views.circuit_view(doc)


async def _run_circuit(x: Explorer, task: str, n: int, method: str, settings: dict[str, Any]) -> dict[str, Any]:
    doc = await x.on_model(f"circuit {method}", _views.run_circuit, task, n, method, settings)
    ref = f"run:{len(x.runs)}"
    x.runs[ref] = doc
    return {"ref": ref, **_views.circuit_view(doc)}


async def _verify(x: Explorer, ref: str, edge: str) -> dict[str, Any]:
    doc = await asyncio.to_thread(x.circuit, ref)
    return await x.on_model("verify edge", _views.verify_edge, doc, edge)


def _try_job(model: Model, dictionary: Any, text: str, latent: int, max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, text, max_tokens)
    return _lab.try_feature(model, dictionary, text, latent)


async def _try(x: Explorer, text: str, latent: int) -> dict[str, Any]:
    return await x.on_model("try feature", _try_job, x.dictionary, text, latent, x.max_tokens)


def _steer_job(model: Model, dictionary: Any, args: tuple[Any, ...], max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, args[0], max_tokens)
    return _lab.steer(model, dictionary, *args)


async def _steer(x: Explorer, prompt: str, latent: int, how: str, value: float, max_new_tokens: int) -> Any:
    args = (prompt, latent, how, value, max_new_tokens)
    return await x.on_model("steer", _steer_job, x.dictionary, args, x.max_tokens)


def _attribute_job(model: Model, args: tuple[Any, ...], max_tokens: int) -> dict[str, Any]:
    _lab.check_prompt(model, args[0] + (args[1] or ""), max_tokens)
    return _lab.token_attribution(model, *args)


async def _attribute(x: Explorer, prompt: str, continuation: str | None, max_new_tokens: int, method: str) -> Any:
    args = (prompt, continuation, max_new_tokens, method)
    return await x.on_model("token attribution", _attribute_job, args, x.max_tokens)


async def _bench(x: Explorer, ref: str) -> dict[str, Any]:
    return await asyncio.to_thread(_views.bench_view, x.roots.resolve(ref))


async def _features(x: Explorer, ref: str, by: str, n: int) -> dict[str, Any]:
    return await asyncio.to_thread(_views.feature_list, x.roots.resolve(ref), by, n)


async def _feature(x: Explorer, ref: str, latent: int) -> dict[str, Any]:
    return await asyncio.to_thread(_views.feature_card, x.roots.resolve(ref), latent)


async def _feature_search(x: Explorer, ref: str, text: str, n: int) -> dict[str, Any]:
    return await asyncio.to_thread(_views.feature_search, x.roots.resolve(ref), text, n)


_PROMPT = Param("prompt", "body", str, "The prompt (at most the server's token limit; see /api/status).", required=True)
_REF = Param("ref", "query", str, "A file reference ROOT/PATH, as /api/runs lists them.", required=True)

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/api/status", "The model, the worker's queue and the run directories.", _status),
    Endpoint("GET", "/api/methods", "Every family's declared methods (the registries' describe()).", _methods),
    Endpoint(
        "GET",
        "/api/methods/{family}/{name}",
        "One declared method: summary, tags, result and settings.",
        _method,
        (Param("family", "path", str, "Method family (see /api/methods)."), Param("name", "path", str, "Method name.")),
    ),
    Endpoint("GET", "/api/runs", "Circuit runs, leaderboards and feature databases under the run directories.", _runs),
    Endpoint(
        "POST",
        "/api/prompt",
        "The prompt's tokens and the top-k next tokens with probabilities.",
        _prompt,
        (_PROMPT, Param("top_k", "body", int, "How many next tokens.", 10, minimum=1, maximum=100)),
        True,
    ),
    Endpoint(
        "POST",
        "/api/lens",
        "Logit lens at every layer and position: the top tokens of each cell.",
        _lens,
        (_PROMPT, Param("top_k", "body", int, "Top tokens per cell.", 3, minimum=1, maximum=20)),
        True,
    ),
    Endpoint(
        "POST",
        "/api/attention",
        "Every head's attention pattern at one layer: patterns[head][query][key].",
        _attention,
        (_PROMPT, Param("layer", "body", int, "Layer.", required=True)),
        True,
    ),
    Endpoint(
        "POST",
        "/api/dla",
        "Direct logit attribution of every head and MLP to answer minus wrong.",
        _dla,
        (
            _PROMPT,
            Param("answer", "body", str, "Answer token, e.g. ' Mary'.", required=True),
            Param("wrong", "body", str, "Alternative token, e.g. ' John'.", required=True),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/tokens/attribute",
        "Token attribution: each new token's attribution to every context token (IG or input x gradient).",
        _attribute,
        (
            _PROMPT,
            Param("continuation", "body", str, "Text to attribute (default: the model's greedy continuation)."),
            Param(
                "max_new_tokens", "body", int, "Greedy tokens when no continuation is given.", 4, minimum=1, maximum=16
            ),
            Param("method", "body", str, "integrated_gradients | input_x_gradient.", "integrated_gradients"),
        ),
        True,
    ),
    Endpoint(
        "GET",
        "/api/sites",
        "The model's sites matching a name or glob (unknown names get suggestions).",
        _sites,
        (Param("pattern", "query", str, "Site name or glob, e.g. 'head.0.*'.", "*"),),
        True,
    ),
    Endpoint(
        "POST",
        "/api/lenses/{name}",
        "Run any declared lens on a prompt, with its settings.",
        _run_lens,
        (
            Param("name", "path", str, "Lens name (see /api/methods)."),
            _PROMPT,
            Param("settings", "body", dict, "The lens's settings by name (its config fields).", {}),
        ),
        True,
    ),
    Endpoint(
        "GET",
        "/api/circuit",
        "A circuit run as a layered graph with its edges' scores and the curve.",
        _circuit,
        (_REF,),
    ),
    Endpoint(
        "POST",
        "/api/circuit/run",
        "Find a circuit on a built-in task with any declared circuit method (kept in memory as run:N).",
        _run_circuit,
        (
            Param(
                "task",
                "body",
                str,
                "ioi | greater_than | factual_recall | gendered_pronoun | subject_verb_agreement | induction.",
                required=True,
            ),
            Param("n", "body", int, "Prompt pairs.", 8, minimum=1, maximum=64),
            Param("method", "body", str, "Circuit method (see /api/methods, family circuits).", "eap"),
            Param("settings", "body", dict, "The method's settings by name (its config fields).", {}),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/circuit/verify",
        "Patch one edge of a saved run for real: its effect beside its score's estimate (normalised).",
        _verify,
        (
            Param("ref", "body", str, "The run's reference (see /api/runs).", required=True),
            Param("edge", "body", str, "Edge name, e.g. 'a0.h1->a1.h3<k>'.", required=True),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/feature/try",
        "A latent's activation on every token of a text (needs --dictionary).",
        _try,
        (
            Param("text", "body", str, "Text to run.", required=True),
            Param("latent", "body", int, "Latent index.", required=True, minimum=0),
        ),
        True,
    ),
    Endpoint(
        "POST",
        "/api/feature/steer",
        "Greedy continuations with a latent clamped or scaled, beside the plain one (needs --dictionary).",
        _steer,
        (
            _PROMPT,
            Param("latent", "body", int, "Latent index.", required=True, minimum=0),
            Param("how", "body", str, "clamp (set the latent to value) or scale (multiply it by value).", "clamp"),
            Param("value", "body", float, "The value or factor.", required=True, minimum=-1000, maximum=1000),
            Param("max_new_tokens", "body", int, "Tokens to generate.", 20, minimum=1, maximum=64),
        ),
        True,
    ),
    Endpoint("GET", "/api/bench", "A leaderboard's rows with families, chance and baselines.", _bench, (_REF,)),
    Endpoint(
        "GET",
        "/api/features",
        "A feature database's latents ranked by a statistic.",
        _features,
        (
            _REF,
            Param("by", "query", str, "frequency | mean_activation | max_activation | n_active.", "frequency"),
            Param("n", "query", int, "How many latents.", 50, minimum=1, maximum=1000),
        ),
    ),
    Endpoint(
        "GET",
        "/api/feature",
        "One latent's page: statistics, histogram, top contexts, logit effects.",
        _feature,
        (_REF, Param("latent", "query", int, "Latent index.", required=True, minimum=0)),
    ),
    Endpoint(
        "GET",
        "/api/features/search",
        "Latents that promote a token most.",
        _feature_search,
        (
            _REF,
            Param("text", "query", str, "Token text (with or without its leading space).", required=True),
            Param("n", "query", int, "How many latents.", 20, minimum=1, maximum=1000),
        ),
    ),
]
"""The JSON API: the router, ``/api`` and ``/api/openapi.json`` are made from this table."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _status_of(err: BaseException) -> tuple[int, str]:
    if isinstance(err, PathRefused):
        return 403, str(err)
    if isinstance(err, FileNotFoundError):
        return 404, str(err.args[0] if err.args else err)
    if isinstance(err, KeyError):  # unknown site or method: the message names the closest ones
        return (404 if type(err).__name__ == "UnknownMethodError" else 400), str(err.args[0] if err.args else err)
    if isinstance(err, BadRequest | ValueError | TypeError | IndexError):
        return 400, str(err)
    return 500, f"the job failed: {type(err).__name__}: {err}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return value


def _route(x: Explorer, endpoint: Endpoint) -> Route:
    async def call(request: Request) -> Response:
        try:
            args = await parse(endpoint, request)
            job = asyncio.ensure_future(endpoint.handler(x, **args))
            if endpoint.model:  # a queued job whose caller has gone is cancelled (the worker then skips it)
                while not (await asyncio.wait({job}, timeout=DISCONNECT_POLL))[0]:
                    if await request.is_disconnected():
                        job.cancel()
                        return _error(499, "the client went away; the job was cancelled")
            out = await job
        except Exception as err:  # every failure is the caller's answer; the server goes on
            return _error(*_status_of(err))
        return Response(json.dumps(_jsonable(out), allow_nan=False), media_type="application/json")

    return Route(endpoint.path, call, methods=[endpoint.method], name=endpoint.path)


def create_app(x: Explorer) -> Guard:
    """The explorer's ASGI app over ``x`` (page, static files, JSON API), behind the security guard."""
    import mechscope

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"cache-control": "no-store"})

    async def listing(request: Request) -> Response:
        return JSONResponse(
            {
                "endpoints": [e.describe() for e in ENDPOINTS],
                "openapi": "/api/openapi.json",
                "errors": 'every error is {"error": sentence} with status 400/401/403/404/500',
            }
        )

    async def schema(request: Request) -> Response:
        return JSONResponse(openapi(ENDPOINTS, "mechscope explorer", mechscope.__version__))

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    async def not_found(request: Request) -> Response:
        return _error(404, f"no endpoint {request.method} {request.url.path}; the API is listed at /api")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        x.worker.close()

    routes = [
        Route("/", index),
        Route("/favicon.ico", no_icon),
        Route("/api", listing),
        Route("/api/openapi.json", schema),
        *(_route(x, e) for e in ENDPOINTS),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/{rest:path}", not_found, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    hosts = allowed_hosts(x.host, x.port)
    return Guard(app, hosts=hosts, token=x.token, any_host=x.host in ("0.0.0.0", "::"))


@contextlib.contextmanager
def running(x: Explorer) -> Iterator[str]:
    """Serve ``x`` with uvicorn on a background thread for the block; yields the page's URL (with the token).

    ``x.port`` 0 picks a free port (and sets it). For notebooks, tests and benchmarks; ``mechscope serve`` runs
    the same app in the foreground.
    """
    import socket
    import threading
    import time

    import uvicorn

    if x.port == 0:
        with socket.socket() as s:
            s.bind((x.host, 0))
            x.port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(x), host=x.host, port=x.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="mechscope-explorer", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the explorer did not start on {x.host}:{x.port}")
        time.sleep(0.02)
    host = "127.0.0.1" if x.host in ("0.0.0.0", "::") else x.host
    try:
        yield f"http://{host}:{x.port}/" + (f"?token={x.token}" if x.token else "")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
