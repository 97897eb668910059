"""The whole graph on a real local Ray Serve, over HTTP: every endpoint, parity, jobs, a killed replica, limits."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from scripts.make_sample import make_scene
from serve_app.stages import TilePolicy
from tests.serve_app.conftest import API_KEY, DETECTOR_MAX_ONGOING, LEGACY_FORM, SERVE_ARGS_KW, wait_job
from treecore.detect import detect_trees
from treecore.imageio import decode_image
from treecore.report import result_to_dict
from treecore.types import DetectionParams

pytestmark = pytest.mark.serve


def _detect(url: str, png: bytes, timeout: float = 120, **form: str) -> httpx.Response:
    files = {"image": ("tile.png", png, "image/png")}
    return httpx.post(f"{url}/detect-trees", files=files, data={**LEGACY_FORM, **form}, timeout=timeout)


def test_health_info_and_docs(serve_url: str) -> None:
    assert httpx.get(f"{serve_url}/health").json()["status"] == "ok"
    info = httpx.get(f"{serve_url}/").json()
    assert info["pipeline"]["mode"] == "ray-serve" and info["storage"] == "local"
    assert info["limits"]["max_trees_limit"] == 3000  # build_app read the environment and bound it in
    assert httpx.get(f"{serve_url}/docs").status_code == 200
    assert "/detect-trees" in httpx.get(f"{serve_url}/openapi.json").json()["paths"]


@pytest.mark.parametrize(("size", "seed"), [(600, 1), (1500, 2), (2100, 3)])
def test_serve_results_equal_treecore_in_one_process(serve_url: str, size: int, seed: int) -> None:
    png = make_scene(size, seed=seed)
    response = _detect(serve_url, png, real_width=str(size / 10), real_height=str(size / 10), cluster_threshold="1.5")
    assert response.status_code == 200, response.text
    body = response.json()
    params = DetectionParams(min_diameter=2, cluster_threshold=1.5, real_width=size / 10, real_height=size / 10)
    expected = result_to_dict(detect_trees(decode_image(png, max_pixels=10**8), params))
    assert body["trees"] == expected["trees"] and body["total_trees"] > 10
    # Up to 0.5 Mpx whole (the short path: one Detector call), else tiles of 1.2 Mpx, at least one per replica (2).
    policy = TilePolicy.from_megapixels(SERVE_ARGS_KW["tile_megapixels"], SERVE_ARGS_KW["short_path_megapixels"])
    assert body["tile_count"] == max(1, policy.tile_count((size, size), 2)) == {600: 1, 1500: 2, 2100: 4}[size]


def test_images_are_released_after_their_requests(serve_url: str) -> None:
    from ray import serve

    for size in (600, 1500):
        assert _detect(serve_url, make_scene(size)).status_code == 200
    splitter = serve.get_deployment_handle("TileSplitter", app_name="tree-detection")
    deadline = time.monotonic() + 30
    while splitter.held.remote().result() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert splitter.held.remote().result() == 0


def test_legacy_client_request_and_fields(serve_url: str) -> None:
    response = _detect(serve_url, make_scene(1024))
    assert response.status_code == 200, response.text
    body = response.json()
    for name in ("trees", "total_trees", "image_width", "image_height", "meters_per_pixel", "parameters"):
        assert name in body
    tree = body["trees"][0]
    assert {"id", "x", "y", "diameter", "pixel_x", "pixel_y", "pixel_diameter"} <= set(tree)
    assert isinstance(tree["id"], int) and isinstance(tree["x"], float)


def test_generate_inline_and_stored_then_download(serve_url: str) -> None:
    trees = [{"id": i + 1, "x": 3.0 * (i % 20), "y": 3.0 * (i // 20), "diameter": 2.5} for i in range(150)]
    small = httpx.post(f"{serve_url}/generate-model", json={"trees": trees[:20]}, timeout=60)
    assert small.status_code == 200 and small.content.count(b"\no tree_") == 20
    large = httpx.post(f"{serve_url}/generate-model", json={"trees": trees}, timeout=60)
    assert large.status_code == 200, large.text
    body = large.json()
    assert body["total_trees"] == 150 and body["download_url"].startswith(serve_url)
    download = httpx.get(body["download_url"], timeout=60)
    assert download.status_code == 200 and download.content.count(b"\no tree_") == 150
    glb = httpx.post(f"{serve_url}/generate-model?format=glb", json={"trees": trees}, timeout=60)
    assert glb.status_code == 200 and glb.content[:4] == b"glTF"
    stored_zip = httpx.post(f"{serve_url}/generate-model?format=zip", json={"trees": trees}, timeout=60).json()
    assert httpx.get(stored_zip["download_url"], timeout=60).content[:2] == b"PK"
    too_many = httpx.post(f"{serve_url}/generate-model", json={"trees": trees * 21}, timeout=60)
    assert too_many.status_code == 413 and "3,000" in too_many.json()["detail"]


def test_tree_models_over_http(serve_url: str) -> None:
    models = httpx.get(f"{serve_url}/tree-models").json()["models"]
    first = models[0]
    assert httpx.get(first["obj_url"]).status_code == 200 and httpx.get(first["mtl_url"]).status_code == 200
    assert httpx.get(f"{serve_url}/tree-models/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_job_reports_progress_to_completion(serve_url: str) -> None:
    files = {"image": ("t.png", make_scene(2000, seed=4), "image/png")}
    form = {**LEGACY_FORM, "kind": "detect-and-generate", "real_width": "200", "real_height": "200"}
    created = httpx.post(f"{serve_url}/jobs", files=files, data=form, timeout=60)
    assert created.status_code == 202, created.text
    job = wait_job(created.json()["status_url"])
    assert job["state"] == "succeeded", job
    progress = job["progress"]
    assert progress["tiles_done"] == progress["tiles_total"] == 4  # 4 Mpx in tiles of 1.2 Mpx: a 2 x 2 grid
    assert progress["trees_so_far"] == job["result"]["detection"]["total_trees"] > 100
    assert httpx.get(job["result"]["model"]["download_url"], timeout=60).status_code == 200
    assert httpx.get(f"{serve_url}/jobs/unknown").status_code == 404


def test_limits_and_bad_input_over_http(serve_url: str) -> None:
    assert _detect(serve_url, b"").status_code == 400
    assert _detect(serve_url, b"not an image").status_code == 400
    bad = _detect(serve_url, make_scene(300), hue_min="300")
    assert bad.status_code == 422 and "hue_min" in bad.text
    big = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (100_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    bomb = _detect(serve_url, big + b"\x00" * 100)
    assert bomb.status_code == 413 and "pixel" in bomb.json()["detail"]
    upload = _detect(serve_url, b"\x89PNG" + b"\x00" * (41 * 1024 * 1024))
    assert upload.status_code == 413 and "MAX_UPLOAD_BYTES" in upload.json()["detail"]
    assert httpx.get(f"{serve_url}/health").status_code == 200


def test_api_key_app(serve_url: str) -> None:
    secured = f"{serve_url}/secured"
    assert httpx.get(f"{secured}/health").status_code == 200
    assert httpx.get(f"{secured}/").status_code == 401
    assert httpx.get(f"{secured}/", headers={"X-API-Key": "nope"}).status_code == 401
    assert httpx.get(f"{secured}/", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert httpx.get(f"{serve_url}/").status_code == 200  # the main app has no key
    import ray

    logs = Path(ray.get_runtime_context().gcs_address and ray._private.worker._global_node.get_logs_dir_path())
    # The key reaches the secured app in its bound settings (read once by build_app), never in a runtime_env
    # (Ray logs env_vars: the README says to set API_KEY in the process environment), so no log holds it.
    files = [p for p in logs.rglob("*") if p.is_file()]
    leaked = [p.name for p in files if API_KEY.encode() in p.read_bytes()]
    assert files and not leaked, f"the API key appears in {leaked}"


#: What Serve's router logs when it sends a call again because its replica is gone (ray/serve/_private/router.py).
_ROUTER_RETRY_MARKS = ("is temporarily unavailable", "will not be considered for future requests because it has died")


def _retries(url: str) -> int:
    """Calls tried again because their replica went away: ours (GET / totals: the Ingress's and the JobRunner's)
    and those of Serve's router (its warnings in the main app's Ingress and JobRunner replica logs: a replica that
    vanished before answering, or died)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    texts = [
        path.read_text(errors="replace")
        for kind in ("Ingress", "JobRunner")
        for path in logs.glob(f"replica_tree-detection_{kind}_*.log")
    ]
    router = sum(text.count(mark) for text in texts for mark in _ROUTER_RETRY_MARKS)
    return router + int(httpx.get(f"{url}/").json()["totals"]["replica_retries"])


