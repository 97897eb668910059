"""Memory admission on a real Ray Serve over HTTP: concurrent large images past the memory budget get only 200
(each the correct answer) and 503 with Retry-After; no replica is killed or restarted, and the memory the
test's Ray processes add stays within the budget."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import pytest

from scripts.make_sample import make_scene
from scripts.processes import memory_mb, ray_processes
from serve_app.admission import detect_need_bytes
from serve_app.settings import Settings
from treecore.detect import detect_trees
from treecore.imageio import decode_image
from treecore.report import result_to_dict
from treecore.types import DetectionParams

pytestmark = pytest.mark.serve

APP = "admission"
#: 3072 x 3072 px at 0.5 m (1536 m a side), the default method (heatmap): about 0.3 GB of estimated need each.
SIZE_PX, GSD_M = 3072, 0.5
#: Clients posting at once: four times what the budget admits.
CLIENTS = 8
#: The budget admits two such images at once; two more may wait (up to 60 s), the rest get 503 at once.
ADMITTED, QUEUE = 2, 2
#: Node memory in use must stay below this share of the total (Ray's memory monitor kills workers at 95 %).
NODE_MEMORY_LIMIT = 0.90
FORM = {"real_width": str(SIZE_PX * GSD_M), "real_height": str(SIZE_PX * GSD_M), "min_diameter": "2"}


def _ray_pss_bytes() -> int:
    """Summed proportional set size of this test session's Ray processes (shared object-store pages once), bytes."""
    return int(sum(memory_mb(pid, "Pss", "smaps_rollup") for pid in ray_processes()) * 1024 * 1024)


class Peak:
    """Samples the Ray processes' PSS and the node's used memory share every 0.1 s in a thread."""

    def __init__(self) -> None:
        self.pss, self.node_share = 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pss = max(self.pss, _ray_pss_bytes())
            memory = psutil.virtual_memory()
            self.node_share = max(self.node_share, (memory.total - memory.available) / memory.total)
            self._stop.wait(0.1)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _replicas() -> list[str]:
    """The named actors of this app's replicas (a killed or restarted replica gets a new name)."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in names if a["name"].startswith(f"SERVE_REPLICA::{APP}#"))


def _controller_pid() -> int:
    pids = [pid for pid, title in ray_processes().items() if title.startswith("ray::ServeController")]
    assert len(pids) == 1, pids
    return pids[0]


@pytest.fixture(scope="module")
def png() -> bytes:
    """The large image (a synthetic scene, about 18 MB of PNG)."""
    return make_scene(SIZE_PX, seed=11)


@pytest.fixture(scope="module")
def budget_bytes(png: bytes) -> int:
    """Room for ADMITTED images' estimated need, not one more."""
    params = DetectionParams(min_diameter=2, real_width=SIZE_PX * GSD_M, real_height=SIZE_PX * GSD_M)
    need = detect_need_bytes(SIZE_PX, SIZE_PX, len(png), params)
    return ADMITTED * need + need // 2


@pytest.fixture(scope="module")
def admission_url(serve_url: str, budget_bytes: int) -> Iterator[str]:
    """An app of the session's Serve at /admission with a small memory budget; deleted at the end."""
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    settings = dataclasses.replace(
        Settings.from_env(), memory_budget_bytes=budget_bytes, admission_queue_length=QUEUE, admission_wait_s=60
    )
    no_cpu = {"ray_actor_options": {"num_cpus": 0}}  # the CPUs are the other apps' (see serve_url)
    options = {
        "Ingress": {"max_ongoing_requests": 2 * CLIENTS, **no_cpu},  # every client reaches the admission
        "TileSplitter": no_cpu,
        "ModelAssembler": no_cpu,
        "Detector": {"num_replicas": 2, "max_ongoing_requests": 1, **no_cpu},
    }
    args = AppArgs(tile_megapixels=4.0)
    serve.run(bind_graph(args, settings=settings, options=options), name=APP, route_prefix=f"/{APP}")
    try:
        yield f"{serve_url}/{APP}"
    finally:
        serve.delete(APP)


def _post(url: str, png: bytes) -> httpx.Response:
    files = {"image": ("big.png", png, "image/png")}
    return httpx.post(f"{url}/detect-trees", files=files, data=FORM, timeout=300)


def _app_status() -> dict[str, Any]:
    from ray import serve

    app = serve.status().applications[APP]
    return {
        "status": app.status.value,
        "deployments": {name: (d.status.value, dict(d.replica_states)) for name, d in app.deployments.items()},
    }


def test_concurrent_large_images_past_the_budget_get_200_or_503_and_kill_nothing(
    admission_url: str, png: bytes, budget_bytes: int
) -> None:
    params = DetectionParams(min_diameter=2, real_width=SIZE_PX * GSD_M, real_height=SIZE_PX * GSD_M)
    expected = result_to_dict(detect_trees(decode_image(png, max_pixels=10**8), params))["trees"]
    warm = _post(admission_url, png)  # imports, the network, buffers: the idle figure below is a warm one
    assert warm.status_code == 200, warm.text
    assert warm.json()["trees"] == expected
    replicas, controller, status = _replicas(), _controller_pid(), _app_status()
    # Ingress, TileSplitter, two Detectors, ModelAssembler and JobRunner.
    assert len(replicas) == 6 and status["status"] == "RUNNING", status
    time.sleep(1)
    idle = _ray_pss_bytes()
    with Peak() as peak, ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(lambda _: _post(admission_url, png), range(CLIENTS)))
    codes = sorted(r.status_code for r in responses)
    print(
        f"codes {codes}; Ray PSS {idle / 1e6:.0f} MB idle, +{(peak.pss - idle) / 1e6:.0f} MB at the peak "
        f"(budget {budget_bytes / 1e6:.0f} MB); node memory at most {peak.node_share:.1%} in use"
    )
    assert set(codes) <= {200, 503}, [(r.status_code, r.text[:200]) for r in responses]
    assert codes.count(200) >= ADMITTED and 503 in codes, codes  # the budget admitted some and refused some
    for response in responses:
        if response.status_code == 200:
            assert response.json()["trees"] == expected
        else:
            assert int(response.headers["Retry-After"]) >= 1
            assert "memory" in response.json()["detail"]
    # Nothing was killed or restarted: the same replicas (names), the same controller process, all running.
    assert _replicas() == replicas and _controller_pid() == controller and _app_status() == status
    # What the admitted requests really added stays within the budget (the estimate is an upper bound).
    assert peak.pss - idle <= budget_bytes, (peak.pss - idle, budget_bytes)
    assert peak.node_share < NODE_MEMORY_LIMIT, peak.node_share
    # The budget was given back: one more image is admitted at once and answered.
    again = _post(admission_url, png)
    assert again.status_code == 200 and again.json()["trees"] == expected
