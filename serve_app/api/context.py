"""What every route reaches: the service's settings, flows, catalogue, jobs and metrics (one per app)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from serve_app.catalog import CatalogView
from serve_app.jobs import JobService
from serve_app.metrics import Metrics
from serve_app.orchestration import Flows
from serve_app.settings import Settings
from serve_app.stages import Stages

logger = logging.getLogger("serve_app")


@dataclass(frozen=True)
class Service:
    """The parts of one app: create_app makes it, the routes get it with `ServiceDep`."""

    settings: Settings
    stages: Stages
    flows: Flows
    catalog: CatalogView
    jobs: JobService  # in this process (LocalJobs), or the JobRunner deployment's (serve_app.job_runner)
    metrics: Metrics
    models_dir: Path  # the packaged base models, served from disk by /tree-models/{filename}

    async def totals(self) -> dict[str, Any]:
        """GET /'s totals: this replica's metrics plus the job work's, where jobs run apart (the JobRunner).

        Requests are counted per ingress replica (with several, each answers its own; Prometheus sums the
        exported `ray_tree_http_requests`); trees, tiles and retries of jobs are the JobRunner's, added here.
        A job service that cannot answer leaves them out rather than fail GET /.
        """
        totals: dict[str, Any] = self.metrics.snapshot()
        try:
            extra = await self.jobs.totals()
        except Exception as exc:  # the totals are informative: never fail GET / over them
            logger.warning("could not read the job service's totals: %s", exc)
            extra = {}
        for name, value in extra.items():
            totals[name] = totals.get(name, 0) + value
        return totals


def get_service(request: Request) -> Service:
    """The Service of the app that answers this request."""
    service = request.app.state.service
    assert isinstance(service, Service)
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
