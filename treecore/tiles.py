"""Tiles: cores that cover the image exactly once, halos around them, and who owns a tree."""

from __future__ import annotations

import math

from treecore import heatmap
from treecore.crowns import context_px
from treecore.errors import InvalidParametersError
from treecore.types import DetectionParams, Tile, Window


def halo_pixels(params: DetectionParams, shape: tuple[int, ...]) -> int:
    """Halo width that makes detection over tiles equal detection on the whole image.

    Args:
        params: detection parameters.
        shape: (H, W, ...) of the full image.

    Returns:
        Pixels added around each core (at least the largest crown plus every filter radius; for the
        heatmap method the network's receptive field, the peak search and the resampling alignment).
    """
    if params.method == "heatmap":
        return heatmap.context_px(params, shape)
    return context_px(params, shape)


def grid_for(n_tiles: int, height: int, width: int) -> tuple[int, int]:
    """Rows and columns for `n_tiles` tiles, as square as the image allows.

    Args:
        n_tiles: wanted number of tiles (>= 1).
        height: image height, pixels.
        width: image width, pixels.

    Returns:
        (rows, cols) with rows * cols == n_tiles, each at most the image side.
    """
    best: tuple[float, int, int] | None = None
    for rows in range(1, n_tiles + 1):
        if n_tiles % rows:
            continue
        cols = n_tiles // rows
        if rows > height or cols > width:
            continue
        aspect = abs(math.log((height / rows) / (width / cols)))
        if best is None or aspect < best[0]:
            best = (aspect, rows, cols)
    if best is None:
        return min(n_tiles, height), 1
    return best[1], best[2]


def _cuts(length: int, parts: int) -> list[int]:
    return [round(i * length / parts) for i in range(parts + 1)]


def plan_tiles(
    shape: tuple[int, ...],
    *,
    halo: int,
    n_tiles: int | None = None,
    tile_size: int | None = None,
) -> list[Tile]:
    """Cut an image into tiles whose cores cover it exactly once.

    Give either `n_tiles` (a grid as square as possible) or `tile_size` (cores of at most that
    many pixels a side, evenly spread).

    Args:
        shape: (H, W, ...) of the full image.
        halo: pixels of context around each core (see `halo_pixels`).
        n_tiles: number of tiles wanted.
        tile_size: largest core side, pixels.

    Returns:
        Tiles in row-major order; cores are disjoint and their union is the image; each halo is the
        core grown by `halo`, clipped to the image.

    Raises:
        InvalidParametersError: neither or both of n_tiles / tile_size, or a value below 1.
    """
    height, width = int(shape[0]), int(shape[1])
    if (n_tiles is None) == (tile_size is None):
        raise InvalidParametersError("give exactly one of n_tiles and tile_size")
    if halo < 0:
        raise InvalidParametersError(f"halo must not be negative, got {halo}")
    if n_tiles is not None:
        if n_tiles < 1:
            raise InvalidParametersError(f"n_tiles must be at least 1, got {n_tiles}")
        rows, cols = grid_for(n_tiles, height, width)
    else:
        assert tile_size is not None
        if tile_size < 1:
            raise InvalidParametersError(f"tile_size must be at least 1, got {tile_size}")
        rows, cols = math.ceil(height / tile_size), math.ceil(width / tile_size)
    ys, xs = _cuts(height, rows), _cuts(width, cols)
    tiles: list[Tile] = []
    for r in range(rows):
        for c in range(cols):
            core = Window(xs[c], ys[r], xs[c + 1], ys[r + 1])
            outer = Window(
                max(0, core.x0 - halo), max(0, core.y0 - halo), min(width, core.x1 + halo), min(height, core.y1 + halo)
            )
            tiles.append(Tile(index=len(tiles), core=core, halo=outer))
    return tiles


def owned(tile: Tile, x_px: float, y_px: float) -> bool:
    """Whether the tile reports a tree centred at (x_px, y_px): its core holds the centre.

    Centres use the pixel-centre convention; the half-open core makes ownership unique.

    Args:
        tile: the tile.
        x_px: centre x, full-image pixels.
        y_px: centre y, full-image pixels.

    Returns:
        True for exactly one tile of a plan.
    """
    return tile.core.contains(x_px, y_px)
