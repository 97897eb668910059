"""The app factory: one FastAPI app over the flows, the catalogue and the jobs, with every router mounted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serve_app import __version__
from serve_app.api import detect, downloads, jobs, models, service
from serve_app.api.context import Service
from serve_app.api.docs import mount_docs
from serve_app.api.middleware import ApiKeyMiddleware, BodyLimitMiddleware, HeadersAndMetricsMiddleware
from serve_app.api.ui import mount_ui
from serve_app.catalog import CatalogView
from serve_app.errors import STATUS_CODES, add_exception_handlers
from serve_app.jobs import JobService, LocalJobs
from serve_app.metrics import Metrics
from serve_app.orchestration import Flows
from serve_app.schemas import ErrorResponse
from serve_app.settings import Settings
from serve_app.stages import Stages
from treecore.basemodels import DEFAULT_MODELS_DIR

#: Every status the error map can give, documented on every route.
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in sorted({*STATUS_CODES.values(), 401}) if code != 500
}


def create_app(
    settings: Settings,
    stages: Stages,
    catalog: CatalogView,
    *,
    metrics: Metrics | None = None,
    models_dir: Path = DEFAULT_MODELS_DIR,
    job_service: JobService | None = None,
) -> FastAPI:
    """The service's FastAPI app.

    Args:
        settings: process settings (limits, storage, API key, CORS).
        stages: the pipeline (Serve deployment handles, or in-process stages).
        catalog: the base-model catalogue (where the storage is).
        metrics: request and pipeline metrics (default: in-memory only).
        models_dir: folder of the packaged base tree models, whose files /tree-models/{filename} serves from
            disk (the same folder the model stage loads them from; other models come through the catalogue).
        job_service: where jobs run (default: a table in this process, over these stages; on Serve the JobRunner's).

    Returns:
        The app.
    """
    metrics = metrics if metrics is not None else Metrics()
    flows = Flows(stages, settings, metrics)
    job_service = job_service if job_service is not None else LocalJobs(flows, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await job_service.close()  # shutdown: jobs running here are cancelled, not orphaned

    app = FastAPI(
        lifespan=lifespan,
        title="Tree detection",
        version=__version__,
        description="Trees from aerial and satellite image tiles, and 3D tree scenes from those trees.",
        responses=_ERRORS,
        docs_url=None,  # mount_docs serves /docs and /redoc from packaged files, not from a CDN
        redoc_url=None,
    )
    app.state.service = Service(settings, stages, flows, catalog, job_service, metrics, models_dir=models_dir)
    for module in (service, detect, models, downloads, jobs):
        app.include_router(module.router)
    add_exception_handlers(app)
    mount_ui(app)  # the tuning page at /ui/ (static files; open without the API key)
    mount_docs(app, api_key_required=bool(settings.api_key))  # /docs, /redoc (open without the API key)
    _add_middleware(app, settings, metrics)
    return app


#: Request headers a browser on another origin may send: the API key (either form), the body's type, and the
#: content negotiation of /detect-trees (Accept is always allowed, named for clarity).
CORS_ALLOW_HEADERS = ("x-api-key", "authorization", "content-type", "accept")
#: Response headers cross-origin JavaScript may read: the MTL of an inline OBJ, the scene's file name and tree count,
#: when to retry a 429/503, and the negotiation's Vary.
CORS_EXPOSE_HEADERS = ("X-Mtl-Url", "X-Total-Trees", "Content-Disposition", "Retry-After", "Vary")
#: How long a browser may cache a preflight's answer, seconds.
CORS_MAX_AGE_S = 600


def _add_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """From the innermost out: the upload limit, the API key, CORS (when configured), then headers and metrics.

    CORS sits outside the API key, so a preflight (which never carries the key) is answered before the key is
    checked, and a 401 carries Access-Control-Allow-Origin, so a page on an allowed origin can read it. No
    credentials mode: the key travels in a header, never in a cookie.
    """
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=list(CORS_ALLOW_HEADERS),
            expose_headers=list(CORS_EXPOSE_HEADERS),
            max_age=CORS_MAX_AGE_S,
        )
    app.add_middleware(HeadersAndMetricsMiddleware, metrics=metrics)
