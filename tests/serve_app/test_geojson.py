"""/detect-trees as GeoJSON on a real local Ray Serve, read back with GDAL (pyogrio): an independent reader."""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import jsonschema
import pyogrio.raw
import pytest

from tests.serve_app.conftest import LEGACY_FORM, wait_job
from tests.treecore.conftest import Disc, draw_scene, encode, geotiff

pytestmark = pytest.mark.serve

# 600 x 400 px at 10 cm: 60 x 40 m (not square, so x and y cannot be swapped unnoticed); four crowns.
DISCS = [Disc(100, 80, 25), Disc(450, 120, 30), Disc(300, 300, 20), Disc(520, 350, 35)]
SCENE = draw_scene(400, 600, DISCS)
#: The drawn discs are found exactly by the tree-top method (the learned default is trained on real crowns).
FORM = {**LEGACY_FORM, "real_width": "60", "real_height": "40", "method": "watershed"}
EAST, NORTH = 500_000.0, 5_500_000.0
GEOJSON = "application/geo+json"
#: What the legacy React front end (axios) sends.
AXIOS_ACCEPT = "application/json, text/plain, */*"
LEGACY_KEYS = [
    "trees",
    "total_trees",
    "image_width",
    "image_height",
    "meters_per_pixel",
    "meters_per_pixel_x",
    "meters_per_pixel_y",
    "parameters",
    "tile_count",
    "timings",
    "warnings",  # added beside the legacy fields (issue #14): ignored form fields, empty here
]


def _post(
    url: str, image: bytes, *, name: str = "tile.png", headers: dict[str, str] | None = None, **params: Any
) -> httpx.Response:
    query = {"format": params.pop("query_format")} if "query_format" in params else None
    return httpx.post(
        f"{url}/detect-trees",
        files={"image": (name, image, "application/octet-stream")},
        data={**FORM, **params},
        params=query,
        headers=headers,
        timeout=120,
    )


def read_with_gdal(body: bytes) -> tuple[str, dict[int, tuple[float, float]], dict[str, list[Any]]]:
    """(CRS as GDAL names it, point by feature id, fields) of a GeoJSON document."""
    meta, _, geometries, values = pyogrio.raw.read(body)
    fields = {name: column.tolist() for name, column in zip(meta["fields"], values, strict=True)}
    points = {}
    for tree_id, wkb in zip(fields["id"], geometries, strict=True):
        order = "<" if wkb[0] == 1 else ">"
        kind, x, y = struct.unpack(order + "Idd", wkb[1:21])
        assert kind == 1  # a Point
        points[tree_id] = (x, y)
    return meta["crs"], points, fields


@pytest.fixture(scope="module")
def legacy(serve_url: str) -> dict[str, Any]:
    response = _post(serve_url, encode(SCENE), headers={"Accept": AXIOS_ACCEPT})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_legacy_answer_is_unchanged_without_the_new_fields(serve_url: str, legacy: dict[str, Any]) -> None:
    response = _post(serve_url, encode(SCENE), headers={"Accept": AXIOS_ACCEPT})
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "Accept"  # caches keep the JSON and GeoJSON answers apart
    body = response.json()
    assert list(body) == LEGACY_KEYS and body["total_trees"] == len(DISCS)
    # Starlette's compact JSON of exactly the legacy dict: the same bytes as before this feature.
    assert response.content == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert {**body, "timings": None} == {**legacy, "timings": None}


