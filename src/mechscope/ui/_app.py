"""The explorer's ASGI app: the page, its static files, and the JSON API of ``ENDPOINTS``.

``create_app(Explorer(...))`` builds a Starlette app wrapped in the security guard (``_security.Guard``). The model
is given once; every endpoint that touches it runs on the one model worker (``_worker.Worker``). Errors come back
as ``{"error": sentence}`` with 400 (bad input), 401/403 (refused), 404 (no such file or method), 409 (the job was
cancelled) or 500 (a job failed); the server keeps serving either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ._api import Endpoint, openapi, parse
from ._endpoints import ENDPOINTS
from ._explorer import Explorer
from ._files import PathRefused
from ._lab import BadRequest
from ._security import Guard, allowed_hosts
from ._worker import JobCancelled

STATIC = Path(__file__).parent / "static"
DISCONNECT_POLL = 0.2
"""Seconds between checks, while a model job waits or runs, that its caller is still connected."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _status_of(err: BaseException) -> tuple[int, str]:
    if isinstance(err, JobCancelled):
        return 409, str(err)
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
            if endpoint.model:  # a job whose caller has gone is cancelled (dropped, or stopped at its next checkpoint)
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
