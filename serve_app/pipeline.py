"""The detection and model pipeline as stages, orchestrated the same way on Ray Serve and in one process.

`Stages` is what the ingress calls: `split` (decode once, plan tiles), `detect_tile` (one window),
`build_model` (OBJ parts, then storage), `list_models` and `model_file` (the base models, packaged and in
the tree-models container, which only the model stage can reach). `ServeStages` (serve_app.deployments)
calls deployment handles; `LocalStages` here runs them in this process, for the ingress unit tests and for
debugging.
`detect` is the one orchestration both use, so results are the same by construction.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from serve_app.assembly import InlineModel, ModelBuilder, TreeModelEntry
from serve_app.metrics import Metrics
from serve_app.storage import StoredModel
from treecore.detect import detect_tile, metres_per_pixel
from treecore.imageio import check_image_size, decode_image
from treecore.merge import merge_trees
from treecore.tiles import halo_pixels, plan_tiles
from treecore.types import DetectionParams, DetectionResult, Tile, Tree


@dataclass
class Progress:
    """How far one request or job has come: updated by the pipeline, read by GET /jobs/{id}."""

    stage: str = "queued"
    tiles_done: int = 0
    tiles_total: int = 0
    trees_so_far: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)


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
) -> tuple[np.ndarray, list[Tile]]:
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
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: str = "obj"
    ) -> InlineModel | StoredModel:
        """A scene in format `fmt`: returned inline, or stored under `name`."""
        ...

    async def list_models(self) -> list[TreeModelEntry]:
        """The base models on offer, with their source (package or blob)."""
        ...

    async def model_file(self, filename: str) -> bytes:
        """A base model's `<name>.obj` or `<name>.mtl`, from where generation loads that model."""
        ...

    def describe(self) -> dict[str, Any]:
        """What runs the stages (for GET /)."""
        ...


async def detect(
    stages: Stages,
    data: bytes,
    params: DetectionParams,
    *,
    progress: Progress | None = None,
    metrics: Metrics | None = None,
) -> DetectionResult:
    """Detect trees: split once, every tile in parallel, then one global merge.

    Args:
        stages: where the stages run.
        data: the uploaded image's bytes.
        params: detection parameters.
        progress: updated as stages and tiles finish (optional).
        metrics: stage latencies, tiles and trees are recorded here (optional).

    Returns:
        The DetectionResult; timings_s has decode_s, detect_s, merge_s and total_s.
    """
    progress = progress if progress is not None else Progress()
    started = time.perf_counter()
    progress.stage = "decoding"
    # The header gives the size (no decode, no limit here: the splitter checks it) for the tile count.
    width, height = check_image_size(data, max_pixels=2**62)
    n_tiles = await stages.tile_target((height, width, 3))
    plan = await stages.split(data, params, n_tiles)
    split_done = time.perf_counter()
    progress.stage, progress.tiles_total = "detecting", len(plan.tiles)

    async def one(tile: Tile) -> list[Tree]:
        found = await stages.detect_tile(plan, tile, params)
        progress.tiles_done += 1
        progress.trees_so_far += len(found)
        return found

    try:
        per_tile = await asyncio.gather(*(one(tile) for tile in plan.tiles))
    finally:
        await stages.release(plan)
    detected = time.perf_counter()
    progress.stage = "merging"
    trees = merge_trees([t for found in per_tile for t in found], params.cluster_threshold)
    merged = time.perf_counter()
    progress.trees_so_far = len(trees)
    timings = {
        "decode_s": split_done - started,
        "detect_s": detected - split_done,
        "merge_s": merged - detected,
        "total_s": merged - started,
    }
    if metrics is not None:
        for stage, seconds in timings.items():
            metrics.stage(stage.removesuffix("_s"), seconds)
        metrics.detected(len(plan.tiles), len(trees))
    return DetectionResult(
        trees=tuple(trees),
        width=int(plan.shape[1]),
        height=int(plan.shape[0]),
        metres_per_pixel=metres_per_pixel(params, plan.shape),
        params=params,
        tile_count=len(plan.tiles),
        timings_s=timings,
    )


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
            builder: makes and stores OBJ scenes.
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
        self, trees: list[Tree], base_model: str, *, store: bool, name: str, fmt: str = "obj"
    ) -> InlineModel | StoredModel:
        """Build in a worker thread."""
        build: Callable[[], InlineModel | StoredModel] = lambda: self.builder.build(  # noqa: E731
            trees, base_model, store=store, name=name, fmt=fmt
        )
        return await asyncio.to_thread(build)

    async def list_models(self) -> list[TreeModelEntry]:
        """The builder's models, in a worker thread (the blob listing is a network call)."""
        return await asyncio.to_thread(self.builder.list_models)

    async def model_file(self, filename: str) -> bytes:
        """The builder's file, in a worker thread."""
        return await asyncio.to_thread(self.builder.model_file, filename)

    def describe(self) -> dict[str, Any]:
        """In-process stages."""
        return {"mode": "in-process", "workers": self.workers, "storage": self.builder.store.describe()}


def model_name(n_trees: int, now: float | None = None) -> str:
    """A unique, safe file stem for a stored scene, e.g. trees_88000_20261125T101500Z_3f9a1c.

    Args:
        n_trees: trees in the scene.
        now: epoch seconds (default: now).

    Returns:
        The stem (letters, digits, '_').
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"trees_{n_trees}_{stamp}_{os.urandom(3).hex()}"
