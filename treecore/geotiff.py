"""A GeoTIFF's georeference from its tags: a small TIFF directory reader (classic and BigTIFF, both byte orders).

Reads only the first image directory (IFD) and only these tags:

    33550 ModelPixelScaleTag       (ScaleX, ScaleY, ScaleZ): CRS units per pixel
    33922 ModelTiepointTag         (I, J, K, X, Y, Z) per tie point: raster (I, J) lies at CRS (X, Y)
    34264 ModelTransformationTag   4 x 4 raster-to-model matrix (north up only: no rotation or shear)
    34735 GeoKeyDirectoryTag       GeoKeys: GTModelTypeGeoKey 1024, GTRasterTypeGeoKey 1025,
                                   GeographicTypeGeoKey 2048, ProjectedCSTypeGeoKey 3072

Raster coordinates (GeoTIFF 1.0, section 2.5.2): with PixelIsArea (the default) the integer raster coordinate
I is the left edge of pixel column I; with PixelIsPoint it is that pixel's centre. treecore's pixel coordinates
put pixel column i's centre at i + 0.5, i.e. they are PixelIsArea raster coordinates.
"""

from __future__ import annotations

import struct
from typing import Any

from treecore.errors import InvalidGeoreferenceError, InvalidImageError
from treecore.imageio import sniff_format
from treecore.types import EPSG_RANGE, GEOGRAPHIC_EPSG, Georeference, check_pixel_scale

PIXEL_SCALE_TAG = 33550
TIEPOINT_TAG = 33922
TRANSFORMATION_TAG = 34264
GEO_KEY_DIRECTORY_TAG = 34735
_GEO_TAGS = (PIXEL_SCALE_TAG, TIEPOINT_TAG, TRANSFORMATION_TAG, GEO_KEY_DIRECTORY_TAG)

MODEL_TYPE_KEY = 1024  # 1 projected, 2 geographic, 3 geocentric
RASTER_TYPE_KEY = 1025  # 1 PixelIsArea, 2 PixelIsPoint
GEOGRAPHIC_TYPE_KEY = 2048
PROJECTED_TYPE_KEY = 3072
USER_DEFINED = 32767

# TIFF field types: struct code and size of one value.
_TYPES = {1: "B", 2: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 11: "f", 12: "d", 16: "Q", 17: "q"}
_FLOATS = (11, 12)  # FLOAT, DOUBLE
_SHORTS = (3,)
#: Most values read from one geo tag: a key directory of 1,000 keys, or one tie point.
_MAX_VALUES = 4 * 1001
#: Most directory entries accepted (real files have a few dozen).
_MAX_ENTRIES = 10_000


def read_geotiff_georeference(data: bytes, *, epsg: int | None = None) -> Georeference | None:
    """The georeference a GeoTIFF's tags give, or None for an image without them (PNG, JPEG, plain TIFF).

    Args:
        data: the image file's bytes.
        epsg: an EPSG code to use instead of the one in the GeoKeys (for files without one, or a wrong one).

    Returns:
        A Georeference with source "geotiff" and the pixel scale, or None.

    Raises:
        InvalidImageError: a TIFF whose directory is truncated or corrupt.
        InvalidGeoreferenceError: geo tags that cannot be used: rotated or sheared, only ground control points,
            a zero scale, or no EPSG code (user-defined CRS) and none given.
    """
    if sniff_format(data) != "tiff":
        return None
    try:
        tags = _read_first_ifd(data)
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise InvalidImageError(f"TIFF directory is truncated or corrupt ({exc})") from None
    if TIEPOINT_TAG not in tags and TRANSFORMATION_TAG not in tags:
        return None
    keys = _geo_keys(tags.get(GEO_KEY_DIRECTORY_TAG))
    raster_type = "PixelIsPoint" if keys.get(RASTER_TYPE_KEY) == 2 else "PixelIsArea"
    # Raster coordinate of the image's top-left corner: 0 with PixelIsArea; -0.5 (half a pixel before the first
    # pixel's centre) with PixelIsPoint.
    corner = -0.5 if raster_type == "PixelIsPoint" else 0.0
    if TRANSFORMATION_TAG in tags:
        origin, scale = _from_transformation(tags[TRANSFORMATION_TAG], corner)
    else:
        origin, scale = _from_tiepoint(tags[TIEPOINT_TAG], tags.get(PIXEL_SCALE_TAG), corner)
    code, geographic = _crs(keys, epsg)
    return Georeference(
        origin_easting=origin[0],
        origin_northing=origin[1],
        epsg=code,
        pixel_scale=scale,
        geographic=geographic,
        source="geotiff",
        raster_type=raster_type,
    )


