"""The memory admission without Ray: the budget's queue (order, bound, timeout, release on error and cancel, 413),
the estimates, the settings, the 503's Retry-After through the app, and Ray's failures mapped to 503."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from ray.exceptions import OutOfMemoryError, RayTaskError, WorkerCrashedError

from serve_app.admission import (
    MB,
    MemoryBudget,
    default_budget_bytes,
    detect_need_bytes,
    generate_need,
    generate_need_bytes,
    memory_limit_bytes,
    tile_bytes,
)
from serve_app.errors import (
    MemoryNeedTooLargeError,
    ServiceBusyError,
    ServiceUnavailableError,
    error_headers,
    status_for,
)
from serve_app.serve_stages import call_with_retries
from serve_app.settings import Settings
from tests.serve_app.conftest import LEGACY_FORM, local_client
from treecore.types import DetectionParams


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """One event loop per test, as in a replica."""
    return asyncio.run(main())


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


def budget(total: int = 100, queue: int = 4, wait_s: float = 60) -> MemoryBudget:
    """A budget of `total` bytes."""
    return MemoryBudget(total, queue_length=queue, max_wait_s=wait_s)


def test_work_that_fits_runs_at_once_and_gives_its_share_back() -> None:
    async def main() -> None:
        b = budget()
        async with b.admit(60, "a"):
            assert b.in_use == 60
            async with b.admit(40, "b"):
                assert b.in_use == 100
        assert b.in_use == 0

    run(main)


def test_waiters_are_served_first_come_first_served_and_no_later_one_passes_the_head() -> None:
    async def main() -> None:
        b = budget(queue=8)
        order: list[str] = []
        hold = asyncio.Event()

        async def work(name: str, need: int) -> None:
            async with b.admit(need, name):
                order.append(name)
                await hold.wait()

        first = asyncio.create_task(work("first", 70))
        await settle()
        big = asyncio.create_task(work("big", 60))  # does not fit beside first: waits
        await settle()
        small = asyncio.create_task(work("small", 10))  # would fit now, but must not pass "big"
        await settle()
        assert order == ["first"] and b.waiting == 2
        hold.set()
        await asyncio.gather(first, big, small)
        assert order == ["first", "big", "small"] and b.in_use == 0

    run(main)


def test_a_full_queue_is_a_503_with_retry_after_at_once() -> None:
    async def main() -> None:
        b = budget(queue=1)
        async with b.admit(100, "holder"):
            waiter = asyncio.create_task(b.acquire(50, "waiter"))
            await settle()
            with pytest.raises(ServiceBusyError) as refused:
                await b.acquire(10, "a 4096 x 4096 image")
            waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        err = refused.value
        assert status_for(err) == 503 and err.retry_after_s >= 1
        assert "a 4096 x 4096 image" in str(err) and error_headers(err) == {"Retry-After": str(err.retry_after_s)}
        assert b.in_use == 0 and b.waiting == 0

    run(main)


def test_without_waiting_what_does_not_fit_is_refused_at_once() -> None:
    async def main() -> None:
        b = budget(wait_s=0)
        async with b.admit(90, "holder"):
            with pytest.raises(ServiceBusyError):
                await b.acquire(20, "x")
            async with b.admit(10, "fits"):
                assert b.in_use == 100

    run(main)


def test_a_wait_that_runs_out_is_a_503_and_leaves_the_queue_to_the_next() -> None:
    async def main() -> None:
        b = budget(wait_s=0.05)
        holder = asyncio.Event()

        async def hold() -> None:
            async with b.admit(80, "holder"):
                await holder.wait()

        task = asyncio.create_task(hold())
        await settle()
        with pytest.raises(ServiceBusyError, match="waited"):
            await b.acquire(50, "late")
        assert b.waiting == 0 and b.in_use == 80
        holder.set()
        await task
        assert b.in_use == 0

    run(main)


def test_a_head_that_gives_up_lets_the_smaller_ones_behind_it_in() -> None:
    async def main() -> None:
        b = budget(wait_s=60)
        async with b.admit(70, "holder"):
            big = asyncio.create_task(b.acquire(50, "big"))
            await settle()
            small = asyncio.create_task(b.acquire(20, "small"))
            await settle()
            assert not small.done()  # behind big
            big.cancel()  # the client went away
            await settle()
            assert small.done() and b.in_use == 90 and b.waiting == 0
            b.release(20)
        assert b.in_use == 0

    run(main)


def test_the_share_is_given_back_on_error_and_on_cancel() -> None:
    async def main() -> None:
        b = budget()
        with pytest.raises(ValueError):
            async with b.admit(60, "fails"):
                raise ValueError("boom")
        assert b.in_use == 0

        started = asyncio.Event()

        async def long() -> None:
            async with b.admit(60, "cancelled"):
                started.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(long())
        await started.wait()
        assert b.in_use == 60
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b.in_use == 0

    run(main)


def test_a_waiter_cancelled_as_it_is_granted_gives_its_share_back() -> None:
    async def main() -> None:
        b = budget()
        b.in_use = 100  # held by someone else
        waiter = asyncio.create_task(b.acquire(50, "w"))
        await settle()
        b.release(100)  # grants the waiter...
        waiter.cancel()  # ...and it is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert b.in_use == 0 and b.waiting == 0

    run(main)


def test_a_need_over_the_whole_budget_is_a_413_not_a_wait() -> None:
    async def main() -> None:
        b = budget(total=100 * MB)
        with pytest.raises(MemoryNeedTooLargeError, match="MEMORY_BUDGET_BYTES") as refused:
            await b.acquire(101 * MB, "a 20000 x 20000 image")
        assert status_for(refused.value) == 413 and b.waiting == 0 and b.in_use == 0

    run(main)


def test_busy_errors_pickle_with_their_retry_time() -> None:
    err = pickle.loads(pickle.dumps(ServiceBusyError("busy", retry_after_s=7)))
    assert isinstance(err, ServiceBusyError) and err.retry_after_s == 7 and str(err) == "busy"
    assert error_headers(ServiceUnavailableError("a replica died")) == {"Retry-After": "5"}
    assert error_headers(MemoryNeedTooLargeError("too big")) == {}


def test_the_estimates_grow_with_the_work_and_follow_the_method() -> None:
    def need(size: int, gsd: float, method: str, upload: int = 0) -> int:
        params = DetectionParams(real_width=size * gsd, real_height=size * gsd, method=method)
        return detect_need_bytes(size, size, upload, params)

    assert need(4096, 0.5, "heatmap") > need(2048, 0.5, "heatmap") > need(1024, 0.5, "heatmap")
    assert need(4096, 0.5, "watershed") > need(4096, 0.5, "heatmap") > need(4096, 0.5, "legacy")
    assert need(4096, 0.5, "heatmap") > need(4096, 0.1, "heatmap")  # 0.1 m is shrunk 4x for the network
    assert need(4096, 1.0, "heatmap") > need(4096, 0.5, "heatmap")  # 1 m is enlarged 2x
    assert need(4096, 0.5, "legacy", upload=50 * MB) > need(4096, 0.5, "legacy")
    # The figure per tile megapixel (the Detector's bound): heatmap at 0.5 m 18 MB, legacy 10 MB.
    shape = (4096, 4096)
    assert tile_bytes(10**6, shape, DetectionParams(real_width=2048, real_height=2048)) == 18 * MB
    assert tile_bytes(10**6, shape, DetectionParams(real_width=2048, real_height=2048, method="legacy")) == 10 * MB
    assert generate_need_bytes(20_000, "obj", stored=False) > generate_need_bytes(20_000, "obj", stored=True)
    assert generate_need_bytes(20_000, "glb", stored=False) < generate_need_bytes(20_000, "zip", stored=False)


def test_the_generate_need_comes_from_the_tree_count_of_the_body() -> None:
    class Flows:
        settings = Settings(max_trees_limit=1000, large_model_threshold=100)

    trees = [{"x": 0, "y": 0, "diameter": 3}] * 50
    inline, what = generate_need(Flows(), {"trees": trees}, "tree_lowpoly")
    assert inline == generate_need_bytes(50, "obj", stored=False) and what == "a scene of 50 trees"
    stored, _ = generate_need(Flows(), trees * 3, "tree_lowpoly", fmt="zip")
    assert stored == generate_need_bytes(150, "zip", stored=True)
    # Over the tree limit or not a list: only the fixed part (the flow refuses it with its own 4xx).
    assert generate_need(Flows(), trees * 30, "tree_lowpoly")[0] == generate_need_bytes(0, "obj", stored=False)
    assert generate_need(Flows(), {"trees": "no"}, "tree_lowpoly")[0] == generate_need_bytes(0, "obj", stored=False)


def test_the_default_budget_is_half_the_memory_within_the_container() -> None:
    physical = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    assert 0 < memory_limit_bytes() <= int(physical) * 1024
    assert default_budget_bytes() == int(memory_limit_bytes() * 0.5 / 3)  # two Ingress replicas and the JobRunner
    assert MemoryBudget.from_settings(Settings()).total == default_budget_bytes()
    assert MemoryBudget.from_settings(Settings(memory_budget_bytes=123 * MB)).total == 123 * MB


def test_the_settings_read_the_admission_variables() -> None:
    env = {"MEMORY_BUDGET_BYTES": "4000000000", "ADMISSION_QUEUE_LENGTH": "3", "ADMISSION_WAIT_S": "0"}
    settings = Settings.from_env(env)
    assert (settings.memory_budget_bytes, settings.admission_queue_length, settings.admission_wait_s) == (
        4_000_000_000,
        3,
        0,
    )
    assert Settings.from_env({}).memory_budget_bytes == 0


def test_through_the_app_a_need_over_the_budget_is_413_and_a_taken_budget_503_with_retry_after(
    tmp_path: Path, scene_png: bytes
) -> None:
    files = {"image": ("scene.png", scene_png, "image/png")}
    with local_client(tmp_path, memory_budget_bytes=10 * MB) as client:
        response = client.post("/detect-trees", files=files, data=LEGACY_FORM)
        assert response.status_code == 413 and "MEMORY_BUDGET_BYTES" in response.json()["detail"]
    with local_client(tmp_path, memory_budget_bytes=2000 * MB, admission_wait_s=0) as client:
        flows = client.app.state.service.flows  # type: ignore[attr-defined]
        assert client.post("/detect-trees", files=files, data=LEGACY_FORM).status_code == 200
        flows.budget.in_use = flows.budget.total  # every byte taken by other requests
        response = client.post("/detect-trees", files=files, data=LEGACY_FORM)
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        assert "memory" in response.json()["detail"]
        trees = {"trees": [{"x": 1.0, "y": 1.0, "diameter": 3.0}]}
        response = client.post("/generate-model", json=trees)
        assert response.status_code == 503 and "Retry-After" in response.headers
        flows.budget.in_use = 0
        assert client.post("/generate-model", json=trees).status_code == 200


@pytest.mark.parametrize("error", [OutOfMemoryError("node low on memory"), WorkerCrashedError()])
def test_ray_out_of_memory_and_crashed_workers_are_503_never_500(error: Exception) -> None:
    async def fail() -> str:
        raise error

    async def wrapped() -> str:
        raise RayTaskError("detect", "Traceback ...", error).as_instanceof_cause()

    for call in (fail, wrapped):
        with pytest.raises(ServiceUnavailableError) as caught:
            asyncio.run(call_with_retries(call, what="detecting tile 0", attempts=3, backoff_s=0.001))
        assert status_for(caught.value) == 503 and type(error).__name__ in str(caught.value)
