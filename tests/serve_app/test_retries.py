"""call_with_retries: replica deaths are retried, then 503; the replica's own errors pass through unwrapped."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from serve_app.errors import ServiceUnavailableError, status_for
from serve_app.serve_stages import call_with_retries, unwrap
from treecore.errors import InvalidImageError


def _run(calls: list[BaseException | str], attempts: int = 3) -> tuple[str | BaseException, int]:
    tried = 0
    retried = 0

    async def call() -> str:
        nonlocal tried
        outcome = calls[min(tried, len(calls) - 1)]
        tried += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def on_retry() -> None:
        nonlocal retried
        retried += 1

    try:
        result: str | BaseException = asyncio.run(
            call_with_retries(call, what="detecting tile 0", attempts=attempts, backoff_s=0.001, on_retry=on_retry)
        )
    except BaseException as exc:  # noqa: BLE001 - the test looks at whatever came out
        result = exc
    return result, retried


def test_a_dead_replica_is_retried() -> None:
    assert _run([ActorDiedError(), "trees"]) == ("trees", 1)


def test_retries_exhausted_is_a_503_with_a_message() -> None:
    error, retried = _run([ActorDiedError()], attempts=3)
    assert isinstance(error, ServiceUnavailableError) and retried == 2
    assert status_for(error) == 503 and "3 times" in str(error)


def test_backpressure_is_a_503_without_retry() -> None:
    error, retried = _run([BackPressureError(num_queued_requests=10, max_queued_requests=10)])
    assert isinstance(error, ServiceUnavailableError) and retried == 0 and "capacity" in str(error)


def test_replica_errors_come_out_unwrapped() -> None:
    cause = InvalidImageError("PNG is truncated")
    wrapped = RayTaskError("detect", "Traceback ...", cause).as_instanceof_cause()
    assert unwrap(wrapped) is cause
    error, retried = _run([wrapped])
    assert error is cause and retried == 0 and status_for(error) == 400


@pytest.mark.parametrize("attempts", [1, 2])
def test_attempts_are_honoured(attempts: int) -> None:
    assert _run([ActorDiedError()], attempts=attempts)[1] == attempts - 1
