"""The pipeline stages and the catalogue as calls to the Serve deployments, retried when a replica dies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_app.catalog import TreeModelEntry
from serve_app.errors import ServiceUnavailableError
from serve_app.formats import InlineModel, ModelFormat
from serve_app.metrics import Metrics
from serve_app.stages import SplitPlan, tile_count_for
from serve_app.storage import StoredModel
from treecore.types import DetectionParams, Tile, Tree

logger = logging.getLogger("ray.serve")
T = TypeVar("T")

#: Errors that mean "the replica went away", not "the input was bad": worth another try elsewhere.
_REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError)


def unwrap(exc: BaseException) -> BaseException:
    """The error a replica raised, without Ray's wrapper (whose message carries a traceback).

    Args:
        exc: an exception from awaiting a deployment response.

    Returns:
        The original exception when it is a RayTaskError with a cause, else exc.
    """
    cause = exc.cause if isinstance(exc, RayTaskError) else None
    return cause if isinstance(cause, BaseException) else exc


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int,
    backoff_s: float = 0.5,
    on_retry: Callable[[], None] = lambda: None,
) -> T:
    """Await a deployment call, retrying when its replica died (our calls are idempotent).

    Args:
        call: makes and awaits one call (a new DeploymentResponse each time).
        what: names the call in messages.
        attempts: tries in all.
        backoff_s: wait before the 2nd try (doubled each time), seconds.
        on_retry: called before each retry (metrics).

    Returns:
        The call's result.

    Raises:
        ServiceUnavailableError: the replica died on every try, Serve refused the call (backpressure), or Ray
            failed (out of memory, a worker crashed, an object lost).
        The replica's own error (e.g. a treecore error), unwrapped.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except BackPressureError as exc:
            raise ServiceUnavailableError(f"{what}: the service is at capacity, try again shortly ({exc})") from None
        except _REPLICA_GONE as exc:
            if isinstance(exc, RayTaskError) and not isinstance(unwrap(exc), _REPLICA_GONE):
                raise unwrap(exc) from None
            logger.warning("%s: replica unavailable on try %d of %d: %s", what, attempt, attempts, type(exc).__name__)
            if attempt == attempts:
                raise ServiceUnavailableError(
                    f"{what} failed {attempts} times because its worker replica stopped; try again"
                ) from None
            on_retry()
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        except (RayError, DeploymentUnavailableError) as exc:
            # Ray's own failures (OutOfMemoryError from the memory monitor, WorkerCrashedError, ObjectLostError,
            # TaskUnschedulableError, ...), bare or as a replica's error: the service's fault, a 503, never a 500.
            cause = unwrap(exc)
            if not isinstance(cause, (RayError, DeploymentUnavailableError)):
                raise cause from None
            raise ServiceUnavailableError(f"{what} failed: {type(cause).__name__}; try again shortly") from None
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class StageOptions:
    """How the ingress drives the stages (from serve_config.yaml `args`)."""

    tiles_per_replica: int  # tiles per running Detector replica
    min_tile_pixels: int  # the smallest worthwhile tile, pixels
    attempts: int  # tries per call when a replica dies


