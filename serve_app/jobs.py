"""Background jobs: long detections (and detect-then-generate) that outlive the HTTP request.

A job runs as an asyncio task in the ingress replica, so it survives the client going away. The table is
bounded: at most `max_jobs` entries (finished ones are dropped oldest first to make room), at most
`max_running` running at once, and finished jobs are removed `ttl_s` seconds after they end.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from serve_app.errors import JobNotFoundError, TooManyJobsError, error_body, status_for
from serve_app.progress import Progress

logger = logging.getLogger("serve_app")

#: Job states; "succeeded", "failed" and "cancelled" are final.
FINAL_STATES = ("succeeded", "failed", "cancelled")
#: Seconds DELETE /jobs/{id} waits at most for a cancelled job to settle.
CANCEL_SETTLE_S = 10.0


@dataclass
class Job:
    """One job: its progress while it runs, then its result or its error."""

    id: str
    kind: str
    created_at: float
    state: str = "queued"
    progress: Progress = field(default_factory=Progress)
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The GET /jobs/{id} body."""
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "stage": self.progress.stage,
            "progress": self.progress.as_dict(),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }
        if self.result is not None:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        return body


Work = Callable[[Progress], Awaitable[dict[str, Any]]]


class JobTable:
    """Jobs by id, bounded in number and age."""

    def __init__(self, *, max_jobs: int, max_running: int, ttl_s: float, clock: Callable[[], float] = time.time):
        """An empty table.

        Args:
            max_jobs: most jobs kept (running and finished).
            max_running: most jobs running at once.
            ttl_s: seconds a finished job is kept.
            clock: epoch seconds (injectable for tests).
        """
        self.max_jobs, self.max_running, self.ttl_s, self.clock = max_jobs, max_running, ttl_s, clock
        self._jobs: dict[str, Job] = {}

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
                del self._jobs[job_id]

    def submit(self, kind: str, work: Work) -> Job:
        """Start a job now.

        Args:
            kind: "detect" or "detect-and-generate".
            work: the coroutine function; it gets the job's Progress and returns the result dict.

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
            del self._jobs[finished.pop(0).id]
        if len(self._jobs) >= self.max_jobs:
            raise TooManyJobsError(f"the job table is full ({self.max_jobs} jobs); try again later")
        job = Job(id=secrets.token_urlsafe(12), kind=kind, created_at=self.clock())
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, work), name=f"job-{job.id}")
        job.task.add_done_callback(lambda _: self._settle(job))
        return job

    def _settle(self, job: Job) -> None:
        # A task cancelled before it started never ran _run: without this it would stay "queued", counted as
        # running, for ever.
        if job.finished_at is None:
            job.state, job.finished_at, job.task = "cancelled", self.clock(), None

    async def _run(self, job: Job, work: Work) -> None:
        job.state = "running"
        try:
            job.result = await work(job.progress)
            job.state, job.progress.stage = "succeeded", "done"
        except asyncio.CancelledError:
            job.state = "cancelled"
        except Exception as exc:  # a job's error is its result: reported, never raised into the loop
            job.state = "failed"
            job.error = {"status": status_for(exc), **error_body(exc)}
            if status_for(exc) >= 500:
                logger.warning("job %s failed: %s", job.id, exc)
        finally:
            job.finished_at = self.clock()
            job.task = None

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
        """Cancel every running job and wait for them (replica shutdown)."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
