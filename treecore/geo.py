"""GeoJSON of a detection: one Point per tree, in the image's metric frame or, georeferenced, in a CRS.

Frames (the top-level "frame" member says which):

    image-metric   no georeference: metres from the image's top-left corner, x east (right), y NORTH (up),
                   i.e. a tree at x, y (metres, y down) is the point [x, -y], so GIS software shows the image
                   upright. The "crs" member is a local engineering CRS in metres (WKT), so GDAL and QGIS do
                   not take the numbers for degrees of WGS 84.
    crs            with a georeference: coordinates in the CRS given by its EPSG code, recorded in the
                   GeoJSON 2008 "crs" member as "urn:ogc:def:crs:EPSG::<code>" (what GDAL reads). RFC 7946
                   dropped "crs" and assumes WGS 84: this output deliberately deviates from it.

Diameters are metres in every frame (from real_width / real_height, as in the JSON response).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from treecore.errors import InvalidGeoreferenceError, InvalidTreesError
from treecore.geotiff import read_geotiff_georeference
from treecore.report import result_to_dict
from treecore.types import (
    GEOGRAPHIC_EPSG,
    WEB_MERCATOR_EPSG,
    WEB_MERCATOR_RADIUS_M,
    DetectionResult,
    Georeference,
    check_epsg,
)

#: The image-metric frame as a CRS GDAL understands (WKT 1 local CS): metres, x east, y north.
IMAGE_METRIC_WKT = (
    'LOCAL_CS["image metric frame: metres from the top-left corner, x right, y up",'
    'LOCAL_DATUM["image top-left corner",32767],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
)

#: Members of the detection response copied to the top level of the FeatureCollection, when present.
DETECTION_MEMBERS = (
    "total_trees",
    "image_width",
    "image_height",
    "meters_per_pixel",
    "meters_per_pixel_x",
    "meters_per_pixel_y",
    "parameters",
    "tile_count",
    "timings",
)

#: Properties of each feature: the new diameter_m, then the legacy tree fields unchanged.
PROPERTIES = ("id", "diameter_m", "x", "y", "diameter", "pixel_x", "pixel_y", "pixel_diameter")

#: Relative difference between a GeoTIFF's pixel size and real_width/real_height above which we warn.
SCALE_TOLERANCE = 0.01


def form_georeference(origin_easting: float, origin_northing: float, epsg: int) -> Georeference:
    """A georeference from a client's origin and EPSG code (a projected CRS in metres).

    Args:
        origin_easting: CRS easting of the image's top-left corner, metres.
        origin_northing: CRS northing of the image's top-left corner, metres.
        epsg: EPSG code of a projected CRS in metres (e.g. 32633, WGS 84 / UTM zone 33N).

    Returns:
        The Georeference (source "form", no pixel scale: trees are placed by their metres).

    Raises:
        InvalidGeoreferenceError: a non-finite or huge origin, an EPSG code out of range, or a geographic CRS.
    """
    georef = Georeference(origin_easting, origin_northing, epsg)
    if epsg in GEOGRAPHIC_EPSG:
        raise InvalidGeoreferenceError(
            f"EPSG:{epsg} is a geographic CRS (degrees): origin_easting/origin_northing need a projected CRS "
            "in metres, such as the image's UTM zone (EPSG:326xx north, 327xx south)"
        )
    return georef


def resolve_georeference(
    data: bytes,
    *,
    origin_easting: float | None = None,
    origin_northing: float | None = None,
    epsg: int | None = None,
) -> Georeference | None:
    """The georeference of an upload: the client's origin and EPSG code, else the image's GeoTIFF tags.

    Args:
        data: the image file's bytes (PNG, JPEG or TIFF).
        origin_easting: metres, top-left corner (with origin_northing and epsg), or None.
        origin_northing: metres, top-left corner, or None.
        epsg: EPSG code; alone, it names (or corrects) the CRS of a GeoTIFF's tags.

    Returns:
        The Georeference, or None when neither the client nor the image gives one.

    Raises:
        InvalidGeoreferenceError: an incomplete or invalid georeference (the message says what is missing).
        InvalidImageError: a TIFF whose directory is corrupt.
    """
    given = {"origin_easting": origin_easting, "origin_northing": origin_northing}
    if origin_easting is not None and origin_northing is not None:
        if epsg is None:
            raise InvalidGeoreferenceError("origin_easting and origin_northing need epsg, the EPSG code of their CRS")
        return form_georeference(origin_easting, origin_northing, epsg)
    if any(value is not None for value in given.values()):
        missing = next(name for name, value in given.items() if value is None)
        raise InvalidGeoreferenceError(f"{missing} is missing: give origin_easting, origin_northing and epsg together")
    if epsg is not None:
        check_epsg(epsg)  # before the image is read
    georef = read_geotiff_georeference(data, epsg=epsg)
    if georef is None and epsg is not None:
        raise InvalidGeoreferenceError(
            "epsg needs origin_easting and origin_northing (metres, the image's top-left corner), "
            "unless the image is a GeoTIFF with georeferencing tags"
        )
    return georef


def detection_geojson(
    detection: Mapping[str, Any] | DetectionResult, georef: Georeference | None = None
) -> dict[str, Any]:
    """A detection as a GeoJSON FeatureCollection of tree points.

    Args:
        detection: the /detect-trees response (as `result_to_dict` makes it) or a DetectionResult.
        georef: where the image lies in a CRS; None: the image-metric frame (see the module docstring).

    Returns:
        JSON-ready dict: type, name, crs, frame, georeference (null or its fields), features (one Point per
        tree; properties id, diameter_m and the legacy tree fields), the detection's other members
        (total_trees, image size, metres per pixel, parameters, tile_count, timings) and warnings.

    Raises:
        InvalidTreesError: a detection without a list of trees with numeric x, y, pixel_x, pixel_y.
    """
    body = result_to_dict(detection) if isinstance(detection, DetectionResult) else detection
    trees = body.get("trees")
    if not isinstance(trees, Sequence) or isinstance(trees, (str, bytes)):
        raise InvalidTreesError('a detection needs a "trees" list')
    locate, decimals = _locator(georef)
    features = [_feature(tree, index, locate, decimals) for index, tree in enumerate(trees)]
    crs_name = IMAGE_METRIC_WKT if georef is None else georef.crs_urn
    out: dict[str, Any] = {
        "type": "FeatureCollection",
        "name": "trees",
        "crs": {"type": "name", "properties": {"name": crs_name}},
        "frame": "image-metric" if georef is None else "crs",
        "georeference": None if georef is None else _georeference_member(georef),
        "features": features,
    }
    out.update((name, body[name]) for name in DETECTION_MEMBERS if name in body)
    out["warnings"] = _scale_warnings(body, georef)
    if georef is not None and georef.pixel_scale is None and georef.epsg in WEB_MERCATOR_EPSG:
        out["warnings"].append(
            f"EPSG:{georef.epsg} is Web Mercator, whose metres are not ground metres: the trees' ground metres "
            "(real_width/real_height) were converted at each tree's latitude (about 1 / cos(latitude) Web "
            "Mercator metres each); a projected CRS such as the UTM zone keeps metres as they are"
        )
    return out


#: Places one tree (a mapping with x, y, pixel_x, pixel_y): its (easting, northing).
_Locate = Callable[[Mapping[str, Any]], tuple[float, float]]


def _locator(georef: Georeference | None) -> tuple[_Locate, int]:
    """How to place a tree, and how many decimals its coordinates keep (a thousandth of a pixel or a mm)."""
    if georef is not None and georef.pixel_scale is None and georef.epsg in WEB_MERCATOR_EPSG:
        return _web_mercator_locator(georef), 3
    if georef is None or georef.pixel_scale is None:
        east, north = (0.0, 0.0) if georef is None else (georef.origin_easting, georef.origin_northing)

        def by_metres(tree: Mapping[str, Any]) -> tuple[float, float]:
            return east + _num(tree, "x"), north - _num(tree, "y")

        return by_metres, 3
    sx, sy = georef.pixel_scale
    e0, n0 = georef.origin_easting, georef.origin_northing

    def by_pixels(tree: Mapping[str, Any]) -> tuple[float, float]:
        return e0 + _num(tree, "pixel_x") * sx, n0 - _num(tree, "pixel_y") * sy

    finest = min(abs(sx), abs(sy))
    return by_pixels, max(3, min(12, 3 + math.ceil(-math.log10(finest))))


def _web_mercator_locator(georef: Georeference) -> _Locate:
    """Ground metres from the origin to Web Mercator metres, on its sphere, at each tree's own latitude.

    Web Mercator stretches distances by 1 / cos(latitude) (1.56 at 50 degrees): adding ground metres to a Web
    Mercator origin would put trees far too close together. A tree y metres south of the origin lies at
    latitude lat0 - y / R; its northing is R ln tan(pi/4 + lat/2), and x metres east is x / cos(lat) easting.
    """
    radius = WEB_MERCATOR_RADIUS_M
    lat0 = 2 * math.atan(math.exp(georef.origin_northing / radius)) - math.pi / 2

    def by_ground_metres(tree: Mapping[str, Any]) -> tuple[float, float]:
        lat = lat0 - _num(tree, "y") / radius
        if abs(lat) >= math.radians(85.06):
            raise InvalidGeoreferenceError("the image reaches past 85 degrees of latitude, outside Web Mercator")
        northing = radius * math.log(math.tan(math.pi / 4 + lat / 2))
        return georef.origin_easting + _num(tree, "x") / math.cos(lat), northing

    return by_ground_metres


def _num(tree: Mapping[str, Any], name: str) -> float:
    value = tree.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidTreesError(f"tree {tree.get('id')!r}: {name} must be a finite number, got {value!r}")
    return float(value)


def _feature(tree: Any, index: int, locate: _Locate, decimals: int) -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        raise InvalidTreesError(f"trees[{index}] must be an object")
    easting, northing = locate(tree)
    properties = {"id": tree.get("id", index + 1), "diameter_m": tree.get("diameter")}
    properties.update((name, tree[name]) for name in PROPERTIES[2:] if name in tree)
    return {
        "type": "Feature",
        "id": properties["id"],
        "geometry": {"type": "Point", "coordinates": [round(easting, decimals), round(northing, decimals)]},
        "properties": properties,
    }


def _georeference_member(georef: Georeference) -> dict[str, Any]:
    return {
        "source": georef.source,
        "epsg": georef.epsg,
        "crs": georef.crs_urn,
        "origin_easting": georef.origin_easting,
        "origin_northing": georef.origin_northing,
        "pixel_scale": None if georef.pixel_scale is None else list(georef.pixel_scale),
        "raster_type": georef.raster_type,
        "geographic": georef.geographic,
    }


def _scale_warnings(body: Mapping[str, Any], georef: Georeference | None) -> list[str]:
    """A GeoTIFF's pixel size that disagrees with real_width/real_height (projected CRSs only: metres, probably)."""
    if georef is None or georef.pixel_scale is None or georef.geographic:
        return []
    mx, my = body.get("meters_per_pixel_x"), body.get("meters_per_pixel_y")
    if not (isinstance(mx, (int, float)) and isinstance(my, (int, float)) and mx > 0 and my > 0):
        return []
    sx, sy = (abs(s) for s in georef.pixel_scale)
    if abs(sx - mx) <= SCALE_TOLERANCE * mx and abs(sy - my) <= SCALE_TOLERANCE * my:
        return []
    return [
        f"the GeoTIFF's pixel size ({sx:g} x {sy:g} CRS units) differs from real_width/real_height "
        f"({mx:g} x {my:g} m per pixel): coordinates follow the GeoTIFF, diameters and the diameter limits "
        "follow real_width/real_height; send real_width = image width x pixel size to make them agree"
    ]
