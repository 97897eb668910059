"""Service error classes and the one place that maps every error to an HTTP status.

    ServiceError
    ├── JobNotFoundError           no job with that id, or it expired (404)
    ├── TooManyJobsError           the job table or the running-job limit is full (429)
    ├── MemoryNeedTooLargeError    a request needs more memory than the whole admission budget (413)
    └── ServiceUnavailableError    a pipeline stage failed after its retries, or ran out of memory (503)
        └── ServiceBusyError       the memory budget is taken and its queue full, or the wait ran out (503)

Every 503 carries a `Retry-After` header (seconds): the error's own `retry_after_s`, else DEFAULT_RETRY_AFTER_S.

treecore errors (the user's input) and storage errors (the service's storage: 503, but a stored base model
too large to read: 413) are mapped here too, and so is a plain ValueError (422): treecore's writers (objwriter,
gltf) raise it for values they cannot write. The input bounds (serve_app.bounds) refuse such values first,
naming the field; this entry is the backstop, so that no input reaches a 500 through them.
Every exception takes one message argument, so it pickles across Ray replicas unchanged.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serve_app.storage import ModelTooLargeError, StorageError
from treecore.errors import (
    ImageTooLargeError,
    InvalidGeoreferenceError,
    InvalidImageError,
    InvalidMeshError,
    InvalidParametersError,
    InvalidTreesError,
    TooManyTreesError,
    TreecoreError,
    UnknownModelError,
)

logger = logging.getLogger("serve_app")


class ServiceError(Exception):
    """Base class of the errors the service layer raises on purpose."""


class JobNotFoundError(ServiceError):
    """No job has that id (never made, or removed after its time to live)."""


class TooManyJobsError(ServiceError):
    """The job table is full or too many jobs are running; try again later."""


class MemoryNeedTooLargeError(ServiceError):
    """The request needs more memory than the whole admission budget (MEMORY_BUDGET_BYTES): it could never run."""


class ServiceUnavailableError(ServiceError):
    """A pipeline stage (a replica) failed even after its retries, or Ray ran out of memory or workers."""


#: Seconds a 503 without a figure of its own tells the client to wait (its Retry-After header).
DEFAULT_RETRY_AFTER_S = 5


class ServiceBusyError(ServiceUnavailableError):
    """The memory budget is in use and the request cannot wait (queue full, or it waited too long); retry later."""

    def __init__(self, message: str, retry_after_s: int = DEFAULT_RETRY_AFTER_S) -> None:
        """The error.

        Args:
            message: what is busy, and what to do.
            retry_after_s: seconds until a retry may fit (the Retry-After header), at least 1.
        """
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))

    def __reduce__(self) -> tuple[type[ServiceBusyError], tuple[str, int]]:
        """Pickle with the retry time (an error may cross Ray replicas)."""
        return type(self), (str(self), self.retry_after_s)


#: Status code per error class; a subclass not listed takes its nearest listed base class's code.
STATUS_CODES: dict[type[Exception], int] = {
    InvalidImageError: 400,
    InvalidGeoreferenceError: 422,
    InvalidParametersError: 422,
    InvalidTreesError: 422,
    ImageTooLargeError: 413,
    TooManyTreesError: 413,
    UnknownModelError: 404,
    InvalidMeshError: 422,
    TreecoreError: 400,
    JobNotFoundError: 404,
    TooManyJobsError: 429,
    MemoryNeedTooLargeError: 413,
    ServiceUnavailableError: 503,
    ModelTooLargeError: 413,
    StorageError: 503,
    ValueError: 422,
}


def status_for(exc: BaseException) -> int:
    """The HTTP status of an error: its own class's, else its nearest base's, else 500.

    Args:
        exc: the error.

    Returns:
        An HTTP status code.
    """
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500


def retry_after_s(exc: BaseException) -> int | None:
    """Seconds a client should wait before trying again (the Retry-After header), for a 503; else None.

    Args:
        exc: the error.

    Returns:
        The error's own `retry_after_s` (ServiceBusyError), else DEFAULT_RETRY_AFTER_S for a 503, else None.
    """
    if status_for(exc) != 503:
        return None
    return int(getattr(exc, "retry_after_s", DEFAULT_RETRY_AFTER_S))


def error_headers(exc: BaseException) -> dict[str, str]:
    """The headers of an error response: Retry-After on a 503, nothing else.

    Args:
        exc: the error.

    Returns:
        Header names and values.
    """
    seconds = retry_after_s(exc)
    return {} if seconds is None else {"Retry-After": str(seconds)}


def error_body(exc: BaseException) -> dict[str, str]:
    """The JSON body of an error response: {"detail": message}.

    Args:
        exc: the error.

    Returns:
        The body; a 5xx that is not ours says only that the service failed (no trace, no secrets).
    """
    if status_for(exc) == 500:
        return {"detail": "internal error: the service failed on this request; it is logged"}
    return {"detail": str(exc)}


def add_exception_handlers(app: FastAPI, status_codes: dict[type[Exception], int] = STATUS_CODES) -> None:
    """Register one handler per error class that answers {"detail": message} with its status (a 503 with Retry-After).

    Args:
        app: the FastAPI app.
        status_codes: the mapping (default STATUS_CODES).
    """

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc)
        # Only 5xx are the service's fault and worth a log line; 4xx are the caller's input.
        if status >= 500:
            logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return JSONResponse(error_body(exc), status_code=status, headers=error_headers(exc))

    for cls in status_codes:
        app.add_exception_handler(cls, handler)
    app.add_exception_handler(RequestValidationError, validation_handler)


def validation_message(exc: RequestValidationError) -> str:
    """One readable line per invalid field, e.g. "hue_min: Input should be a valid integer (got 'green')".

    Args:
        exc: FastAPI's validation error (form fields, query parameters, missing file).

    Returns:
        The message.
    """
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
        given = error.get("input")
        shown = f" (got {given!r})" if isinstance(given, (str, int, float)) and len(repr(given)) < 80 else ""
        lines.append(f"{field or 'request'}: {error.get('msg', 'invalid')}{shown}")
    return "; ".join(lines) or "invalid request"


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 with a readable `detail` string (the same shape as every other error)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_message(exc)}, status_code=422)
