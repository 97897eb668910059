"""Jobs that outlive the ingress, on a real Ray Serve over HTTP: an app of its own ("jobs-ha", two Ingress
replicas, one Detector replica taking one tile at a time) on the session's Serve, removed at the end.

The jobs run in the JobRunner deployment: killing every Ingress replica mid-job loses nothing, every GET of a
job succeeds whichever of two replicas answers it (and while one of them is killed), the job limits hold across
them, and a cancel over HTTP still stops the job's outstanding tiles.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scripts.make_sample import make_scene
from tests.serve_app.conftest import LEGACY_FORM, wait_job
from treecore.detect import detect_trees
from treecore.imageio import decode_image
from treecore.report import result_to_dict
from treecore.types import DetectionParams

APP = "jobs-ha"
#: The tree-crown method that takes the longest on these scenes (seconds per image, not milliseconds), so that
#: a job is still running when a replica is killed; the detection is the same whatever the tiles.
SLOW = {**LEGACY_FORM, "method": "watershed", "real_width": "200", "real_height": "200"}


#: Tiles of a 2000 x 2000 image at tile_megapixels 0.5: 8 wanted, on a grid of 3 x 3.
TILES = 9


@pytest.fixture(scope="module")
def ha_url(serve_url: str) -> Iterator[str]:
    """The app at /jobs-ha: two Ingress replicas; one Detector replica, one tile at a time, so the TILES tiles of
    a 2000 x 2000 image queue (no CPU asked: the session's CPUs are the other apps'); removed at the end."""
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    no_cpu = {"ray_actor_options": {"num_cpus": 0}}
    options = {
        "Ingress": {"num_replicas": 2, **no_cpu},
        "TileSplitter": no_cpu,
        "ModelAssembler": no_cpu,
        "Detector": {"num_replicas": 1, "max_ongoing_requests": 1, **no_cpu},
    }
    args = AppArgs(tile_megapixels=0.5, detector_attempts=3)
    serve.run(bind_graph(args, options=options), name=APP, route_prefix=f"/{APP}")
    try:
        yield f"{serve_url}/{APP}"
    finally:
        serve.delete(APP)


def _replicas(deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def _kill(name: str) -> None:
    import ray

    ray.kill(ray.get_actor(name, namespace="serve"))  # Serve replaces it


def _ongoing(name: str) -> int:
    """Requests the replica is working on or holds now (Serve's own count, asked of the replica actor)."""
    import ray

    return int(ray.get(ray.get_actor(name, namespace="serve").get_num_ongoing_requests.remote(), timeout=30))


def _submit(url: str, png: bytes, form: dict[str, str]) -> dict[str, Any]:
    created = httpx.post(f"{url}/jobs", files={"image": ("t.png", png, "image/png")}, data=form, timeout=120)
    assert created.status_code == 202, created.text
    return dict(created.json())


def _until_detecting(status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (job := httpx.get(status_url, timeout=30).json())["stage"] != "detecting":
        assert time.monotonic() < deadline and job["state"] in ("queued", "running"), job
        time.sleep(0.02)
    return dict(job)


def _expected_trees(png: bytes, form: dict[str, str]) -> list[dict[str, Any]]:
    params = DetectionParams(
        min_diameter=2, cluster_threshold=0, real_width=200, real_height=200, method=form["method"]
    )
    return list(result_to_dict(detect_trees(decode_image(png, max_pixels=10**8), params))["trees"])


def test_a_job_outlives_every_ingress_replica(ha_url: str) -> None:
    ingress = _replicas("Ingress")
    assert len(ingress) == 2
    png = make_scene(2000, seed=11)
    created = _submit(ha_url, png, {**SLOW, "kind": "detect-and-generate"})
    job = _until_detecting(created["status_url"])
    for name in ingress:
        _kill(name)
    assert job["state"] == "running" and job["progress"]["tiles_done"] < job["progress"]["tiles_total"] == TILES, job
    deadline = time.monotonic() + 180  # until Serve has replaced them: the proxy answers 5xx or hangs up meanwhile
    while set(_replicas("Ingress")) & set(ingress) or len(_replicas("Ingress")) < 2:
        assert time.monotonic() < deadline, _replicas("Ingress")
        time.sleep(0.5)
    job = wait_job(created["status_url"], timeout=300)
    assert job["state"] == "succeeded", job
    detection = job["result"]["detection"]
    assert detection["trees"] == _expected_trees(png, SLOW) and detection["tile_count"] == TILES
    model = job["result"]["model"]
    assert model["download_url"].startswith(f"{ha_url}/download/")  # made at read time, from this request's URL
    assert model["total_trees"] == detection["total_trees"] > 0
    assert httpx.get(model["download_url"], timeout=60).status_code == 200
    assert httpx.get(model["mtl_url"], timeout=60).status_code == 200


def test_every_get_succeeds_with_two_ingress_replicas(ha_url: str) -> None:
    png = make_scene(2000, seed=12)
    created = _submit(ha_url, png, SLOW)
    _until_detecting(created["status_url"])
    killed = _replicas("Ingress")[0]
    states, done = [], []
    for poll in range(400):
        if poll == 5:
            _kill(killed)  # the other replica answers meanwhile
        response = httpx.get(created["status_url"], timeout=30)
        assert response.status_code == 200, (poll, response.text)
        job = response.json()
        states.append(job["state"])
        done.append(job["progress"]["tiles_done"])
        if job["state"] != "running":
            break
        time.sleep(0.02)
    assert states[-1] == "succeeded" and "running" in states, states
    assert done == sorted(done) and done[-1] == TILES  # the same job, read by either replica: its progress only grows
    assert job["result"]["trees"] == _expected_trees(png, SLOW)


def test_limits_hold_across_replicas_and_cancel_stops_the_tiles(ha_url: str) -> None:
    png = make_scene(3000, seed=13)
    form = {**SLOW, "real_width": "300", "real_height": "300"}
    first, second = _submit(ha_url, png, form), _submit(ha_url, png, form)  # MAX_RUNNING_JOBS is 2
    for _ in range(2):  # whichever Ingress replica answers, the one table says no
        refused = httpx.post(f"{ha_url}/jobs", files={"image": ("t.png", png, "image/png")}, data=form, timeout=120)
        assert refused.status_code == 429 and "running already" in refused.json()["detail"], refused.text
    for created in (second, first):  # the second's tiles wait behind the first's on the one Detector replica
        _until_detecting(created["status_url"])
        cancelled = httpx.delete(f"{ha_url}/jobs/{created['id']}", timeout=60).json()
        assert cancelled["state"] == "cancelled" and cancelled["progress"]["tiles_done"] < 8, cancelled
    [detector] = _replicas("Detector")
    deadline = time.monotonic() + 60  # the tile it is on ends; none of the others queued behind it starts
    while _ongoing(detector):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    samples = []
    for _ in range(40):
        samples.append(_ongoing(detector))
        time.sleep(0.05)
    assert samples == [0] * 40, samples
    for created in (first, second):
        job = httpx.get(created["status_url"], timeout=30).json()
        assert job["state"] == "cancelled" and job["progress"]["tiles_done"] < 8, job
    from ray import serve

    splitter = serve.get_deployment_handle("TileSplitter", app_name=APP)
    assert splitter.held.remote().result(timeout_s=30) == 0  # each image released


def test_a_restarted_job_runner_reads_back_its_jobs(ha_url: str) -> None:
    """Finished jobs keep their results across a restart of the JobRunner replica (its journal is in Ray's GCS);
    a job running when it died reads as failed, "interrupted ... resubmit", never 404."""
    finished = _submit(ha_url, make_scene(600, seed=14), LEGACY_FORM)
    before = wait_job(finished["status_url"])
    assert before["state"] == "succeeded", before
    running = _submit(ha_url, make_scene(2000, seed=15), SLOW)
    _until_detecting(running["status_url"])
    [runner] = _replicas("JobRunner")
    _kill(runner)
    deadline = time.monotonic() + 180
    while (response := httpx.get(running["status_url"], timeout=60)).status_code != 200:
        assert response.status_code == 503 and time.monotonic() < deadline, response.text  # being replaced
        time.sleep(0.5)
    assert _replicas("JobRunner") != [runner]
    job = response.json()
    assert job["state"] == "failed" and job["error"]["status"] == 503, job
    assert "interrupted" in job["error"]["detail"] and "resubmit" in job["error"]["detail"]
    after = httpx.get(finished["status_url"], timeout=60).json()
    assert after["state"] == "succeeded" and after["result"] == before["result"]
    again = wait_job(_submit(ha_url, make_scene(600, seed=14), LEGACY_FORM)["status_url"])  # a resubmitted job runs
    assert again["state"] == "succeeded" and again["result"]["trees"] == before["result"]["trees"]


def test_the_journal_keeps_a_large_result_as_a_failure_that_says_so(ha_url: str) -> None:
    from serve_app.job_runner import GcsJournal
    from serve_app.jobs import JobRecord, JobResult

    journal = GcsJournal("journal-test", max_record_bytes=200)
    small = JobRecord("a", "detect", "running", {"stage": "detecting"}, 1.0, None)
    large = JobRecord("b", "detect", "succeeded", {"stage": "done"}, 1.0, 2.0, JobResult({"trees": list(range(999))}))
    try:
        journal.save(small)
        journal.save(large)
        records = {record.id: record for record in journal.load()}
        assert records["a"] == small
        assert records["b"].state == "failed" and records["b"].result is None
        assert "larger than the job service keeps" in str(records["b"].error) and "resubmit" in str(records["b"].error)
    finally:
        journal.remove("a")
        journal.remove("b")
    assert journal.load() == []
