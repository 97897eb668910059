"""The JobRunner deployment: the job table and the jobs' work, apart from the ingress; and `ServeJobs`, the
ingress's JobService over its handle.

The ingress only checks a POST /jobs and forwards its spec and image here; the job then runs in this replica
(the flows over handles to TileSplitter, Detector and ModelAssembler, as the ingress's own), so a restarted
ingress, or any of several ingress replicas, reads the same jobs. The table is one replica's memory: the
deployment runs one replica (more would each hold a part of the table) that takes no CPU (its work is
bookkeeping and awaiting the other deployments).
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.jobs import JobRecord, JobSpec, LocalJobs
from serve_app.metrics import RayMetrics
from serve_app.orchestration import Flows
from serve_app.serve_stages import ServeStages, StageOptions, call_with_retries
from serve_app.settings import Settings


# One replica and no CPU are what this deployment is (the table is one replica's memory), not tuning: they
# hold wherever it is bound; serve_config.yaml says the same.
@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class JobRunner:
    """Runs the jobs: submit, get and cancel them by id (the routes' JobService, through `ServeJobs`)."""

    def __init__(
        self,
        settings: Settings,
        splitter: DeploymentHandle[Any],
        detector: DeploymentHandle[Any],
        assembler: DeploymentHandle[Any],
        options: StageOptions,
    ) -> None:
        """The flows over the pipeline's handles, and an empty table bounded by the settings' job limits."""
        logging.getLogger("serve_app").setLevel(settings.log_level)
        self.metrics = RayMetrics()
        stages = ServeStages(splitter, detector, assembler, options, self.metrics)
        self.jobs = LocalJobs(Flows(stages, settings, self.metrics), settings)

    async def submit(self, spec: JobSpec, data: bytes) -> JobRecord:
        """Start a job (see LocalJobs.submit; TooManyJobsError past MAX_RUNNING_JOBS or MAX_JOBS)."""
        return await self.jobs.submit(spec, data)

    async def get(self, job_id: str) -> JobRecord:
        """A job by id (JobNotFoundError when unknown or expired)."""
        return await self.jobs.get(job_id)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job's task (its stage calls in flight are dropped) and answer the state it settled to."""
        return await self.jobs.cancel(job_id)

    def totals(self) -> dict[str, int]:
        """This replica's metric totals (trees, tiles, retries of the jobs' work)."""
        snapshot = self.metrics.snapshot()
        return {name: int(value) for name, value in snapshot.items() if name != "requests"}


class ServeJobs:
    """JobService over the JobRunner's handle (the ingress's side); calls are retried when its replica dies."""

    def __init__(self, runner: DeploymentHandle[Any], attempts: int) -> None:
        """Calls to `runner`, `attempts` tries each (a replica being replaced answers 503 after them)."""
        self.runner, self.attempts = runner, attempts

    async def submit(self, spec: JobSpec, data: bytes) -> JobRecord:
        """JobRunner.submit."""
        record: JobRecord = await call_with_retries(
            lambda: self.runner.submit.remote(spec, data), what="starting the job", attempts=self.attempts
        )
        return record

    async def get(self, job_id: str) -> JobRecord:
        """JobRunner.get."""
        record: JobRecord = await call_with_retries(
            lambda: self.runner.get.remote(job_id), what="reading the job", attempts=self.attempts
        )
        return record

    async def cancel(self, job_id: str) -> JobRecord:
        """JobRunner.cancel."""
        record: JobRecord = await call_with_retries(
            lambda: self.runner.cancel.remote(job_id), what="cancelling the job", attempts=self.attempts
        )
        return record

    async def totals(self) -> dict[str, int]:
        """JobRunner.totals (one try: GET / does not wait for a replica being replaced)."""
        totals: dict[str, int] = await call_with_retries(
            lambda: self.runner.totals.remote(), what="reading the job totals", attempts=1
        )
        return totals

    async def close(self) -> None:
        """Nothing: the jobs run on in the JobRunner when an ingress replica stops."""
