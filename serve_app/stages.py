"""The pipeline's stages as one protocol, the work of the splitting stage, and the stages in one process.

`Stages` is what the orchestration calls: `tile_target` (the short path, or how many tiles), `detect_whole` (a
small image in one call: decode and detect), `split` (decode once, plan tiles), `detect_tile` (one window),
`release`, `build_model` (scene parts, then storage). `ServeStages` (serve_app.serve_stages)
calls the deployments; `LocalStages` here runs the same work in this process, for the API tests and for
debugging. The base-model catalogue is not a stage: see serve_app.catalog.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from serve_app.assembly import ModelBuilder
from serve_app.formats import InlineModel, ModelFormat
from serve_app.storage import StoredModel
from treecore.detect import detect_tile
from treecore.imageio import decode_image
from treecore.raster import RasterHeader, read_tile
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


@dataclass(frozen=True)
class RasterSource:
    """A raster in storage that is detected window by window: `path` is what GDAL opens (/vsiaz/<container>/<blob>
    or /vsicurl/<https URL>, checked by serve_app.raster_source), `header` its header, read once by the ingress.
    No pixels: each Detector reads its own tile's window (plus halo) straight from storage, with its own
    credential (never sent along)."""

    path: str
    header: RasterHeader

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the full raster."""
        return (self.header.height, self.header.width, 3)


def plan_raster_tiles(source: RasterSource, params: DetectionParams, n_tiles: int) -> list[Tile]:
    """The tiles of a referenced raster, planned from its header alone as split_image plans an upload's.

    Args:
        source: the raster.
        params: detection parameters (they set the halo).
        n_tiles: tiles wanted (SHORT_PATH counts as 1: one tile, the whole raster).

    Returns:
        The tiles, the same as split_image makes for the same image and count.
    """
    shape = source.shape
    if n_tiles == SHORT_PATH:  # as detect_whole_image: one tile, no halo (the whole raster is its own halo)
        return plan_tiles(shape, halo=0, n_tiles=1)
    return plan_tiles(shape, halo=halo_pixels(params, shape), n_tiles=n_tiles)


def detect_window(
    source: RasterSource, tile: Tile, params: DetectionParams, *, options: Mapping[str, str] | None = None
) -> list[Tree]:
    """One tile of a referenced raster: read its window plus halo from storage, detect, and drop the pixels.

    Args:
        source: the raster.
        tile: the tile (from plan_raster_tiles).
        params: detection parameters.
        options: GDAL configuration options (the reader's credential, serve_app.raster_source.blob_gdal_options).

    Returns:
        The trees whose centre lies in the tile's core (full-raster coordinates, id 0).
    """
    image = read_tile(source.path, tile, params, source.shape, options=options)
    try:
        # A WindowedImage stands in for the full array: detect_tile slices only inside its read extent.
        return detect_tile(cast(np.ndarray, image), tile, params)
    finally:
        del image


#: `tile_target`'s answer for an image that takes the short path: one Detector call, bytes in, trees out.
SHORT_PATH = 0


#: Default target tile size, megapixels (serve_config.yaml `tile_megapixels`; benchmarks/README.md has the
#: measurements behind it).
DEFAULT_TILE_MEGAPIXELS = 4.0
#: Default largest image sent whole to one Detector, megapixels (`short_path_megapixels`).
DEFAULT_SHORT_PATH_MEGAPIXELS = 2.0


@dataclass(frozen=True)
class TilePolicy:
    """How images are cut (serve_config.yaml `args` tile_megapixels and short_path_megapixels, in pixels here).

    An image of at most `short_path_pixels` (capped at `tile_pixels`: a Detector never holds more than one
    tile's worth of pixels) goes to one Detector in one call; a larger one is cut into tiles of about
    `tile_pixels` each, and into at least as many tiles as there are running Detector replicas.
    """

    tile_pixels: int = round(DEFAULT_TILE_MEGAPIXELS * 1e6)  # target tile core size, pixels
    short_path_pixels: int = round(DEFAULT_SHORT_PATH_MEGAPIXELS * 1e6)  # largest image sent whole, pixels

    @classmethod
    def from_megapixels(cls, tile_megapixels: float, short_path_megapixels: float) -> TilePolicy:
        """A policy from the args in megapixels (10^6 pixels)."""
        return cls(max(1, round(tile_megapixels * 1e6)), max(0, round(short_path_megapixels * 1e6)))

    def tile_count(self, shape: tuple[int, ...], replicas: int) -> int:
        """SHORT_PATH for a small image, else the tile count (see tile_count_for)."""
        return tile_count_for(shape, replicas, tile_pixels=self.tile_pixels, short_path_pixels=self.short_path_pixels)


