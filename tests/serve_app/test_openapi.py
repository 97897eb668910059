"""/openapi.json is complete: every request body and every answer's media types and schemas, the tree list's
required fields and bounds (serve_app.bounds), each model format's media type, and the errors of every route."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.bounds import MAX_COORDINATE_M, MAX_DIAMETER_M, MAX_PIXELS

#: Methods whose operations take a request body.
BODY_METHODS = ("post", "put", "patch")
#: The 2xx media types of each route whose answer is not only JSON.
MEDIA_TYPES = {
    ("post", "/detect-trees"): {"application/json", "application/geo+json"},
    ("post", "/generate-model"): {"application/json", "model/obj", "application/zip", "model/gltf-binary"},
    ("get", "/tree-models/{filename}"): {"model/obj", "model/mtl"},
    ("get", "/download/{filename}"): {"model/obj", "model/mtl", "application/zip", "model/gltf-binary"},
}


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_every_operation_documents_its_body_answers_and_errors(spec: dict[str, Any]) -> None:
    operations = _operations(spec)
    assert len(operations) >= 10
    missing = []
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        if method in BODY_METHODS:
            body = op.get("requestBody", {})
            if not body.get("required") or not body.get("content"):
                missing.append(f"{where}: no required requestBody")
            for media, content in body.get("content", {}).items():
                if not content.get("schema"):
                    missing.append(f"{where}: request {media} has no schema")
        success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        if not success:
            missing.append(f"{where}: no 2xx answer")
        for code, response in success.items():
            if not response.get("content"):
                missing.append(f"{where}: {code} has no media type")
            for media, content in response.get("content", {}).items():
                if not content.get("schema"):
                    missing.append(f"{where}: {code} {media} has no schema")
        if not {"401", "422"} <= set(op["responses"]):
            missing.append(f"{where}: its errors are not documented")
        if (method, path) in MEDIA_TYPES:
            media = {m for r in success.values() for m in r.get("content", {})}
            if media != MEDIA_TYPES[(method, path)]:
                missing.append(f"{where}: media types {sorted(media)}, not {sorted(MEDIA_TYPES[(method, path)])}")
    assert not missing, "\n".join(missing)


def test_the_tree_list_is_documented_with_its_required_fields_and_bounds(spec: dict[str, Any]) -> None:
    schema = spec["paths"]["/generate-model"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    detection, bare = schema["anyOf"]  # the /detect-trees response (or {"trees": [...]}), or a bare list
    assert detection["type"] == "object" and detection["required"] == ["trees"]
    assert detection["additionalProperties"] is True  # the detection's other fields are welcome
    assert detection["properties"]["format"]["enum"] == ["obj", "zip", "glb"]
    assert bare["type"] == "array"
    tree = bare["items"]
    assert detection["properties"]["trees"]["items"] == tree
    assert tree["required"] == ["x", "y", "diameter"]  # id optional
    props = tree["properties"]
    assert (props["x"]["minimum"], props["x"]["maximum"]) == (-MAX_COORDINATE_M, MAX_COORDINATE_M)
    assert (props["y"]["minimum"], props["y"]["maximum"]) == (-MAX_COORDINATE_M, MAX_COORDINATE_M)
    assert (props["diameter"]["exclusiveMinimum"], props["diameter"]["maximum"]) == (0, MAX_DIAMETER_M)
    assert (props["id"]["type"], props["id"]["minimum"], props["id"]["exclusiveMaximum"]) == ("integer", 0, 2**53)
    assert props["pixel_diameter"]["maximum"] == MAX_PIXELS


def test_the_documented_example_body_is_accepted(client: TestClient, spec: dict[str, Any]) -> None:
    content = spec["paths"]["/generate-model"]["post"]["requestBody"]["content"]["application/json"]
    response = client.post("/generate-model", json=content["example"])
    assert response.status_code == 200 and response.headers["content-type"] == "model/obj"


def test_the_stored_answer_schema_has_the_legacy_fields_and_the_new_ones(spec: dict[str, Any]) -> None:
    answer = spec["paths"]["/generate-model"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    legacy = {"download_url", "filename", "filesize_mb", "total_trees", "message", "expires_in"}
    assert legacy | {"expires_in_s", "expires_at", "mtl_url", "files", "warnings"} == set(answer["required"])
    assert answer["properties"]["expires_in"]["type"] == "string"  # the legacy words, e.g. "1 hour"
