"""Window reads through GDAL: COGs from scripts/make_mosaic.py, read whole, by windows, and over HTTP ranges."""

from __future__ import annotations

import http.server
import pickle
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.env
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.errors import NotGeoreferencedWarning

from scripts.make_mosaic import Mosaic, draw_window, truth_rows, write_mosaic
from treecore.detect import detect_tile, detect_trees
from treecore.errors import ImageTooLargeError, InvalidImageError
from treecore.imageio import decode_image, read_image_size
from treecore.merge import merge_trees
from treecore.raster import (
    GDAL_OPTIONS,
    RasterHeader,
    WindowedImage,
    gdal_env,
    read_extent,
    read_header,
    read_raster,
    read_tile,
    read_window,
)
from treecore.tiles import halo_pixels, plan_tiles
from treecore.types import DetectionParams, Window

MOSAIC = Mosaic(1500, 1100, 0.5, epsg=32633, origin=(400_000.0, 6_000_000.0), seed=3)


@pytest.fixture(scope="module")
def cogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cogs")
    paths = {name: folder / f"{name}.tif" for name in ("deflate", "jpeg")}
    for name, path in paths.items():
        write_mosaic(MOSAIC, path, compress=name)
    return paths


@pytest.fixture(scope="module")
def wholes(cogs: dict[str, Path]) -> dict[str, np.ndarray]:
    return {name: read_raster(str(path), max_pixels=10**8) for name, path in cogs.items()}


def test_the_header_says_size_tiling_overviews_and_georeference(cogs: dict[str, Path]) -> None:
    header = read_header(str(cogs["jpeg"]))
    assert (header.width, header.height, header.count, header.dtype) == (1500, 1100, 3, "uint8")
    assert (header.block_width, header.block_height, header.tiled) == (512, 512, True)
    assert header.overviews == (2, 4) and header.compression == "jpeg"
    assert header.transform == (0.5, 0.0, 400_000.0, 0.0, -0.5, 6_000_000.0)
    assert (header.epsg, header.geographic, header.metres_per_pixel) == (32633, False, (0.5, 0.5))
    georef = header.georeference()
    assert georef is not None and (georef.origin_easting, georef.origin_northing) == (400_000.0, 6_000_000.0)
    assert georef.pixel_scale == (0.5, 0.5) and georef.source == "geotiff"
    # Small and picklable: the splitter sends it to every detector.
    assert pickle.loads(pickle.dumps(header)) == header and len(pickle.dumps(header)) < 1000
    # The same header from the file's bytes (an upload) and from its path.
    assert read_header(cogs["jpeg"].read_bytes()) == header


def test_the_deflate_cog_holds_exactly_the_drawn_pixels(cogs: dict[str, Path], wholes: dict[str, np.ndarray]) -> None:
    assert np.array_equal(wholes["deflate"], draw_window(MOSAIC, 0, 0, MOSAIC.width, MOSAIC.height))
    # The upload path (decode_image of the file's bytes) decodes the same pixels, JPEG included.
    for name, path in cogs.items():
        assert np.array_equal(decode_image(path.read_bytes(), max_pixels=10**8), wholes[name])


