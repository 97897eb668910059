"""Detections as GeoJSON: frames, CRS, coordinates; the output read back by GDAL (pyogrio), an independent reader."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.treecore.conftest import UTM33_KEYS, Disc, draw_scene, geotiff
from treecore.detect import detect_trees
from treecore.errors import InvalidGeoreferenceError, InvalidTreesError
from treecore.geo import IMAGE_METRIC_WKT, PROPERTIES, detection_geojson, form_georeference, resolve_georeference
from treecore.report import result_to_dict
from treecore.types import WEB_MERCATOR_EPSG, DetectionParams, DetectionResult, Georeference

# 600 x 400 px at 0.1 m: 60 x 40 m, not square, so x and y cannot be swapped unnoticed.
DISCS = [Disc(100, 80, 25), Disc(450, 120, 30), Disc(300, 300, 20), Disc(520, 350, 35)]
# The drawn discs are found exactly by the tree-top method (the learned default is trained on real crowns).
PARAMS = DetectionParams(min_diameter=2, cluster_threshold=0, real_width=60, real_height=40, method="watershed")


@pytest.fixture(scope="module")
def result() -> DetectionResult:
    found = detect_trees(draw_scene(400, 600, DISCS), PARAMS)
    assert len(found.trees) == len(DISCS)
    return found


def read_with_gdal(collection: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[float, float]], dict[str, Any]]:
    """(layer info, point coordinates, fields by name) as GDAL reads the serialised GeoJSON."""
    data = json.dumps(collection, allow_nan=False).encode()
    meta, _, geometries, values = pyogrio.raw.read(data)
    points = []
    for wkb in geometries:
        order = "<" if wkb[0] == 1 else ">"
        kind, x, y = struct.unpack(order + "Idd", wkb[1:21])
        assert kind == 1  # Point
        points.append((x, y))
    return meta, points, dict(zip(meta["fields"], values, strict=True))


def test_image_metric_frame_is_y_up_metres_in_a_local_crs(result: DetectionResult) -> None:
    collection = detection_geojson(result)
    body = result_to_dict(result)
    assert collection["type"] == "FeatureCollection" and collection["frame"] == "image-metric"
    assert collection["georeference"] is None and collection["warnings"] == []
    assert collection["crs"] == {"type": "name", "properties": {"name": IMAGE_METRIC_WKT}}
    assert collection["total_trees"] == len(collection["features"]) == 4
    for feature, tree in zip(collection["features"], body["trees"], strict=True):
        assert feature["geometry"] == {"type": "Point", "coordinates": [tree["x"], -tree["y"]]}
        assert list(feature["properties"]) == list(PROPERTIES)
        assert feature["properties"]["diameter_m"] == tree["diameter"] and feature["id"] == tree["id"]
    meta, points, fields = read_with_gdal(collection)
    # GDAL keeps the local metre CRS instead of assuming WGS 84 degrees.
    assert meta["crs"].startswith("LOCAL_CS[") and 'UNIT["metre",1]' in meta["crs"]
    assert points == [tuple(f["geometry"]["coordinates"]) for f in collection["features"]]
    assert fields["diameter_m"].tolist() == [t["diameter"] for t in body["trees"]]


def test_form_origin_and_epsg_place_trees_in_the_crs(result: DetectionResult) -> None:
    georef = form_georeference(500_000.0, 5_500_000.0, 32633)
    collection = detection_geojson(result_to_dict(result), georef)
    assert collection["frame"] == "crs"
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert collection["georeference"]["source"] == "form" and collection["georeference"]["pixel_scale"] is None
    meta, points, fields = read_with_gdal(collection)
    assert meta["crs"] == "EPSG:32633" and len(points) == len(result.trees)
    for (easting, northing), tree in zip(points, result_to_dict(result)["trees"], strict=True):
        assert easting == pytest.approx(500_000.0 + tree["x"], abs=1e-6)
        assert northing == pytest.approx(5_500_000.0 - tree["y"], abs=1e-6)
    # The drawn discs are where they should be: centre pixel (col, row) + 0.5, times 0.1 m.
    expected = sorted((500_000 + (d.col + 0.5) * 0.1, 5_500_000 - (d.row + 0.5) * 0.1) for d in DISCS)
    for (easting, northing), (e, n) in zip(sorted(points), expected, strict=True):
        assert abs(easting - e) < 0.3 and abs(northing - n) < 0.3
    assert fields["id"].tolist() == [t.id for t in result.trees]


def test_geotiff_tags_place_trees_by_pixel(result: DetectionResult) -> None:
    data = geotiff(draw_scene(400, 600, DISCS), scale=(0.1, 0.1, 0), tiepoint=(0, 0, 0, 300_000.0, 4_000_000.0, 0))
    georef = resolve_georeference(data)
    assert georef is not None and georef.source == "geotiff"
    collection = detection_geojson(result, georef)
    assert collection["warnings"] == []  # 0.1 m per pixel from both the tags and real_width/real_height
    for feature, tree in zip(collection["features"], result.trees, strict=True):
        easting, northing = feature["geometry"]["coordinates"]
        assert easting == pytest.approx(300_000.0 + tree.pixel_x * 0.1, abs=1e-3)
        assert northing == pytest.approx(4_000_000.0 - tree.pixel_y * 0.1, abs=1e-3)
    meta, points, _ = read_with_gdal(collection)
    assert meta["crs"] == "EPSG:32633" and len(points) == 4


def test_a_geotiff_scale_unlike_real_width_is_warned_about(result: DetectionResult) -> None:
    coarse = Georeference(0.0, 0.0, 32633, pixel_scale=(0.5, 0.5), source="geotiff")
    (warning,) = detection_geojson(result, coarse)["warnings"]
    assert "0.5 x 0.5" in warning and "real_width" in warning
    degrees = Georeference(13.0, 52.0, 4326, pixel_scale=(1e-6, 1e-6), geographic=True, source="geotiff")
    collection = detection_geojson(result, degrees)
    assert collection["warnings"] == []  # degrees cannot be compared with metres
    # A millionth of a degree per pixel keeps 9 decimals: a thousandth of a pixel.
    easting = collection["features"][0]["geometry"]["coordinates"][0]
    assert easting == round(13.0 + result.trees[0].pixel_x * 1e-6, 9)


def test_empty_detection_is_an_empty_collection() -> None:
    found = detect_trees(draw_scene(50, 50, []), PARAMS)
    collection = detection_geojson(found, form_georeference(1000.0, 2000.0, 2056))
    assert collection["features"] == [] and collection["total_trees"] == 0
    meta, points, _ = read_with_gdal(collection)
    assert points == [] and meta["crs"] == "EPSG:2056"


@pytest.mark.parametrize(
    "detection",
    [{}, {"trees": "no"}, {"trees": [1]}, {"trees": [{"id": 1, "x": "a", "y": 0}]}, {"trees": [{"x": math.nan}]}],
)
def test_malformed_detections_are_refused(detection: dict[str, Any]) -> None:
    with pytest.raises(InvalidTreesError):
        detection_geojson(detection)


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"origin_easting": 1.0}, "origin_northing is missing"),
        ({"origin_northing": 1.0, "epsg": 32633}, "origin_easting is missing"),
        ({"origin_easting": 1.0, "origin_northing": 2.0}, "need epsg"),
        ({"epsg": 32633}, "epsg needs origin_easting"),
        ({"epsg": 99}, "whole number from 1024"),
        ({"origin_easting": 1.0, "origin_northing": 2.0, "epsg": 40_000}, "whole number from 1024"),
        ({"origin_easting": 1.0, "origin_northing": 2.0, "epsg": 4326}, "geographic"),
        ({"origin_easting": math.inf, "origin_northing": 2.0, "epsg": 32633}, "origin_easting must be a finite"),
        ({"origin_easting": 1.0, "origin_northing": 2e12, "epsg": 32633}, "origin_northing must be within"),
    ],
)
def test_incomplete_or_invalid_georeferences_say_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidGeoreferenceError, match=message):
        resolve_georeference(PNG, **fields)


def test_resolution_order() -> None:
    tiff = geotiff(np.zeros((4, 4, 3), np.uint8))
    assert resolve_georeference(PNG) is None
    explicit = resolve_georeference(tiff, origin_easting=1.0, origin_northing=2.0, epsg=25832)
    assert explicit == Georeference(1.0, 2.0, 25832)  # the client's origin wins over the tags
    tagged = resolve_georeference(tiff)
    assert tagged is not None and tagged.epsg == 32633 and tagged.source == "geotiff"
    relabelled = resolve_georeference(tiff, epsg=25833)
    assert relabelled is not None and relabelled.epsg == 25833 and relabelled.origin_easting == 500_000.0
    with pytest.raises(InvalidGeoreferenceError, match="user-defined"):
        resolve_georeference(geotiff(np.zeros((4, 4, 3), np.uint8), keys={**UTM33_KEYS, 3072: 32767}))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsg": True},
        {"pixel_scale": (0.0, 1.0)},
        {"source": "exif"},
        {"raster_type": "PixelIsCorner"},
        {"origin_easting": "1"},
    ],
)
def test_georeference_checks_its_fields(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {"origin_easting": 0.0, "origin_northing": 0.0, "epsg": 32633}
    with pytest.raises(InvalidGeoreferenceError):
        Georeference(**{**base, **kwargs})


TREE = st.fixed_dictionaries(
    {
        "id": st.integers(1, 10**6),
        "x": st.floats(0, 1e5),
        "y": st.floats(0, 1e5),
        "diameter": st.floats(0.01, 50),
        "pixel_x": st.floats(0, 1e6),
        "pixel_y": st.floats(0, 1e6),
        "pixel_diameter": st.floats(0.1, 500),
    }
)


#: Web Mercator's sphere (EPSG:3857), written out here so the expected values do not come from treecore.
MERCATOR_RADIUS_M = 6_378_137.0


def expected_web_mercator(east: float, north: float, x: float, y: float) -> tuple[float, float]:
    """Where a tree x ground metres east and y south of a Web Mercator origin lies, by the textbook formulas.

    The origin's latitude is the inverse Gudermannian of northing / R; the tree is y / R radians south of it
    (ground metres along the meridian of the sphere); its northing is R asinh(tan(lat)) (the same function as
    treecore's R ln tan(pi/4 + lat/2), written differently) and x ground metres are x / cos(lat) Web Mercator
    metres east. Only at the equator, and only to first order, is that north - y: a tree 4961 m south of
    northing 0 lies at R asinh(tan(-4961 / R)) = -4961.000500 m (the cubic term, -y**3 / (6 R**2), is half a mm).
    """
    lat = math.atan(math.sinh(north / MERCATOR_RADIUS_M)) - y / MERCATOR_RADIUS_M
    return east + x / math.cos(lat), MERCATOR_RADIUS_M * math.asinh(math.tan(lat))


def pinned_tree(x: float, y: float) -> dict[str, Any]:
    return {"id": 1, "x": x, "y": y, "diameter": 1.0, "pixel_x": 0.0, "pixel_y": 0.0, "pixel_diameter": 1.0}


@given(
    trees=st.lists(TREE, max_size=8),
    east=st.floats(-1e7, 1e7),
    north=st.floats(-1e7, 1e7),
    epsg=st.integers(2000, 32000).filter(lambda c: c not in (4326, 4258)) | st.sampled_from(sorted(WEB_MERCATOR_EPSG)),
    scale=st.none() | st.tuples(st.floats(1e-3, 100), st.floats(1e-3, 100)),
)
# Found on a fresh clone: Web Mercator at the equator, where the test used to expect north - y (-4961.0) and
# the service (rightly) gives -4961.001, the sphere's -4961.0005 rounded to the mm.
@example(trees=[pinned_tree(0.0, 0.0), pinned_tree(0.0, 4961.0)], east=0.0, north=0.0, epsg=3857, scale=None)
# The same case at 60 degrees north, where the difference is a kilometre per kilometre.
@example(trees=[pinned_tree(1000.0, 1000.0)], east=0.0, north=8_399_737.889818, epsg=3857, scale=None)
@settings(max_examples=150)
def test_any_detection_gives_valid_geojson_at_the_right_places(
    trees: list[dict[str, Any]], east: float, north: float, epsg: int, scale: tuple[float, float] | None
) -> None:
    georef = Georeference(east, north, epsg, pixel_scale=scale, source="geotiff" if scale else "form")
    collection = json.loads(json.dumps(detection_geojson({"trees": trees}, georef), allow_nan=False))
    assert len(collection["features"]) == len(trees)
    for feature, tree in zip(collection["features"], trees, strict=True):
        easting, northing = feature["geometry"]["coordinates"]
        if scale is not None:
            want = (east + tree["pixel_x"] * scale[0], north - tree["pixel_y"] * scale[1])
        elif epsg in WEB_MERCATOR_EPSG:  # ground metres are converted at the tree's latitude
            want = expected_web_mercator(east, north, tree["x"], tree["y"])
        else:
            want = (east + tree["x"], north - tree["y"])
        # Coordinates are rounded to the mm (or finer): half a mm of rounding plus float noise is the tolerance.
        assert easting == pytest.approx(want[0], abs=1e-3) and northing == pytest.approx(want[1], abs=1e-3)
        assert feature["properties"]["diameter_m"] == tree["diameter"]


def test_web_mercator_origins_get_ground_metres_converted_at_each_latitude() -> None:
    radius = 6_378_137.0
    lat0 = math.radians(60.0)
    north0 = radius * math.log(math.tan(math.pi / 4 + lat0 / 2))
    trees = [
        {"id": 1, "x": 1000.0, "y": 0.0, "pixel_x": 0.0, "pixel_y": 0.0},
        {"id": 2, "x": 0.0, "y": 1000.0, "pixel_x": 0.0, "pixel_y": 0.0},
    ]
    out = detection_geojson({"trees": trees}, form_georeference(2_000_000.0, north0, 3857))
    (e1, n1), (e2, n2) = (f["geometry"]["coordinates"] for f in out["features"])
    assert (e1, n1) == (pytest.approx(2_000_000.0 + 2000.0, abs=1e-3), pytest.approx(north0, abs=1e-3))  # 1/cos 60
    # 1 km south at 60 degrees is about 2 km of Web Mercator northing (the exact sphere value, checked by hand).
    lat2 = lat0 - 1000.0 / radius
    assert n2 == pytest.approx(radius * math.log(math.tan(math.pi / 4 + lat2 / 2)), abs=1e-3)
    assert north0 - n2 == pytest.approx(2000.0, rel=2e-3) and e2 == pytest.approx(2_000_000.0)
    assert any("Web Mercator" in w for w in out["warnings"])
    # At the equator the scale is 1, but only to first order: 4961 m south of northing 0 is -4961.000500 m on
    # the sphere (R ln tan(pi/4 - 4961 / 2R), by hand: -y - y**3 / (6 R**2)), which is -4961.001 to the mm.
    equator = detection_geojson({"trees": [trees[1] | {"y": 4961.0}]}, form_georeference(0.0, 0.0, 3857))
    assert equator["features"][0]["geometry"]["coordinates"] == [0.0, -4961.001]
    # A UTM origin keeps metres as they are, with no such warning.
    utm = detection_geojson({"trees": trees}, form_georeference(500_000.0, 6_650_000.0, 32633))
    assert utm["features"][0]["geometry"]["coordinates"] == [501_000.0, 6_650_000.0] and utm["warnings"] == []


def test_web_mercator_beyond_85_degrees_is_refused() -> None:
    tree = {"id": 1, "x": 0.0, "y": 0.0, "pixel_x": 0.0, "pixel_y": 0.0}
    with pytest.raises(InvalidGeoreferenceError, match="85 degrees"):
        detection_geojson({"trees": [tree]}, form_georeference(0.0, 25_000_000.0, 3857))


def test_epsg_naming_a_geographic_crs_for_a_keyless_geotiff_is_degrees(result: DetectionResult) -> None:
    data = geotiff(np.full((40, 60, 3), 90, np.uint8), scale=(1e-5, 1e-5, 0.0), keys={})
    georef = resolve_georeference(data, epsg=4326)
    assert georef is not None and georef.geographic and georef.epsg == 4326
    assert detection_geojson(result, georef)["warnings"] == []  # degrees are not compared with metres
