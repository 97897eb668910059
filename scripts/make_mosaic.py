"""Write a synthetic Cloud-Optimized GeoTIFF of any size with known trees, window by window (bounded memory).

    python scripts/make_mosaic.py out.tif --width 32768 --height 32768 --mpp 0.5 [--compress jpeg]
        [--epsg 32633 --origin 500000 5500000] [--spacing 30 --fill 0.9] [--seed 7] [--truth out.csv]

The scene is the one scripts/make_sample.py draws (crowns of 2-9 m, a dark rim and a bright centre, on textured
soil), but every pixel and every tree is a pure function of (seed, position): trees sit one per slot of a
`spacing` metre grid (a slot holds one with probability `fill`), jittered inside it so that no two crowns touch,
and the soil and the noise come from an integer hash of the pixel. So any window can be drawn alone, in any
order, and the whole raster never exists in memory: chunks of CHUNK x CHUNK pixels go into a tiled GeoTIFF
(a temporary file beside the output), then GDAL's COG driver copies it into the output with its overviews
(built from that file, block by block).

Compression: JPEG (YCbCr, quality 90, the default) is what drone and NEON orthomosaics ship as and is about
10x smaller than lossless, so range reads move realistic bytes; DEFLATE (with the horizontal predictor) is
lossless, for tests that compare pixels with what was drawn. Either way the window reads and the whole-raster
read decode the same tiles, so they agree bit for bit.

The truth file (CSV, default <output>.trees.csv) has one row per tree: id, pixel_x, pixel_y (centre, treecore
pixels: pixel column i spans i..i+1), x_m, y_m (metres from the top-left corner, y down), easting, northing
(CRS metres), diameter_m.
"""

from __future__ import annotations

import argparse
import csv
import functools
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

#: Side of the chunks drawn and written at once, pixels (a multiple of the 512 px COG block).
CHUNK = 2048
BLOCK = 512
SOIL_RGB = (140, 115, 85)
RIM_RGB = (30, 110, 30)
CENTRE_RGB = (45, 160, 45)
#: Default crown diameters, metres (uniform), as make_sample.py: radii of 1.0 to 4.5 m.
MIN_DIAMETER_M, MAX_DIAMETER_M = 2.0, 9.0
#: Soil shade varies per square of this many pixels.
SHADE_PX = 16
#: Side of the pixel-noise pattern that repeats over the mosaic, pixels (prime, so it never lines up with blocks).
NOISE_PX = 1021

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class Mosaic:
    """What to draw: size in pixels, metres per pixel, the CRS and its origin, the tree grid, the seed."""

    width: int
    height: int
    mpp: float
    epsg: int = 32633
    origin: tuple[float, float] = (500_000.0, 5_500_000.0)
    spacing_m: float = 30.0
    fill: float = 0.9
    seed: int = 7
    crowns_m: tuple[float, float] = (MIN_DIAMETER_M, MAX_DIAMETER_M)

    @property
    def slot_px(self) -> float:
        """Side of one tree slot, pixels."""
        return self.spacing_m / self.mpp