@given(
    name=st.sampled_from(["deflate", "jpeg"]),
    x0=st.integers(0, MOSAIC.width - 1),
    y0=st.integers(0, MOSAIC.height - 1),
    w=st.integers(1, 700),
    h=st.integers(1, 700),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_window_read_is_the_slice_of_the_whole_read(
    cogs: dict[str, Path], wholes: dict[str, np.ndarray], name: str, x0: int, y0: int, w: int, h: int
) -> None:
    window = Window(x0, y0, min(MOSAIC.width, x0 + w), min(MOSAIC.height, y0 + h))
    part = read_window(str(cogs[name]), window)
    assert part.flags.c_contiguous and part.dtype == np.uint8
    assert np.array_equal(part, wholes[name][window.y0 : window.y1, window.x0 : window.x1])


@pytest.mark.parametrize("window", [Window(0, 0, 0, 5), Window(-1, 0, 5, 5), Window(0, 0, 1501, 5)])
def test_windows_outside_the_raster_are_refused(cogs: dict[str, Path], window: Window) -> None:
    with pytest.raises(InvalidImageError, match="outside"):
        read_window(str(cogs["deflate"]), window)


@pytest.mark.parametrize("method", ["heatmap", "watershed", "legacy"])
@pytest.mark.parametrize("n_tiles", [4, 9])
def test_detect_tile_on_window_reads_gives_the_trees_of_the_whole_upload(
    cogs: dict[str, Path], method: str, n_tiles: int
) -> None:
    header = read_header(str(cogs["jpeg"]))
    shape = (header.height, header.width, 3)
    params = DetectionParams(method=method, real_width=header.width * 0.5, real_height=header.height * 0.5)
    uploaded = detect_trees(decode_image(cogs["jpeg"].read_bytes(), max_pixels=10**8), params)
    found = []
    for tile in plan_tiles(shape, halo=halo_pixels(params, shape), n_tiles=n_tiles):
        windowed = read_tile(str(cogs["jpeg"]), tile, params, shape)
        assert windowed.pixels.shape[0] * windowed.pixels.shape[1] < header.pixels  # never the whole raster
        found.extend(detect_tile(windowed, tile, params))  # type: ignore[arg-type]
    merged = merge_trees(
        found, params.cluster_threshold, min_diameter=params.min_diameter, max_diameter=params.max_diameter
    )
    assert merged == list(uploaded.trees) and len(merged) > 100


def test_the_trees_found_are_the_drawn_ones(cogs: dict[str, Path]) -> None:
    # At 0.5 m the heatmap network misses most crowns under 6 m (4 to 12 pixels across); the larger ones it finds.
    truth = np.array([row[1:3] for row in truth_rows(MOSAIC) if row[7] >= 6.0])
    params = DetectionParams(method="heatmap", real_width=750.0, real_height=550.0)
    trees = detect_trees(read_raster(str(cogs["jpeg"]), max_pixels=10**8), params, n_tiles=4).trees
    found = np.array([(t.pixel_x, t.pixel_y) for t in trees])
    distance = np.sqrt(((truth[:, None, :] - found[None, :, :]) ** 2).sum(axis=2))
    recall = float((distance.min(axis=1) <= 4).mean())  # within 2 m
    assert recall >= 0.95, recall


def test_a_windowed_image_refuses_reads_outside_its_window() -> None:
    image = WindowedImage(np.zeros((10, 20, 3), np.uint8), Window(5, 5, 25, 15), (100, 100, 3))
    assert image.shape == (100, 100, 3) and image[5:15, 5:25].shape == (10, 20, 3)
    assert image[6:8, 10:12].shape == (2, 2, 3)
    with pytest.raises(IndexError, match="outside"):
        image[0:10, 5:25]


def test_read_extent_covers_the_halo() -> None:
    shape = (1100, 1500, 3)
    for method in ("heatmap", "legacy"):
        params = DetectionParams(method=method, real_width=750.0, real_height=550.0)
        for tile in plan_tiles(shape, halo=halo_pixels(params, shape), n_tiles=6):
            extent, halo = read_extent(tile, params, shape), tile.halo
            assert extent.x0 <= halo.x0 and extent.y0 <= halo.y0 and extent.x1 >= halo.x1 and extent.y1 >= halo.y1
            assert extent.x1 <= shape[1] and extent.y1 <= shape[0]


def _geotiff(array: np.ndarray, **profile: object) -> bytes:
    count, height, width = array.shape
    with rasterio.io.MemoryFile() as memfile, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memfile.open(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype, **profile) as d:
            d.write(array)
        return bytes(memfile.read())


def test_bands_become_rgb_as_the_upload_decoder_does() -> None:
    grey = np.full((1, 4, 5), 77, np.uint8)
    assert (decode_image(_geotiff(grey), max_pixels=100) == 77).all()
    rgba = np.stack([np.full((4, 5), v, np.uint8) for v in (10, 20, 30, 128)])
    out = decode_image(_geotiff(rgba, photometric="RGB", alpha="UNASSOCIATED"), max_pixels=100)
    assert tuple(out[0, 0]) == (10, 20, 30)
    deep = np.stack([np.full((4, 5), v, np.uint16) for v in (257 * 40, 65535, 0)])
    assert tuple(decode_image(_geotiff(deep), max_pixels=100)[0, 0]) == (40, 255, 0)
    floats = np.stack([np.full((4, 5), v, np.float32) for v in (0.0, 0.5, 2.0)])
    assert tuple(decode_image(_geotiff(floats), max_pixels=100)[0, 0]) == (0, 128, 255)
    grey_alpha = np.stack([np.full((4, 5), 9, np.uint8), np.full((4, 5), 255, np.uint8)])
    assert (decode_image(_geotiff(grey_alpha), max_pixels=100) == 9).all()


def test_a_palette_band_is_expanded() -> None:
    with rasterio.io.MemoryFile() as memfile, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memfile.open(driver="GTiff", width=2, height=1, count=1, dtype="uint8", photometric="palette") as d:
            d.write(np.array([[[0, 1]]], np.uint8))
            d.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 0, 255, 255)})
        data = memfile.read()
    assert decode_image(data, max_pixels=100).tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_unsupported_bands_and_sample_types_are_refused() -> None:
    with pytest.raises(InvalidImageError, match="band count 5"):
        decode_image(_geotiff(np.zeros((5, 4, 4), np.uint8)), max_pixels=100)
    with pytest.raises(InvalidImageError, match="sample type int16"):
        decode_image(_geotiff(np.zeros((3, 4, 4), np.int16)), max_pixels=100)