def test_geojson_in_a_crs_from_origin_and_epsg(serve_url: str, legacy: dict[str, Any]) -> None:
    response = _post(
        serve_url,
        encode(SCENE),
        headers={"Accept": GEOJSON},
        origin_easting=str(EAST),
        origin_northing=str(NORTH),
        epsg="32633",
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == GEOJSON and response.headers["vary"] == "Accept"
    body = response.json()
    assert body["frame"] == "crs" and body["georeference"]["source"] == "form"
    crs, points, fields = read_with_gdal(response.content)
    assert crs == "EPSG:32633"
    assert len(points) == body["total_trees"] == legacy["total_trees"] == len(DISCS)
    for tree in legacy["trees"]:
        easting, northing = points[tree["id"]]
        assert easting == pytest.approx(EAST + tree["x"], abs=1e-6)
        assert northing == pytest.approx(NORTH - tree["y"], abs=1e-6)
    assert fields["diameter_m"] == [tree["diameter"] for tree in legacy["trees"]]
    # And where the crowns were drawn: pixel centre (col + 0.5, row + 0.5) x 0.1 m from the corner.
    expected = sorted((EAST + (d.col + 0.5) / 10, NORTH - (d.row + 0.5) / 10) for d in DISCS)
    for (easting, northing), (e, n) in zip(sorted(points.values()), expected, strict=True):
        assert abs(easting - e) < 0.3 and abs(northing - n) < 0.3


def test_geojson_in_the_image_metric_frame(serve_url: str, legacy: dict[str, Any]) -> None:
    response = _post(serve_url, encode(SCENE), format="geojson")  # as a form field
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == GEOJSON and response.json()["frame"] == "image-metric"
    crs, points, _ = read_with_gdal(response.content)
    assert crs.startswith("LOCAL_CS[") and 'UNIT["metre",1]' in crs  # not taken for WGS 84 degrees
    for tree in legacy["trees"]:
        assert points[tree["id"]] == (tree["x"], -tree["y"])


def test_geotiff_upload_is_placed_by_its_own_tags(serve_url: str, legacy: dict[str, Any]) -> None:
    data = geotiff(SCENE, scale=(0.1, 0.1, 0), tiepoint=(0, 0, 0, 400_000.0, 6_000_000.0, 0))
    response = _post(serve_url, data, name="tile.tif", query_format="geojson")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["georeference"]["source"] == "geotiff" and body["georeference"]["pixel_scale"] == [0.1, 0.1]
    assert body["warnings"] == []
    crs, points, _ = read_with_gdal(response.content)
    assert crs == "EPSG:32633" and len(points) == len(DISCS)
    for tree in legacy["trees"]:  # the same pixels as the PNG, so the same trees
        easting, northing = points[tree["id"]]
        assert easting == pytest.approx(400_000.0 + tree["pixel_x"] * 0.1, abs=2e-3)
        assert northing == pytest.approx(6_000_000.0 - tree["pixel_y"] * 0.1, abs=2e-3)
    # epsg alone relabels the tags' CRS.
    relabelled = _post(serve_url, data, name="tile.tif", query_format="geojson", epsg="25833")
    assert relabelled.status_code == 200, relabelled.text
    assert read_with_gdal(relabelled.content)[0] == "EPSG:25833"


@pytest.mark.parametrize(
    ("fields", "status", "detail"),
    [
        ({"format": "geojson", "epsg": "32633"}, 422, "epsg needs origin_easting and origin_northing"),
        ({"format": "geojson", "origin_easting": "1", "epsg": "32633"}, 422, "origin_northing is missing"),
        ({"format": "geojson", "origin_easting": "1", "origin_northing": "2"}, 422, "need epsg"),
        ({"format": "geojson", "origin_easting": "east", "origin_northing": "2", "epsg": "1"}, 422, "valid number"),
        ({"format": "geojson", "origin_easting": "1", "origin_northing": "2", "epsg": "utm"}, 422, "valid integer"),
        ({"format": "geojson", "origin_easting": "1", "origin_northing": "2", "epsg": "12"}, 422, "from 1024"),
        ({"format": "geojson", "origin_easting": "1", "origin_northing": "2", "epsg": "4326"}, 422, "geographic"),
        ({"format": "geojson", "origin_easting": "inf", "origin_northing": "2", "epsg": "32633"}, 422, "finite"),
        ({"origin_easting": "1", "origin_northing": "2", "epsg": "32633"}, 422, "add format=geojson"),
        ({"format": "kml"}, 422, "format: Input should be 'json' or 'geojson'"),
        ({"format": "json", "query_format": "geojson"}, 422, "format is given twice"),
    ],
)
def test_bad_georeference_input_is_a_readable_4xx(
    serve_url: str, fields: dict[str, str], status: int, detail: str
) -> None:
    response = _post(serve_url, encode(SCENE[:50, :50]), **fields)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_user_defined_geotiff_crs_asks_for_epsg(serve_url: str) -> None:
    data = geotiff(SCENE[:50, :50], keys={1024: 1, 3072: 32767})
    response = _post(serve_url, data, name="tile.tif", format="geojson")
    assert response.status_code == 422 and "give the EPSG code as epsg" in response.json()["detail"]


def test_openapi_documents_both_media_types_and_answers_match(serve_url: str) -> None:
    operation = httpx.get(f"{serve_url}/openapi.json").json()["paths"]["/detect-trees"]["post"]
    content = operation["responses"]["200"]["content"]
    assert set(content) == {"application/json", GEOJSON}
    validator = jsonschema.Draft202012Validator(content[GEOJSON]["schema"])
    placed = {"origin_easting": "1000.5", "origin_northing": "2000.25", "epsg": "2056"}
    tagged = geotiff(SCENE[:200, :300], scale=(0.2, 0.2, 0), keys={1024: 1, 1025: 2, 3072: 32633})
    for image, fields in ((encode(SCENE), {}), (encode(SCENE), placed), (tagged, {"real_width": "30"})):
        response = _post(serve_url, image, format="geojson", **fields)
        assert response.status_code == 200, response.text
        validator.validate(response.json())


def test_a_detect_job_gives_the_same_geojson(serve_url: str, legacy: dict[str, Any]) -> None:
    created = httpx.post(
        f"{serve_url}/jobs",
        files={"image": ("tile.png", encode(SCENE), "image/png")},
        data={**FORM, "format": "geojson", "origin_easting": str(EAST), "origin_northing": str(NORTH), "epsg": "32633"},
        timeout=120,
    )
    assert created.status_code == 202, created.text
    job = wait_job(created.json()["status_url"])
    assert job["state"] == "succeeded", job
    crs, points, _ = read_with_gdal(json.dumps(job["result"]).encode())
    assert crs == "EPSG:32633" and len(points) == legacy["total_trees"]
    for tree in legacy["trees"]:
        assert points[tree["id"]] == (pytest.approx(EAST + tree["x"]), pytest.approx(NORTH - tree["y"]))


def test_a_job_with_a_bad_georeference_is_refused_before_it_starts(serve_url: str) -> None:
    files = {"image": ("tile.png", encode(SCENE), "image/png")}
    no_format = httpx.post(f"{serve_url}/jobs", files=files, data={**FORM, "epsg": "32633"}, timeout=120)
    assert no_format.status_code == 422 and "format=geojson" in no_format.json()["detail"]
    half = httpx.post(
        f"{serve_url}/jobs", files=files, data={**FORM, "format": "geojson", "origin_easting": "1"}, timeout=120
    )
    assert half.status_code == 422 and "origin_northing is missing" in half.json()["detail"]
