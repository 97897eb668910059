"""The pipeline stages and the catalogue as calls to the Serve deployments, retried when a replica dies."""

from __future__ import annotations

import asyncio
import logging
import threading
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
from serve_app.stages import RasterSource, SplitPlan, TilePolicy, WholeImage
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


#: How often the Ingress asks the controller for the running Detector replicas, seconds (in a background thread,
#: never on a request's path). `serve.status()` is not cheap: asked every 2 s it took 15% of the Ingress's CPU
#: under load (py-spy, benchmarks/README.md); a count 10 s old only delays when a new replica gets tiles.
REPLICA_REFRESH_S = 10.0


@dataclass(frozen=True)
class StageOptions:
    """How the ingress drives the stages (from serve_config.yaml `args`)."""

    policy: TilePolicy  # tile size and short-path threshold
    attempts: int  # tries per call when a replica dies


class ReplicaCount:
    """The running Detector replicas, as last read from `serve.status()` by a daemon thread (every
    REPLICA_REFRESH_S seconds, started on first use); 1 until the first answer, and for good outside Serve."""

    def __init__(self, deployment: str = "Detector") -> None:
        """A count of `deployment`'s running replicas in this replica's application."""
        self.deployment, self.value = deployment, 1
        self._started = False
        self._lock = threading.Lock()

    def get(self) -> int:
        """The last count read (never blocks; starts the reader on first use)."""
        if not self._started:
            with self._lock:
                if not self._started:
                    self._started = True
                    threading.Thread(target=self._run, name="detector-replicas", daemon=True).start()
        return self.value

    def _run(self) -> None:
        try:
            app = serve.get_replica_context().app_name
        except Exception:  # not in a Serve replica (tests of the classes): one replica
            return
        warned = False
        while True:
            try:
                deployments = serve.status().applications[app].deployments
                states: dict[Any, int] = dict(deployments[self.deployment].replica_states)
                self.value = max(1, int(states.get("RUNNING", 1)))
            except Exception as exc:  # the tile count is an optimisation: never fail over it
                if not warned:
                    logger.warning("could not read the %s replica count: %s", self.deployment, exc)
                warned = True
            threading.Event().wait(REPLICA_REFRESH_S)


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
            options: tile policy, tries.
            metrics: retries are counted here.
        """
        self.splitter, self.detector, self.assembler = splitter, detector, assembler
        self.policy = options.policy
        self._calls = _Calls(options.attempts, metrics)
        self.replicas = ReplicaCount()

    async def detector_replicas(self) -> int:
        """Running Detector replicas (the background reader's last answer; 1 outside Serve)."""
        return self.replicas.get()

    async def tile_target(self, shape: tuple[int, ...]) -> int:
        """SHORT_PATH for a small image, else one tile per tile_megapixels, at least one per running Detector."""
        return self.policy.tile_count(shape, self.replicas.get())

    async def detect_whole(self, data: bytes, params: DetectionParams) -> WholeImage:
        """Detector.detect_whole: the short path, bytes in, trees out, retried on another replica if this one dies."""
        whole: WholeImage = await self._calls.call(
            "detect", "detecting the image", lambda: self.detector.detect_whole.remote(data, params)
        )
        return whole

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

    async def detect_window(self, source: RasterSource, tile: Tile, params: DetectionParams) -> list[Tree]:
        """Detector.detect_window (the replica reads the window from storage), retried if its replica dies."""
        trees: list[Tree] = await self._calls.call(
            "detect",
            f"detecting window {tile.index}",
            lambda: self.detector.detect_window.remote(source, tile, params),
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
            "deployments": ["Ingress", "TileSplitter", "Detector", "ModelAssembler", "JobRunner"],
            "detector_replicas": self.replicas.value,
            "tile_megapixels": self.policy.tile_pixels / 1e6,
            "short_path_megapixels": self.policy.short_path_pixels / 1e6,
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
