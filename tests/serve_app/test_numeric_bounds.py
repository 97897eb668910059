"""Every numeric field of every endpoint, across the whole float range, through the HTTP layer: 2xx or 4xx, never
5xx, and a 422 names the field (TestClient on create_app; one case through the real Serve app)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from scripts.make_sample import make_scene
from serve_app.bounds import MAX_COORDINATE_M, MAX_DIAMETER_M, check_trees
from serve_app.errors import status_for
from tests.serve_app.conftest import LEGACY_FORM, local_client, wait_job
from treecore.errors import InvalidTreesError
from treecore.objwriter import format_obj_part
from treecore.types import Tree

#: The float range's edges: zeros, the smallest subnormal, the largest finite values, and the specials as strings.
EXTREMES = ["0", "-0", "5e-324", "-5e-324", "1e308", "-1e308", "1e300", "nan", "inf", "-inf", "NaN", "-Infinity"]
EXTREMES += [str(10**30), str(-(10**30))]  # integers past any machine word, for the integer fields
FORM_FIELDS = [*LEGACY_FORM, "origin_easting", "origin_northing", "epsg"]
TREE_FIELDS = ["x", "y", "diameter", "id", "pixel_x", "pixel_y", "pixel_diameter"]
SMALL_PNG = make_scene(96)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One in-process app for the module (hundreds of requests; no test changes its state)."""
    with local_client(tmp_path_factory.mktemp("bounds"), large_model_threshold=50, max_trees_limit=500) as app:
        yield app


def _form(field: str, value: str) -> dict[str, str]:
    form = {**LEGACY_FORM, "real_width": "9.6", "real_height": "9.6", field: value}
    if field in ("origin_easting", "origin_northing", "epsg"):
        form = {"origin_easting": "500000", "origin_northing": "5500000", "epsg": "32633", **form, "format": "geojson"}
    return form


def _assert_named(response: httpx.Response, field: str) -> None:
    assert response.status_code < 500, response.text
    if response.status_code == 422:
        assert field in response.json()["detail"], response.text


@pytest.mark.parametrize("value", EXTREMES)
@pytest.mark.parametrize("field", FORM_FIELDS)
def test_detect_form_fields_are_bounded(client: TestClient, field: str, value: str) -> None:
    files = {"image": ("t.png", SMALL_PNG, "image/png")}
    _assert_named(client.post("/detect-trees", files=files, data=_form(field, value)), field)


@pytest.mark.parametrize("value", EXTREMES)
@pytest.mark.parametrize("field", FORM_FIELDS)
def test_job_form_fields_are_bounded(client: TestClient, field: str, value: str) -> None:
    files = {"image": ("t.png", SMALL_PNG, "image/png")}
    created = client.post("/jobs", files=files, data={**_form(field, value), "kind": "detect-and-generate"})
    _assert_named(created, field)
    if created.status_code == 202:
        job = wait_job(created.json()["status_url"], client=client)
        assert job["state"] == "succeeded" or job["error"]["status"] < 500, job


def _tree_values() -> list[Any]:
    """JSON numbers (as Python floats) and the special values as strings and as JSON's non-standard literals."""
    return [0, -0.0, 5e-324, -5e-324, 1e308, -1e308, 1e300, -1e300, 10**30, "nan", "inf", "-inf", "1e300"]


@pytest.mark.parametrize("fmt", ["obj", "zip", "glb"])
@pytest.mark.parametrize("value", _tree_values())
@pytest.mark.parametrize("field", TREE_FIELDS)
def test_generate_model_tree_fields_are_bounded(client: TestClient, field: str, value: Any, fmt: str) -> None:
    tree = {"id": 1, "x": 1.0, "y": 2.0, "diameter": 3.0, "pixel_x": 10.0, "pixel_y": 20.0, "pixel_diameter": 30.0}
    response = client.post(f"/generate-model?format={fmt}", json={"trees": [{**tree, field: value}]})
    _assert_named(response, f"trees[0].{field}")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize("field", ["x", "y", "diameter"])
def test_generate_model_non_standard_json_numbers(client: TestClient, field: str, literal: str) -> None:
    tree = {"x": "1.0", "y": "2.0", "diameter": "3.0", field: literal}
    body = '{"trees": [{' + ", ".join(f'"{name}": {number}' for name, number in tree.items()) + "}]}"
    response = client.post("/generate-model", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert f"trees[0].{field}" in response.json()["detail"]


def test_the_documented_bounds_are_inclusive() -> None:
    edge = Tree(1, MAX_COORDINATE_M, -MAX_COORDINATE_M, MAX_DIAMETER_M, 0, 0, 0)
    assert check_trees([edge]) == [edge]
    with pytest.raises(InvalidTreesError, match=r"trees\[0\]\.x"):
        check_trees([Tree(1, MAX_COORDINATE_M * 1.01, 0, 1, 0, 0, 0)])


def test_a_writer_value_error_is_a_4xx_backstop() -> None:
    # Past the bounds (they refuse 1e300 first), the OBJ writer's own ValueError maps to 422, not 500.
    from treecore.basemodels import DEFAULT_MODEL, load_model

    mesh, _ = load_model(DEFAULT_MODEL)
    with pytest.raises(ValueError) as raised:
        format_obj_part([Tree(1, 1e300, 0, 1, 0, 0, 0)], mesh, first_index=0)
    assert status_for(raised.value) == 422


def test_health_keeps_every_legacy_field(client: TestClient) -> None:
    body = client.get("/health").json()
    assert {k: body[k] for k in ("status", "service", "message")} == {
        "status": "ok",
        "service": "tree-detection",
        "message": "Python FastAPI backend is running",
    }


@pytest.mark.serve
@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/detect-trees", "real_width", "5e-324"),
        ("/detect-trees", "max_diameter", "1e308"),
        ("/generate-model", "x", 1e300),
    ],
)
def test_extremes_through_real_serve(serve_url: str, path: str, field: str, value: Any) -> None:
    if path == "/generate-model":
        response = httpx.post(f"{serve_url}{path}", json={"trees": [{"x": value, "y": 0, "diameter": 3}]}, timeout=60)
        field = f"trees[0].{field}"
    else:
        files = {"image": ("t.png", SMALL_PNG, "image/png")}
        response = httpx.post(f"{serve_url}{path}", files=files, data=_form(field, value), timeout=60)
    assert response.status_code == 422 and field in response.json()["detail"], response.text
    assert httpx.get(f"{serve_url}/health").json()["message"] == "Python FastAPI backend is running"
