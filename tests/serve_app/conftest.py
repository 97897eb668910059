"""Fixtures of the service tests: synthetic uploads, an in-process app, and one real local Ray Serve per session."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from scripts.make_sample import make_scene
from scripts.render_serve_config import serve_config_env_vars
from serve_app.api import create_app
from serve_app.assembly import ModelBuilder
from serve_app.catalog import LocalCatalogView
from serve_app.settings import Settings
from serve_app.stages import LocalStages, TilePolicy
from serve_app.storage import LocalModelStore
from tests.serve_app.azurite import Azurite

#: Every form field of the legacy front end, as the strings a browser form sends.
LEGACY_FORM = {
    "hue_min": "35",
    "hue_max": "85",
    "sat_min": "40",
    "sat_max": "255",
    "val_min": "40",
    "val_max": "255",
    "min_diameter": "2",
    "max_diameter": "15",
    "cluster_threshold": "0",
    "real_width": "102.4",
    "real_height": "102.4",
}


@pytest.fixture(scope="session")
def scene_png() -> bytes:
    """A 1024 x 1024 synthetic scene (10 cm per pixel, about 170 crowns)."""
    return make_scene(1024)


#: The in-process app's tiles: a 1 Mpx scene is cut in two (one tile per stand-in replica), 0.25 Mpx and less
#: takes the short path.
LOCAL_POLICY = TilePolicy(tile_pixels=1_000_000, short_path_pixels=250_000)


def local_app(settings: Settings, stages: LocalStages) -> FastAPI:
    """create_app over in-process stages and their builder's catalogue."""
    catalog = stages.builder.catalog
    return create_app(settings, stages, LocalCatalogView(catalog), models_dir=catalog.models_dir)


def local_client(tmp_path: Path, **overrides: Any) -> TestClient:
    """A TestClient on create_app with in-process stages and local storage in tmp_path."""
    models = tmp_path / "generated"
    models.mkdir(exist_ok=True)
    settings = Settings(generated_models_dir=models, **overrides)
    builder = ModelBuilder(LocalModelStore(models, "/download"), workers=2)
    stages = LocalStages(builder, max_pixels=settings.max_image_pixels, workers=2, policy=LOCAL_POLICY)
    return TestClient(local_app(settings, stages))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The in-process app with default settings (small large-model threshold for speed)."""
    with local_client(tmp_path, large_model_threshold=50, max_trees_limit=500) as test_client:
        yield test_client


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The test Serve app's args: tiles of 1.2 Mpx (so a 1500 x 1500 image is cut in two whatever the replica
#: count), images up to 0.5 Mpx whole in one Detector call (the short path).
SERVE_ARGS_KW: dict[str, Any] = {"tile_megapixels": 1.2, "short_path_megapixels": 0.5, "detector_attempts": 3}


#: Tiles a test Detector replica takes at once (Serve runs them in its thread pool).
DETECTOR_MAX_ONGOING = 4

#: Size of the Ray started for the tests: this machine has 2 cores.
RAY_CPUS = 2
RAY_OBJECT_STORE_BYTES = 1_000_000_000
API_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def serve_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the Serve replicas (set before Ray starts, so every worker inherits it)."""
    return {
        "GENERATED_MODELS_DIR": str(tmp_path_factory.mktemp("serve_models")),
        "LARGE_MODEL_THRESHOLD": "100",
        "MAX_TREES_LIMIT": "3000",
        "MAX_UPLOAD_BYTES": str(40 * 1024 * 1024),
        "MAX_IMAGE_PIXELS": str(40_000_000),
        "MAX_RUNNING_JOBS": "2",
    }


def wait_job(status_url: str, timeout: float = 120, *, client: TestClient | None = None) -> dict[str, Any]:
    """Poll a job until it ends; its last state, with "seen": the (stage, tiles_done) pairs seen on the way.

    Args:
        status_url: the job's status_url.
        timeout: seconds to wait at most.
        client: the TestClient of an in-process app (default: real HTTP with httpx).
    """
    get = client.get if client is not None else lambda url: httpx.get(url, timeout=10)
    deadline = time.monotonic() + timeout
    seen_progress = set()
    while time.monotonic() < deadline:
        job = get(status_url).json()
        seen_progress.add((job["stage"], job["progress"]["tiles_done"]))
        if job["state"] in ("succeeded", "failed", "cancelled"):
            job["seen"] = seen_progress
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job did not finish in {timeout} s")