def _from_tiepoint(
    tiepoints: tuple[float, ...], pixel_scale: tuple[float, ...] | None, corner: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    if len(tiepoints) < 6:
        raise InvalidGeoreferenceError(f"GeoTIFF ModelTiepointTag has {len(tiepoints)} values, needs 6 per point")
    if pixel_scale is None:
        raise InvalidGeoreferenceError(
            "GeoTIFF has tie points but no ModelPixelScaleTag (ground control points): warp it to a north-up "
            "grid first (gdalwarp), or give origin_easting, origin_northing and epsg"
        )
    if len(pixel_scale) < 2:
        raise InvalidGeoreferenceError("GeoTIFF ModelPixelScaleTag needs ScaleX and ScaleY")
    i, j, _, x, y, _ = tiepoints[:6]
    # A negative ScaleY is taken as positive (north up), as GDAL does by default (GTIFF_HONOUR_NEGATIVE_SCALEY):
    # writers that store it negative almost always mean a north-up image, and QGIS shows it so.
    sx, sy = pixel_scale[0], abs(pixel_scale[1])
    check_pixel_scale((sx, sy))
    # Raster (I, J) lies at model (X, Y); easting grows by ScaleX per column, northing falls by ScaleY per row.
    return (x - (i - corner) * sx, y + (j - corner) * sy), (sx, sy)


def _from_transformation(matrix: tuple[float, ...], corner: float) -> tuple[tuple[float, float], tuple[float, float]]:
    if len(matrix) != 16:
        raise InvalidGeoreferenceError(f"GeoTIFF ModelTransformationTag has {len(matrix)} values, needs 16")
    a, b, _, d, e, f, _, h = matrix[:8]
    if b != 0 or e != 0:
        raise InvalidGeoreferenceError(
            "GeoTIFF is rotated or sheared (ModelTransformationTag): only north-up images are supported; "
            "warp it north up first (gdalwarp)"
        )
    check_pixel_scale((a, -f))
    return (d + corner * a, h + corner * f), (a, -f)


def _crs(keys: dict[int, int], epsg: int | None) -> tuple[int, bool]:
    projected, geographic = keys.get(PROJECTED_TYPE_KEY), keys.get(GEOGRAPHIC_TYPE_KEY)
    is_geographic = keys.get(MODEL_TYPE_KEY) == 2 or (projected is None and geographic is not None)
    if epsg is not None:  # the client's code replaces the tags'; degrees if either says so
        return epsg, is_geographic or epsg in GEOGRAPHIC_EPSG
    code = geographic if is_geographic else projected
    low, high = EPSG_RANGE
    if code is None or not low <= code <= high:
        what = "a user-defined CRS" if code == USER_DEFINED else "no EPSG code of its CRS"
        raise InvalidGeoreferenceError(
            f"GeoTIFF has {what} in its GeoKeys (ProjectedCSTypeGeoKey / GeographicTypeGeoKey): "
            "give the EPSG code as epsg"
        )
    return code, is_geographic


def _geo_keys(directory: tuple[float, ...] | None) -> dict[int, int]:
    """GeoKeys whose value is a SHORT in the directory itself (TIFFTagLocation 0): all the ones we read."""
    if directory is None:
        return {}
    if len(directory) < 4 or directory[0] != 1:
        raise InvalidGeoreferenceError("GeoTIFF GeoKeyDirectoryTag is malformed (no version 1 header)")
    count = int(directory[3])
    if len(directory) < 4 + 4 * count:
        raise InvalidGeoreferenceError(f"GeoTIFF GeoKeyDirectoryTag lists {count} keys but holds fewer")
    keys: dict[int, int] = {}
    for k in range(count):
        key_id, location, _, value = (int(v) for v in directory[4 + 4 * k : 8 + 4 * k])
        if location == 0:
            keys[key_id] = value
    return keys


def _read_first_ifd(data: bytes) -> dict[int, tuple[float, ...]]:
    """The geo tags of the first directory, as tuples of numbers (floats for FLOAT/DOUBLE, else ints)."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:
        (offset,) = _unpack(data, order + "Q", 8)
        (count,) = _unpack(data, order + "Q", offset)
        entry_size, first, count_fmt = 20, offset + 8, "Q"
    else:
        (offset,) = _unpack(data, order + "I", 4)
        (count,) = _unpack(data, order + "H", offset)
        entry_size, first, count_fmt = 12, offset + 2, "I"
    if count > _MAX_ENTRIES:
        raise InvalidImageError("TIFF directory is implausibly long")
    field_size = 8 if big else 4
    tags: dict[int, tuple[float, ...]] = {}
    for index in range(int(count)):
        entry = first + index * entry_size
        tag, kind = _unpack(data, order + "HH", entry)
        if tag not in _GEO_TAGS:
            continue
        (n,) = _unpack(data, order + count_fmt, entry + 4)
        code = _TYPES.get(kind)
        wanted = _SHORTS if tag == GEO_KEY_DIRECTORY_TAG else _FLOATS
        if code is None or kind not in wanted:
            raise InvalidGeoreferenceError(f"GeoTIFF tag {tag} has TIFF type {kind}, not the one GeoTIFF specifies")
        n = min(int(n), _MAX_VALUES)
        size = struct.calcsize(code) * n
        at = entry + 4 + struct.calcsize(count_fmt)
        if size > field_size:  # the value does not fit in the entry: the field holds its offset
            (at,) = _unpack(data, order + ("Q" if big else "I"), at)
        tags[tag] = _unpack(data, f"{order}{n}{code}", at)
    return tags


def _unpack(data: bytes, fmt: str, offset: int) -> tuple[Any, ...]:
    """struct.unpack_from, refusing offsets past the end (unpack_from would accept negative ones)."""
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise InvalidImageError(f"TIFF directory points past the end of the file (byte {offset})")
    return struct.unpack_from(fmt, data, offset)
