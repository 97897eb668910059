"""ASGI middleware: upload size limit while streaming, API key, security headers and request metrics."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from serve_app.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes open without the API key: the load balancer's and KubeRay's health checks, and the API's description (the
#: schema and its two viewers hold no data; a browser opening them sends no key, and Swagger's "Try it out" sends
#: the key given to its Authorize button).
OPEN_PATHS = frozenset(
    {"/health", "/-/healthz", "/-/routes", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
#: The tuning page's URL prefix (serve_app/api/ui.py mounts it here).
UI_PREFIX = "/ui"
#: Swagger UI's and ReDoc's scripts and styles (serve_app/api/docs.py mounts them here).
DOCS_ASSETS_PREFIX = "/docs-assets"
#: Path prefixes open without the API key: the tuning page's and the docs' static files, which hold no secrets
#: (the page sends the key its user types on its API calls). Only the prefix itself or a path below it: `/ui`,
#: `/ui/app.js`, never `/uiX`. A path such as `/ui/../jobs` stays inside the /ui mount, whose StaticFiles refuses
#: to leave its folder: the router matches whole paths and never resolves dot segments.
OPEN_PREFIXES = (UI_PREFIX, DOCS_ASSETS_PREFIX)


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006
    data = json.dumps(body).encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start_headers + headers})
    await send({"type": "http.response.body", "body": data})


def _route_path(scope: Scope) -> str:
    # Behind a route prefix (Serve's route_prefix, a proxy's root_path) the path carries the prefix.
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or any(path == prefix or path.startswith(prefix + "/") for prefix in OPEN_PREFIXES)


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413: from Content-Length at once, else while they stream in."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        """Wrap an app.

        Args:
            app: the ASGI app.
            max_bytes: largest accepted request body, bytes.
        """
        self.app, self.max_bytes = app, max_bytes

    def _message(self) -> str:
        return f"the upload is larger than the limit of {self.max_bytes:,} bytes (MAX_UPLOAD_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the bytes as they arrive."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, {"detail": self._message()}, [(b"connection", b"close")])
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the form parser or body read; FastAPI passes an HTTPException through
                    # (any other exception there would become its generic 400).
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)


class ApiKeyMiddleware:
    """With a key set, all but OPEN_PATHS and OPEN_PREFIXES need `Authorization: Bearer <key>` or `X-API-Key`."""

    def __init__(self, app: ASGIApp, *, api_key: str) -> None:
        """Wrap an app.

        Args:
            app: the ASGI app.
            api_key: the key ("" turns the check off).
        """
        self.app, self._key = app, api_key.encode()

    def _given(self, scope: Scope) -> bytes:
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            return auth[7:].strip()
        return headers.get(b"x-api-key", b"").strip()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass, or answer 401 (the key is compared in constant time and never logged)."""
        if scope["type"] != "http" or not self._key or _is_open(_route_path(scope)):
            await self.app(scope, receive, send)
            return
        if hmac.compare_digest(self._given(scope), self._key):
            await self.app(scope, receive, send)
            return
        await _send_json(
            send,
            401,
            {"detail": "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"},
            [(b"www-authenticate", b"Bearer")],
        )


class HeadersAndMetricsMiddleware:
    """Adds `X-Content-Type-Options: nosniff` to every response and counts requests by route and status."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        """Wrap an app.

        Args:
            app: the ASGI app.
            metrics: where requests are counted.
        """
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through, adding the header and counting the status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-content-type-options"]
                message["headers"] = [*headers, (b"x-content-type-options", b"nosniff")]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            self.metrics.request(getattr(route, "path", "unmatched"), status)