@pytest.fixture(scope="session")
def cross_origin() -> str:
    """The origin of a page on another port, which the `/secured` app allows (CORS_ORIGINS; test_cors.py serves it)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def serve_url(serve_env: dict[str, str], cross_origin: str) -> Iterator[str]:
    """One real local Ray Serve for the session: the app at /, the same app with API_KEY at /secured.

    Ray gets 2 CPUs and a 1 GB object store; Detector replicas take half a CPU each so both apps fit, and
    take up to DETECTOR_MAX_ONGOING tiles each, so a replica killed while a large image is detected surely holds
    some of its tiles.
    Shut down (Serve, then Ray) at the end of the session.
    """
    import ray
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    saved = {name: os.environ.get(name) for name in serve_env}
    os.environ.update(serve_env)
    for name in ("API_KEY", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL"):
        os.environ.pop(name, None)
    port = free_port()
    # Ray's session files (logs, sockets) go to a folder of this session, removed at the end (not /tmp/ray).
    ray_temp = tempfile.mkdtemp(prefix="ray-tests-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    ray.init(
        _temp_dir=ray_temp,
        num_cpus=RAY_CPUS,
        object_store_memory=RAY_OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {**serve_config_env_vars(), "RAY_SERVE_LOG_TO_STDERR": "0"}},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = AppArgs(**SERVE_ARGS_KW)
        half_cpu = {"ray_actor_options": {"num_cpus": 0.5}}
        no_cpu = {"ray_actor_options": {"num_cpus": 0}}
        options = {
            "Ingress": no_cpu,
            "TileSplitter": no_cpu,
            "ModelAssembler": no_cpu,
            "Detector": {"num_replicas": 2, "max_ongoing_requests": DETECTOR_MAX_ONGOING, **half_cpu},
        }
        serve.run(bind_graph(args, options=options), name="tree-detection", route_prefix="/")
        secured = {**options, "Detector": {"num_replicas": 1, **half_cpu}}
        # The settings are read once, here in build_app's process, and bound into every deployment.
        with_key = dataclasses.replace(Settings.from_env(), api_key=API_KEY, cors_origins=(cross_origin,))
        serve.run(bind_graph(args, settings=with_key, options=secured), name="secured", route_prefix="/secured")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("Ray Serve did not answer /health within 120 s")
        yield url
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(ray_temp, ignore_errors=True)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="session")
def readme_url(serve_url: str) -> Iterator[str]:
    """The service as `make run` starts it, for the README's examples: serve_config.yaml's args and the default
    limits (LARGE_MODEL_THRESHOLD 20,000, MAX_TREES_LIMIT 60,000), two Detector replicas, as an app of the
    session's Serve at /readme (removed at the end)."""
    import yaml
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    config = yaml.safe_load((Path(__file__).parents[2] / "serve_config.yaml").read_text())
    args = AppArgs(**config["applications"][0]["args"])
    defaults = Settings()
    settings = dataclasses.replace(
        Settings.from_env(),
        large_model_threshold=defaults.large_model_threshold,
        max_trees_limit=defaults.max_trees_limit,
        max_running_jobs=defaults.max_running_jobs,
    )
    no_cpu = {"ray_actor_options": {"num_cpus": 0}}  # the CPUs are the other apps' (see serve_url)
    options = {name: no_cpu for name in ("Ingress", "TileSplitter", "ModelAssembler")}
    options["Detector"] = {"num_replicas": 2, **no_cpu}
    serve.run(bind_graph(args, settings=settings, options=options), name="readme", route_prefix="/readme")
    try:
        yield f"{serve_url}/readme"
    finally:
        serve.delete("readme")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite for the session, stopped at the end."""
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An Azurite of this test's own, which the test may stop and start again."""
    server = Azurite(tmp_path / "azurite")
    server.location.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()
