"""The Ray Serve deployments: Ingress (FastAPI), TileSplitter, Detector, ModelAssembler, and the stages over them.

Each deployment is a thin adapter over treecore. Replicas, CPUs and autoscaling come from serve_config.yaml,
not from these decorators.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import ray
from fastapi import FastAPI
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serve_app.assembly import InlineModel, ModelBuilder, TreeModelEntry
from serve_app.errors import ServiceUnavailableError
from serve_app.ingress import create_app
from serve_app.metrics import Metrics, RayMetrics
from serve_app.pipeline import SplitPlan, split_image, tile_count_for
from serve_app.settings import Settings
from serve_app.storage import AzureModelStore, StoredModel, blob_models, make_store
from treecore.detect import detect_tile
from treecore.types import DetectionParams, Tile, Tree

logger = logging.getLogger("ray.serve")
T = TypeVar("T")

#: Errors that mean "the replica went away", not "the input was bad": worth another try elsewhere.
_REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


def unwrap(exc: BaseException) -> BaseException:
    """The error a replica raised, without Ray's wrapper (whose message carries a traceback).

    Args:
        exc: an exception from awaiting a deployment response.

    Returns:
        The original exception when it is a RayTaskError with a cause, else exc.
    """
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


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
        ServiceUnavailableError: the replica died on every try, or Serve refused the call (backpressure).
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
        except RayTaskError as exc:
            raise unwrap(exc) from None
    raise AssertionError("unreachable")  # pragma: no cover


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    A tile's OpenCV/numpy temporaries are tens to hundreds of MB; glibc keeps such freed blocks in its arenas
    (its mmap threshold grows after the first big free), so without this a Detector's memory stays at its
    largest tile's peak after the load is gone.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


#: How long the TileSplitter keeps an image alive when nobody releases it (a request's longest life), seconds.
IMAGE_HOLD_S = 1800


@serve.deployment
class TileSplitter:
    """Decodes an upload once, checks its size, plans the tiles and puts the image into the object store once.

    The splitter owns the image object. Ray's borrowing protocol can lose a reference that is only nested in a
    Serve response (seen under load: "object has already been deleted by the reference counting protocol"),
    so the splitter also holds each image until the ingress releases it after the detection, or for at most
    IMAGE_HOLD_S.
    """

    def __init__(self, max_image_pixels: int) -> None:
        """A splitter.

        Args:
            max_image_pixels: the pixel limit.
        """
        self.max_image_pixels = max_image_pixels
        self._held: dict[str, tuple[Any, float]] = {}

    def split(self, data: bytes, params: DetectionParams, n_tiles: int) -> SplitPlan:
        """Decode, plan, and share the pixels.

        Args:
            data: the uploaded file's bytes.
            params: detection parameters.
            n_tiles: tiles wanted.

        Returns:
            The plan; its `image` is [ObjectRef of the (H, W, 3) uint8 RGB array, hold key].
        """
        started = time.perf_counter()
        try:
            image, tiles = split_image(data, params, n_tiles, max_pixels=self.max_image_pixels)
        finally:
            release_free_memory()  # the decoder's temporaries are as large as the image
        now = time.monotonic()
        for key in [k for k, (_, held_at) in self._held.items() if now - held_at > IMAGE_HOLD_S]:
            del self._held[key]
        ref = ray.put(image)
        key = ref.hex()
        self._held[key] = (ref, now)
        return SplitPlan([ref, key], image.shape, tuple(tiles), time.perf_counter() - started)

    def release(self, key: str) -> None:
        """Drop the hold on an image (its detection is done)."""
        self._held.pop(key, None)

    def held(self) -> int:
        """Images held now (for tests: it returns to 0 when requests end)."""
        return len(self._held)


@serve.deployment
class Detector:
    """Detects the trees one tile owns, reading its window of the shared image (read-only, zero-copy)."""

    def detect(self, image_ref: list[Any], tile: Tile, params: DetectionParams) -> list[Tree]:
        """One tile.

        Args:
            image_ref: [ObjectRef of the full (H, W, 3) uint8 RGB image, hold key].
            tile: the tile (core and halo windows, full-image pixels).
            params: detection parameters.

        Returns:
            The trees whose centre lies in the tile's core (full-image coordinates, id 0).
        """
        image = ray.get(image_ref[0])
        try:
            return detect_tile(image, tile, params)
        finally:
            release_free_memory()


@serve.deployment
class ModelAssembler:
    """Builds merged OBJ scenes (parts in parallel threads) and stores the large ones."""

    def __init__(self, models_dir: str, threads: int, trees_per_part: int) -> None:
        """An assembler with the storage the environment configures.

        Args:
            models_dir: folder of base tree models.
            threads: threads formatting parts.
            trees_per_part: trees per part (0: default).
        """
        settings = Settings.from_env()
        store = make_store(settings)
        remote = blob_models(store, settings.container_tree_models) if isinstance(store, AzureModelStore) else None
        self.builder = ModelBuilder(
            store, models_dir=Path(models_dir), workers=threads, trees_per_part=trees_per_part, remote_models=remote
        )

    def build(self, trees: list[Tree], base_model: str, store: bool, name: str, fmt: str) -> InlineModel | StoredModel:
        """One scene (see ModelBuilder.build)."""
        return self.builder.build(trees, base_model, store=store, name=name, fmt=fmt)

    def list_models(self) -> list[TreeModelEntry]:
        """The base models, packaged and in the tree-models container (see ModelBuilder.list_models)."""
        return self.builder.list_models()

    def model_file(self, filename: str) -> bytes:
        """A base model's OBJ or MTL file (see ModelBuilder.model_file)."""
        return self.builder.model_file(filename)

    def describe(self) -> str:
        """Where stored models go."""
        return self.builder.store.describe()


