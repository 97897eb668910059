"""The job table (bounds, expiry, cancel, failures) and the Accept-header negotiation, without HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from scripts.make_sample import make_scene
from serve_app.api.negotiation import expiry_text, model_format, prefers_geojson
from serve_app.errors import JobNotFoundError, TooManyJobsError
from serve_app.jobs import INTERRUPTED, JobRecord, JobResult, JobTable
from serve_app.metrics import Metrics
from serve_app.orchestration import Flows
from serve_app.progress import Progress
from serve_app.settings import Settings
from serve_app.stages import SplitPlan
from treecore.errors import InvalidTreesError
from treecore.types import DetectionParams


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _done(progress: Progress) -> dict[str, Any]:
    return {"ok": True}


async def _forever(progress: Progress) -> dict[str, Any]:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def _broken(progress: Progress) -> dict[str, Any]:
    raise RuntimeError("a bug, not the input")


def test_bounds_expiry_cancel_and_failures() -> None:
    async def scenario() -> None:
        clock = Clock()
        table = JobTable(max_jobs=2, max_running=1, ttl_s=10, clock=clock)
        first = table.submit("detect", _done)
        with pytest.raises(TooManyJobsError, match="running already"):
            table.submit("detect", _done)  # one is running (queued counts)
        await asyncio.sleep(0)
        assert table.get(first.id).state == "succeeded" and table.running() == 0
        broken = table.submit("detect", _broken)
        await asyncio.sleep(0)
        assert broken.state == "failed" and broken.error == {
            "status": 500,
            "detail": "internal error: the service failed on this request; it is logged",
        }
        assert len(table) == 2
        long = table.submit("detect", _forever)  # the table is full of finished jobs: the oldest goes
        assert len(table) == 2 and first.id not in table._jobs
        with pytest.raises(TooManyJobsError):
            table.submit("detect", _done)
        await asyncio.sleep(0)
        assert await table.cancel(long.id) is long
        assert long.state == "cancelled"  # the answer is the settled state, not "running"
        assert (await table.cancel(long.id)).state == "cancelled"  # finished: as it is
        clock.now += 11
        with pytest.raises(JobNotFoundError, match="removed 10 s after"):
            table.get(long.id)
        await table.close()

    asyncio.run(scenario())


def test_cancel_answers_the_settled_state() -> None:
    async def scenario() -> None:
        table = JobTable(max_jobs=5, max_running=5, ttl_s=10)
        unstarted = table.submit("detect", _forever)
        assert (await table.cancel(unstarted.id)).state == "cancelled"  # cancelled before its task ran
        assert unstarted.finished_at is not None and table.running() == 0

        async def stubborn(progress: Progress) -> dict[str, Any]:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.01)  # cleanup that takes a moment (e.g. releasing the image)
                raise
            raise AssertionError("unreachable")

        slow = table.submit("detect", stubborn)
        await asyncio.sleep(0)
        assert (await table.cancel(slow.id)).state == "cancelled"
        done = table.submit("detect", _done)
        await asyncio.sleep(0)
        assert (await table.cancel(done.id)).state == "succeeded"  # it ended first: as it is
        await table.close()

    asyncio.run(scenario())


def test_a_full_table_of_running_jobs_refuses_more() -> None:
    async def scenario() -> None:
        table = JobTable(max_jobs=1, max_running=5, ttl_s=10)
        table.submit("detect", _forever)
        with pytest.raises(TooManyJobsError, match="table is full"):
            table.submit("detect", _forever)
        await table.close()  # cancels the running job and waits for it
        assert table.running() == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("accept", "geojson"),
    [
        (None, False),
        ("application/geo+json", True),
        ("application/json, text/plain, */*", False),
        ("application/geo+json, application/json", False),  # a tie: JSON
        ("application/json;q=0.5, application/geo+json", True),
        ("application/geo+json;q=0.9, application/json;q=0.8", True),
        ("Application/GEO+JSON", True),
        ("application/geo+json;q=high", False),  # a malformed q is 0
        ("application/geo+json;q=2", False),  # out of [0, 1]: 0
        ("text/html", False),
    ],
)
def test_accept_header_negotiation(accept: str | None, geojson: bool) -> None:
    assert prefers_geojson(accept) is geojson


def test_model_format_query_then_body_then_obj() -> None:
    assert model_format(None, {"trees": []}) == "obj"
    assert model_format(None, {"format": "zip"}) == "zip"
    assert model_format("glb", {"format": "zip"}) == "glb"
    assert model_format(None, [1, 2]) == "obj"
    with pytest.raises(InvalidTreesError, match="format must be one of obj, zip, glb"):
        model_format(None, {"format": "fbx"})


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(3600, "1 hour"), (86400, "24 hours"), (7200, "2 hours"), (60, "1 minute"), (90, "90 seconds"), (0, "0 seconds")],
)
def test_expires_in_is_the_legacy_words(seconds: int, words: str) -> None:
    assert expiry_text(seconds) == words
    assert expiry_text(None) == "never"


def test_a_detection_cancelled_during_its_split_releases_the_image(tmp_path: Path) -> None:
    class SlowSplit:
        """Stages whose split takes a moment: the request is cancelled while it runs."""

        def __init__(self) -> None:
            self.released: list[SplitPlan] = []

        async def tile_target(self, shape: tuple[int, int, int]) -> int:
            return 1

        async def split(self, data: bytes, params: DetectionParams, n_tiles: int) -> SplitPlan:
            await asyncio.sleep(0.05)
            return SplitPlan(["ref", "key"], (10, 10, 3), (), 0.0)

        async def release(self, plan: SplitPlan) -> None:
            self.released.append(plan)

    async def scenario() -> None:
        stages = SlowSplit()
        flows = Flows(stages, Settings(generated_models_dir=tmp_path), Metrics())  # type: ignore[arg-type]
        task = asyncio.create_task(flows.detect(make_scene(64), DetectionParams(), Progress()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stages.released == []  # the split is still running in its stage...
        await asyncio.sleep(0.1)
        assert len(stages.released) == 1  # ...and its image is released when it is done

    asyncio.run(scenario())


class MemoryJournal:
    """A journal in a dict (the protocol; serve_app.job_runner.GcsJournal keeps it in Ray's GCS)."""

    def __init__(self) -> None:
        self.records: dict[str, JobRecord] = {}

    def save(self, record: JobRecord) -> None:
        self.records[record.id] = record

    def remove(self, job_id: str) -> None:
        self.records.pop(job_id, None)

    def load(self) -> list[JobRecord]:
        return list(self.records.values())


async def _result(progress: Progress) -> JobResult:
    return JobResult({"total_trees": 3})


def test_a_table_over_a_journal_reads_back_what_a_previous_one_left() -> None:
    clock, journal = Clock(), MemoryJournal()

    async def first_life() -> tuple[str, str, str]:
        table = JobTable(max_jobs=3, max_running=2, ttl_s=10, clock=clock, journal=journal)
        done = table.submit("detect", _result)
        for _ in range(3):
            await asyncio.sleep(0)  # the task runs, then copies its record off the loop
        await asyncio.wait({asyncio.create_task(asyncio.sleep(0.05))})
        running = table.submit("detect", _forever)
        cancelled = table.submit("detect", _forever)
        await asyncio.sleep(0)
        await table.cancel(cancelled.id)
        assert journal.records[running.id].state in ("queued", "running")
        left.records = dict(journal.records)  # the process dies here (no shutdown): `running` never ends
        return done.id, running.id, cancelled.id

    left = MemoryJournal()
    done, running, cancelled = asyncio.run(first_life())
    journal = left
    assert journal.records[done].state == "succeeded" and journal.records[cancelled].state == "cancelled"

    async def second_life() -> None:
        table = JobTable(max_jobs=3, max_running=2, ttl_s=10, clock=clock, journal=journal)
        assert table.get(done).record().result == JobResult({"total_trees": 3})
        assert table.get(cancelled).state == "cancelled"
        interrupted = table.get(running)
        assert interrupted.state == "failed" and interrupted.error == INTERRUPTED and table.running() == 0
        assert "interrupted" in INTERRUPTED["detail"] and "resubmit" in INTERRUPTED["detail"]
        assert journal.records[running].state == "failed"  # written back: a third life reads the same
        clock.now += 11
        with pytest.raises(JobNotFoundError):
            table.get(done)
        assert journal.records == {}  # expired ones leave the journal too

    asyncio.run(second_life())


def test_a_table_shut_down_leaves_its_running_jobs_interrupted() -> None:
    journal = MemoryJournal()

    async def scenario() -> str:
        table = JobTable(max_jobs=3, max_running=2, ttl_s=10, journal=journal)
        job = table.submit("detect", _forever)
        await asyncio.sleep(0)
        await table.close()  # a redeploy: the replica stops its jobs
        assert job.state == "failed" and job.error == INTERRUPTED
        return job.id

    job_id = asyncio.run(scenario())
    assert journal.records[job_id].state == "failed" and journal.records[job_id].error == INTERRUPTED


def test_a_table_over_a_larger_journal_keeps_the_newest_and_forgets_the_rest() -> None:
    journal = MemoryJournal()
    for n in range(3):
        journal.save(JobRecord(f"job{n}", "detect", "succeeded", Progress().as_dict(), 1000.0 + n, 1000.0 + n))
    table = JobTable(max_jobs=1, max_running=1, ttl_s=10, clock=Clock(), journal=journal)
    assert len(table) == 1 and table.get("job2").state == "succeeded" and set(journal.records) == {"job2"}
