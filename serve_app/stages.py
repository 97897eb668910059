"""The pipeline's stages as one protocol, the work of the splitting stage, and the stages in one process.

`Stages` is what the orchestration calls: `tile_target` and `split` (decode once, plan tiles), `detect_tile`
(one window), `release`, `build_model` (scene parts, then storage). `ServeStages` (serve_app.serve_stages)
calls the deployments; `LocalStages` here runs the same work in this process, for the API tests and for
debugging. The base-model catalogue is not a stage: see serve_app.catalog.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from serve_app.assembly import ModelBuilder
from serve_app.formats import InlineModel, ModelFormat
from serve_app.storage import StoredModel
from treecore.detect import detect_tile
from treecore.imageio import decode_image
from treecore.tiles import halo_pixels, plan_tiles
from treecore.types import DetectionParams, Tile, Tree


@dataclass(frozen=True)
class SplitPlan:
    """A decoded image and its tiles.

    `image` is how detectors reach the pixels: on Ray Serve a list [object-store reference, hold key] (a list,
    so Ray passes the reference instead of resolving it), in one process the (H, W, 3) uint8 RGB
    array. `shape` is (H, W, 3); `decode_s` seconds.
    """

    image: Any
    shape: tuple[int, ...]
    tiles: tuple[Tile, ...]
    decode_s: float


def tile_count_for(shape: tuple[int, ...], replicas: int, *, tiles_per_replica: int, min_tile_pixels: int) -> int:
    """How many tiles to cut: a few per detector replica, but never tiles smaller than `min_tile_pixels`.

    A Ray call costs milliseconds, so a small image stays one tile and a large one gets as many tiles
    as there are replicas to work on them (times `tiles_per_replica`, so a finished replica picks up
    another tile instead of idling behind a slow one).

    Args:
        shape: (H, W, ...) of the image.
        replicas: running Detector replicas (at least 1 is assumed).
        tiles_per_replica: tiles per replica.
        min_tile_pixels: the smallest worthwhile tile, pixels.

    Returns:
        The tile count, at least 1.
    """
    by_size = max(1, (int(shape[0]) * int(shape[1])) // max(1, min_tile_pixels))
    return max(1, min(max(1, replicas) * max(1, tiles_per_replica), by_size))


def split_image(
    data: bytes, params: DetectionParams, n_tiles: int, *, max_pixels: int
) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], list[Tile]]:
    """Decode an upload once and cut it into tiles with a halo wide enough for every crown.

    Args:
        data: the uploaded file's bytes.
        params: detection parameters (they set the halo).
        n_tiles: tiles wanted.
        max_pixels: pixel limit, checked from the header before decoding.

    Returns:
        (image (H, W, 3) uint8 RGB, tiles).
    """
    image = decode_image(data, max_pixels=max_pixels)
    tiles = plan_tiles(image.shape, halo=halo_pixels(params, image.shape), n_tiles=n_tiles)
    return image, tiles


class Stages(Protocol):
    """The pipeline's stages, however they run."""

    async def tile_target(self, shape: tuple[int, ...]) -> int:
        """Tiles to cut an image of this shape into (from the detector replicas running now)."""
        ...

    async def split(self, data: bytes, params: DetectionParams, n_tiles: int) -> SplitPlan:
        """Decode, check limits, plan tiles."""
        ...

    async def detect_tile(self, plan: SplitPlan, tile: Tile, params: DetectionParams) -> list[Tree]:
        """Trees owned by one tile (full-image coordinates, id 0)."""
        ...

    async def release(self, plan: SplitPlan) -> None:
        """The plan's image is no longer needed."""
        ...

    async def build_model(
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: ModelFormat = "obj"
    ) -> InlineModel | StoredModel:
        """A scene in format `fmt`: returned inline, or stored under `name`."""
        ...

    def describe(self) -> dict[str, Any]:
        """What runs the stages (for GET /)."""
        ...


class LocalStages:
    """Every stage in this process (threads), with the same tile plan a Serve deployment would make."""

    def __init__(
        self,
        builder: ModelBuilder,
        *,
        max_pixels: int,
        workers: int = 2,
        tiles_per_replica: int = 1,
        min_tile_pixels: int = 1_000_000,
    ) -> None:
        """Stages for one process.

        Args:
            builder: makes and stores scenes.
            max_pixels: the image pixel limit.
            workers: stand-in for the number of detector replicas.
            tiles_per_replica: tiles per worker.
            min_tile_pixels: the smallest worthwhile tile, pixels.
        """
        self.builder = builder
        self.max_pixels = max_pixels
        self.workers = workers
        self.tiles_per_replica = tiles_per_replica
        self.min_tile_pixels = min_tile_pixels

    async def tile_target(self, shape: tuple[int, ...]) -> int:
        """Tiles for this image with `workers` stand-in replicas."""
        return tile_count_for(
            shape, self.workers, tiles_per_replica=self.tiles_per_replica, min_tile_pixels=self.min_tile_pixels
        )

    async def split(self, data: bytes, params: DetectionParams, n_tiles: int) -> SplitPlan:
        """Decode and plan in a worker thread."""
        started = time.perf_counter()
        image, tiles = await asyncio.to_thread(split_image, data, params, n_tiles, max_pixels=self.max_pixels)
        return SplitPlan(image, image.shape, tuple(tiles), time.perf_counter() - started)

    async def release(self, plan: SplitPlan) -> None:
        """Nothing to release in one process."""

    async def detect_tile(self, plan: SplitPlan, tile: Tile, params: DetectionParams) -> list[Tree]:
        """One tile in a worker thread."""
        return await asyncio.to_thread(detect_tile, plan.image, tile, params)

    async def build_model(
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: ModelFormat = "obj"
    ) -> InlineModel | StoredModel:
        """Build in a worker thread."""
        return await asyncio.to_thread(lambda: self.builder.build(trees, base_model, store=store, name=name, fmt=fmt))

    def describe(self) -> dict[str, Any]:
        """In-process stages."""
        return {"mode": "in-process", "workers": self.workers, "storage": self.builder.store.describe()}