@dataclass(frozen=True)
class StageOptions:
    """How the ingress drives the stages (from serve_config.yaml `args`)."""

    tiles_per_replica: int  # tiles per running Detector replica
    min_tile_pixels: int  # the smallest worthwhile tile, pixels
    attempts: int  # tries per call when a replica dies


class ServeStages:
    """The pipeline stages as calls to the deployments, with retries when a replica dies."""

    def __init__(
        self,
        splitter: DeploymentHandle,
        detector: DeploymentHandle,
        assembler: DeploymentHandle,
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
        self.metrics = metrics
        self.splitter, self.detector, self.assembler = splitter, detector, assembler
        self.tiles_per_replica, self.min_tile_pixels = options.tiles_per_replica, options.min_tile_pixels
        self.attempts = options.attempts
        self._replicas, self._replicas_at = 1, 0.0
        self._storage = "unknown"

    async def detector_replicas(self) -> int:
        """Running Detector replicas (asked of the controller at most every 5 s)."""
        if time.monotonic() - self._replicas_at > 5:
            try:
                app = serve.get_replica_context().app_name
                status = await asyncio.to_thread(serve.status)
                replicas = status.applications[app].deployments["Detector"].replica_states
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
        plan: SplitPlan = await call_with_retries(
            lambda: self.splitter.split.remote(data, params, n_tiles),
            what="decoding the image",
            attempts=self.attempts,
            on_retry=lambda: self.metrics.retried("split"),
        )
        return plan

    async def release(self, plan: SplitPlan) -> None:
        """Let the TileSplitter drop its hold on the plan's image (fire and forget)."""
        self.splitter.release.remote(plan.image[1])

    async def detect_tile(self, plan: SplitPlan, tile: Tile, params: DetectionParams) -> list[Tree]:
        """Detector.detect, retried on another replica if this one dies."""
        trees: list[Tree] = await call_with_retries(
            lambda: self.detector.detect.remote(plan.image, tile, params),
            what=f"detecting tile {tile.index}",
            attempts=self.attempts,
            on_retry=lambda: self.metrics.retried("detect"),
        )
        return trees

    async def build_model(
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: str = "obj"
    ) -> InlineModel | StoredModel:
        """ModelAssembler.build."""
        built: InlineModel | StoredModel = await call_with_retries(
            lambda: self.assembler.build.remote(trees, base_model, store, name, fmt),
            what="building the 3D model",
            attempts=self.attempts,
            on_retry=lambda: self.metrics.retried("build_model"),
        )
        return built

    async def list_models(self) -> list[TreeModelEntry]:
        """ModelAssembler.list_models (the assembler owns the storage)."""
        models: list[TreeModelEntry] = await call_with_retries(
            lambda: self.assembler.list_models.remote(),
            what="listing the tree models",
            attempts=self.attempts,
            on_retry=lambda: self.metrics.retried("list_models"),
        )
        return models

    async def model_file(self, filename: str) -> bytes:
        """ModelAssembler.model_file."""
        data: bytes = await call_with_retries(
            lambda: self.assembler.model_file.remote(filename),
            what=f"reading the tree model file {filename}",
            attempts=self.attempts,
            on_retry=lambda: self.metrics.retried("model_file"),
        )
        return data

    def describe(self) -> dict[str, Any]:
        """The deployments behind the ingress."""
        return {
            "mode": "ray-serve",
            "deployments": ["Ingress", "TileSplitter", "Detector", "ModelAssembler"],
            "detector_replicas": self._replicas,
            "tiles_per_replica": self.tiles_per_replica,
            "min_tile_pixels": self.min_tile_pixels,
        }


@serve.deployment
@serve.ingress()
class Ingress:
    """The HTTP ingress: the FastAPI app from `create_app`, over the three pipeline deployments."""

    def __init__(
        self,
        splitter: DeploymentHandle,
        detector: DeploymentHandle,
        assembler: DeploymentHandle,
        options: StageOptions,
        models_dir: str,
    ) -> None:
        """Build the stages; the app itself is made in __serve_build_asgi_app__."""
        self.settings = Settings.from_env()
        logging.getLogger("serve_app").setLevel(self.settings.log_level)
        self.metrics = RayMetrics()
        self.stages = ServeStages(splitter, detector, assembler, options, self.metrics)
        self.models_dir = Path(models_dir)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The FastAPI app (Serve calls this once, after __init__)."""
        return create_app(self.settings, self.stages, metrics=self.metrics, models_dir=self.models_dir)
