"""What every route reaches: the service's settings, flows, catalogue, job table and metrics (one per app)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from serve_app.catalog import CatalogView
from serve_app.jobs import JobTable
from serve_app.metrics import Metrics
from serve_app.orchestration import Flows
from serve_app.settings import Settings
from serve_app.stages import Stages


@dataclass(frozen=True)
class Service:
    """The parts of one app: create_app makes it, the routes get it with `ServiceDep`."""

    settings: Settings
    stages: Stages
    flows: Flows
    catalog: CatalogView
    jobs: JobTable
    metrics: Metrics
    models_dir: Path  # the packaged base models, served from disk by /tree-models/{filename}


def get_service(request: Request) -> Service:
    """The Service of the app that answers this request."""
    service = request.app.state.service
    assert isinstance(service, Service)
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
