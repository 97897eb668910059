"""The JobRunner deployment: the job table and the jobs' work, apart from the ingress; and `ServeJobs`, the
ingress's JobService over its handle.

The ingress only checks a POST /jobs and forwards its spec and image here; the job then runs in this replica
(the flows over handles to TileSplitter, Detector and ModelAssembler, as the ingress's own), so a restarted
ingress, or any of several ingress replicas, reads the same jobs. The table is one replica's memory: the
deployment runs one replica (more would each hold a part of the table) that takes no CPU (its work is
bookkeeping and awaiting the other deployments). Each record is also kept in a journal (`GcsJournal`, Ray's
GCS key-value store), so that a replica restarted after a crash or a redeploy reads the jobs of the one before:
finished ones with their results, unfinished ones as failed ("interrupted ... resubmit"), never gone.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import zlib
from typing import Any

from ray import serve
from ray.experimental import internal_kv
from ray.serve.handle import DeploymentHandle

from serve_app.jobs import JobRecord, JobSpec, LocalJobs
from serve_app.metrics import RayMetrics
from serve_app.orchestration import Flows
from serve_app.serve_stages import ServeStages, StageOptions, call_with_retries
from serve_app.settings import Settings

logger = logging.getLogger("serve_app")

#: The GCS key-value namespace of the job journals (one key per job, prefixed by the application's name).
JOURNAL_NAMESPACE = "tree-detection-jobs"
#: Largest record kept in the journal, bytes (pickled, zlib-compressed): a detection of about 20,000 trees.
#: A finished job over it is kept without its result, and after a restart reads as failed, saying so.
JOURNAL_MAX_RECORD_BYTES = 2_000_000


class GcsJournal:
    """A job table's journal in Ray's GCS key-value store: it outlives the JobRunner replica (and, with GCS
    fault tolerance, as on KubeRay with an external Redis, the head node), not the Ray cluster.

    Records are pickled (they hold dataclasses; only this deployment writes and reads them) and compressed;
    at most JOURNAL_MAX_RECORD_BYTES each, so at most MAX_JOBS times that in all.
    """

    def __init__(self, app_name: str, *, max_record_bytes: int = JOURNAL_MAX_RECORD_BYTES) -> None:
        """The journal of the jobs of application `app_name`."""
        self.prefix, self.max_record_bytes = f"{app_name}/", max_record_bytes

    def save(self, record: JobRecord) -> None:
        """Keep a record; a finished one over the size limit is kept as failed, its result not kept."""
        blob = zlib.compress(pickle.dumps(record), 1)
        if len(blob) > self.max_record_bytes:
            detail = (
                f"the job's result ({len(blob) / 1e6:.1f} MB compressed) was larger than the job service keeps "
                "across a restart of its replica, and that replica restarted; resubmit the job"
            )
            lost = dataclasses.replace(record, state="failed", result=None, error={"status": 503, "detail": detail})
            blob = zlib.compress(pickle.dumps(lost), 1)
        internal_kv._internal_kv_put(self.prefix + record.id, blob, namespace=JOURNAL_NAMESPACE)

    def remove(self, job_id: str) -> None:
        """Forget a job."""
        internal_kv._internal_kv_del(self.prefix + job_id, namespace=JOURNAL_NAMESPACE)

    def load(self) -> list[JobRecord]:
        """Every record kept for this application (an unreadable one is skipped and removed)."""
        records = []
        for key in internal_kv._internal_kv_list(self.prefix, namespace=JOURNAL_NAMESPACE):
            blob = internal_kv._internal_kv_get(key, namespace=JOURNAL_NAMESPACE)
            try:
                record = pickle.loads(zlib.decompress(blob))  # our own records, in our own namespace
                assert isinstance(record, JobRecord)
                records.append(record)
            except Exception as exc:  # e.g. a record of an older version of the service
                logger.warning("dropping an unreadable job record %r: %s", key, exc)
                internal_kv._internal_kv_del(key, namespace=JOURNAL_NAMESPACE)
        return records


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
        """The flows over the pipeline's handles, and the table (bounded by the settings' job limits) with the jobs
        of its journal: those a previous replica of this application left (unfinished ones now failed)."""
        logging.getLogger("serve_app").setLevel(settings.log_level)
        self.metrics = RayMetrics()
        stages = ServeStages(splitter, detector, assembler, options, self.metrics)
        journal = GcsJournal(serve.get_replica_context().app_name)
        self.jobs = LocalJobs(Flows(stages, settings, self.metrics), settings, journal=journal)

    async def __del__(self) -> None:
        """Replica shutdown (a redeploy, a scale-down): running jobs stop, and read as interrupted."""
        await self.jobs.close()

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
