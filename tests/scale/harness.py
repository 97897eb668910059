"""What the scaling scenarios share: images with their one-process answers, the app's deployment options,
HTTP load from several clients, and what Ray and Serve report (RUNNING replicas, actor nodes, live nodes).

The scenarios (tests/scale/scenario_*.py) are pytest modules that each start a Ray cluster of their own;
tests/scale/test_scale.py runs each one in a child pytest process (see its docstring for why).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import httpx
import numpy as np

from scripts.make_sample import make_scene
from serve_app.settings import Settings
from tests.serve_app.conftest import LEGACY_FORM
from treecore.detect import detect_trees
from treecore.imageio import decode_image
from treecore.report import result_to_dict
from treecore.types import DetectionParams

T = TypeVar("T")

#: Object store of each Ray node the scenarios start, bytes (the rules of this machine: at most 1e9 per start).
NODE_OBJECT_STORE_BYTES = 200_000_000
#: Ground sampling distance of the scenarios' images, metres per pixel: the default (heatmap) method works harder
#: per pixel at 0.3 m than at the scene's native 0.1 m, so a large image keeps the Detectors busy for seconds.
GSD_M = 0.3

#: Environment of every Ray process of a scenario (set before the first node starts, so every worker inherits it):
#: handles and replicas report their queue lengths to the Serve controller every half second instead of every
#: 10 s, so the autoscaler sees a burst within a second (Serve 2.60 reads these at import).
FAST_AUTOSCALING_ENV = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; that value.

    Args:
        check: the condition (its exceptions propagate).
        timeout: seconds to wait at most (generous: Ray on 2 shared cores is slow to start things).
        what: what was awaited, for the failure message.
        interval: seconds between polls.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last value {value!r}")
        time.sleep(interval)


@dataclass(frozen=True)
class Scene:
    """An upload (JPEG: a noisy PNG of many megapixels is tens of MB) with its form and the one-process answer."""

    data: bytes
    form: dict[str, str]
    trees: list[dict[str, Any]]


def scene(size: int, seed: int) -> Scene:
    """A size x size synthetic scene at GSD_M, and treecore's answer for it in this process (the default method).

    Args:
        size: pixels a side.
        seed: the scene's seed.
    """
    png = make_scene(size, seed=seed)
    ok, jpeg = cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))
    assert ok
    data = jpeg.tobytes()
    side_m = f"{size * GSD_M:g}"
    form = {**LEGACY_FORM, "real_width": side_m, "real_height": side_m}
    params = DetectionParams(
        min_diameter=float(form["min_diameter"]),
        max_diameter=float(form["max_diameter"]),
        cluster_threshold=float(form["cluster_threshold"]),
        real_width=size * GSD_M,
        real_height=size * GSD_M,
    )
    expected = result_to_dict(detect_trees(decode_image(data, max_pixels=10**9), params))
    assert expected["total_trees"] > 10, "the scene must have trees to compare"
    return Scene(data, form, list(expected["trees"]))


def detect(url: str, image: Scene, *, timeout: float = 300, client: httpx.Client | None = None) -> httpx.Response:
    """POST /detect-trees with the scene's image and form."""
    files = {"image": ("scene.jpg", image.data, "image/jpeg")}
    post = client.post if client is not None else httpx.post
    return post(f"{url}/detect-trees", files=files, data=image.form, timeout=timeout)


def check_answer(response: httpx.Response, image: Scene) -> None:
    """The response is a 200 whose trees equal the one-process answer."""
    assert response.status_code == 200, response.text[:500]
    assert response.json()["trees"] == image.trees, "the service's trees differ from treecore's in one process"


def wait_http(url: str, *, timeout: float = 180) -> None:
    """Wait until GET /health answers 200."""

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=timeout, what=f"{url}/health")