class _Calls:
    """Deployment calls with retries, each retry counted in the metrics under its stage's name."""

    def __init__(self, attempts: int, metrics: Metrics) -> None:
        self.attempts, self.metrics = attempts, metrics

    async def call(self, stage: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """call_with_retries, counting retries as `stage`."""
        return await call_with_retries(
            call, what=what, attempts=self.attempts, on_retry=lambda: self.metrics.retried(stage)
        )


class ServeStages:
    """The pipeline stages as calls to the TileSplitter, Detector and ModelAssembler deployments."""

    def __init__(
        self,
        splitter: DeploymentHandle[Any],
        detector: DeploymentHandle[Any],
        assembler: DeploymentHandle[Any],
        options: StageOptions,
        metrics: Metrics,
    ) -> None:
        """Stages over deployment handles.

        Args:
            splitter: TileSplitter handle.
            detector: Detector handle.
            assembler: ModelAssembler handle.
            options: tiles per replica, smallest tile, tries.
            metrics: retries are counted here.
        """
        self.splitter, self.detector, self.assembler = splitter, detector, assembler
        self.tiles_per_replica, self.min_tile_pixels = options.tiles_per_replica, options.min_tile_pixels
        self._calls = _Calls(options.attempts, metrics)
        self._replicas, self._replicas_at = 1, 0.0

    async def detector_replicas(self) -> int:
        """Running Detector replicas (asked of the controller at most every 5 s)."""
        if time.monotonic() - self._replicas_at > 5:
            try:
                app = serve.get_replica_context().app_name
                status = await asyncio.to_thread(serve.status)
                replicas: dict[Any, int] = dict(status.applications[app].deployments["Detector"].replica_states)
                self._replicas = max(1, int(replicas.get("RUNNING", 1)))
            except Exception as exc:  # the tile count is an optimisation: never fail a request over it
                logger.warning("could not read the Detector replica count: %s", exc)
            self._replicas_at = time.monotonic()
        return self._replicas

    async def tile_target(self, shape: tuple[int, ...]) -> int:
        """Tiles for this image: tiles_per_replica per running Detector, none below min_tile_pixels."""
        return tile_count_for(
            shape,
            await self.detector_replicas(),
            tiles_per_replica=self.tiles_per_replica,
            min_tile_pixels=self.min_tile_pixels,
        )

    async def split(self, data: bytes, params: DetectionParams, n_tiles: int) -> SplitPlan:
        """TileSplitter.split."""
        plan: SplitPlan = await self._calls.call(
            "split", "decoding the image", lambda: self.splitter.split.remote(data, params, n_tiles)
        )
        return plan

    async def release(self, plan: SplitPlan) -> None:
        """Let the TileSplitter drop its hold on the plan's image (fire and forget)."""
        self.splitter.release.remote(plan.image[1])

    async def detect_tile(self, plan: SplitPlan, tile: Tile, params: DetectionParams) -> list[Tree]:
        """Detector.detect, retried on another replica if this one dies."""
        trees: list[Tree] = await self._calls.call(
            "detect", f"detecting tile {tile.index}", lambda: self.detector.detect.remote(plan.image, tile, params)
        )
        return trees

    async def build_model(
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: ModelFormat = "obj"
    ) -> InlineModel | StoredModel:
        """ModelAssembler.build."""
        built: InlineModel | StoredModel = await self._calls.call(
            "build_model",
            "building the 3D model",
            lambda: self.assembler.build.remote(trees, base_model, store, name, fmt),
        )
        return built

    def describe(self) -> dict[str, Any]:
        """The deployments behind the ingress."""
        return {
            "mode": "ray-serve",
            "deployments": ["Ingress", "TileSplitter", "Detector", "ModelAssembler"],
            "detector_replicas": self._replicas,
            "tiles_per_replica": self.tiles_per_replica,
            "min_tile_pixels": self.min_tile_pixels,
        }


class ServeCatalogView:
    """The base-model catalogue as calls to the ModelAssembler (it owns the storage)."""

    def __init__(self, assembler: DeploymentHandle[Any], attempts: int, metrics: Metrics) -> None:
        """A view over the assembler handle; retries counted in `metrics`."""
        self.assembler = assembler
        self._calls = _Calls(attempts, metrics)

    async def list_models(self) -> list[TreeModelEntry]:
        """ModelAssembler.list_models."""
        models: list[TreeModelEntry] = await self._calls.call(
            "list_models", "listing the tree models", lambda: self.assembler.list_models.remote()
        )
        return models

    async def model_file(self, filename: str) -> bytes:
        """ModelAssembler.model_file."""
        data: bytes = await self._calls.call(
            "model_file", f"reading the tree model file {filename}", lambda: self.assembler.model_file.remote(filename)
        )
        return data
