"""GeoTIFF tags read by GDAL: files written by tifffile, numbers checked by hand and against tifffile's decoder."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.treecore.conftest import UTM33_KEYS, encode, geotiff
from treecore.errors import InvalidGeoreferenceError, InvalidImageError
from treecore.geotiff import read_geotiff_georeference
from treecore.types import Georeference

IMAGE = np.full((40, 60, 3), 90, np.uint8)


@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_projected_geotiff_in_both_byte_orders_and_bigtiff(byteorder: str, bigtiff: bool) -> None:
    data = geotiff(IMAGE, scale=(0.5, 0.25, 0.0), byteorder=byteorder, bigtiff=bigtiff)
    assert read_geotiff_georeference(data) == Georeference(
        500_000.0, 5_500_000.0, 32633, pixel_scale=(0.5, 0.25), source="geotiff", raster_type="PixelIsArea"
    )
    # tifffile decodes the same tags independently.
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        meta = tif.geotiff_metadata
    assert meta["ModelPixelScale"][:2] == [0.5, 0.25] and meta["ModelTiepoint"][3:5] == [500_000.0, 5_500_000.0]
    assert int(meta["ProjectedCSTypeGeoKey"]) == 32633


def test_tiepoint_away_from_the_corner_gives_the_corner() -> None:
    # Raster (10, 20) lies at (500010, 5499990): the corner is 10 columns west, 20 rows north.
    data = geotiff(IMAGE, scale=(1.0, 0.5, 0.0), tiepoint=(10, 20, 0, 500_010.0, 5_499_990.0, 0))
    georef = read_geotiff_georeference(data)
    assert georef is not None
    assert (georef.origin_easting, georef.origin_northing) == (500_000.0, 5_500_000.0)


def test_pixel_is_point_moves_the_corner_half_a_pixel() -> None:
    # PixelIsPoint: raster (0, 0) is the centre of the first pixel, so the corner is half a pixel west and north.
    data = geotiff(IMAGE, scale=(0.5, 0.25, 0.0), keys={**UTM33_KEYS, 1025: 2})
    georef = read_geotiff_georeference(data)
    assert georef is not None and georef.raster_type == "PixelIsPoint"
    assert (georef.origin_easting, georef.origin_northing) == (500_000.0 - 0.25, 5_500_000.0 + 0.125)


def test_north_up_transformation_matrix() -> None:
    matrix = (0.5, 0, 0, 400_000.0, 0, -0.25, 0, 6_000_000.0, 0, 0, 0, 0, 0, 0, 0, 1)
    georef = read_geotiff_georeference(geotiff(IMAGE, scale=None, tiepoint=None, transformation=matrix))
    assert georef is not None
    assert (georef.origin_easting, georef.origin_northing, georef.pixel_scale) == (400_000.0, 6_000_000.0, (0.5, 0.25))
    point = read_geotiff_georeference(
        geotiff(IMAGE, scale=None, tiepoint=None, transformation=matrix, keys={**UTM33_KEYS, 1025: 2})
    )
    assert point is not None and (point.origin_easting, point.origin_northing) == (400_000.0 - 0.25, 6_000_000.125)


def test_rotated_transformation_is_refused() -> None:
    matrix = (0.5, 0.1, 0, 400_000.0, 0.1, -0.5, 0, 6_000_000.0, 0, 0, 0, 0, 0, 0, 0, 1)
    with pytest.raises(InvalidGeoreferenceError, match="rotated"):
        read_geotiff_georeference(geotiff(IMAGE, scale=None, tiepoint=None, transformation=matrix))
    # GDAL ignores a matrix of the wrong length: the image is then not georeferenced (placed by real_width).
    assert read_geotiff_georeference(geotiff(IMAGE, scale=None, tiepoint=None, transformation=(1.0, 0, 0))) is None


def test_geographic_crs() -> None:
    data = geotiff(IMAGE, scale=(1e-5, 1e-5, 0), tiepoint=(0, 0, 0, 13.4, 52.5, 0), keys={1024: 2, 2048: 4326})
    georef = read_geotiff_georeference(data)
    assert georef is not None and georef.epsg == 4326 and georef.geographic
    assert (georef.origin_easting, georef.origin_northing) == (13.4, 52.5)


@pytest.mark.parametrize(
    ("keys", "message"),
    [({1024: 1, 3072: 32767}, "user-defined"), ({}, "no EPSG code"), ({1024: 1, 3072: 99}, "no EPSG code")],
)
def test_crs_without_epsg_code_needs_one_from_the_client(keys: dict[int, int], message: str) -> None:
    data = geotiff(IMAGE, keys=keys)
    with pytest.raises(InvalidGeoreferenceError, match=message):
        read_geotiff_georeference(data)
    georef = read_geotiff_georeference(data, epsg=25833)
    assert georef is not None and georef.epsg == 25833


def test_client_epsg_overrides_the_tags() -> None:
    georef = read_geotiff_georeference(geotiff(IMAGE), epsg=25833)
    assert georef is not None and georef.epsg == 25833 and georef.origin_easting == 500_000.0


def test_images_without_geo_tags_have_no_georeference() -> None:
    assert read_geotiff_georeference(geotiff(IMAGE, scale=None, tiepoint=None, keys={})) is None
    assert read_geotiff_georeference(encode(IMAGE, ".png")) is None
    assert read_geotiff_georeference(encode(IMAGE, ".jpg")) is None
    assert read_geotiff_georeference(encode(IMAGE, ".tiff")) is None  # OpenCV's TIFF: no geo tags


@pytest.mark.parametrize(
    ("scale", "tiepoint", "message"),
    [
        (None, (0, 0, 0, 1.0, 2.0, 0, 5, 5, 0, 3.0, 4.0, 0), "ground control points"),
        # GDAL takes a tie point without a usable scale (zero, or no ScaleY) for a ground control point.
        ((0.0, 1.0, 0.0), (0, 0, 0, 1.0, 2.0, 0), "ground control points"),
        ((1.0,), (0, 0, 0, 1.0, 2.0, 0), "ground control points"),
        ((float("nan"), 1.0, 0.0), (0, 0, 0, 1.0, 2.0, 0), "not 0"),
        ((1.0, 1.0, 0.0), (0, 0, 0, float("inf"), 2.0, 0), "finite"),
    ],
)
def test_unusable_tags_are_refused_with_a_reason(
    scale: tuple[float, ...] | None, tiepoint: tuple[float, ...], message: str
) -> None:
    with pytest.raises(InvalidGeoreferenceError, match=message):
        read_geotiff_georeference(geotiff(IMAGE, scale=scale, tiepoint=tiepoint))


def _tiff(entries: list[tuple[int, int, int, bytes]], extra: bytes = b"") -> bytes:
    """A little-endian classic TIFF: one IFD at byte 8 with the given (tag, type, count, 4-byte field)."""
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, field in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + field
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + extra


def _with_tags(tags: list[tuple[int, str, int, tuple[float, ...], bool]]) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, IMAGE, photometric="rgb", extratags=tags)
    return buffer.getvalue()


SCALE = (33550, "d", 3, (1.0, 1.0, 0.0), True)
TIEPOINT = (33922, "d", 6, (0, 0, 0, 1.0, 2.0, 0), True)


@pytest.mark.parametrize(
    "tags",
    [
        [(33922, "H", 6, (0, 0, 0, 1, 2, 0), True), SCALE],  # a tie point as SHORTs
        [TIEPOINT, SCALE, (34735, "H", 4, (2, 1, 0, 0), True)],  # a key directory of version 2
        [TIEPOINT, SCALE, (34735, "H", 8, (1, 1, 0, 5, 1024, 0, 1, 1), True)],  # it lists 5 keys, holds 1
    ],
)
def test_wrong_tag_types_and_bad_key_directories_leave_no_usable_crs(
    tags: list[tuple[int, str, int, tuple[float, ...], bool]],
) -> None:
    data = _with_tags(tags)
    with pytest.raises(InvalidGeoreferenceError, match="no EPSG code"):
        read_geotiff_georeference(data)
    georef = read_geotiff_georeference(data, epsg=32633)
    assert georef is not None and (georef.origin_easting, georef.origin_northing) == (1.0, 2.0)


@pytest.mark.parametrize(
    "data",
    [
        _tiff([(33922, 12, 6, struct.pack("<I", 10_000))]),  # no size tags, an offset past the end
        b"II*\x00" + struct.pack("<I", 4096),  # the directory lies past the end
        b"II*\x00" + struct.pack("<IH", 8, 60_000),  # a directory of 60,000 entries, cut short
    ],
)
def test_broken_directories_are_an_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImageError, match="TIFF could not be opened") as caught:
        read_geotiff_georeference(data)
    assert "vsimem" not in str(caught.value) and ".tif:" not in str(caught.value)  # no internal file names


VALID = geotiff(IMAGE[:8, :8], keys={**UTM33_KEYS, 1025: 2})


@given(
    cut=st.integers(0, len(VALID)),
    flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_corrupt_geotiffs_raise_only_our_errors(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for at, value in flips:
        data[at] = value
    try:
        georef = read_geotiff_georeference(bytes(data[: max(cut, 8)]))
    except (InvalidImageError, InvalidGeoreferenceError) as exc:
        assert str(exc)
        return
    assert georef is None or isinstance(georef, Georeference)


@given(
    sx=st.floats(1e-6, 1e3),
    sy=st.floats(1e-6, 1e3),
    i=st.integers(0, 500),
    j=st.integers(0, 500),
    x=st.floats(-1e7, 1e7),
    y=st.floats(-1e7, 1e7),
    point=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_any_tiepoint_and_scale_round_trip(
    sx: float, sy: float, i: int, j: int, x: float, y: float, point: bool
) -> None:
    keys = {**UTM33_KEYS, 1025: 2 if point else 1}
    georef = read_geotiff_georeference(
        geotiff(IMAGE[:4, :4], scale=(sx, sy, 0), tiepoint=(i, j, 0, x, y, 0), keys=keys)
    )
    assert georef is not None and georef.pixel_scale == (sx, sy)
    # The tie point's raster position, in treecore pixels (pixel centres at i + 0.5), maps back to (x, y).
    centre = 0.5 if point else 0.0
    assert georef.origin_easting + (i + centre) * sx == pytest.approx(x, abs=1e-6 * max(1.0, abs(x)))
    assert georef.origin_northing - (j + centre) * sy == pytest.approx(y, abs=1e-6 * max(1.0, abs(y)))


def test_a_negative_scale_y_is_north_up_as_gdal_reads_it() -> None:
    positive = read_geotiff_georeference(geotiff(IMAGE, scale=(0.5, 0.25, 0.0)))
    negative = read_geotiff_georeference(geotiff(IMAGE, scale=(0.5, -0.25, 0.0)))
    assert negative == positive
