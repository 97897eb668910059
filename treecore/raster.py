"""Raster reads through GDAL (rasterio): a header as a small dataclass, one window, or a whole upload, as RGB.

A source is a path GDAL opens: a file, `/vsicurl/https://...` (HTTP range requests), `/vsiaz/container/blob`
(Azure Blob with GDAL's own credentials options), or the bytes of an upload (opened in memory, no copy). Only
the GeoTIFF driver is allowed (a Cloud-Optimized GeoTIFF is a GeoTIFF), so no other GDAL format parser ever
sees the bytes. Every read runs inside `gdal_env`: a bounded block cache (GDAL_CACHEMAX) and no directory
listing on open, so the memory a read needs is about its window, not the raster.

Bands become (H, W, 3) uint8 RGB as the upload decoder's rule (treecore.imageio.to_rgb8) says: bands whose colour
interpretation is red, green, blue in that order of preference; else 3 or 4 bands are RGB(A) and alpha is
dropped; 1 or 2 bands are grey (plus alpha) replicated, a palette band is expanded; 16-bit samples are scaled to
8 bits (value / 257, rounded), floats are taken as 0-1 and scaled by 255. The conversion is per pixel, so a
window read equals the same slice of the whole raster read, bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window as GdalWindow

from treecore import heatmap
from treecore.errors import ImageTooLargeError, InvalidGeoreferenceError, InvalidImageError
from treecore.types import GEOGRAPHIC_EPSG, DetectionParams, Georeference, Tile, Window, check_epsg, check_pixel_scale

#: GDAL configuration every read runs with (strings, as GDAL takes them, except GDAL_CACHEMAX).
#:   GDAL_CACHEMAX 64 MiB: the raster block cache, in BYTES: rasterio passes an int to GDALSetCacheMax64 for
#:     the block and restores the previous size after it (GDAL's own default is 5% of the RAM, 1.2 GB here).
#:     A window read decodes the blocks it touches; the cache only keeps recently used ones for the next window.
#:   GDAL_DISABLE_READDIR_ON_OPEN EMPTY_DIR: no directory listing (one request less per open on /vsicurl/, and
#:     no sidecar .ovr/.aux.xml files looked for next to an upload).
#:   GDAL_HTTP_NETRC NO: never send credentials from a ~/.netrc.
#:   GDAL_HTTP_MAX_RETRY 3, GDAL_HTTP_RETRY_DELAY 0.5 (seconds): transient HTTP errors (429, 5xx) are retried.
#:   GDAL_HTTP_TIMEOUT 60, GDAL_HTTP_CONNECTTIMEOUT 10: seconds.
#:   GDAL_NUM_THREADS 1: one decoding thread (a replica gets one core; parallelism is across replicas).
#:   VSI_CACHE FALSE: no extra per-file cache beyond the block cache.
#:   GDAL_INGESTED_BYTES_AT_OPEN 65536: the first request reads 64 KB, enough for a COG's header and directories.
GDAL_OPTIONS: Mapping[str, str | int] = {
    "GDAL_CACHEMAX": 64 * 2**20,
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_NETRC": "NO",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_NUM_THREADS": "1",
    "VSI_CACHE": "FALSE",
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
}
#: The one GDAL driver a source may be opened with.
DRIVERS = ("GTiff",)
#: Mean Earth radius, metres: metres per degree for a geographic CRS's pixel size (approximate, spherical).
EARTH_RADIUS_M = 6_371_008.8

Source = str | bytes
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_MEMORY_FILE_NAME = re.compile(rf"(/vsimem/)?({_UUID}[/.]?)+(tif)?:? ?")


@dataclass(frozen=True)
class RasterHeader:
    """What a raster's header says, read without any pixel: small and picklable, for planning tiles.

    `width`, `height`: pixels. `count`: bands; `dtype`: sample type ("uint8", "uint16", ...). `block_width`,
    `block_height`: the pixels GDAL decodes at once (a tile of a tiled TIFF, else a strip of rows). `tiled`: the
    file is tiled (a COG is). `overviews`: decimation factors of the reduced-resolution levels (e.g. (2, 4, 8)).
    `compression`: e.g. "deflate", "jpeg", or None. `transform`: the affine (a, b, c, d, e, f) from pixel
    corners to CRS coordinates, x = a * col + b * row + c, y = d * col + e * row + f (PixelIsArea: it maps
    the top-left corner of pixel (0, 0) to (c, f)); None without a georeference. `epsg`: the CRS's EPSG code
    (None: no CRS, or one without a code). `geographic`: the CRS is in degrees. `raster_type`: "PixelIsArea" or
    "PixelIsPoint" (GDAL has already moved the transform to pixel corners). `gcps`: ground control points
    instead of a transform. `metres_per_pixel`: (x, y) ground metres per column and row from the transform
    (for degrees, at the raster's centre latitude), or None.
    """

    width: int
    height: int
    count: int
    dtype: str
    block_width: int
    block_height: int
    tiled: bool
    overviews: tuple[int, ...]
    compression: str | None
    transform: tuple[float, float, float, float, float, float] | None
    epsg: int | None
    geographic: bool
    raster_type: str
    gcps: int
    metres_per_pixel: tuple[float, float] | None

    @property
    def pixels(self) -> int:
        """width * height."""
        return self.width * self.height

    def georeference(self, *, epsg: int | None = None) -> Georeference | None:
        """The header's georeference as treecore places trees with it (north up, corner origin).

        Args:
            epsg: an EPSG code to use instead of the header's (a CRS without one, or a wrong one).

        Returns:
            A Georeference with source "geotiff" and the pixel scale, or None without a transform (and no GCPs).

        Raises:
            InvalidGeoreferenceError: ground control points only, a rotated or sheared transform, a zero or
                non-finite scale, or a CRS with no EPSG code and none given.
        """
        if self.transform is None:
            if self.gcps:
                raise InvalidGeoreferenceError(
                    "GeoTIFF has ground control points but no pixel scale or transform: warp it to a north-up "
                    "grid first (gdalwarp), or give origin_easting, origin_northing and epsg"
                )
            return None
        a, b, c, d, e, f = self.transform
        if b != 0 or d != 0:
            raise InvalidGeoreferenceError(
                "GeoTIFF is rotated or sheared (its transform has rotation terms): only north-up images are "
                "supported; warp it north up first (gdalwarp)"
            )
        # A positive row scale (south up) is taken as north up, as GDAL does for a negative ScaleY by default.
        scale = check_pixel_scale((a, abs(e)))
        if epsg is not None:
            code, geographic = check_epsg(epsg), self.geographic or epsg in GEOGRAPHIC_EPSG
        elif self.epsg is None:
            raise InvalidGeoreferenceError(
                "GeoTIFF has no EPSG code of its CRS (a user-defined CRS, or no CRS in its GeoKeys): "
                "give the EPSG code as epsg"
            )
        else:
            code, geographic = self.epsg, self.geographic
        return Georeference(
            origin_easting=c,
            origin_northing=f,
            epsg=code,
            pixel_scale=scale,
            geographic=geographic,
            source="geotiff",
            raster_type=self.raster_type,
        )


@contextlib.contextmanager
def gdal_env(options: Mapping[str, str] | None = None) -> Iterator[None]:
    """GDAL_OPTIONS, updated with `options` (e.g. credentials for /vsiaz/), for the reads inside the block.

    Args:
        options: extra GDAL configuration options (AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_SAS_TOKEN, ...).
    """
    with rasterio.Env(**{**GDAL_OPTIONS, **(options or {})}), warnings.catch_warnings():
        # A plain TIFF (no geo tags) is fine here: it is placed by real_width/real_height.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


@contextlib.contextmanager
def open_raster(source: Source, *, options: Mapping[str, str] | None = None) -> Iterator[DatasetReader]:
    """Open a raster with the GeoTIFF driver, inside `gdal_env`; reads GDAL refuses become InvalidImageError.

    Args:
        source: a GDAL path (file, /vsicurl/..., /vsiaz/...) or a TIFF file's bytes.
        options: extra GDAL configuration options.

    Yields:
        The open dataset (closed at the end of the block).

    Raises:
        InvalidImageError: GDAL cannot open or read it (not a TIFF, corrupt, truncated, unreachable).
    """
    with gdal_env(options), contextlib.ExitStack() as stack:
        try:
            if isinstance(source, bytes):
                memfile = stack.enter_context(MemoryFile(source))
                dataset = stack.enter_context(memfile.open(driver=DRIVERS[0]))
            else:
                dataset = stack.enter_context(rasterio.open(source, driver=DRIVERS[0]))
        except RasterioError as exc:
            raise InvalidImageError(f"TIFF could not be opened: {_gdal_message(exc)}") from None
        try:
            yield dataset
        except RasterioError as exc:
            message = _gdal_message(exc)
            raise InvalidImageError(f"TIFF could not be read (corrupt or truncated data): {message}") from None


def _gdal_message(exc: BaseException) -> str:
    # rasterio's "See previous exception" points at GDAL's own error, chained as the cause: say that one.
    cause = exc.__cause__ or exc.__context__
    text = str(cause if cause is not None and "previous exception" in str(exc) else exc).strip()
    # GDAL names an upload by its random in-memory file name (/vsimem/<uuid>/<uuid>.tif): keep only the reason.
    return _MEMORY_FILE_NAME.sub("", text) or type(exc).__name__


def header_of(dataset: DatasetReader) -> RasterHeader:
    """The RasterHeader of an open dataset (reads no pixels).

    Args:
        dataset: from `open_raster`.

    Returns:
        The header.
    """
    block_height, block_width = dataset.block_shapes[0]
    affine = dataset.transform
    georeferenced = not affine.is_identity
    crs = dataset.crs if georeferenced else None
    epsg = crs.to_epsg() if crs is not None else None
    geographic = bool(crs is not None and crs.is_geographic)
    transform = (affine.a, affine.b, affine.c, affine.d, affine.e, affine.f) if georeferenced else None
    return RasterHeader(
        width=int(dataset.width),
        height=int(dataset.height),
        count=int(dataset.count),
        dtype=str(dataset.dtypes[0]),
        block_width=int(block_width),
        block_height=int(block_height),
        tiled=bool(dataset.profile.get("tiled", False)),
        overviews=tuple(int(f) for f in dataset.overviews(1)),
        compression=dataset.compression.value.lower() if dataset.compression is not None else None,
        transform=transform,
        epsg=epsg,
        geographic=geographic,
        raster_type="PixelIsPoint" if dataset.tags().get("AREA_OR_POINT") == "Point" else "PixelIsArea",
        gcps=len(dataset.gcps[0]),
        metres_per_pixel=_metres_per_pixel(transform, crs, dataset.height),
    )


def _metres_per_pixel(
    transform: tuple[float, float, float, float, float, float] | None, crs: Any, height: int
) -> tuple[float, float] | None:
    if transform is None or crs is None:
        return None
    a, b, _, d, e, f = transform
    sx, sy = math.hypot(a, d), math.hypot(b, e)
    if crs.is_geographic:
        latitude = math.radians(f + e * height / 2)
        per_degree = math.pi * EARTH_RADIUS_M / 180
        return sx * per_degree * math.cos(latitude), sy * per_degree
    if not crs.is_projected:
        return None  # an engineering or unknown CRS: its units are not known to be metres
    factor = float(crs.linear_units_factor[1])
    return sx * factor, sy * factor


def read_header(source: Source, *, options: Mapping[str, str] | None = None) -> RasterHeader:
    """Read a raster's header only: size, blocks, overviews, CRS, transform, metres per pixel.

    Args:
        source: a GDAL path or a TIFF file's bytes.
        options: extra GDAL configuration options.

    Returns:
        The RasterHeader.

    Raises:
        InvalidImageError: GDAL cannot open it as a GeoTIFF.
    """
    with open_raster(source, options=options) as dataset:
        return header_of(dataset)


def check_window(window: Window, width: int, height: int) -> None:
    """Refuse an empty window or one that leaves the raster.

    Raises:
        InvalidImageError: otherwise (the message gives both).
    """
    if not (0 <= window.x0 < window.x1 <= width and 0 <= window.y0 < window.y1 <= height):
        raise InvalidImageError(f"window {window} is empty or outside the {width} x {height} raster")


def read_window(source: Source, window: Window, *, options: Mapping[str, str] | None = None) -> np.ndarray:
    """Read one window of a raster as RGB: only the blocks it touches are fetched and decoded.

    Args:
        source: a GDAL path (e.g. /vsicurl/https://..., /vsiaz/images/a.tif) or a TIFF file's bytes.
        window: the pixels to read, in full-raster pixels (e.g. a Tile's halo).
        options: extra GDAL configuration options.

    Returns:
        image: (window.height, window.width, 3) uint8 RGB, C-contiguous.

    Raises:
        InvalidImageError: unreadable raster, unsupported bands, or a window outside it.
    """
    with open_raster(source, options=options) as dataset:
        return read_rgb(dataset, window)


def read_rgb(dataset: DatasetReader, window: Window | None = None) -> np.ndarray:
    """Read a window (default: all) of an open dataset as (H, W, 3) uint8 RGB (see the module docstring).

    Args:
        dataset: from `open_raster`.
        window: full-raster pixels, or None for the whole raster.

    Returns:
        image: (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        InvalidImageError: unsupported bands or sample type, or a window outside the raster.
    """
    width, height = int(dataset.width), int(dataset.height)
    window = window or Window(0, 0, width, height)
    check_window(window, width, height)
    indexes, palette = _rgb_bands(dataset)
    gdal_window = GdalWindow(window.x0, window.y0, window.width, window.height)
    dtype = np.dtype(dataset.dtypes[0])
    if dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise InvalidImageError(f"unsupported sample type {dtype} (8 or 16-bit integers or floats only)")
    # Pixel-interleaved output buffer viewed band-first: GDAL writes the RGB layout directly, no copy.
    out = np.empty((window.height, window.width, len(indexes)), dtype)
    dataset.read(indexes, window=gdal_window, out=out.transpose(2, 0, 1))
    rgb = _to_uint8(out)
    if palette is not None:
        return np.ascontiguousarray(palette[rgb[:, :, 0]])
    if rgb.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(rgb, 3, axis=2))
    return rgb


def _rgb_bands(dataset: DatasetReader) -> tuple[list[int], np.ndarray | None]:
    """The band indexes (1-based) to read for RGB, and a palette (256, 3) uint8 for a palette band."""
    interp = list(dataset.colorinterp)
    count = len(interp)
    if all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)], None
    if count in (3, 4):
        return [1, 2, 3], None
    if count in (1, 2):
        if interp[0] == ColorInterp.palette:
            return [1], _palette(dataset)
        return [1], None
    raise InvalidImageError(f"unsupported band count {count} (1 to 4 bands, or bands marked red, green, blue)")


def _palette(dataset: DatasetReader) -> np.ndarray:
    if dataset.dtypes[0] != "uint8":
        raise InvalidImageError(f"unsupported palette sample type {dataset.dtypes[0]} (8-bit palettes only)")
    lut = np.zeros((256, 3), np.uint8)
    for index, colour in dataset.colormap(1).items():
        if 0 <= index < 256:
            lut[index] = colour[:3]
    return lut


def _to_uint8(samples: np.ndarray) -> np.ndarray:
    """(H, W, C) samples as uint8, the upload decoder's scaling (a new C-contiguous array, or `samples`)."""
    if samples.dtype == np.uint8:
        return samples
    if samples.dtype == np.uint16:
        return ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)
    scaled: np.ndarray = np.clip(np.nan_to_num(samples) * 255.0 + 0.5, 0, 255)
    return scaled.astype(np.uint8)


def read_raster(source: Source, *, max_pixels: int, options: Mapping[str, str] | None = None) -> np.ndarray:
    """Read a whole raster as RGB, refusing one over `max_pixels` from its header before any pixel is decoded.

    Args:
        source: a GDAL path or a TIFF file's bytes.
        max_pixels: the largest accepted width * height.
        options: extra GDAL configuration options.

    Returns:
        image: (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        InvalidImageError: unreadable, corrupt or unsupported.
        ImageTooLargeError: over `max_pixels`.
    """
    with open_raster(source, options=options) as dataset:
        check_pixels(int(dataset.width), int(dataset.height), max_pixels=max_pixels)
        return read_rgb(dataset)


def check_pixels(width: int, height: int, *, max_pixels: int) -> None:
    """Refuse a raster of more than `max_pixels` (from its header).

    Raises:
        ImageTooLargeError: width * height > max_pixels.
    """
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width} x {height} = {width * height:,} pixels, over the limit of {max_pixels:,} pixels"
        )


def read_extent(tile: Tile, params: DetectionParams, shape: tuple[int, ...]) -> Window:
    """The pixels a detector reads for a tile: its halo, and for the heatmap method the halo grown to whole
    resampling blocks (treecore.heatmap reads that), so a window read of this extent detects like the whole image.

    Args:
        tile: the tile (from plan_tiles with halo_pixels).
        params: detection parameters.
        shape: (H, W, ...) of the FULL raster.

    Returns:
        The window, in full-raster pixels, within the raster.
    """
    halo = tile.halo
    if params.method != "heatmap":
        return halo
    read = heatmap.resampling(params, shape).aligned(halo, int(shape[1]), int(shape[0]), heatmap.NET_STRIDE)
    return Window(min(halo.x0, read.x0), min(halo.y0, read.y0), max(halo.x1, read.x1), max(halo.y1, read.y1))


@dataclass(frozen=True)
class WindowedImage:
    """One window of a full image standing in for it: `shape` is the FULL image's, and a slice inside `window`
    reads `pixels`. detect_tile reads only `read_extent` of its tile, so it takes this in place of the whole image.

    `pixels`: (window.height, window.width, 3) uint8 RGB. `window`: where they lie, full-image pixels.
    `full_shape`: (H, W, 3) of the full image.
    """

    pixels: np.ndarray
    window: Window
    full_shape: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the FULL image."""
        return self.full_shape

    @property
    def ndim(self) -> int:
        """3, like the image it stands for."""
        return 3

    @property
    def dtype(self) -> np.dtype[Any]:
        """uint8."""
        return self.pixels.dtype

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        """image[y0:y1, x0:x1] in full-image pixels; refused (IndexError) outside the window."""
        rows, cols = key
        height, width = self.full_shape[:2]
        y0, y1, ys = rows.indices(height)
        x0, x1, xs = cols.indices(width)
        w = self.window
        if ys != 1 or xs != 1 or not (w.y0 <= y0 and y1 <= w.y1 and w.x0 <= x0 and x1 <= w.x1):
            raise IndexError(f"rows {y0}:{y1}, columns {x0}:{x1} are outside the window read, {w}")
        return self.pixels[y0 - w.y0 : y1 - w.y0, x0 - w.x0 : x1 - w.x0]


def read_tile(
    source: Source,
    tile: Tile,
    params: DetectionParams,
    shape: tuple[int, ...],
    *,
    options: Mapping[str, str] | None = None,
) -> WindowedImage:
    """Read what a detector needs for one tile (`read_extent`), as a stand-in for the full image.

    Args:
        source: a GDAL path (e.g. /vsiaz/images/a.tif) or a TIFF file's bytes.
        tile: the tile.
        params: detection parameters.
        shape: (H, W, ...) of the full raster (from its RasterHeader).
        options: extra GDAL configuration options.

    Returns:
        The WindowedImage; `detect_tile(result, tile, params)` gives the tile's trees.
    """
    extent = read_extent(tile, params, shape)
    pixels = read_window(source, extent, options=options)
    return WindowedImage(pixels, extent, (int(shape[0]), int(shape[1]), 3))