def _mix(*keys: np.ndarray | int) -> np.ndarray:
    """A 64-bit hash (splitmix64 rounds) of integer arrays, broadcast together: uint64."""
    h = np.zeros(np.broadcast_shapes(*(np.shape(k) for k in keys)), np.uint64)
    with np.errstate(over="ignore"):
        for key in keys:
            h = h ^ np.asarray(key).astype(np.uint64)
            h = (h + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
            h = ((h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
            h = ((h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
            h = h ^ (h >> np.uint64(31))
    return h


def _uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) from the hash of the keys."""
    return (_mix(*keys) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def trees_in(mosaic: Mosaic, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The trees whose slot meets the pixel rectangle [x0, x1) x [y0, y1) (pixels; may reach outside it).

    Returns:
        (N, 3) float64 [centre column, centre row, radius], integer pixel centres (cv2.circle's), radius pixels.
    """
    slot = mosaic.slot_px
    rows = np.arange(max(0, int(y0 // slot)), int(y1 // slot) + 1)
    cols = np.arange(max(0, int(x0 // slot)), int(x1 // slot) + 1)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    r, c = r.ravel(), c.ravel()
    seed = mosaic.seed
    keep = _uniform(seed, r, c, 0) < mosaic.fill
    low, high = mosaic.crowns_m
    radius_m = (low + (high - low) * _uniform(seed, r, c, 1)) / 2
    # Jitter inside the slot, at least the largest radius (plus 0.5 m) from its sides: crowns never touch.
    margin = (high / 2 + 0.5) / mosaic.mpp
    span = max(0.0, slot - 2 * margin)
    cx = np.floor(c * slot + margin + span * _uniform(seed, r, c, 2))
    cy = np.floor(r * slot + margin + span * _uniform(seed, r, c, 3))
    radius = np.maximum(1.0, np.round(radius_m / mosaic.mpp))
    inside = keep & (cx < mosaic.width) & (cy < mosaic.height)
    return np.stack([cx[inside], cy[inside], radius[inside]], axis=1)


@functools.lru_cache(maxsize=4)
def _noise_pattern(seed: int) -> np.ndarray:
    """(NOISE_PX, NOISE_PX, 3) uint8 noise 0-11, repeated over the mosaic (cheaper than a hash per pixel)."""
    return np.random.default_rng(seed).integers(0, 12, (NOISE_PX, NOISE_PX, 3), dtype=np.uint8)


def draw_window(mosaic: Mosaic, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """The pixels of one window of the mosaic, the same whatever windows are drawn before or around it.

    Returns:
        (height, width, 3) uint8 RGB.
    """
    seed = mosaic.seed
    # Soil: a shade per SHADE_PX square (hashed on the coarse grid, then repeated), plus the base colour.
    by0, bx0 = y0 // SHADE_PX, x0 // SHADE_PX
    by1, bx1 = (y0 + height - 1) // SHADE_PX + 1, (x0 + width - 1) // SHADE_PX + 1
    rows = np.arange(by0, by1, dtype=np.int64)[:, None, None]
    cols = np.arange(bx0, bx1, dtype=np.int64)[None, :, None]
    shade = (_mix(seed, 10, rows, cols, np.arange(3)[None, None, :]) % np.uint64(30)).astype(np.uint8)
    shade += np.array(SOIL_RGB, np.uint8)
    coarse = np.repeat(np.repeat(shade, SHADE_PX, axis=0), SHADE_PX, axis=1)
    oy, ox = y0 - by0 * SHADE_PX, x0 - bx0 * SHADE_PX
    image = np.ascontiguousarray(coarse[oy : oy + height, ox : ox + width])
    reach = mosaic.crowns_m[1] / 2 / mosaic.mpp + 1
    trees = trees_in(mosaic, x0 - reach, y0 - reach, x0 + width + reach, y0 + height + reach)
    for cx, cy, k in trees.astype(np.int64).tolist():
        cv2.circle(image, (cx - x0, cy - y0), k, RIM_RGB, -1)
        cv2.circle(image, (cx - x0, cy - y0), max(1, k // 2), CENTRE_RGB, -1)
    pattern = _noise_pattern(seed)
    noise = pattern[np.arange(y0, y0 + height) % NOISE_PX][:, np.arange(x0, x0 + width) % NOISE_PX]
    return cv2.add(image, noise)


def truth_rows(mosaic: Mosaic) -> Iterator[list[float | int]]:
    """Every tree of the mosaic as a truth row, in slot order (rows of slots, then columns)."""
    slot = mosaic.slot_px
    east0, north0 = mosaic.origin
    band = max(1, int(CHUNK // slot))  # slot rows at a time, so a 1-gigapixel mosaic's trees are never all held
    n_rows = int(mosaic.height // slot) + 1
    tree_id = 0
    for first in range(0, n_rows, band):
        y0, y1 = first * slot, (first + band) * slot - 1e-9
        trees = trees_in(mosaic, 0, y0, mosaic.width - 1e-9, y1)
        trees = trees[(trees[:, 1] >= y0) & (trees[:, 1] < min(y1, mosaic.height))]
        for cx, cy, radius in trees.tolist():
            tree_id += 1
            px, py = cx + 0.5, cy + 0.5
            x_m, y_m = px * mosaic.mpp, py * mosaic.mpp
            diameter = (2 * radius + 1) * mosaic.mpp  # cv2.circle of radius k covers 2k + 1 pixels across
            yield [tree_id, px, py, round(x_m, 4), round(y_m, 4), round(east0 + x_m, 4), round(north0 - y_m, 4),
                   round(diameter, 4)]  # fmt: skip


def write_mosaic(mosaic: Mosaic, output: Path, *, compress: str = "jpeg", quality: int = 90) -> None:
    """Write the mosaic as a COG at `output`: chunks into a temporary tiled GeoTIFF, then GDAL's COG copy.

    Args:
        mosaic: what to draw.
        output: the COG's path.
        compress: "jpeg" (YCbCr, lossy) or "deflate" (lossless, horizontal predictor).
        quality: JPEG quality, 1-100.
    """
    profile = {
        "driver": "GTiff",
        "width": mosaic.width,
        "height": mosaic.height,
        "count": 3,
        "dtype": "uint8",
        "crs": f"EPSG:{mosaic.epsg}",
        "transform": Affine(mosaic.mpp, 0.0, mosaic.origin[0], 0.0, -mosaic.mpp, mosaic.origin[1]),
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "interleave": "pixel",
        "photometric": "RGB",
        "BIGTIFF": "YES",
    }
    cog_options = {"BLOCKSIZE": BLOCK, "OVERVIEWS": "AUTO", "RESAMPLING": "AVERAGE", "BIGTIFF": "IF_SAFER"}
    if compress == "jpeg":
        cog_options |= {"COMPRESS": "JPEG", "QUALITY": quality}
    else:
        cog_options |= {"COMPRESS": "DEFLATE", "PREDICTOR": 2}
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".mosaic-") as scratch:
        source = Path(scratch) / "source.tif"
        # A 256 MB block cache: the COG copy reads the source a block row at a time to build the overviews.
        with rasterio.Env(GDAL_CACHEMAX=256 * 2**20, GDAL_NUM_THREADS=2):
            with rasterio.open(source, "w", **profile) as dst:
                for y0 in range(0, mosaic.height, CHUNK):
                    for x0 in range(0, mosaic.width, CHUNK):
                        w, h = min(CHUNK, mosaic.width - x0), min(CHUNK, mosaic.height - y0)
                        dst.write(draw_window(mosaic, x0, y0, w, h).transpose(2, 0, 1), window=Window(x0, y0, w, h))
            rasterio.shutil.copy(source, output, driver="COG", **cog_options)


def write_truth(mosaic: Mosaic, path: Path) -> int:
    """Write the truth CSV; returns the number of trees."""
    count = 0
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "pixel_x", "pixel_y", "x_m", "y_m", "easting", "northing", "diameter_m"])
        for row in truth_rows(mosaic):
            writer.writerow(row)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    """Write the COG and its truth file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--width", type=int, default=4096, help="pixels")
    parser.add_argument("--height", type=int, default=4096, help="pixels")
    parser.add_argument("--mpp", type=float, default=0.5, help="metres per pixel")
    parser.add_argument("--epsg", type=int, default=32633, help="EPSG code of a projected CRS in metres")
    parser.add_argument("--origin", type=float, nargs=2, default=(500_000.0, 5_500_000.0), metavar=("E", "N"),
                        help="easting and northing of the top-left corner, metres")  # fmt: skip
    parser.add_argument("--spacing", type=float, default=30.0, help="tree slot side, metres")
    parser.add_argument("--fill", type=float, default=0.9, help="share of slots holding a tree, 0-1")
    parser.add_argument("--crowns", type=float, nargs=2, default=(MIN_DIAMETER_M, MAX_DIAMETER_M),
                        metavar=("MIN", "MAX"), help="crown diameters, metres (uniform)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--compress", choices=("jpeg", "deflate"), default="jpeg")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality, 1-100")
    parser.add_argument("--truth", type=Path, help="truth CSV (default: <output>.trees.csv)")
    args = parser.parse_args(argv)
    mosaic = Mosaic(
        args.width, args.height, args.mpp, args.epsg, tuple(args.origin), args.spacing, args.fill, args.seed
    )
    started = time.perf_counter()
    write_mosaic(mosaic, args.output, compress=args.compress, quality=args.quality)
    truth = args.truth or args.output.with_name(args.output.name + ".trees.csv")
    trees = write_truth(mosaic, truth)
    size = args.output.stat().st_size
    print(
        f"wrote {args.output} ({args.width} x {args.height} px = {args.width * args.height / 1e6:.0f} MP at "
        f"{args.mpp:g} m, {args.compress}, {size / 1e6:.1f} MB) and {truth} ({trees} trees) in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
