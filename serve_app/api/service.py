"""Routes of the service itself: GET /health (the legacy body) and GET / (version, limits, pipeline, totals)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serve_app import __version__
from serve_app.api.context import ServiceDep
from serve_app.schemas import HealthResponse, InfoResponse

SERVICE = "tree-detection"
#: The legacy backend's /health message, kept word for word (clients may compare it).
HEALTH_MESSAGE = "Python FastAPI backend is running"

router = APIRouter(tags=["service"])


@router.get("/health", response_model=HealthResponse)
async def health() -> dict[str, Any]:
    """Liveness: 200 while the ingress answers (the legacy body, plus the version)."""
    return {"status": "ok", "service": SERVICE, "message": HEALTH_MESSAGE, "version": __version__}


@router.get("/", response_model=InfoResponse)
async def info(service: ServiceDep) -> dict[str, Any]:
    """Service info: version, limits, storage, pipeline deployments, totals."""
    settings = service.settings
    return {
        "service": SERVICE,
        "version": __version__,
        "docs": "/docs",
        "limits": {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_image_pixels": settings.max_image_pixels,
            "max_trees_limit": settings.max_trees_limit,
            "large_model_threshold": settings.large_model_threshold,
            "max_jobs": settings.max_jobs,
            "max_running_jobs": settings.max_running_jobs,
        },
        "storage": settings.storage_kind,
        "pipeline": service.stages.describe(),
        "api_key_required": bool(settings.api_key),
        "totals": await service.totals(),
    }