def app_options(detector: dict[str, Any], *, pin: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """bind_graph's options: the Detector as given; Ingress, TileSplitter, ModelAssembler and JobRunner at 0 CPUs,
    and with `pin` (a custom resource of one node, e.g. {"head": 0.01}) held on that node."""
    light: dict[str, Any] = {"num_cpus": 0, **({"resources": pin} if pin else {})}
    options: dict[str, dict[str, Any]] = {
        name: {"ray_actor_options": dict(light)} for name in ("Ingress", "TileSplitter", "ModelAssembler", "JobRunner")
    }
    options["Detector"] = detector
    return options


def running_replicas(app: str, deployment: str = "Detector") -> int:
    """RUNNING replicas of a deployment, from serve.status()."""
    from ray import serve

    states = serve.status().applications[app].deployments[deployment].replica_states
    return int(states.get("RUNNING", 0))


def replica_nodes(app: str, deployment: str) -> list[str]:
    """Node ids of a deployment's live replica actors (from the GCS actor table: no dashboard needed)."""
    import ray._private.state

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    actors = ray._private.state.actors(actor_state_name="ALIVE").values()
    return sorted(str(a["Address"]["NodeID"]) for a in actors if str(a["Name"]).startswith(prefix))


def live_nodes(resource: str) -> list[str]:
    """Ids of the live Ray nodes that have a custom resource."""
    import ray

    return sorted(str(n["NodeID"]) for n in ray.nodes() if n["Alive"] and resource in n["Resources"])


@dataclass
class LoadResult:
    """What the clients of a Load got: responses by status, and answers that differed from the expected ones."""

    statuses: dict[int, int] = field(default_factory=dict)
    wrong: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Responses received."""
        return sum(self.statuses.values())


@contextmanager
def load(url: str, image: Scene, *, clients: int, timeout: float = 300) -> Iterator[LoadResult]:
    """`clients` threads posting the scene back to back until the block ends (then each finishes its request).

    Yields:
        The running totals (final once the block has ended).
    """
    result = LoadResult()
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client() as http:
            while not stop.is_set():
                try:
                    response = detect(url, image, timeout=timeout, client=http)
                except httpx.HTTPError as exc:
                    with lock:
                        result.errors.append(repr(exc))
                    continue
                with lock:
                    result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
                    if response.status_code == 200 and response.json()["trees"] != image.trees:
                        result.wrong += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield result
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout + 10)


class ReplicaWatch:
    """Samples a deployment's RUNNING replicas from serve.status() in a thread, keeping the largest count seen."""

    def __init__(self, app: str, deployment: str = "Detector", interval: float = 0.25) -> None:
        self.app, self.deployment, self.interval = app, deployment, interval
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            count = running_replicas(self.app, self.deployment)
            self.samples.append(count)
            self.peak = max(self.peak, count)
            self._stop.wait(self.interval)

    def __enter__(self) -> ReplicaWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@contextmanager
def ray_temp_dir() -> Iterator[str]:
    """A short folder for Ray's session files (socket paths must stay under 108 bytes), removed at the end.

    It lies under RAY_TMPDIR when the parent test (test_scale.py) set one; else it becomes RAY_TMPDIR for the
    block, so Ray's default folder, and the current-cluster file that `Cluster` and `ray start` write there, are
    this scenario's own, never /tmp/ray, which other Ray users of the machine share.
    """
    given = os.environ.get("RAY_TMPDIR")
    path = tempfile.mkdtemp(prefix="r", dir=given or "/tmp")
    os.environ["RAY_TMPDIR"] = given or path
    os.makedirs(os.path.join(os.environ["RAY_TMPDIR"], "ray"), exist_ok=True)
    try:
        yield path
    finally:
        if given is None:
            os.environ.pop("RAY_TMPDIR", None)
        shutil.rmtree(path, ignore_errors=True)


def scenario_settings(models_dir: Path, **overrides: Any) -> Settings:
    """The process settings of a scenario's app: this environment's, with generated models under `models_dir`."""
    return dataclasses.replace(Settings.from_env(), generated_models_dir=models_dir, **overrides)
