"""Serve autoscaling on one Ray node with more logical CPUs (6) than the machine has cores (2).

The Detector deployment autoscales from 1 to 4 replicas (one logical CPU and one call at a time each, so every
queued tile or request counts towards `target_ongoing_requests` 1). Sustained load from several HTTP clients,
and separately one large image cut into more tiles than replicas, raise the RUNNING replicas above 1; idle brings
them back to 1. Every answer equals treecore's in one process. Run by tests/scale/test_scale.py in a child process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.render_serve_config import serve_config_env_vars
from tests.scale.harness import (
    FAST_AUTOSCALING_ENV,
    NODE_OBJECT_STORE_BYTES,
    ReplicaWatch,
    Scene,
    app_options,
    check_answer,
    detect,
    free_port,
    load,
    ray_temp_dir,
    running_replicas,
    scenario_settings,
    scene,
    wait_for,
    wait_http,
)

pytestmark = pytest.mark.scale

APP = "autoscaling"
#: Logical CPUs of the Ray node: more than the 2 cores, so 4 one-CPU Detector replicas fit.
RAY_CPUS = 6
MIN_REPLICAS, MAX_REPLICAS = 1, 4
#: Short delays so one burst scales up within seconds and idle scales down within a minute. downscale_delay_s is
#: long enough that replicas started for the large image become RUNNING before Serve stops them again.
DETECTOR = {
    "max_ongoing_requests": 1,
    "autoscaling_config": {
        "min_replicas": MIN_REPLICAS,
        "max_replicas": MAX_REPLICAS,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 1,
        "downscale_delay_s": 15,
        "look_back_period_s": 2,
        # Deprecated but still read in Serve 2.60: how often a handle records its queue length (and their age limit).
        "metrics_interval_s": 0.5,
    },
    "ray_actor_options": {"num_cpus": 1},
}
#: Tiles of 1 MP: the 4000 x 4000 image (16 MP) is cut into 16 tiles whatever the replica count, so while one
#: replica runs 15 of them queue, and the queue drives the autoscaler. The load's 700 x 700 images take the short path.
TILE_ARGS = {"tile_megapixels": 1.0}
LARGE_TILES = 16


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a one-node Ray with 6 logical CPUs, at http://127.0.0.1:<free port>; shut down at the end."""
    import os

    import ray
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    os.environ.update(FAST_AUTOSCALING_ENV)  # before Ray starts: its workers inherit the environment
    port = free_port()
    with ray_temp_dir() as temp_dir:
        ray.init(
            num_cpus=RAY_CPUS,
            object_store_memory=NODE_OBJECT_STORE_BYTES * 2,
            _temp_dir=temp_dir,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {**serve_config_env_vars(), **FAST_AUTOSCALING_ENV}},
        )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            settings = scenario_settings(Path(tmp_path_factory.mktemp("models")))
            app = bind_graph(AppArgs(**TILE_ARGS), settings=settings, options=app_options(DETECTOR))
            serve.run(app, name=APP, route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            wait_http(url)
            yield url
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()


def _back_to_minimum() -> int:
    """Wait (idle) until the Detector runs min_replicas again; the count."""
    return wait_for(
        lambda: running_replicas(APP) == MIN_REPLICAS and MIN_REPLICAS,
        timeout=240,
        what=f"the idle Detector deployment to return to {MIN_REPLICAS} RUNNING replica",
        interval=1,
    )


@pytest.fixture(scope="module")
def small() -> Scene:
    """A 700 x 700 scene (one tile) and its one-process answer."""
    return scene(700, seed=11)


@pytest.fixture(scope="module")
def large() -> Scene:
    """A 4000 x 4000 scene (1,200 m at 0.3 m, a 6 MB JPEG) and its one-process answer."""
    return scene(4000, seed=12)


def test_sustained_load_adds_replicas_and_idle_removes_them(serve_url: str, small: Scene) -> None:
    assert running_replicas(APP) == MIN_REPLICAS
    check_answer(detect(serve_url, small), small)
    with ReplicaWatch(APP) as watch, load(serve_url, small, clients=6) as result:
        wait_for(lambda: watch.peak > MIN_REPLICAS, timeout=240, what="more than 1 RUNNING Detector under load")
        wait_for(lambda: result.total >= 24, timeout=240, what="24 answers under load")
    print(f"sustained load: peak RUNNING Detector replicas {watch.peak}; answers {result.statuses}")
    assert not result.errors, result.errors[:3]
    assert result.statuses == {200: result.total} and result.wrong == 0, result
    assert MIN_REPLICAS < watch.peak <= MAX_REPLICAS
    _back_to_minimum()


def test_one_large_image_adds_replicas_and_idle_removes_them(serve_url: str, large: Scene) -> None:
    _back_to_minimum()
    with ReplicaWatch(APP) as watch:
        response = detect(serve_url, large)
        check_answer(response, large)
        # Tiles beyond the running replica queue in the Detector handle: Serve scales up on that queue alone.
        assert response.json()["tile_count"] >= LARGE_TILES
        wait_for(lambda: watch.peak > MIN_REPLICAS, timeout=120, what="more than 1 RUNNING Detector for one image")
    print(f"one large image: {response.json()['tile_count']} tiles; peak RUNNING Detector replicas {watch.peak}")
    assert MIN_REPLICAS < watch.peak <= MAX_REPLICAS
    _back_to_minimum()
