"""Detection: one tile (for parallel workers) or a whole image (tiles run in this process)."""

from __future__ import annotations

import math
import time

import numpy as np

from treecore.crowns import Crowns, legacy_crowns, scale_for, tree_top_crowns
from treecore.errors import InvalidImageError
from treecore.heatmap import HeatmapModel, heatmap_crowns
from treecore.merge import merge_trees
from treecore.tiles import halo_pixels, owned, plan_tiles
from treecore.types import DetectionParams, DetectionResult, Tile, Tree, Window
from treecore.vegetation import to_hsv, vegetation_mask


def metres_per_pixel(params: DetectionParams, shape: tuple[int, ...]) -> tuple[float, float]:
    """Metres per pixel along x and y.

    Args:
        params: real_width and real_height in metres.
        shape: (H, W, ...) of the full image.

    Returns:
        (real_width / W, real_height / H).
    """
    return params.real_width / shape[1], params.real_height / shape[0]


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape[:2]:
        raise InvalidImageError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")


def window_crowns(
    image: np.ndarray, window: Window, params: DetectionParams, model: HeatmapModel | None = None
) -> Crowns:
    """Crowns of one window of the full image, sized and filtered, in full-image pixels.

    Args:
        image: (H, W, 3) uint8 RGB, the FULL image (read, never written or copied whole).
        window: the part to read.
        params: detection parameters.
        model: the heatmap method's network (default: the packaged one).

    Returns:
        Crowns whose diameter lies within [min_diameter, max_diameter] metres.
    """
    scale = scale_for(params, image.shape)
    if params.method == "heatmap":
        crowns = heatmap_crowns(image, window, params, model)
        diameter_m = crowns.diameters * scale.metres_per_pixel
        keep = (diameter_m >= params.min_diameter) & (diameter_m <= params.max_diameter)
        return Crowns(crowns.centres[keep], crowns.diameters[keep])
    part = image[window.y0 : window.y1, window.x0 : window.x1]
    hsv = to_hsv(part)
    mask = vegetation_mask(hsv, params)
    if params.method == "legacy":
        whole = Window(0, 0, image.shape[1], image.shape[0])
        crowns = legacy_crowns(mask, window, whole, scale)
    else:
        crowns = tree_top_crowns(hsv, mask, window, scale)
    diameter_m = crowns.diameters * scale.metres_per_pixel
    keep = (diameter_m >= params.min_diameter) & (diameter_m <= params.max_diameter)
    return Crowns(crowns.centres[keep], crowns.diameters[keep])


def detect_tile(
    image: np.ndarray, tile: Tile, params: DetectionParams, *, model: HeatmapModel | None = None
) -> list[Tree]:
    """Trees whose centre lies in the tile's core, read from the tile's halo window.

    Args:
        image: (H, W, 3) uint8 RGB, the FULL image (e.g. a read-only array from an object store).
        tile: the tile (from `plan_tiles` with `halo_pixels`).
        params: detection parameters.
        model: the heatmap method's network (default: the packaged one).

    Returns:
        Trees in full-image coordinates, id 0 (ids are given by `merge_trees`).
    """
    _check_image(image)
    crowns = window_crowns(image, tile.halo, params, model)
    mx, my = metres_per_pixel(params, image.shape)
    mpp = math.sqrt(mx * my)
    trees = []
    for (px, py), d in zip(crowns.centres.tolist(), crowns.diameters.tolist(), strict=True):
        if owned(tile, px, py):
            trees.append(Tree(0, px * mx, py * my, d * mpp, px, py, d))
    return trees


def detect_trees(
    image: np.ndarray,
    params: DetectionParams,
    *,
    n_tiles: int | None = 1,
    tile_size: int | None = None,
    model: HeatmapModel | None = None,
) -> DetectionResult:
    """Detect the trees of a whole image, tile by tile in this process, merged globally.

    The result does not depend on the tiling: any `n_tiles` or `tile_size` gives the same trees.

    Args:
        image: (H, W, 3) uint8 RGB.
        params: detection parameters.
        n_tiles: number of tiles (ignored when tile_size is given).
        tile_size: largest tile core side, pixels.
        model: the heatmap method's network (default: the packaged one).

    Returns:
        The DetectionResult, with timings in seconds ("detect_s", "merge_s").
    """
    _check_image(image)
    started = time.perf_counter()
    tiles = plan_tiles(
        image.shape,
        halo=halo_pixels(params, image.shape),
        n_tiles=None if tile_size is not None else n_tiles,
        tile_size=tile_size,
    )
    found: list[Tree] = []
    for tile in tiles:
        found.extend(detect_tile(image, tile, params, model=model))
    detected = time.perf_counter()
    trees = merge_trees(
        found, params.cluster_threshold, min_diameter=params.min_diameter, max_diameter=params.max_diameter
    )
    merged = time.perf_counter()
    return DetectionResult(
        trees=tuple(trees),
        width=image.shape[1],
        height=image.shape[0],
        metres_per_pixel=metres_per_pixel(params, image.shape),
        params=params,
        tile_count=len(tiles),
        timings_s={"detect_s": detected - started, "merge_s": merged - detected},
    )
