"""The two request flows over the pipeline stages: detect (split, tiles in parallel, one merge) and generate
(the size threshold, naming, inline or stored), the same on Ray Serve and in one process.

The HTTP layer (serve_app.api) only parses requests and shapes answers; every rule of what runs, in which
order, and when a scene is stored instead of returned lives here.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from serve_app.admission import MemoryBudget, admitted, detect_need, generate_need
from serve_app.bounds import check_tree_columns
from serve_app.formats import InlineModel, ModelFormat
from serve_app.metrics import Metrics
from serve_app.progress import Progress
from serve_app.raster_source import RasterPolicy, blob_gdal_options, check_reference, refuse_redirects
from serve_app.settings import Settings
from serve_app.stages import SHORT_PATH, RasterSource, SplitPlan, Stages, plan_raster_tiles
from serve_app.storage import Download, StoredModel, make_store
from treecore.basemodels import check_model_name
from treecore.detect import metres_per_pixel
from treecore.errors import InvalidImageError
from treecore.imageio import check_image_size
from treecore.merge import merge_trees
from treecore.raster import read_header
from treecore.report import result_to_dict
from treecore.treesio import parse_tree_columns
from treecore.types import DetectionParams, DetectionResult, Tile, Tree


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


#: What a detection path gives the merge: the image's shape (H, W, 3), the trees of each tile, the decode time
#: (seconds) and the tile count.
_Detected = tuple[tuple[int, ...], list[list[Tree]], float, int]

#: One stored file of a scene, as the HTTP layer sees it (serve_app.api imports nothing of serve_app.storage).
StoredFile = StoredModel


@dataclass(frozen=True)
class StoredScene:
    """A scene that was stored, not returned: where it is, how many trees, and what to tell the client."""

    stored: StoredModel
    total_trees: int
    message: str

    @property
    def files(self) -> tuple[StoredModel, ...]:
        """Every stored file of the scene: the OBJ (or zip, or GLB) first, then what it needs (an OBJ's MTL)."""
        return (self.stored, *self.stored.companions)


class Flows:
    """Detect and generate over one set of stages, with the service's limits and metrics."""

    def __init__(self, stages: Stages, settings: Settings, metrics: Metrics) -> None:
        """Flows.

        Args:
            stages: where the stages run.
            settings: the limits (pixels, trees, the large-model threshold).
            metrics: stage latencies, tiles and trees are recorded here.
        """
        self.stages, self.settings, self.metrics = stages, settings, metrics
        self._releasing: set[asyncio.Future[None]] = set()
        self.budget = MemoryBudget.from_settings(settings)  # this process's memory admission (serve_app.admission)
        self.store = make_store(settings)  # read back by GET /download (local storage: one node only)

    def open_download(self, filename: str) -> Download:
        """A stored scene's bytes, read through the store the models went to.

        Args:
            filename: the stored file's name, as the download_url gives it.

        Returns:
            Its name, size and byte chunks.

        Raises:
            NotStoredError: no such file here (expired, never made, or stored in Azure: use the SAS URL).
        """
        return self.store.open_download(filename)

    def check_image(self, data: bytes) -> bytes:
        """Refuse an empty upload or one over the pixel limit (from its header), before any work starts.

        Args:
            data: the uploaded bytes.

        Returns:
            The same bytes.

        Raises:
            InvalidImageError: empty, or no image header.
            ImageTooLargeError: over MAX_IMAGE_PIXELS.
        """
        if not data:
            raise InvalidImageError("the uploaded image is empty (0 bytes)")
        check_image_size(data, max_pixels=self.settings.max_image_pixels)
        return data

    async def open_raster(self, reference: str) -> RasterSource:
        """Check a raster reference and read its header (no pixels), before a job over it starts.

        Args:
            reference: a blob name in AZURE_STORAGE_CONTAINER_IMAGES, or an HTTPS URL on RASTER_URL_HOSTS.

        Returns:
            The RasterSource: the GDAL path and the header, for `detect_raster`.

        Raises:
            RasterReferenceError: a reference the service will not read (internal address, host off the
                allow-list, a redirect, a bad blob name): 422.
            InvalidImageError: no GeoTIFF there (missing, unreadable, or not a TIFF): 400.
        """
        settings = self.settings
        policy = RasterPolicy(settings.container_images, settings.raster_url_hosts)
        checked = await asyncio.to_thread(check_reference, reference, policy)
        if checked.url is not None:
            await asyncio.to_thread(refuse_redirects, checked.url)
        options = blob_gdal_options(
            connection_string=settings.azure_connection_string, account_url=settings.azure_account_url
        )
        header = await asyncio.to_thread(read_header, checked.gdal_path, options=options)
        return RasterSource(checked.gdal_path, header)

    @admitted(detect_need)
    async def detect(
        self, data: bytes, params: DetectionParams, progress: Progress, *, warnings: list[str] | None = None
    ) -> dict[str, Any]:
        """Detect trees: a small image in one Detector call (the short path), a large one split once, every tile
        in parallel; then one global merge.

        Args:
            data: the uploaded image's bytes.
            params: detection parameters.
            progress: updated as stages and tiles finish.
            warnings: the request's warnings (ignored fields), given back in the answer.

        Returns:
            The /detect-trees body; its timings have decode_s, detect_s, merge_s and total_s.
        """
        started = time.perf_counter()
        progress.stage = "decoding"
        # The header gives the size (no limit here: check_image and the detector or splitter check it).
        width, height = check_image_size(data, max_pixels=2**62)
        n_tiles = await self.stages.tile_target((height, width, 3))
        if n_tiles == SHORT_PATH:
            shape, per_tile, decode_s, tile_count = await self._detect_whole(data, params, progress)
        else:
            shape, per_tile, decode_s, tile_count = await self._detect_tiles(data, params, progress, n_tiles)
        return self._merged(per_tile, shape, tile_count, params, progress, (started, decode_s), warnings)

    def _merged(
        self,
        per_tile: list[list[Tree]],
        shape: tuple[int, ...],
        tile_count: int,
        params: DetectionParams,
        progress: Progress,
        clock: tuple[float, float],
        warnings: list[str] | None,
    ) -> dict[str, Any]:
        """The one global merge of every tile's trees, its timings and metrics, and the /detect-trees body.

        `clock` is (when the detection started, perf_counter seconds; how long decoding took, seconds).
        """
        started, decode_s = clock
        detected = time.perf_counter()
        progress.stage = "merging"
        trees = merge_trees(
            [t for found in per_tile for t in found],
            params.cluster_threshold,
            min_diameter=params.min_diameter,
            max_diameter=params.max_diameter,
        )
        merged = time.perf_counter()
        progress.trees_so_far = len(trees)
        timings = {
            "decode_s": decode_s,
            "detect_s": detected - started - decode_s,
            "merge_s": merged - detected,
            "total_s": merged - started,
        }
        for stage, seconds in timings.items():
            self.metrics.stage(stage.removesuffix("_s"), seconds)
        self.metrics.detected(tile_count, len(trees))
        return result_to_dict(_result(shape, tile_count, params, trees, timings), warnings=warnings or ())

    async def detect_raster(
        self,
        source: RasterSource,
        params: DetectionParams,
        progress: Progress,
        *,
        warnings: list[str] | None = None,
    ) -> dict[str, Any]:
        """Detect trees in a raster in storage, window by window: the tiles are planned from its header (the same
        TilePolicy as an upload's), and each Detector reads its own tile's window plus halo from storage; no
        process ever holds the whole raster. Then the one global merge, as `detect`.

        Args:
            source: the raster's GDAL path and header (serve_app.raster_source checked the reference).
            params: detection parameters (real_width/real_height from the raster's georeference when it has one).
            progress: tiles done / total and trees so far, as windows finish.
            warnings: the request's warnings, given back in the answer.

        Returns:
            The /detect-trees body; its decode_s is 0 (every window is read in the Detectors, within detect_s).
        """
        started = time.perf_counter()
        shape = source.shape
        tiles = plan_raster_tiles(source, params, await self.stages.tile_target(shape))
        progress.stage, progress.tiles_total = "detecting", len(tiles)

        async def window(tile: Tile) -> list[Tree]:
            found = await self.stages.detect_window(source, tile, params)
            progress.tiles_done += 1
            progress.trees_so_far += len(found)
            return found

        per_tile = await asyncio.gather(*(window(tile) for tile in tiles))
        return self._merged(list(per_tile), shape, len(tiles), params, progress, (started, 0.0), warnings)

    async def _detect_whole(self, data: bytes, params: DetectionParams, progress: Progress) -> _Detected:
        """The short path: one Detector call decodes and detects the whole image (one tile)."""
        progress.stage, progress.tiles_total = "detecting", 1
        whole = await self.stages.detect_whole(data, params)
        progress.tiles_done, progress.trees_so_far = 1, len(whole.trees)
        return whole.shape, [whole.trees], whole.decode_s, 1

    async def _detect_tiles(self, data: bytes, params: DetectionParams, progress: Progress, n_tiles: int) -> _Detected:
        """The split path: decode once in the splitter, then every tile in parallel on the Detectors."""
        started = time.perf_counter()
        plan = await self._split(data, params, n_tiles)
        decode_s = time.perf_counter() - started
        progress.stage, progress.tiles_total = "detecting", len(plan.tiles)
        try:
            per_tile = await asyncio.gather(*(self._tile(plan, tile, params, progress) for tile in plan.tiles))
        finally:
            await self.stages.release(plan)
        return plan.shape, per_tile, decode_s, len(plan.tiles)

    async def _split(self, data: bytes, params: DetectionParams, n_tiles: int) -> SplitPlan:
        """The split stage; when the request is cancelled meanwhile (DELETE /jobs/{id}), the split goes on in
        its stage and the image it holds is released once it is done (else it stays held until it expires)."""
        split = asyncio.ensure_future(self.stages.split(data, params, n_tiles))
        try:
            return await asyncio.shield(split)
        except asyncio.CancelledError:
            split.add_done_callback(self._release_split)
            raise

    def _release_split(self, split: asyncio.Future[SplitPlan]) -> None:
        if not split.cancelled() and split.exception() is None:
            task = asyncio.ensure_future(self.stages.release(split.result()))
            self._releasing.add(task)  # a reference until it is done (the loop keeps only weak ones)
            task.add_done_callback(self._releasing.discard)

    async def _tile(self, plan: SplitPlan, tile: Tile, params: DetectionParams, progress: Progress) -> list[Tree]:
        found = await self.stages.detect_tile(plan, tile, params)
        progress.tiles_done += 1
        progress.trees_so_far += len(found)
        return found

    @admitted(generate_need)
    async def generate(
        self, payload: Any, base_model: str, progress: Progress, *, fmt: ModelFormat = "obj", store: bool = False
    ) -> InlineModel | StoredScene:
        """One scene from a tree list: an OBJ or zip is returned up to LARGE_MODEL_THRESHOLD trees and stored above
        it; a GLB (about 40 bytes per tree) is always returned; with `store` (jobs) every format is stored.

        Args:
            payload: the /detect-trees response (or a bare tree list), parsed JSON.
            base_model: the base tree model's name.
            progress: its stage becomes "generating" or "storing".
            fmt: the scene's format.
            store: store it whatever its size (jobs).

        Returns:
            The inline scene, or the StoredScene.

        Raises:
            InvalidTreesError, TooManyTreesError, UnknownModelError: the input (4xx).
        """
        trees = check_tree_columns(parse_tree_columns(payload, max_trees=self.settings.max_trees_limit)).trees()
        base = check_model_name(base_model)
        store = store or (fmt != "glb" and len(trees) > self.settings.large_model_threshold)
        progress.stage = "storing" if store else "generating"
        started = time.perf_counter()
        built = await self.stages.build_model(trees, base, store=store, name=model_name(len(trees)), fmt=fmt)
        self.metrics.stage("generate", time.perf_counter() - started)
        if isinstance(built, InlineModel):
            return built
        return StoredScene(built, len(trees), self.stored_message(len(trees)))

    def stored_message(self, total_trees: int) -> str:
        """What the answer of a stored scene tells the client."""
        threshold = self.settings.large_model_threshold
        why = (
            f"The model has {total_trees:,} trees, more than {threshold:,}: it was stored; "
            if total_trees > threshold
            else f"The model ({total_trees:,} trees) was stored; "
        )
        return why + "download it from download_url before it expires."


def _result(
    shape: tuple[int, ...], tile_count: int, params: DetectionParams, trees: list[Tree], timings: dict[str, float]
) -> DetectionResult:
    return DetectionResult(
        trees=tuple(trees),
        width=int(shape[1]),
        height=int(shape[0]),
        metres_per_pixel=metres_per_pixel(params, shape),
        params=params,
        tile_count=tile_count,
        timings_s=timings,
    )
