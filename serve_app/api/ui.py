"""The planner's tuning page: static files under /ui (no build step), with a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from serve_app.api.middleware import UI_PREFIX, ASGIApp, Message, Receive, Scope, Send

#: Where the page's files live (packaged with serve_app: pyproject's package-data has static/**).
UI_DIR = Path(__file__).resolve().parents[1] / "static" / "ui"
#: Only the page's own files run; the canvas draws the user's image from a blob: URL; the page calls only its own
#: service (a SAS download_url is a link the user follows: navigation, which connect-src does not govern).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class _PageHeaders:
    """Adds the page's Content-Security-Policy, `Referrer-Policy` and `Cache-Control` to every response under /ui.

    `no-cache` makes browsers revalidate (ETag, 304), so a new release's page is never mixed with an old app.js.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through, adding the headers to the response start."""

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await self.app(scope, receive, sending)


def mount_ui(app: FastAPI, directory: Path = UI_DIR) -> None:
    """Serve the tuning page at /ui/ (index.html, app.js, style.css) and redirect /ui to /ui/.

    The page's URLs are relative, so it works under a root_path (Serve's route_prefix, an ingress prefix).

    Args:
        app: the service's app.
        directory: folder of the page's files.
    """

    @app.get(UI_PREFIX, include_in_schema=False)
    async def ui_redirect() -> RedirectResponse:
        # Relative, so the browser resolves it against whatever prefix (and scheme) it used to reach us.
        return RedirectResponse("ui/", status_code=307)

    app.mount(UI_PREFIX, _PageHeaders(StaticFiles(directory=directory, html=True)), name="ui")
