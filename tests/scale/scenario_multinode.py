"""The app on a real three-node Ray on this machine (ray.cluster_utils.Cluster: each node its own raylet, object
store and workers; all of them on this host's IP).

    head      1 CPU, resource `head`: GCS, the Serve controller, the one HTTP proxy, Ingress and TileSplitter
    worker a  2 CPUs, resources `detector` 1 and `worker_a`: a Detector replica and the ModelAssembler
    worker b  2 CPUs, resources `detector` 1 and `worker_b`: a Detector replica (killed mid-request below)

The HTTP proxy runs on the head only (proxy_location HeadOnly): every node shares this host's ports, so proxies on
the workers could not bind the same port. On AKS each pod has its own IP and serve_config.yaml keeps EveryNode.
Detectors are pinned to the workers with the custom resource `detector` (bind_graph's options), so the decoded
image, which the TileSplitter puts into the head's object store, is read by Detectors on other nodes. Storage is a
real Azurite: a stored model's SAS URL works from every node, whichever node wrote it (with local storage it
would be a file on the writer's node only). Run by tests/scale/test_scale.py in a child process.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.render_serve_config import serve_config_env_vars
from tests.scale.harness import (
    FAST_AUTOSCALING_ENV,
    NODE_OBJECT_STORE_BYTES,
    Scene,
    app_options,
    check_answer,
    detect,
    free_port,
    ray_temp_dir,
    replica_nodes,
    running_replicas,
    scenario_settings,
    scene,
    wait_for,
    wait_http,
)
from tests.serve_app.azurite import Azurite

pytestmark = pytest.mark.scale

APP = "multinode"
DETECTOR = {
    "num_replicas": 2,
    "max_ongoing_requests": 1,
    "ray_actor_options": {"num_cpus": 1, "resources": {"detector": 1}},
}
#: Tiles of 0.5 MP (18 tiles of the 9 MP image, far above the short path's size, so it goes through the
#: TileSplitter); five tries per tile (backoff 0.5 + 1 + 2 + 4 s) give Serve time to see a dead node's replica as
#: gone and route the retry to the live one.
ARGS = {"tile_megapixels": 0.5, "detector_attempts": 5}
LARGE_MODEL_THRESHOLD = 50


@dataclass
class MultiNode:
    """The running cluster and app."""

    url: str
    cluster: Any  # ray.cluster_utils.Cluster
    head: Any  # its ray._private.node.Node objects
    worker_a: Any
    worker_b: Any


def _worker(cluster: Any, name: str) -> Any:
    return cluster.add_node(
        num_cpus=2, resources={"detector": 1, name: 1}, object_store_memory=NODE_OBJECT_STORE_BYTES, wait=True
    )


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A real Azurite, the storage of the app."""
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def multinode(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[MultiNode]:
    """Three nodes, the app on them, Serve's HTTP proxy on the head at a free port; all shut down at the end."""
    import os

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve_app.builder import AppArgs, bind_graph

    os.environ.update(FAST_AUTOSCALING_ENV)
    with ray_temp_dir() as temp_dir:
        head_args = {
            "num_cpus": 1,
            "resources": {"head": 1},
            "object_store_memory": NODE_OBJECT_STORE_BYTES,
            "temp_dir": temp_dir,
            "gcs_server_port": free_port(),
            "include_dashboard": False,
            "dashboard_agent_listen_port": free_port(),
        }
        cluster = Cluster(initialize_head=True, head_node_args=head_args)
        try:
            worker_a, worker_b = _worker(cluster, "worker_a"), _worker(cluster, "worker_b")
            cluster.wait_for_nodes(timeout=120)
            ray.init(
                address=cluster.address,
                log_to_driver=False,
                runtime_env={"env_vars": {**serve_config_env_vars(), **FAST_AUTOSCALING_ENV}},
            )
            port = free_port()
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
            settings = scenario_settings(
                Path(tmp_path_factory.mktemp("models")),
                azure_connection_string=azurite.connection_string,
                container_generated_models=f"generated-{uuid.uuid4().hex[:8]}",
                large_model_threshold=LARGE_MODEL_THRESHOLD,
            )
            options = app_options(DETECTOR, pin={"head": 0.01})
            options["ModelAssembler"] = {"ray_actor_options": {"num_cpus": 0, "resources": {"worker_a": 0.01}}}
            serve.run(bind_graph(AppArgs(**ARGS), settings=settings, options=options), name=APP, route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            wait_http(url)
            yield MultiNode(url, cluster, cluster.head_node, worker_a, worker_b)
        finally:
            try:
                if ray.is_initialized():
                    serve.shutdown()
            finally:
                ray.shutdown()
                cluster.shutdown()


@pytest.fixture(scope="module")
def large() -> Scene:
    """A 3000 x 3000 scene (900 m at 0.3 m) and its one-process answer: 18 tiles of 0.5 MP here."""
    return scene(3000, seed=21)


def test_detectors_on_worker_nodes_read_the_image_from_the_head(multinode: MultiNode, large: Scene) -> None:
    wait_for(lambda: running_replicas(APP) == 2, timeout=180, what="2 RUNNING Detector replicas")
    head, a, b = multinode.head.node_id, multinode.worker_a.node_id, multinode.worker_b.node_id
    assert replica_nodes(APP, "Detector") == sorted([a, b])  # one on each worker, none on the head
    assert replica_nodes(APP, "TileSplitter") == [head]
    response = detect(multinode.url, large)
    check_answer(response, large)
    # The TileSplitter put the image into the head's object store; every tile was detected on a worker node,
    # so the image object crossed nodes (pulled by each worker's object manager), and the answer is exact.
    assert response.json()["tile_count"] >= 2


def test_stored_model_downloads_from_every_node(multinode: MultiNode) -> None:
    import ray

    assert replica_nodes(APP, "ModelAssembler") == [multinode.worker_a.node_id]
    trees = [{"x": 4.0 * (i % 10), "y": 4.0 * (i // 10), "diameter": 3.0} for i in range(LARGE_MODEL_THRESHOLD + 30)]
    response = httpx.post(f"{multinode.url}/generate-model", json={"trees": trees}, timeout=120)
    assert response.status_code == 200, response.text
    stored = response.json()
    url = stored["download_url"]
    assert stored["total_trees"] == len(trees) and not url.startswith(multinode.url)  # a SAS URL, not /download

    here = httpx.get(url, timeout=60)
    assert here.status_code == 200 and here.content.count(b"\no tree_") == len(trees)

    @ray.remote(num_cpus=0)
    def download(sas_url: str) -> tuple[str, int, str]:
        body = httpx.get(sas_url, timeout=60)
        return ray.get_runtime_context().get_node_id(), body.status_code, hashlib.sha256(body.content).hexdigest()

    wanted = {"head": multinode.head.node_id, "worker_a": multinode.worker_a.node_id}
    wanted["worker_b"] = multinode.worker_b.node_id
    calls = {name: download.options(resources={name: 0.01}).remote(url) for name in wanted}
    got = {name: ray.get(ref, timeout=120) for name, ref in calls.items()}
    digest = hashlib.sha256(here.content).hexdigest()
    assert got == {name: (node, 200, digest) for name, node in wanted.items()}


def _job_while_detecting(url: str, image: Scene) -> tuple[str, dict[str, Any]]:
    files = {"image": ("scene.jpg", image.data, "image/jpeg")}
    created = httpx.post(f"{url}/jobs", files=files, data=image.form, timeout=120)
    assert created.status_code == 202, created.text
    status_url = created.json()["status_url"]

    def detecting() -> dict[str, Any] | None:
        job = httpx.get(status_url, timeout=10).json()
        assert job["state"] in ("queued", "running"), job
        return dict(job) if job["stage"] == "detecting" else None

    return status_url, wait_for(detecting, timeout=120, what="the job to reach its detecting stage", interval=0.05)


def _wait_job(status_url: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job = httpx.get(status_url, timeout=10).json()
        return dict(job) if job["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(ended, timeout=300, what="the job to end")


def test_worker_node_killed_mid_request(multinode: MultiNode, large: Scene) -> None:
    url = multinode.url
    status_url, job = _job_while_detecting(url, large)
    answers: list[httpx.Response] = []
    posts = [threading.Thread(target=lambda: answers.append(detect(url, large))) for _ in range(2)]
    for post in posts:
        post.start()
    time.sleep(0.5)  # the two requests are split and their tiles queued on both Detectors
    job = httpx.get(status_url, timeout=10).json()
    assert job["state"] == "running" and job["progress"]["tiles_done"] < job["progress"]["tiles_total"], job
    multinode.cluster.remove_node(multinode.worker_b, allow_graceful=False)  # raylet, store and workers: SIGKILL
    job = _wait_job(status_url)
    for post in posts:
        post.join(300)
    retries = httpx.get(f"{url}/", timeout=10).json()["totals"].get("replica_retries")
    print(f"killed worker b: job {job['state']}, direct answers {[r.status_code for r in answers]}, retries {retries}")
    # A tile lost with its node is retried on the other Detector (a correct answer) or, when every try failed,
    # the request is a 503 that says to try again: never a 500, never a wrong answer.
    if job["state"] == "succeeded":
        assert job["result"]["trees"] == large.trees
    else:
        assert job["state"] == "failed" and job["error"]["status"] == 503, job
    assert len(answers) == 2
    for answer in answers:
        if answer.status_code != 503:
            check_answer(answer, large)

    # A new worker node with the resource gets the replacement replica; the app answers correctly again.
    worker_c = _worker(multinode.cluster, "worker_c")
    wait_for(
        lambda: running_replicas(APP) == 2 and worker_c.node_id in replica_nodes(APP, "Detector"),
        timeout=240,
        what="the replacement Detector replica on the new worker node",
        interval=1,
    )
    check_answer(detect(url, large), large)
