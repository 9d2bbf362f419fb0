"""The explorer's security: who may talk to the server, and what the browser may do with its pages.

The server runs on the user's machine with their model and files, so it trusts only requests that:

- name this server in their ``Host`` header (a page on another site that rebinds its DNS name to 127.0.0.1 sends
  its own name: DNS rebinding), and in their ``Origin`` header when a browser sends one (cross-site requests);
- carry the access token, when the server listens beyond the loopback interface (``--host 0.0.0.0``): as
  ``Authorization: Bearer TOKEN``, as ``?token=TOKEN`` (the URL printed at start-up), or as the cookie the server
  sets when the token came in the URL, so the page's own requests carry it;

and every response forbids the page from running any script but the app's own files (Content-Security-Policy with
no ``unsafe-inline``), from being framed, and from sniffing content types. The page writes data with
``textContent`` only, so text from prompts, corpora and results can never become markup.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "mechscope_token"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""No inline script or style, nothing from elsewhere: the app's own JS, CSS and JSON only."""

HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh access token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values that name this server: its loopback names, and the bound host when it is not."""
    names = {"localhost", "127.0.0.1", "[::1]"}
    if host not in ("0.0.0.0", "::", ""):
        names.add(f"[{host}]" if ":" in host else host)
    return frozenset(n for name in names for n in (name, f"{name}:{port}"))


class Guard:
    """ASGI middleware: refuse foreign ``Host``/``Origin`` and missing tokens; add the security headers.

    ``hosts``: the allowed ``Host`` values (``allowed_hosts``); an ``Origin`` is allowed when its host part is one
    of them. ``token``: required on every request when not None. A server bound to every interface
    (``0.0.0.0``) also accepts requests addressed to the machine's other names, but only with the token.
    """

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str], token: str | None, any_host: bool = False) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token
        self.any_host = any_host
        if any_host and token is None:
            raise ValueError("a server reachable from other machines needs an access token")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _respond(send, *refusal)
            return
        set_cookie = self._cookie_to_set(scope, headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if set_cookie:
                    extra.append((b"set-cookie", set_cookie.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if host not in self.hosts and not (self.any_host and host):
            return 403, f"refused: Host {host!r} is not this server (allowed: {', '.join(sorted(self.hosts))})"
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.netloc != host:
                return 403, f"refused: a request from origin {origin!r} (only this server's own pages may call it)"
        if self.token is not None and not hmac.compare_digest(self._given_token(scope, headers), self.token):
            return 401, "refused: this server needs its access token (the URL printed when it started has it)"
        return None

    def _given_token(self, scope: Scope, headers: dict[str, str]) -> str:
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return auth.removeprefix("Bearer ").strip()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0]
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value
        return ""

    def _cookie_to_set(self, scope: Scope, headers: dict[str, str]) -> str | None:
        if self.token is None or "token=" not in scope.get("query_string", b"").decode("latin-1"):
            return None
        return f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"


async def _respond(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})
