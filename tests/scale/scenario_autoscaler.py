"""Worker nodes added and removed by Ray's autoscaler, with Ray's fake multi-node provider (what Ray tests its
autoscaler with, and what `ray.cluster_utils.AutoscalingCluster` starts): the local stand-in for KubeRay's in-tree
autoscaler (see docs/deploy-aks.md).

The head has no CPU and no `detector` resource, so it cannot host a Detector; the one worker type,
`detector-worker` (2 CPUs, `detector` 2), has 0 nodes while the cluster is idle, and the Detector deployment
autoscales from 0 to 4 replicas of 1 CPU and 1 `detector` each. A request makes Serve want a replica that fits
nowhere: the autoscaler reads that pending demand from the GCS and starts a worker node (a real raylet with its own
object store, started by the head's monitor process); sustained load wants 4 replicas, so it starts a second one.
Idle, Serve removes the replicas and the autoscaler the nodes. Run by tests/scale/test_scale.py in a child process.

`AutoscalingCluster` itself is not used: its start() and shutdown() run `ray stop --force`, which would stop
every Ray on the machine, and its template (fake_multi_node/example.yaml) is not in Ray's wheel. FakeCluster below
writes the same config (AutoscalingCluster._generate_config's keys) and sets the same environment
(RAY_FAKE_CLUSTER, AUTOSCALER_UPDATE_INTERVAL_S), with a head of our own on a free port.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    live_nodes,
    load,
    ray_temp_dir,
    replica_nodes,
    running_replicas,
    scenario_settings,
    scene,
    wait_for,
    wait_http,
)

pytestmark = pytest.mark.scale

APP = "autoscaler"
WORKER_TYPE = "detector-worker"
MAX_WORKERS = 2
#: Seconds a worker node stays without work before the autoscaler removes it (idle_timeout_minutes; KubeRay's
#: idleTimeoutSeconds, 120 s in k8s/base/rayservice.yaml).
IDLE_TIMEOUT_S = 12
DETECTOR = {
    "max_ongoing_requests": 1,
    "autoscaling_config": {
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 1,
        "downscale_delay_s": 5,
        "look_back_period_s": 2,
        "metrics_interval_s": 0.5,
    },
    "ray_actor_options": {"num_cpus": 1, "resources": {"detector": 1}},
}


def fake_autoscaling_config(gcs_address: str) -> dict[str, Any]:
    """The cluster config of the fake multi-node provider: a head that hosts no Detector, one worker type.

    Args:
        gcs_address: the head's GCS address; the provider starts worker nodes against it (default: port 6379).
    """
    worker = {
        "resources": {"CPU": 2, "detector": 2, "object_store_memory": NODE_OBJECT_STORE_BYTES},
        "node_config": {},
        "min_workers": 0,
        "max_workers": MAX_WORKERS,
    }
    return {
        "cluster_name": "tree-detection-scale",
        "max_workers": MAX_WORKERS,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0, "head": 1}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: worker,
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_S / 60,
        **{key: {} for key in ("auth", "docker", "file_mounts")},
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands")},
        **{key: [] for key in ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
        **{key: [] for key in ("cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts_sync_continuously": False,
    }


def _kill_processes_of(temp_dir: str) -> None:
    """SIGKILL what is left of this cluster: processes whose command line names its temp folder (the raylets and
    stores of worker nodes the monitor started; their workers exit with their raylet)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if f"{temp_dir}/".encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The head (autoscaler included) and the app, at http://127.0.0.1:<free port>; shut down at the end."""
    import ray
    from ray import serve
    from ray._private.services import get_node_ip_address
    from ray.cluster_utils import Cluster

    from serve_app.builder import AppArgs, bind_graph

    # The monitor (autoscaler) and the nodes it starts inherit this environment.
    os.environ.update({**FAST_AUTOSCALING_ENV, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    with ray_temp_dir() as temp_dir:
        gcs_port = free_port()
        config = Path(temp_dir) / "autoscaling.json"
        config.write_text(json.dumps(fake_autoscaling_config(f"{get_node_ip_address()}:{gcs_port}")))
        head_args = {
            "num_cpus": 0,
            "resources": {"head": 1},
            "object_store_memory": NODE_OBJECT_STORE_BYTES,
            "temp_dir": temp_dir,
            "gcs_server_port": gcs_port,
            "include_dashboard": False,
            "dashboard_agent_listen_port": free_port(),
            "autoscaling_config": str(config),
        }
        cluster = Cluster(initialize_head=True, head_node_args=head_args)
        try:
            ray.init(
                address=cluster.address,
                log_to_driver=False,
                runtime_env={"env_vars": {**serve_config_env_vars(), **FAST_AUTOSCALING_ENV}},
            )
            port = free_port()
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
            settings = scenario_settings(Path(tmp_path_factory.mktemp("models")))
            app = bind_graph(AppArgs(), settings=settings, options=app_options(DETECTOR, pin={"head": 0.01}))
            serve.run(app, name=APP, route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            wait_http(url)
            yield url
        finally:
            try:
                if ray.is_initialized():
                    serve.shutdown()
            finally:
                ray.shutdown()
                cluster.shutdown()
                _kill_processes_of(temp_dir)


@pytest.fixture(scope="module")
def small() -> Scene:
    """A 700 x 700 scene (one tile) and its one-process answer."""
    return scene(700, seed=31)


def test_idle_cluster_has_no_worker_nodes(serve_url: str) -> None:
    assert live_nodes("detector") == [] and running_replicas(APP) == 0
    assert len(live_nodes("head")) == 1


def test_load_starts_worker_nodes_and_idle_removes_them(serve_url: str, small: Scene) -> None:
    # The first request waits for a node to start and a replica on it: the autoscaler's cold start.
    check_answer(detect(serve_url, small), small)
    head = live_nodes("head")
    with load(serve_url, small, clients=6) as result:
        workers = wait_for(
            lambda: len(nodes := live_nodes("detector")) == MAX_WORKERS and nodes,
            timeout=300,
            what=f"{MAX_WORKERS} worker nodes started by the autoscaler",
            interval=1,
        )
        wait_for(lambda: running_replicas(APP) >= 3, timeout=300, what="3 RUNNING Detector replicas", interval=1)
        placed = replica_nodes(APP, "Detector")
        wait_for(lambda: result.total >= 12, timeout=300, what="12 answers under load")
    print(f"autoscaler: {len(workers)} worker nodes, Detector replicas on {len(set(placed))} of them; {result}")
    assert set(placed) <= set(workers) and not set(placed) & set(head)  # on the new nodes, none on the head
    assert not result.errors and result.statuses == {200: result.total} and result.wrong == 0, result
    # Idle: Serve scales the Detector to 0, then the autoscaler removes the idle worker nodes.
    wait_for(lambda: running_replicas(APP) == 0, timeout=240, what="0 Detector replicas when idle", interval=1)
    wait_for(lambda: live_nodes("detector") == [], timeout=300, what="the idle worker nodes removed", interval=1)
    assert live_nodes("head") == head