def test_request_survives_a_killed_detector_replica(serve_url: str) -> None:
    import ray

    def detector_replicas() -> list[str]:
        names = ray.util.list_named_actors(all_namespaces=True)
        return [a["name"] for a in names if a["name"].startswith("SERVE_REPLICA::tree-detection#Detector#")]

    before = detector_replicas()
    assert len(before) == 2
    # JPEG: a noisy 5000 x 5000 PNG is larger than the tests' 40 MiB upload limit.
    png = cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(make_scene(5000, seed=5), np.uint8), cv2.IMREAD_COLOR))[
        1
    ].tobytes()
    # 25 Mpx at 0.3 m per pixel: 25 tiles of 1 Mpx, each a tenth of a second or more on half a core.
    form = {**LEGACY_FORM, "real_width": "1500", "real_height": "1500"}
    retries_before = _retries(serve_url)
    created = httpx.post(f"{serve_url}/jobs", files={"image": ("t.png", png, "image/png")}, data=form, timeout=120)
    status_url = created.json()["status_url"]
    deadline = time.monotonic() + 120
    # Kill once the first tile is done: by then Serve has given each replica DETECTOR_MAX_ONGOING tiles (it sends
    # each tile to the less busy of the two as soon as the split is done), and while more than
    # 2 x DETECTOR_MAX_ONGOING tiles are not done both stay that full. The killed replica's tiles must then be
    # tried again on the other: by Serve's router (a call whose replica vanished before answering) or by our
    # call_with_retries (one whose replica died while working on it).
    while (job := httpx.get(status_url, timeout=10).json())["progress"]["tiles_done"] < 1:
        assert time.monotonic() < deadline and job["state"] in ("queued", "running"), job
        time.sleep(0.02)
    total = job["progress"]["tiles_total"]
    victim = ray.get_actor(before[0], namespace="serve")
    at_kill = httpx.get(status_url, timeout=10).json()["progress"]
    assert total == 25 and at_kill["tiles_done"] < total - 2 * DETECTOR_MAX_ONGOING, at_kill
    ray.kill(victim, no_restart=True)
    job = wait_job(status_url, timeout=300)
    assert job["state"] == "succeeded", job
    params = DetectionParams(min_diameter=2, cluster_threshold=0, real_width=1500, real_height=1500)
    expected = result_to_dict(detect_trees(decode_image(png, max_pixels=10**8), params))
    assert job["result"]["trees"] == expected["trees"] and job["result"]["tile_count"] == total
    assert _retries(serve_url) > retries_before, at_kill  # the killed replica's tiles, done again on the other
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (len(detector_replicas()) < 2 or before[0] in detector_replicas()):
        time.sleep(1)
    assert len(detector_replicas()) == 2 and before[0] not in detector_replicas()  # replaced
    assert _detect(serve_url, make_scene(700)).status_code == 200
