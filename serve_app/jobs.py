"""Background jobs: long detections (and detect-then-generate) that outlive the HTTP request and the ingress.

What a job is lives here, apart from HTTP: its spec (`JobSpec`: everything the request asked, serializable),
its work (`run_job`, over the flows), its record (`JobRecord`: state, progress, result; what GET /jobs/{id}
reads) and the table that runs them (`JobTable`). The routes reach jobs through one interface, `JobService`:
`LocalJobs` runs the table in this process (tests, and the ingress outside Serve); on Ray Serve the table runs
in the one-replica JobRunner deployment (serve_app.job_runner), so any ingress replica, or a restarted one,
reads the same jobs.

The table is bounded: at most `max_jobs` entries (finished ones are dropped oldest first to make room), at
most `max_running` running at once, and finished jobs are removed `ttl_s` seconds after they end.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from serve_app.errors import JobNotFoundError, TooManyJobsError, error_body, status_for
from serve_app.formats import FORMATS, ModelFormat
from serve_app.orchestration import Flows, StoredScene
from serve_app.progress import Progress
from serve_app.settings import Settings
from serve_app.stages import RasterSource
from treecore.basemodels import DEFAULT_MODEL
from treecore.geo import detection_geojson
from treecore.types import DetectionParams, Georeference

logger = logging.getLogger("serve_app")

#: Job states; "succeeded", "failed" and "cancelled" are final.
FINAL_STATES = ("succeeded", "failed", "cancelled")
#: Seconds DELETE /jobs/{id} waits at most for a cancelled job to settle.
CANCEL_SETTLE_S = 10.0
JobKind = Literal["detect", "detect-and-generate"]


@dataclass(frozen=True)
class JobSpec:
    """What a POST /jobs asked, checked and serializable (it crosses to the JobRunner replica; no request in it).

    `geojson`: answer the detection as GeoJSON, placed by `georef` (None: the image's metric frame), as
    /detect-trees does with format=geojson. `warnings`: the request's (ignored form fields), given back in the
    detection. `base_model`, `model_format`: the scene of a detect-and-generate job. `raster`: a raster in
    storage (POST /jobs `image_ref`), detected window by window; None: the job's upload (its bytes beside the spec).
    """

    kind: JobKind
    params: DetectionParams
    warnings: tuple[str, ...] = ()
    geojson: bool = False
    georef: Georeference | None = None
    base_model: str = DEFAULT_MODEL
    model_format: ModelFormat = FORMATS[0]
    raster: RasterSource | None = None


@dataclass(frozen=True)
class JobResult:
    """A finished job's result: the detection as answered (JSON or GeoJSON), and a detect-and-generate job's
    stored scene with the epoch seconds it was stored at (its links are made when the job is read, from the
    reading request's base URL; its expiry counts from `stored_at`)."""

    detection: dict[str, Any]
    scene: StoredScene | None = None
    stored_at: float | None = None


@dataclass(frozen=True)
class JobRecord:
    """A job as GET /jobs/{id} reads it, at one moment (a copy: serializable, never updated)."""

    id: str
    kind: str
    state: str
    progress: dict[str, Any]
    created_at: float
    finished_at: float | None
    result: JobResult | None = None
    error: dict[str, Any] | None = None


async def run_job(flows: Flows, spec: JobSpec, data: bytes, progress: Progress) -> JobResult:
    """A job's work: the detection, shaped as asked, then (detect-and-generate) the stored scene.

    Args:
        flows: the flows over the stages.
        spec: the job.
        data: the uploaded image's bytes (empty for a job over a raster in storage, `spec.raster`).
        progress: updated as stages and tiles finish.

    Returns:
        The result.
    """
    if spec.raster is not None:
        detection = await flows.detect_raster(spec.raster, spec.params, progress, warnings=list(spec.warnings))
    else:
        detection = await flows.detect(data, spec.params, progress, warnings=list(spec.warnings))
    shown = geojson_detection(detection, spec.georef) if spec.geojson else detection
    if spec.kind == "detect":
        return JobResult(shown)
    scene = await flows.generate(detection, spec.base_model, progress, fmt=spec.model_format, store=True)
    assert isinstance(scene, StoredScene)  # store=True: always stored
    return JobResult(shown, scene, time.time())


def geojson_detection(detection: dict[str, Any], georef: Georeference | None) -> dict[str, Any]:
    """A detection as GeoJSON, the detection's warnings (ignored fields) before the GeoJSON's (georeference),
    as /detect-trees answers it."""
    geojson = detection_geojson(detection, georef)
    return {**geojson, "warnings": [*detection.get("warnings", ()), *geojson.get("warnings", ())]}


#: The error of a job whose work stopped because the job service restarted (or shut down) under it.
INTERRUPTED = {
    "status": 503,
    "detail": "the job was interrupted by a restart of the job service before it finished; resubmit it",
}


class Journal(Protocol):
    """Where a table keeps a copy of its records, so that they outlive the process that runs the jobs."""

    def save(self, record: JobRecord) -> None:
        """Keep (or replace) a job's record."""
        ...

    def remove(self, job_id: str) -> None:
        """Forget a job (expired, or dropped to make room)."""
        ...

    def load(self) -> list[JobRecord]:
        """Every record kept, in no order."""
        ...


@dataclass
class Job:
    """One job: its progress while it runs, then its result or its error."""

    id: str
    kind: str
    created_at: float
    state: str = "queued"
    progress: Progress = field(default_factory=Progress)
    finished_at: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def record(self) -> JobRecord:
        """A copy of the job as it is now (what GET /jobs/{id} reads)."""
        result = self.result if isinstance(self.result, JobResult) else None
        return JobRecord(
            self.id,
            self.kind,
            self.state,
            self.progress.as_dict(),
            self.created_at,
            self.finished_at,
            result,
            None if self.error is None else dict(self.error),
        )


Work = Callable[[Progress], Awaitable[Any]]


class JobTable:
    """Jobs by id, bounded in number and age."""

    def __init__(
        self,
        *,
        max_jobs: int,
        max_running: int,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
    ):
        """A table with the jobs of `journal` (none without one).

        Args:
            max_jobs: most jobs kept (running and finished).
            max_running: most jobs running at once.
            ttl_s: seconds a finished job is kept.
            clock: epoch seconds (injectable for tests).
            journal: where each record is copied when a job starts and when it ends. A table made over it reads
                the jobs back: finished ones as they ended (expired ones dropped), unfinished ones, whose
                work stopped with the process that ran it, as failed with the INTERRUPTED error.
        """
        self.max_jobs, self.max_running, self.ttl_s, self.clock = max_jobs, max_running, ttl_s, clock
        self.journal = journal
        self._jobs: dict[str, Job] = {}
        self._closing = False
        if journal is not None:
            self._restore(journal.load())

    def _restore(self, records: list[JobRecord]) -> None:
        records = sorted(records, key=lambda r: r.created_at)
        for record in records[: -self.max_jobs]:  # beyond MAX_JOBS (lowered since): the oldest go
            self._jobs[record.id] = Job(record.id, record.kind, record.created_at)
            self._forget(record.id)
        for record in records[-self.max_jobs :]:
            job = Job(record.id, record.kind, record.created_at, record.state, Progress(**record.progress))
            job.finished_at, job.result, job.error = record.finished_at, record.result, record.error
            if job.state not in FINAL_STATES:
                job.state, job.finished_at, job.error = "failed", self.clock(), dict(INTERRUPTED)
                self._save(job)
            self._jobs[job.id] = job
        self._expire()

    def _save(self, job: Job) -> None:
        if self.journal is not None:
            try:
                self.journal.save(job.record())
            except Exception as exc:  # the copy is a safeguard: never fail a job over it
                logger.warning("could not keep job %s in the journal: %s", job.id, exc)

    def _forget(self, job_id: str) -> None:
        del self._jobs[job_id]
        if self.journal is not None:
            try:
                self.journal.remove(job_id)
            except Exception as exc:
                logger.warning("could not remove job %s from the journal: %s", job_id, exc)

    def __len__(self) -> int:
        """Jobs held now."""
        return len(self._jobs)

    def running(self) -> int:
        """Jobs not yet finished."""
        return sum(job.state not in FINAL_STATES for job in self._jobs.values())

    def _expire(self) -> None:
        now = self.clock()
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > self.ttl_s:
                self._forget(job_id)

    def submit(self, kind: str, work: Work) -> Job:
        """Start a job now.

        Args:
            kind: "detect" or "detect-and-generate".
            work: the coroutine function; it gets the job's Progress and returns the result (a JobResult).

        Returns:
            The job (state "queued" until its task starts).

        Raises:
            TooManyJobsError: too many running, or the table is full of running jobs.
        """
        self._expire()
        if self.running() >= self.max_running:
            raise TooManyJobsError(f"{self.max_running} jobs are running already; try again when one has finished")
        finished = sorted(
            (j for j in self._jobs.values() if j.finished_at is not None), key=lambda j: j.finished_at or 0
        )
        while len(self._jobs) >= self.max_jobs and finished:
            self._forget(finished.pop(0).id)
        if len(self._jobs) >= self.max_jobs:
            raise TooManyJobsError(f"the job table is full ({self.max_jobs} jobs); try again later")
        job = Job(id=secrets.token_urlsafe(12), kind=kind, created_at=self.clock())
        self._jobs[job.id] = job
        self._save(job)
        job.task = asyncio.create_task(self._run(job, work), name=f"job-{job.id}")
        job.task.add_done_callback(lambda _: self._settle(job))
        return job

    def _settle(self, job: Job) -> None:
        # A task cancelled before it started never ran _run: without this it would stay "queued", counted as
        # running, for ever.
        if job.finished_at is None:
            job.state, job.finished_at, job.task = "cancelled", self.clock(), None
            self._save(job)

    async def _run(self, job: Job, work: Work) -> None:
        job.state = "running"
        try:
            job.result = await work(job.progress)
            job.state, job.progress.stage = "succeeded", "done"
        except asyncio.CancelledError:
            job.state, job.error = ("failed", dict(INTERRUPTED)) if self._closing else ("cancelled", None)
        except Exception as exc:  # a job's error is its result: reported, never raised into the loop
            job.state = "failed"
            job.error = {"status": status_for(exc), **error_body(exc)}
            if status_for(exc) >= 500:
                logger.warning("job %s failed: %s", job.id, exc)
        finally:
            job.finished_at = self.clock()
            job.task = None
            if self.journal is not None:  # off the loop: a large result takes a moment to copy
                await asyncio.to_thread(self._save, job)

    def get(self, job_id: str) -> Job:
        """A job by id.

        Args:
            job_id: the id POST /jobs returned.

        Returns:
            The job.

        Raises:
            JobNotFoundError: unknown or expired.
        """
        self._expire()
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id!r} (unknown, or removed {self.ttl_s:.0f} s after it ended)")
        return job

    async def cancel(self, job_id: str, *, settle_s: float = CANCEL_SETTLE_S) -> Job:
        """Cancel a running job and wait (at most `settle_s`) until it has settled (a finished one is left as it is).

        Args:
            job_id: the id.
            settle_s: seconds to wait for the job's task to end (a stage call in flight is dropped at once,
                so this is a bound, not a delay).

        Returns:
            The job, in its final state ("cancelled", or what it ended as meanwhile); still "running" only
            when its task did not end within `settle_s`.
        """
        job = self.get(job_id)
        task = job.task
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=settle_s)
            if task.done():
                self._settle(job)  # a task cancelled before it started: its done callback may not have run yet
        return job

    async def close(self) -> None:
        """Stop every running job and wait for them (replica shutdown): they end failed, INTERRUPTED."""
        self._closing = True
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class JobService(Protocol):
    """Jobs as the routes reach them, wherever the table runs (this process, or the JobRunner deployment)."""

    async def submit(self, spec: JobSpec, data: bytes) -> JobRecord:
        """Start a job (TooManyJobsError when the limits are reached)."""
        ...

    async def get(self, job_id: str) -> JobRecord:
        """A job by id (JobNotFoundError when unknown or expired)."""
        ...

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a running job and answer the state it settled to (a finished job as it is)."""
        ...

    async def totals(self) -> dict[str, int]:
        """Metric totals of the job work counted apart from this process's metrics (empty when none)."""
        ...

    async def close(self) -> None:
        """This process is shutting down (jobs running here are cancelled; jobs elsewhere go on)."""
        ...