def tile_count_for(shape: tuple[int, ...], replicas: int, *, tile_pixels: int, short_path_pixels: int) -> int:
    """How to cut an image: SHORT_PATH (whole, in one Detector call) when it is small, else how many tiles.

    A Ray call costs milliseconds, so an image of at most `short_path_pixels` (and at most `tile_pixels`)
    is not cut at all. A larger one gets one tile per `tile_pixels` (rounded up), and at least one per
    running replica, so every replica has work; tiles beyond the replicas queue at the Detectors, which is
    what Serve's autoscaler sees. The count is rounded up to a grid of near-square tiles (rows x cols).

    Args:
        shape: (H, W, ...) of the image.
        replicas: running Detector replicas (at least 1 is assumed).
        tile_pixels: target tile core size, pixels.
        short_path_pixels: largest image sent whole, pixels.

    Returns:
        SHORT_PATH (0), or the tile count (at least 1; at most the image's pixel count).
    """
    height, width = max(1, int(shape[0])), max(1, int(shape[1]))
    pixels = height * width
    if pixels <= min(short_path_pixels, tile_pixels):
        return SHORT_PATH
    wanted = min(pixels, max(max(1, replicas), math.ceil(pixels / max(1, tile_pixels))))
    rows = min(height, max(1, round(math.sqrt(wanted * height / width))))
    return rows * min(width, math.ceil(wanted / rows))


@dataclass(frozen=True)
class WholeImage:
    """What a Detector found on a whole small image (the short path): its shape, its trees, and the time taken.

    `shape` is (H, W, 3); `trees` are owned by the one tile that is the whole image (full-image coordinates,
    id 0, not yet merged); `decode_s` and `detect_s` are seconds in the Detector.
    """

    shape: tuple[int, ...]
    trees: list[Tree]
    decode_s: float
    detect_s: float


def detect_whole_image(data: bytes, params: DetectionParams, *, max_pixels: int) -> WholeImage:
    """Decode an upload and detect its trees as one tile (the short path's work, in a Detector or in one process).

    Args:
        data: the uploaded file's bytes.
        params: detection parameters.
        max_pixels: pixel limit, checked from the header before decoding.

    Returns:
        The WholeImage (trees not yet merged: the orchestration merges, as for tiles).
    """
    started = time.perf_counter()
    image = decode_image(data, max_pixels=max_pixels)
    decoded = time.perf_counter()
    (tile,) = plan_tiles(image.shape, halo=0, n_tiles=1)
    trees = detect_tile(image, tile, params)
    return WholeImage(image.shape, trees, decoded - started, time.perf_counter() - decoded)


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
        """SHORT_PATH (0) for an image sent whole to one detector, else tiles to cut it into (from the detector
        replicas running now)."""
        ...

    async def detect_whole(self, data: bytes, params: DetectionParams) -> WholeImage:
        """The short path: decode, check limits and detect a small image in one call."""
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

    async def detect_window(self, source: RasterSource, tile: Tile, params: DetectionParams) -> list[Tree]:
        """Trees owned by one tile of a referenced raster, its window read from storage where it is detected."""
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
        policy: TilePolicy = TilePolicy(),
        gdal_options: Mapping[str, str] | None = None,
    ) -> None:
        """Stages for one process.

        Args:
            builder: makes and stores scenes.
            max_pixels: the image pixel limit.
            workers: stand-in for the number of detector replicas.
            policy: tile size and short-path threshold.
            gdal_options: GDAL options for referenced rasters (the storage credential).
        """
        self.builder = builder
        self.gdal_options = dict(gdal_options or {})
        self.max_pixels = max_pixels
        self.workers = workers
        self.policy = policy

    async def tile_target(self, shape: tuple[int, ...]) -> int:
        """SHORT_PATH or the tiles for this image, with `workers` stand-in replicas."""
        return self.policy.tile_count(shape, self.workers)

    async def detect_whole(self, data: bytes, params: DetectionParams) -> WholeImage:
        """The short path in a worker thread."""
        return await asyncio.to_thread(detect_whole_image, data, params, max_pixels=self.max_pixels)

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

    async def detect_window(self, source: RasterSource, tile: Tile, params: DetectionParams) -> list[Tree]:
        """One window of a referenced raster, read and detected in a worker thread."""
        return await asyncio.to_thread(detect_window, source, tile, params, options=self.gdal_options)

    async def build_model(
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: ModelFormat = "obj"
    ) -> InlineModel | StoredModel:
        """Build in a worker thread."""
        return await asyncio.to_thread(lambda: self.builder.build(trees, base_model, store=store, name=name, fmt=fmt))

    def describe(self) -> dict[str, Any]:
        """In-process stages."""
        return {
            "mode": "in-process",
            "workers": self.workers,
            "tile_megapixels": self.policy.tile_pixels / 1e6,
            "short_path_megapixels": self.policy.short_path_pixels / 1e6,
            "storage": self.builder.store.describe(),
        }
