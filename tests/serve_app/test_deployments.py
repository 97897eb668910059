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
from hypothesis import given, settings
from hypothesis import strategies as st

import serve_app.deployments as deployments
from scripts.make_sample import make_scene
from serve_app.api import create_app
from serve_app.builder import AppArgs, bind_graph, build_app
from serve_app.metrics import Metrics
from serve_app.serve_stages import ServeCatalogView, ServeStages, StageOptions
from serve_app.settings import Settings
from serve_app.stages import SHORT_PATH, TilePolicy, tile_count_for
from tests.serve_app.conftest import LEGACY_FORM
from treecore.basemodels import DEFAULT_MODELS_DIR
from treecore.detect import detect_trees
from treecore.errors import ImageTooLargeError, InvalidImageError
from treecore.imageio import decode_image
from treecore.report import result_to_dict
from treecore.tiles import plan_tiles
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
    detector = deployments.Detector.func_or_class(settings)
    assembler = deployments.ModelAssembler.func_or_class(settings, str(DEFAULT_MODELS_DIR), 2, 0)
    handles = FakeHandle(splitter), FakeHandle(detector), FakeHandle(assembler)
    metrics = Metrics()
    policy = TilePolicy(tile_pixels=250_000, short_path_pixels=100_000)
    stages = ServeStages(*handles, StageOptions(policy, attempts=2), metrics)
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
    assert body["trees"] == expected["trees"] and body["tile_count"] == 2  # 0.49 Mpx in tiles of 0.25 Mpx
    assert splitter.held() == 0  # released after the detection


def test_a_small_image_takes_the_short_path(serve_client: Any, object_store: dict[str, Any]) -> None:
    client, splitter = serve_client
    png = make_scene(300, seed=8)
    form = {**LEGACY_FORM, "real_width": "30", "real_height": "30"}
    response = client.post("/detect-trees", files={"image": ("t.png", png, "image/png")}, data=form)
    assert response.status_code == 200, response.text
    params = DetectionParams(min_diameter=2, cluster_threshold=0, real_width=30, real_height=30)
    expected = result_to_dict(detect_trees(decode_image(png, max_pixels=10**8), params))
    body = response.json()
    assert body["trees"] == expected["trees"] and body["total_trees"] > 0 and body["tile_count"] == 1
    assert object_store == {}  # one Detector call with the bytes: no split, nothing put into the object store
    bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (1 << 20).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    detector = deployments.Detector.func_or_class(Settings(max_image_pixels=100))
    with pytest.raises(ImageTooLargeError):
        detector.detect_whole(png, params)  # the Detector checks the pixel limit itself
    with pytest.raises(InvalidImageError):
        detector.detect_whole(bomb[:20], params)


@pytest.mark.parametrize(
    ("shape", "replicas", "tile_px", "expected"),
    [
        ((500, 500), 1, 1_000_000, SHORT_PATH),  # 0.25 Mpx: whole, in one Detector call
        ((500, 501), 1, 1_000_000, 1),  # just above the short path, below a tile: one tile
        ((500, 501), 2, 1_000_000, 2),  # ...but at least one tile per running replica
        ((500, 501), 3, 1_000_000, 4),  # rounded up to a grid (2 x 2)
        ((4000, 4000), 2, 1_000_000, 16),  # by size: 16 Mpx in 1 Mpx tiles, more than the replicas (they queue)
        ((4000, 4000), 32, 1_000_000, 36),  # 32 replicas: 6 x 6
        ((400, 400), 1, 100_000, 2),  # the short path is capped at the tile size
        ((1, 1_000_000), 4, 1_000_000, 4),  # a one-pixel strip: four tiles in a row
    ],
)
def test_tiles_follow_the_image_size_and_at_least_the_replicas(
    shape: tuple[int, int], replicas: int, tile_px: int, expected: int
) -> None:
    policy = TilePolicy(tile_pixels=tile_px, short_path_pixels=250_000)
    assert policy.tile_count(shape, replicas) == expected
    if expected != SHORT_PATH:
        assert len(plan_tiles(shape, halo=5, n_tiles=expected)) == expected  # the splitter cuts exactly this many


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 10_000),
    st.integers(1, 10_000),
    st.integers(1, 64),
    st.integers(20_000, 10_000_000),  # at most 5,000 tiles: the test stays quick
    st.integers(0, 10_000_000),
)
def test_tile_counts_cover_the_replicas_and_bound_the_tile_size(
    height: int, width: int, replicas: int, tile_px: int, short_px: int
) -> None:
    n = tile_count_for((height, width, 3), replicas, tile_pixels=tile_px, short_path_pixels=short_px)
    pixels = height * width
    assert (n == SHORT_PATH) == (pixels <= min(short_px, tile_px))
    if n != SHORT_PATH:
        tiles = plan_tiles((height, width), halo=0, n_tiles=n)
        assert len(tiles) == n  # the splitter cuts exactly this many
        if height >= n and width >= n:  # not a strip: every replica gets a tile, no tile much over the target
            assert n >= replicas
            biggest = max((t.core.x1 - t.core.x0) * (t.core.y1 - t.core.y0) for t in tiles)
            assert biggest <= 2 * tile_px or biggest <= pixels / n * 2


def test_the_splitter_drops_images_nobody_released(
    object_store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    splitter = deployments.TileSplitter.func_or_class(Settings())
    plan = splitter.split(make_scene(64), DetectionParams(), 1)
    assert splitter.held() == 1 and plan.image[1] in object_store
    clock = iter([deployments.time.monotonic() + deployments.IMAGE_HOLD_S * 2])  # from now, not from boot
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
    app = build_app({"tile_megapixels": 2})
    ingress_settings = app._bound_deployment.init_args[0]
    assert isinstance(ingress_settings, Settings) and ingress_settings.max_trees_limit == 1234
    splitter, _, assembler = app._bound_deployment.init_args[1:4]
    assert splitter._bound_deployment.init_args[0] is ingress_settings  # the same object: read once
    assert assembler._bound_deployment.init_args[0] is ingress_settings
    sized = bind_graph(AppArgs(), settings=Settings(), options={"Detector": {"num_replicas": 3}})
    assert sized._bound_deployment.init_args[2]._bound_deployment.num_replicas == 3
    detector = app._bound_deployment.init_args[2]
    assert detector._bound_deployment.init_args[0] is ingress_settings  # the Detector checks the pixel limit
    with pytest.raises(ValueError, match="tile_megapixels"):
        build_app({"tile_megapixels": 0})
    with pytest.raises(ValueError, match="tiles_per_replica"):
        build_app({"tiles_per_replica": 2})  # replaced by tile_megapixels: refused, not ignored


def test_replica_count_falls_back_to_one_outside_serve() -> None:
    stages = ServeStages(*(FakeHandle(object()),) * 3, StageOptions(TilePolicy(1, 1), 1), Metrics())
    assert asyncio.run(stages.detector_replicas()) == 1
    assert asyncio.run(stages.detector_replicas()) == 1  # the reader thread found no Serve and stopped


def test_ray_metrics_count_like_the_in_memory_ones() -> None:
    from serve_app.metrics import RayMetrics

    metrics = RayMetrics()  # Ray's metric objects need no running replica to be made and updated
    metrics.request("/detect-trees", 200)
    metrics.detected(2, 3)
    metrics.detected(1, 0)
    metrics.retried("detect")
    metrics.stage("decode", 0.1)
    assert metrics.snapshot() == {"requests": 1, "trees_detected": 3, "tiles": 3, "replica_retries": 1}
