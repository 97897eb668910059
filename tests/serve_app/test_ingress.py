"""The HTTP API on the bare FastAPI app (TestClient, in-process stages): fast checks of every route."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trimesh
from fastapi.testclient import TestClient

from scripts.make_sample import make_scene
from serve_app.settings import Settings
from tests.serve_app.conftest import API_KEY, LEGACY_FORM, local_client, wait_job
from treecore.basemodels import DEFAULT_MODELS_DIR, list_models
from treecore.detect import detect_trees
from treecore.imageio import decode_image
from treecore.report import result_to_dict
from treecore.types import DetectionParams

TREE_FIELDS = {"id": int, "x": float, "y": float, "diameter": float, "pixel_x": float, "pixel_y": float}


def _detect(client: TestClient, png: bytes, **form: str):
    return client.post("/detect-trees", files={"image": ("tile.png", png, "image/png")}, data={**LEGACY_FORM, **form})


def test_health_is_the_legacy_body_and_open(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body == {
        "status": "ok",
        "service": "tree-detection",
        "message": "Python FastAPI backend is running",
        "version": body["version"],
    }
    assert body["version"]


def test_info_lists_limits_and_pipeline(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["limits"]["max_trees_limit"] == 500
    assert body["storage"] == "local" and body["pipeline"]["mode"] == "in-process"


def test_legacy_client_gets_every_field_with_its_type(client: TestClient, scene_png: bytes) -> None:
    response = _detect(client, scene_png)
    assert response.status_code == 200, response.text
    body = response.json()
    for name, kind in {
        "trees": list,
        "total_trees": int,
        "image_width": int,
        "image_height": int,
        "meters_per_pixel": float,
        "parameters": dict,
        "tile_count": int,
        "timings": dict,
    }.items():
        assert isinstance(body[name], kind), name
    assert body["total_trees"] == len(body["trees"]) > 50
    assert (body["image_width"], body["image_height"]) == (1024, 1024)
    assert body["meters_per_pixel"] == pytest.approx(0.1)
    assert body["parameters"]["min_diameter"] == 2.0 and body["parameters"]["hue_min"] == 35
    for tree in body["trees"]:
        for name, kind in TREE_FIELDS.items():
            assert isinstance(tree[name], (int, float) if kind is float else kind), name
        assert 0 <= tree["x"] <= 102.4 and 0 <= tree["y"] <= 102.4 and 2 <= tree["diameter"] <= 15
    assert body["tile_count"] == 2  # 1.05 Mpx: above the short path, one tile per stand-in replica (2)


def test_results_equal_treecore_in_one_process(client: TestClient, scene_png: bytes) -> None:
    body = _detect(client, scene_png).json()
    params = DetectionParams(min_diameter=2, cluster_threshold=0, real_width=102.4, real_height=102.4)
    expected = result_to_dict(detect_trees(decode_image(scene_png, max_pixels=10**8), params))
    assert body["trees"] == expected["trees"]


def test_defaults_are_the_legacy_defaults(client: TestClient, scene_png: bytes) -> None:
    body = client.post("/detect-trees", files={"image": ("t.png", scene_png, "image/png")}).json()
    assert body["parameters"] == {
        "hue_min": 35,
        "hue_max": 85,
        "sat_min": 40,
        "sat_max": 255,
        "val_min": 40,
        "val_max": 255,
        "min_diameter": 3.0,
        "max_diameter": 15.0,
        "cluster_threshold": 10.0,
        "real_width": 100.0,
        "real_height": 100.0,
        "method": "heatmap",  # not a legacy field: the default chosen by the quality benchmark
    }


@pytest.mark.parametrize(
    ("form", "status", "words"),
    [
        ({"hue_min": "200"}, 422, "hue_min"),
        ({"sat_min": "100", "sat_max": "50"}, 422, "sat"),
        ({"min_diameter": "20", "max_diameter": "10"}, 422, "diameter"),
        ({"real_width": "0"}, 422, "real_width"),
        ({"real_width": "-5"}, 422, "real_width"),
        ({"real_height": "nan"}, 422, "real_height"),
        ({"hue_min": "green"}, 422, "hue_min"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(
    client: TestClient, scene_png: bytes, form: dict[str, str], status: int, words: str
) -> None:
    response = _detect(client, scene_png, **form)
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json()["detail"])


def test_bad_images_are_400(client: TestClient) -> None:
    assert _detect(client, b"").status_code == 400
    response = _detect(client, b"hello, I am text renamed .png")
    assert response.status_code == 400 and "detail" in response.json()
    assert client.post("/detect-trees", data=LEGACY_FORM).status_code == 422  # no file at all


def test_pixel_and_upload_limits_are_413_before_work(tmp_path: Path, scene_png: bytes) -> None:
    with local_client(tmp_path, max_image_pixels=1000 * 1000) as small:
        response = _detect(small, scene_png)
        assert response.status_code == 413 and "pixel" in response.json()["detail"]
    with local_client(tmp_path, max_upload_bytes=100_000) as small:
        response = _detect(small, scene_png)
        assert response.status_code == 413 and "MAX_UPLOAD_BYTES" in response.json()["detail"]


def test_small_model_comes_back_as_obj(client: TestClient) -> None:
    trees = [{"id": i + 1, "x": 5.0 * i, "y": 10.0, "diameter": 4.0} for i in range(10)]
    response = client.post("/generate-model", json={"trees": trees, "total_trees": 10, "extra": "ignored"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("model/obj")
    assert "attachment" in response.headers["content-disposition"]
    assert response.headers["x-content-type-options"] == "nosniff"
    scene = trimesh.load(trimesh.util.wrap_as_stream(response.content), file_type="obj", force="mesh")
    lo, hi = scene.bounds
    assert lo[0] == pytest.approx(-2.0, abs=0.3) and hi[0] == pytest.approx(47.0, abs=0.3)
    assert lo[1] == pytest.approx(0.0, abs=1e-3) and lo[2] == pytest.approx(8.0, abs=0.3)


def test_large_model_is_stored_and_downloadable(client: TestClient) -> None:
    trees = [{"x": float(i % 10) * 6, "y": float(i // 10) * 6, "diameter": 3.0} for i in range(60)]
    response = client.post("/generate-model?base_model=tree_lowpoly", json={"trees": trees})
    assert response.status_code == 200, response.text
    body = response.json()
    legacy = {"download_url", "filename", "filesize_mb", "total_trees", "message", "expires_in"}
    assert set(body) == legacy | {"expires_in_s", "expires_at", "mtl_url", "files", "warnings"}
    assert body["total_trees"] == 60 and body["filename"].endswith(".obj")
    assert "more than 50" in body["message"]
    assert (body["expires_in"], body["expires_in_s"]) == ("24 hours", 86400)  # local retention; Azure: "1 hour"
    assert body["warnings"] == []
    download = client.get(body["download_url"])
    assert download.status_code == 200 and download.content.count(b"\no tree_") == 60
    assert f'filename="{body["filename"]}"' in download.headers["content-disposition"]
    stem = body["filename"].removesuffix(".obj")
    assert f"mtllib {stem}.mtl".encode() in download.content
    assert body["mtl_url"] == body["download_url"].replace(".obj", ".mtl")
    mtl = client.get(body["mtl_url"])
    assert mtl.status_code == 200 and b"newmtl" in mtl.content
    obj_file, mtl_file = body["files"]
    assert (obj_file["name"], obj_file["url"], obj_file["media_type"]) == (
        body["filename"],
        body["download_url"],
        "model/obj",
    )
    assert (mtl_file["name"], mtl_file["url"], mtl_file["media_type"]) == (f"{stem}.mtl", body["mtl_url"], "model/mtl")
    for file in body["files"]:
        assert file["expires_in_s"] == 86400 and file["expires_at"].endswith("Z")
        assert file["size_bytes"] == len(client.get(file["url"]).content)


def test_unknown_form_fields_are_named_in_warnings_not_refused(
    client: TestClient, scene_png: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    files = {"image": ("tile.png", scene_png, "image/png")}
    with caplog.at_level("INFO", logger="serve_app"):
        response = client.post("/detect-trees", files=files, data={"realwidth": "50", "hue_min": "35"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["parameters"]["real_width"] == 100.0  # the legacy default: the misspelt field is not read...
    assert body["warnings"] == [
        "ignored form field 'realwidth' (not a field of this route; did you mean 'real_width'?)"
    ]  # ...but named
    assert sum("realwidth" in record.getMessage() for record in caplog.records) == 1  # logged once
    clean = client.post("/detect-trees", files=files, data=LEGACY_FORM).json()
    assert clean["warnings"] == []
    geo = client.post("/detect-trees?format=geojson", files=files, data={"colour": "green"}).json()
    assert geo["warnings"] == ["ignored form field 'colour' (not a field of this route)"]
    job = client.post("/jobs", files=files, data={**LEGACY_FORM, "knd": "detect", "model_format": "glb"}).json()
    assert job["warnings"] == ["ignored form field 'knd' (not a field of this route; did you mean 'kind'?)"]
    assert wait_job(job["status_url"], 60, client=client)["result"]["warnings"] == job["warnings"]


def test_unknown_json_fields_are_named_in_warnings(client: TestClient) -> None:
    trees = [{"x": 1.0, "y": 2.0, "diameter": 3.0, "height": 9.0}]
    response = client.post("/generate-model", json={"trees": trees, "total_trees": 1, "fromat": "glb"})
    assert response.status_code == 200 and response.headers["content-type"] == "model/obj"
    assert response.headers["x-warnings"] == (
        "ignored field 'fromat' (not a field of this route; did you mean 'format'?) | "
        "ignored tree field 'height' (not a field of this route)"
    )
    assert "x-warnings" not in client.post("/generate-model", json=[{"x": 1, "y": 2, "diameter": 3}]).headers
    stored = client.post("/generate-model", json={"trees": trees * 60, "colour": "red"}).json()
    assert stored["warnings"] == [
        "ignored field 'colour' (not a field of this route)",
        "ignored tree field 'height' (not a field of this route)",
    ]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ("{not json", 422),
        ({"nothing": []}, 422),
        ({"trees": [{"x": 1, "y": 2}]}, 422),
        ({"trees": [{"x": "NaN", "y": 2, "diameter": 3}]}, 422),
        ({"trees": [{"x": 1, "y": 2, "diameter": 3}] * 501}, 413),
        ({"trees": [], "base_model": "../../etc/passwd"}, 404),
        ({"trees": [], "base_model": "no_such_tree"}, 404),
    ],
)
def test_bad_tree_lists_are_refused(client: TestClient, payload: object, status: int) -> None:
    if isinstance(payload, str):
        response = client.post("/generate-model", content=payload, headers={"content-type": "application/json"})
    else:
        response = client.post("/generate-model", json=payload)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str)


def test_empty_scene_is_a_valid_model(client: TestClient) -> None:
    response = client.post("/generate-model", json={"trees": []})
    assert response.status_code == 200 and response.content.startswith(b"# Tree scene")


def test_tree_models_are_listed_and_served(client: TestClient) -> None:
    body = client.get("/tree-models").json()
    names = {m["name"] for m in body["models"]}
    assert {"tree_lowpoly", "tree_detailed"} <= names and body["default"] == "tree_lowpoly"
    obj = client.get("/tree-models/tree_lowpoly.obj")
    assert obj.status_code == 200 and b"\nv " in obj.content
    assert client.get("/tree-models/tree_lowpoly.mtl").status_code == 200
    for bad in ("nope.obj", "tree_lowpoly.exe", "..%2F..%2Fetc%2Fpasswd", "%2e%2e.obj", ".hidden.obj"):
        response = client.get(f"/tree-models/{bad}")
        assert response.status_code == 404, bad


def test_tree_models_without_blob_storage_are_the_packaged_ones(client: TestClient) -> None:
    body = client.get("/tree-models").json()
    assert [m["name"] for m in body["models"]] == list_models(DEFAULT_MODELS_DIR)  # unchanged: sorted, packaged
    for model in body["models"]:
        assert model == {
            "name": model["name"],
            "obj_url": f"http://testserver/tree-models/{model['name']}.obj",
            "mtl_url": f"http://testserver/tree-models/{model['name']}.mtl",
            "source": "package",
        }
    obj = client.get("/tree-models/tree_detailed.obj")
    assert obj.content == (DEFAULT_MODELS_DIR / "tree_detailed.obj").read_bytes()
    assert obj.headers["content-disposition"] == 'attachment; filename="tree_detailed.obj"'


def test_download_refuses_path_tricks(client: TestClient) -> None:
    for bad in ("..%2F..%2Fetc%2Fpasswd", "passwd", "x.obj", "..obj"):
        assert client.get(f"/download/{bad}").status_code == 404, bad


def test_job_runs_to_completion_with_progress(client: TestClient, scene_png: bytes) -> None:
    response = client.post("/jobs", files={"image": ("t.png", scene_png, "image/png")}, data=LEGACY_FORM)
    assert response.status_code == 202, response.text
    job = wait_job(response.json()["status_url"], 60, client=client)
    assert job["state"] == "succeeded", job
    assert job["progress"]["tiles_done"] == job["progress"]["tiles_total"] == job["result"]["tile_count"]
    assert job["progress"]["trees_so_far"] == job["result"]["total_trees"] > 0


def test_detect_and_generate_job_stores_the_model(client: TestClient, scene_png: bytes) -> None:
    form = {**LEGACY_FORM, "kind": "detect-and-generate", "base_model": "tree_detailed"}
    created = client.post("/jobs", files={"image": ("t.png", scene_png, "image/png")}, data=form)
    job = wait_job(created.json()["status_url"], 60, client=client)
    assert job["state"] == "succeeded", job
    model = job["result"]["model"]
    assert model["total_trees"] == job["result"]["detection"]["total_trees"]
    assert ("more than" in model["message"]) == (model["total_trees"] > 50)  # a job stores small models too
    assert client.get(model["download_url"]).status_code == 200
    assert model["filename"].endswith(".obj") and client.get(model["mtl_url"]).status_code == 200


@pytest.mark.parametrize(("model_format", "magic"), [("glb", b"glTF"), ("zip", b"PK")])
def test_detect_and_generate_job_takes_the_model_format(
    client: TestClient, scene_png: bytes, model_format: str, magic: bytes
) -> None:
    form = {**LEGACY_FORM, "kind": "detect-and-generate", "model_format": model_format}
    created = client.post("/jobs", files={"image": ("t.png", scene_png, "image/png")}, data=form)
    assert created.status_code == 202, created.text
    job = wait_job(created.json()["status_url"], 60, client=client)
    assert job["state"] == "succeeded", job
    model = job["result"]["model"]
    assert model["filename"].endswith(f".{model_format}") and model["mtl_url"] is None and len(model["files"]) == 1
    download = client.get(model["download_url"])
    assert download.status_code == 200 and download.content.startswith(magic)
    bad = client.post("/jobs", files={"image": ("t.png", scene_png, "image/png")}, data={"model_format": "fbx"})
    assert bad.status_code == 422 and "model_format" in bad.json()["detail"]


def test_kind_defaults_to_detect(client: TestClient, scene_png: bytes) -> None:
    created = client.post("/jobs", files={"image": ("t.png", scene_png, "image/png")}, data=LEGACY_FORM)
    job = wait_job(created.json()["status_url"], 60, client=client)
    assert job["kind"] == "detect" and "trees" in job["result"]
    kind = client.get("/openapi.json").json()["components"]["schemas"]["Body_create_job_jobs_post"]["properties"]
    assert kind["kind"]["default"] == "detect" and "default" in kind["kind"]["description"]


def test_cancel_answers_the_final_state(tmp_path: Path) -> None:
    big = make_scene(2048)  # long enough to be running when it is cancelled
    with local_client(tmp_path) as slow:
        created = slow.post("/jobs", files={"image": ("t.png", big, "image/png")}, data=LEGACY_FORM).json()
        cancelled = slow.delete(f"/jobs/{created['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert cancelled.json()["finished_at"] is not None
        assert slow.get(f"/jobs/{created['id']}").json()["state"] == "cancelled"


def test_failed_job_reports_its_error(client: TestClient) -> None:
    # A PNG header with a plausible size but no image data: accepted at upload, fails in the decode stage.
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    created = client.post("/jobs", files={"image": ("t.png", broken, "image/png")}, data=LEGACY_FORM)
    job = wait_job(created.json()["status_url"], 30, client=client)
    assert job["state"] == "failed" and job["error"]["status"] == 400 and job["error"]["detail"]


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/jobs/no-such-job")
    assert response.status_code == 404 and "no job" in response.json()["detail"]


def test_api_key_guards_every_route_but_health(tmp_path: Path) -> None:
    with local_client(tmp_path, api_key=API_KEY) as secured:
        assert secured.get("/health").status_code == 200
        for path in ("/", "/tree-models", "/jobs/x"):  # the docs and /openapi.json are open: test_cors.py
            response = secured.get(path)
            assert response.status_code == 401, path
            assert API_KEY not in response.text
        assert secured.get("/", headers={"X-API-Key": "wrong"}).status_code == 401
        assert secured.get("/", headers={"X-API-Key": API_KEY}).status_code == 200
        assert secured.get("/", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_cors_is_off_by_default_and_configurable(tmp_path: Path, client: TestClient) -> None:
    origin = {"Origin": "https://planner.example"}
    assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
    with local_client(tmp_path, cors_origins=("https://planner.example",)) as cors:
        allowed = cors.get("/health", headers=origin).headers
        assert allowed["access-control-allow-origin"] == "https://planner.example"


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/", "/detect-trees", "/generate-model", "/tree-models", "/jobs", "/jobs/{job_id}"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_settings_read_legacy_names() -> None:
    env = {
        "MAX_TREES_LIMIT": "123",
        "LARGE_MODEL_THRESHOLD": "7",
        "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=s3cret",
    }
    settings = Settings.from_env(env)
    assert (settings.max_trees_limit, settings.large_model_threshold, settings.storage_kind) == (
        123,
        7,
        "azure-connection-string",
    )
    assert "s3cret" not in repr(settings)


def test_zip_holds_obj_and_mtl_inline_and_stored(client: TestClient) -> None:
    import io
    import zipfile

    trees = [{"x": 4.0 * i, "y": 2.0, "diameter": 3.0} for i in range(60)]
    small = client.post("/generate-model?format=zip", json={"trees": trees[:10]})
    assert small.status_code == 200 and small.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(small.content)) as archive:
        names = archive.namelist()
        obj = archive.read(next(n for n in names if n.endswith(".obj")))
        mtl_name = next(n for n in names if n.endswith(".mtl"))
        assert f"mtllib {mtl_name}".encode() in obj and obj.count(b"\no tree_") == 10
    large = client.post("/generate-model", json={"trees": trees, "format": "zip"}).json()
    assert large["filename"].endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(client.get(large["download_url"]).content)) as archive:
        assert archive.testzip() is None and len(archive.namelist()) == 2


def test_glb_is_returned_for_any_size(client: TestClient) -> None:
    trees = [{"x": 4.0 * i, "y": 2.0, "diameter": 3.0} for i in range(60)]  # above this client's threshold (50)
    response = client.post("/generate-model?format=glb", json={"trees": trees})
    assert response.status_code == 200 and response.headers["content-type"] == "model/gltf-binary"
    assert response.content[:4] == b"glTF" and response.headers["x-total-trees"] == "60"
    assert client.post("/generate-model?format=fbx", json={"trees": trees}).status_code == 422