def test_the_pixel_limit_is_checked_from_the_header(cogs: dict[str, Path]) -> None:
    assert read_image_size(cogs["jpeg"].read_bytes()) == (1500, 1100)
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        read_raster(str(cogs["jpeg"]), max_pixels=1500 * 1100 - 1)


def test_truncated_and_corrupt_tiffs_are_an_invalid_image(cogs: dict[str, Path]) -> None:
    data = cogs["deflate"].read_bytes()
    with pytest.raises(InvalidImageError, match="TIFF could not be"):
        decode_image(data[: len(data) // 2], max_pixels=10**8)
    broken = bytearray(data)
    at = len(data) // 2
    broken[at : at + 4096] = np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes()  # inside a tile
    with pytest.raises(InvalidImageError, match="TIFF could not be read .* band 1: IReadBlock failed") as caught:
        decode_image(bytes(broken), max_pixels=10**8)
    assert "vsimem" not in str(caught.value) and ".tif" not in str(caught.value)


def test_a_geographic_raster_gives_ground_metres_at_its_latitude() -> None:
    data = _geotiff(
        np.zeros((3, 10, 10), np.uint8), crs="EPSG:4326", transform=Affine(1e-5, 0.0, 13.0, 0.0, -1e-5, 60.0)
    )
    header = read_header(data)
    assert header.geographic and header.epsg == 4326 and header.metres_per_pixel is not None
    mx, my = header.metres_per_pixel
    assert mx == pytest.approx(1.112 * 0.5, rel=1e-2) and my == pytest.approx(1.112, rel=1e-3)  # cos 60 deg = 0.5


def test_gdal_runs_with_a_bounded_block_cache() -> None:
    with gdal_env():
        options = rasterio.env.getenv()
        assert options["GDAL_CACHEMAX"] == 64 * 2**20 and options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert GDAL_OPTIONS["GDAL_HTTP_NETRC"] == "NO"
    with gdal_env({"GDAL_HTTP_TIMEOUT": "5"}):
        assert rasterio.env.getenv()["GDAL_HTTP_TIMEOUT"] == "5"


# ---- over HTTP range requests: a local server that serves byte ranges and counts them ----


class _RangeServer(http.server.ThreadingHTTPServer):
    """Serves one file's bytes at any path, with single byte ranges; counts the body bytes sent."""

    daemon_threads = True

    def __init__(self, data: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.data = data
        self.sent = 0
        self.requests: list[str | None] = []
        self.lock = threading.Lock()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    server: _RangeServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._send(body=True)

    def _send(self, *, body: bool) -> None:
        data, wanted = self.server.data, self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
        start, stop = (
            (0, len(data)) if match is None else (int(match[1]), min(len(data), int(match[2] or len(data) - 1) + 1))
        )
        self.send_response(200 if match is None else 206)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(stop - start))
        if match is not None:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start:stop])
            with self.server.lock:
                self.server.sent += stop - start
                self.server.requests.append(wanted)


