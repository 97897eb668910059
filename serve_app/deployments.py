"""The Ray Serve deployments: Ingress (FastAPI), TileSplitter, Detector, ModelAssembler.

Each deployment is a thin adapter over treecore, with the process settings bound in by build_app (no
deployment reads the environment). Replicas, CPUs and autoscaling come from serve_config.yaml, not from
these decorators.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import time
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api import create_app
from serve_app.assembly import ModelBuilder
from serve_app.catalog import TreeModelEntry
from serve_app.formats import InlineModel, ModelFormat
from serve_app.job_runner import ServeJobs
from serve_app.metrics import RayMetrics
from serve_app.raster_source import blob_gdal_options
from serve_app.serve_stages import ServeCatalogView, ServeStages, StageOptions
from serve_app.settings import Settings
from serve_app.stages import RasterSource, SplitPlan, WholeImage, detect_whole_image, detect_window, split_image
from serve_app.storage import AzureModelStore, StoredModel, blob_models, make_store
from treecore.detect import detect_tile
from treecore.types import DetectionParams, Tile, Tree


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

    def __init__(self, settings: Settings) -> None:
        """A splitter.

        Args:
            settings: the process settings (the pixel limit).
        """
        self.max_image_pixels = settings.max_image_pixels
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
    """Detects the trees of a small image sent whole (the short path), or those one tile owns, reading its window
    of the shared image (read-only, zero-copy)."""

    def __init__(self, settings: Settings) -> None:
        """A detector.

        Args:
            settings: the process settings (the pixel limit, checked before a short-path decode; the storage
                credential its window reads use).
        """
        self.max_image_pixels = settings.max_image_pixels
        self.gdal_options = blob_gdal_options(
            connection_string=settings.azure_connection_string, account_url=settings.azure_account_url
        )

    def detect_whole(self, data: bytes, params: DetectionParams) -> WholeImage:
        """The short path: decode a small upload (pixel limit checked from its header) and detect it as one tile.

        Args:
            data: the uploaded file's bytes.
            params: detection parameters.

        Returns:
            Its shape, the trees (full-image coordinates, id 0, not merged) and the seconds taken.
        """
        try:
            return detect_whole_image(data, params, max_pixels=self.max_image_pixels)
        finally:
            release_free_memory()

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

    def detect_window(self, source: RasterSource, tile: Tile, params: DetectionParams) -> list[Tree]:
        """One tile of a referenced raster: its window plus halo read straight from storage (HTTP range requests,
        with this replica's own credential), detected, and freed; memory is bounded by the tile, not the raster.

        Args:
            source: the raster's GDAL path and header.
            tile: the tile (core and halo windows, full-raster pixels).
            params: detection parameters.

        Returns:
            The trees whose centre lies in the tile's core (full-raster coordinates, id 0).
        """
        try:
            return detect_window(source, tile, params, options=self.gdal_options)
        finally:
            release_free_memory()


@serve.deployment
class ModelAssembler:
    """Builds merged OBJ scenes (parts in parallel threads) and stores the large ones."""

    def __init__(self, settings: Settings, models_dir: str, threads: int, trees_per_part: int) -> None:
        """An assembler with the storage the settings configure.

        Args:
            settings: the process settings (storage).
            models_dir: folder of base tree models.
            threads: threads formatting parts.
            trees_per_part: trees per part (0: default).
        """
        store = make_store(settings)
        remote = blob_models(store, settings.container_tree_models) if isinstance(store, AzureModelStore) else None
        self.builder = ModelBuilder(
            store, models_dir=Path(models_dir), workers=threads, trees_per_part=trees_per_part, remote_models=remote
        )

    def build(
        self, trees: list[Tree], base_model: str, store: bool, name: str, fmt: ModelFormat
    ) -> InlineModel | StoredModel:
        """One scene (see ModelBuilder.build)."""
        return self.builder.build(trees, base_model, store=store, name=name, fmt=fmt)

    def list_models(self) -> list[TreeModelEntry]:
        """The base models, packaged and in the tree-models container (see Catalog.entries)."""
        return self.builder.catalog.entries()

    def model_file(self, filename: str) -> bytes:
        """A base model's OBJ or MTL file (see Catalog.file)."""
        return self.builder.catalog.file(filename)

    def describe(self) -> str:
        """Where stored models go."""
        return self.builder.store.describe()


@serve.deployment
@serve.ingress()
class Ingress:
    """The HTTP ingress: the FastAPI app from `create_app`, over the three pipeline deployments."""

    def __init__(
        self,
        settings: Settings,
        splitter: DeploymentHandle[Any],
        detector: DeploymentHandle[Any],
        assembler: DeploymentHandle[Any],
        options: StageOptions,
        models_dir: str,
        job_runner: DeploymentHandle[Any] | None = None,
    ) -> None:
        """Build the stages (and the jobs, through the JobRunner: None runs them here); the app itself is made in
        __serve_build_asgi_app__."""
        self.settings = settings
        logging.getLogger("serve_app").setLevel(settings.log_level)
        self.metrics = RayMetrics()
        self.stages = ServeStages(splitter, detector, assembler, options, self.metrics)
        self.catalog = ServeCatalogView(assembler, options.attempts, self.metrics)
        self.models_dir = Path(models_dir)
        self.jobs = ServeJobs(job_runner, options.attempts) if job_runner is not None else None

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The FastAPI app (Serve calls this once, after __init__)."""
        return create_app(
            self.settings,
            self.stages,
            self.catalog,
            metrics=self.metrics,
            models_dir=self.models_dir,
            job_service=self.jobs,
        )
