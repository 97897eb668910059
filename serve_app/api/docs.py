"""The API docs: Swagger UI at /docs and ReDoc at /redoc from packaged files (no CDN), and the key in the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from serve_app.api.middleware import DOCS_ASSETS_PREFIX, OPEN_PATHS

#: Swagger UI's and ReDoc's bundles (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png), as
#: the fastapi-offline wheel ships them: package data, so the docs load with no network.
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_PATH, REDOC_PATH, OPENAPI_PATH = "/docs", "/redoc", "/openapi.json"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
#: The pages run their own inline start-up script and the bundles from the service; nothing else leaves the machine
#: (ReDoc's footer asks a CDN for its logo: refused here, it hides it). Swagger's "Try it out" calls this service.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: The security schemes of the OpenAPI schema when an API key is set: what Swagger's Authorize button asks for.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the service's API_KEY"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "the service's API_KEY as a bearer token"},
}


def mount_docs(app: FastAPI, *, api_key_required: bool) -> None:
    """Serve /docs, /redoc and their assets from the package; with a key, declare it in /openapi.json.

    The app must be made with `docs_url=None, redoc_url=None` (FastAPI's own pages load their scripts from a CDN).
    The pages' URLs carry the request's root_path, so they work under Serve's route_prefix.

    Args:
        app: the service's app.
        api_key_required: whether the API key middleware guards the routes (then every operation but the open
            ones lists the two schemes, and Swagger's "Try it out" sends the key given to Authorize).
    """
    app.mount(DOCS_ASSETS_PREFIX, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    def _root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def _guarded(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        page.headers["Referrer-Policy"] = "no-referrer"
        return page

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return _guarded(
            get_swagger_ui_html(
                openapi_url=root + OPENAPI_PATH,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{DOCS_ASSETS_PREFIX}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS_PREFIX}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS_PREFIX}/favicon.png",
                oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
                # No badge from the online validator (it would send the schema's URL out). The key given to Authorize
                # lives in the page only (no persistAuthorization: never written to the browser's storage).
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return _guarded(
            get_redoc_html(
                openapi_url=root + OPENAPI_PATH,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS_PREFIX}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS_PREFIX}/favicon.png",
                with_google_fonts=False,
            )
        )

    if api_key_required:
        _declare_api_key(app)


def _declare_api_key(app: FastAPI) -> None:
    """Wrap app.openapi: the schema gets SECURITY_SCHEMES, and every guarded operation requires one of them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in schema.get("paths", {}).items():
                if path in OPEN_PATHS:
                    continue
                for operation in operations.values():
                    if isinstance(operation, dict):
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