@pytest.fixture
def served(request: pytest.FixtureRequest, cogs: dict[str, Path]) -> Iterator[_RangeServer]:
    server = _RangeServer(cogs[request.param].read_bytes())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _url(server: _RangeServer, name: str) -> str:
    # A distinct file name per test: GDAL caches what it read of a URL for the whole process.
    return f"/vsicurl/http://127.0.0.1:{server.server_address[1]}/{name}.tif"


@pytest.mark.parametrize("served", ["deflate"], indirect=True)
def test_a_window_over_http_reads_only_its_blocks(
    served: _RangeServer, cogs: dict[str, Path], wholes: dict[str, np.ndarray]
) -> None:
    window = Window(600, 520, 700, 600)  # inside block (1, 1) of 512 x 512
    part = read_window(_url(served, "one-block"), window)
    assert np.array_equal(part, wholes["deflate"][520:600, 600:700])
    with rasterio.open(cogs["deflate"]) as dataset:
        block = dataset.block_size(1, 1, 1)  # bytes of the one block the window touches
    total = len(served.data)
    assert served.sent >= block
    assert served.sent <= 2 * 65536 + block + 2 * 16384, (served.sent, block, total)  # header + the block
    assert all(r is not None and r.startswith("bytes=") for r in served.requests)  # only range requests
    header = read_header(_url(served, "header-only"))
    assert isinstance(header, RasterHeader) and header.width == 1500


@pytest.mark.parametrize("served", ["jpeg"], indirect=True)
def test_tiles_over_http_read_about_the_file_once(
    served: _RangeServer, cogs: dict[str, Path], wholes: dict[str, np.ndarray]
) -> None:
    shape = (MOSAIC.height, MOSAIC.width, 3)
    params = DetectionParams(method="heatmap", real_width=750.0, real_height=550.0)
    for index, tile in enumerate(plan_tiles(shape, halo=halo_pixels(params, shape), n_tiles=4)):
        windowed = read_tile(_url(served, f"tile-{index}"), tile, params, shape)
        w = windowed.window
        assert np.array_equal(windowed.pixels, wholes["jpeg"][w.y0 : w.y1, w.x0 : w.x1])
    # Four halo windows overlap, and overview levels are never read: far less than 4 whole files.
    assert served.sent < 3 * len(served.data), (served.sent, len(served.data))


SMALL = _geotiff(
    np.arange(3 * 64 * 48, dtype=np.uint32).reshape(3, 64, 48).astype(np.uint8),
    compress="deflate",
    tiled=True,
    blockxsize=16,
    blockysize=16,
)


@given(
    cut=st.integers(8, len(SMALL)),
    flips=st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 255)), max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_corrupt_tiff_uploads_raise_only_our_errors(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(SMALL[:cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    try:
        image = decode_image(bytes(data), max_pixels=10**6)
    except (InvalidImageError, ImageTooLargeError) as exc:
        assert str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
