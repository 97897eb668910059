"""The deployments' classes and the stages over them, in this process: fake handles stand in for Ray's transport.

The real transport is tested over HTTP in test_serve.py; these tests run the same classes where coverage sees them
(Ray replicas run in other processes), and the API over ServeStages exactly as the Ingress builds it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import serve_app.deployments as deployments
from scripts.make_sample import make_scene
from serve_app.api import create_app
from serve_app.builder import AppArgs, bind_graph, build_app
from serve_app.metrics import Metrics
from serve_app.serve_stages import ServeCatalogView, ServeStages, StageOptions
from serve_app.settings import Settings
from tests.serve_app.conftest import LEGACY_FORM, wait_job
from treecore.basemodels import DEFAULT_MODELS_DIR
from treecore.detect import detect_trees
from treecore.imageio import decode_image
from treecore.report import result_to_dict
from treecore.types import DetectionParams


class _Method:
    """`handle.method.remote(*args)`: runs now; a future of the result, awaited like a DeploymentResponse (or not:
    a fire-and-forget call)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self.fn(*args))
        except Exception as exc:  # noqa: BLE001 - the caller's await raises it, as Serve's would
            future.set_exception(exc)
        return future


class FakeHandle:
    """A deployment handle over an instance of the deployment's class, in this process."""

    def __init__(self, instance: object) -> None:
        self.instance = instance

    def __getattr__(self, name: str) -> _Method:
        method = _Method(getattr(self.instance, name))
        setattr(self, name, method)
        return method


class _Ref:
    """An object-store reference stand-in: ray.put / ray.get through a dict."""

    ids = itertools.count()

    def __init__(self) -> None:
        self.id = f"{next(self.ids):040x}"

    def hex(self) -> str:
        return self.id


@pytest.fixture
def object_store(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    store: dict[str, Any] = {}

    def put(value: Any) -> _Ref:
        ref = _Ref()
        store[ref.hex()] = value
        return ref

    monkeypatch.setattr(deployments.ray, "put", put)
    monkeypatch.setattr(deployments.ray, "get", lambda ref: store[ref.hex()])
    return store


@pytest.fixture
def serve_client(tmp_path: Path, object_store: dict[str, Any]) -> Any:
    settings = Settings(generated_models_dir=tmp_path, large_model_threshold=50, max_trees_limit=500)
    splitter = deployments.TileSplitter.func_or_class(settings)
    detector = deployments.Detector.func_or_class()
    assembler = deployments.ModelAssembler.func_or_class(settings, str(DEFAULT_MODELS_DIR), 2, 0)
    handles = FakeHandle(splitter), FakeHandle(detector), FakeHandle(assembler)
    metrics = Metrics()
    stages = ServeStages(*handles, StageOptions(tiles_per_replica=2, min_tile_pixels=100_000, attempts=2), metrics)
    catalog = ServeCatalogView(handles[2], 2, metrics)
    with TestClient(create_app(settings, stages, catalog, metrics=metrics)) as client:
        yield client, splitter


def test_detection_through_the_deployment_classes_equals_treecore(serve_client: Any) -> None:
    client, splitter = serve_client
    png = make_scene(700, seed=7)
    response = client.post("/detect-trees", files={"image": ("t.png", png, "image/png")}, data=LEGACY_FORM)
    assert response.status_code == 200, response.text
    body = response.json()
    params = DetectionParams(min_diameter=2, cluster_threshold=0, real_width=102.4, real_height=102.4)
    expected = result_to_dict(detect_trees(decode_image(png, max_pixels=10**8), params))
    assert body["trees"] == expected["trees"] and body["tile_count"] == 2  # 2 per replica, 1 replica outside Serve
    assert splitter.held() == 0  # released after the detection
    info = client.get("/").json()
    assert info["pipeline"]["mode"] == "ray-serve" and info["pipeline"]["detector_replicas"] == 1


def test_models_and_catalogue_through_the_assembler_class(serve_client: Any) -> None:
    client, _ = serve_client
    trees = [{"x": 3.0 * i, "y": 1.0, "diameter": 2.0} for i in range(60)]
    inline = client.post("/generate-model", json={"trees": trees[:5]})
    assert inline.status_code == 200 and inline.content.count(b"\no tree_") == 5
    stored = client.post("/generate-model?format=zip", json={"trees": trees}).json()
    assert client.get(stored["download_url"]).content[:2] == b"PK"
    names = [m["name"] for m in client.get("/tree-models").json()["models"]]
    assert "tree_lowpoly" in names
    assert client.get("/tree-models/nope.mtl").status_code == 404  # asked of the assembler: not packaged
    assert client.get("/tree-models/tree_lowpoly.mtl").status_code == 200  # packaged: from disk


def test_a_job_through_the_deployment_classes(serve_client: Any) -> None:
    client, _ = serve_client
    form = {**LEGACY_FORM, "kind": "detect-and-generate"}
    created = client.post("/jobs", files={"image": ("t.png", make_scene(300), "image/png")}, data=form)
    job = wait_job(created.json()["status_url"], 60, client=client)
    assert job["state"] == "succeeded", job
    assert job["result"]["model"]["total_trees"] == job["result"]["detection"]["total_trees"]


def test_the_splitter_drops_images_nobody_released(
    object_store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    splitter = deployments.TileSplitter.func_or_class(Settings())
    plan = splitter.split(make_scene(64), DetectionParams(), 1)
    assert splitter.held() == 1 and plan.image[1] in object_store
    clock = iter([10_000.0 + deployments.IMAGE_HOLD_S * 2])
    monkeypatch.setattr(deployments.time, "monotonic", lambda: next(clock))
    splitter.split(make_scene(64), DetectionParams(), 1)  # the first hold has expired by now
    assert splitter.held() == 1
    splitter.release("no-such-key")
    assert splitter.held() == 1


def test_release_free_memory_is_safe_to_call() -> None:
    deployments.release_free_memory()
    deployments.release_free_memory()  # the libc handle is cached


def test_build_app_binds_settings_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TREES_LIMIT", "1234")
    app = build_app({"tiles_per_replica": 2})
    ingress_settings = app._bound_deployment.init_args[0]
    assert isinstance(ingress_settings, Settings) and ingress_settings.max_trees_limit == 1234
    splitter, _, assembler = app._bound_deployment.init_args[1:4]
    assert splitter._bound_deployment.init_args[0] is ingress_settings  # the same object: read once
    assert assembler._bound_deployment.init_args[0] is ingress_settings
    sized = bind_graph(AppArgs(), settings=Settings(), options={"Detector": {"num_replicas": 3}})
    assert sized._bound_deployment.init_args[2]._bound_deployment.num_replicas == 3
    with pytest.raises(ValueError, match="tiles_per_replica"):
        build_app({"tiles_per_replica": 0})


def test_replica_count_falls_back_to_one_outside_serve() -> None:
    stages = ServeStages(*(FakeHandle(object()),) * 3, StageOptions(1, 1, 1), Metrics())
    assert asyncio.run(stages.detector_replicas()) == 1


def test_ray_metrics_count_like_the_in_memory_ones() -> None:
    from serve_app.metrics import RayMetrics

    metrics = RayMetrics()  # Ray's metric objects need no running replica to be made and updated
    metrics.request("/detect-trees", 200)
    metrics.detected(2, 3)
    metrics.detected(1, 0)
    metrics.retried("detect")
    metrics.stage("decode", 0.1)
    assert metrics.snapshot() == {"requests": 1, "trees_detected": 3, "tiles": 3, "replica_retries": 1}