class LocalJobs:
    """The job table in this process, running `run_job` over the flows (today's table, behind JobService)."""

    def __init__(
        self,
        flows: Flows,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
    ) -> None:
        """Jobs over `flows`, bounded by MAX_JOBS, MAX_RUNNING_JOBS and JOB_TTL_S from `settings` (see JobTable
        for the journal)."""
        self.flows = flows
        self.table = JobTable(
            max_jobs=settings.max_jobs,
            max_running=settings.max_running_jobs,
            ttl_s=settings.job_ttl_s,
            clock=clock,
            journal=journal,
        )

    async def submit(self, spec: JobSpec, data: bytes) -> JobRecord:
        """Start `run_job` as a task of this event loop (see JobTable.submit)."""
        flows = self.flows

        async def work(progress: Progress) -> JobResult:
            return await run_job(flows, spec, data, progress)

        return self.table.submit(spec.kind, work).record()

    async def get(self, job_id: str) -> JobRecord:
        """See JobTable.get."""
        return self.table.get(job_id).record()

    async def cancel(self, job_id: str) -> JobRecord:
        """See JobTable.cancel."""
        return (await self.table.cancel(job_id)).record()

    async def totals(self) -> dict[str, int]:
        """Nothing apart: the jobs' flows count in the app's own metrics."""
        return {}

    async def close(self) -> None:
        """Cancel every running job (see JobTable.close)."""
        await self.table.close()
