"""The Serve pipeline against treecore in one process: latency, ratio, concurrency, and the legacy 88,000-tree case.

Starts its own local Ray (2 CPUs, 2 GB object store) and Serve on a free port, and shuts both down.

    .venv/bin/python benchmarks/serve_pipeline.py                 # latency table (1 and 2 replicas) + concurrency
    .venv/bin/python benchmarks/serve_pipeline.py --legacy-case   # also the 4951 x 4886 m, ~88,000-tree tile

(a) is `decode_image` + `detect_trees` in this process, one tile (the fastest way to run treecore on one core);
(b) is POST /detect-trees over HTTP with the same bytes. Memory is the summed proportional set size (PSS) of
the Ray processes, so shared object-store pages are counted once.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.make_sample import make_scene  # noqa: E402
from scripts.processes import memory_mb, ray_processes  # noqa: E402
from scripts.render_serve_config import serve_config_env_vars  # noqa: E402
from treecore.detect import detect_trees  # noqa: E402
from treecore.imageio import decode_image  # noqa: E402
from treecore.types import DetectionParams  # noqa: E402

FORM = {"min_diameter": "2", "cluster_threshold": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_ray() -> None:
    """A local Ray for a benchmark: 2 CPUs, a 2 GB object store, and serve_config.yaml's runtime_env variables
    for every Ray process (replicas and the HTTP proxy), as the image and `make run` give them."""
    import ray

    os.environ.update(serve_config_env_vars())
    ray.init(
        num_cpus=2,
        object_store_memory=2_000_000_000,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": serve_config_env_vars()},
    )


def _ray_memory_mb(source: str, field: str) -> float:
    # Sum one "<field>: N kB" line of /proc/<pid>/<source> over this benchmark's Ray processes.
    return sum(memory_mb(pid, field, source) for pid in ray_processes())


def ray_pss_mb() -> float:
    """Summed PSS of this user's Ray processes (replicas, proxy, controller, raylet, GCS), MB."""
    return _ray_memory_mb("smaps_rollup", "Pss")


def ray_private_mb() -> float:
    """Summed private anonymous memory (RssAnon: heaps, not the shared object store) of the Ray processes, MB."""
    return _ray_memory_mb("status", "RssAnon")


class PeakMemory:
    """Samples ray_pss_mb() every 0.2 s in a thread; `peak` is the largest seen."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, ray_pss_mb())
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    """Wall seconds of `runs` calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def p95(values: list[float]) -> float:
    """95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def post_detect(url: str, png: bytes, size_m: float, timeout: float = 600) -> dict[str, Any]:
    """One POST /detect-trees; raises on a non-200."""
    files = {"image": ("tile.png", png, "image/png")}
    data = {**FORM, "real_width": str(size_m), "real_height": str(size_m)}
    response = httpx.post(f"{url}/detect-trees", files=files, data=data, timeout=timeout)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def deploy(replicas: int) -> None:
    """(Re)deploy the app with `replicas` Detector replicas (1 CPU each)."""
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    no_cpu = {"ray_actor_options": {"num_cpus": 0}}
    options = {
        "Ingress": no_cpu,
        "TileSplitter": no_cpu,
        "ModelAssembler": no_cpu,
        "Detector": {"num_replicas": replicas, "max_ongoing_requests": 2, "ray_actor_options": {"num_cpus": 1}},
    }
    serve.run(bind_graph(AppArgs(), options=options), name="tree-detection", route_prefix="/")


def latency_table(url: str, sizes: list[int], runs: int) -> list[str]:
    """Rows: image, replicas, (a) median/p95, (b) median/p95, ratio of medians, tiles."""
    rows = []
    for replicas in (1, 2):
        deploy(replicas)
        time.sleep(2)
        for size in sizes:
            png = make_scene(size)
            size_m = size / 10
            params = DetectionParams(min_diameter=2, cluster_threshold=0, real_width=size_m, real_height=size_m)
            local = timed(lambda: detect_trees(decode_image(png, max_pixels=10**9), params), runs)  # noqa: B023
            tiles: list[int] = []
            served = timed(lambda: tiles.append(post_detect(url, png, size_m)["tile_count"]), runs)  # noqa: B023
            ratio = statistics.median(served) / statistics.median(local)
            rows.append(
                f"| {size} x {size} | {replicas} | {statistics.median(local):.3f} / {p95(local):.3f} "
                f"| {statistics.median(served):.3f} / {p95(served):.3f} | {ratio:.2f} | {tiles[-1]} |"
            )
            print(rows[-1], flush=True)
    return rows


def concurrency_row(url: str, clients: int, seconds: float) -> str:
    """N clients posting 1024 x 1024 scenes back to back for `seconds`: requests/s, p50/p95, errors."""
    png = make_scene(1024)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                post_detect(url, png, 102.4)
                latencies.append(time.perf_counter() - started)
            except httpx.HTTPError:
                errors += 1

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client(), range(clients)))
    elapsed = time.monotonic() - started
    row = (
        f"| {clients} | {len(latencies) / elapsed:.1f} | {statistics.median(latencies):.3f} | {p95(latencies):.3f} "
        f"| {errors} |"
    )
    print(row, flush=True)
    return row


def legacy_scene(width_m: float = 4951, height_m: float = 4886, gsd_m: float = 0.5, seed: int = 3) -> bytes:
    """A PNG of the legacy checklist tile: 4951 x 4886 m at 0.5 m per pixel, about 88,000 crowns 4-12 m wide.

    Crowns sit on a jittered 16.6 m grid (never closer than 10 m, so the default cluster_threshold keeps them).
    """
    width, height = round(width_m / gsd_m), round(height_m / gsd_m)
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (150, 120, 90)
    step = 16.6 / gsd_m
    ys, xs = np.mgrid[step / 2 : height - step / 2 : step, step / 2 : width - step / 2 : step]
    xs = xs.ravel() + rng.uniform(-2.5, 2.5, xs.size) / gsd_m
    ys = ys.ravel() + rng.uniform(-2.5, 2.5, ys.size) / gsd_m
    radii = rng.uniform(2.0, 6.0, xs.size) / gsd_m
    for x, y, r in zip(xs.tolist(), ys.tolist(), radii.tolist(), strict=True):
        cv2.circle(image, (int(x), int(y)), int(r), (30, 110, 30), -1)
        cv2.circle(image, (int(x), int(y)), max(1, int(r) // 2), (45, 160, 45), -1)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return png.tobytes()


def legacy_case(url: str) -> list[str]:
    """The 88,000-tree tile through POST /jobs (detect-and-generate): stage times, peak memory, model size."""
    deploy(2)
    png = legacy_scene()
    print(f"legacy scene: {len(png) / 1e6:.1f} MB PNG", flush=True)
    files = {"image": ("legacy.png", png, "image/png")}
    data = {"real_width": "4951", "real_height": "4886", "kind": "detect-and-generate"}
    with PeakMemory() as memory:
        started = time.perf_counter()
        created = httpx.post(f"{url}/jobs", files=files, data=data, timeout=600)
        created.raise_for_status()
        status_url = created.json()["status_url"]
        stage_seen: dict[str, float] = {}
        while True:
            job = httpx.get(status_url, timeout=30).json()
            stage_seen.setdefault(job["stage"], time.perf_counter() - started)
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        total = time.perf_counter() - started
    if job["state"] != "succeeded":
        raise SystemExit(f"legacy case failed: {job.get('error')}")
    detection, model = job["result"]["detection"], job["result"]["model"]
    timings = detection["timings"]
    rows = [
        f"| trees detected | {detection['total_trees']:,} "
        f"({detection['image_width']} x {detection['image_height']} px, {detection['tile_count']} tiles) |",
        f"| decode + split (TileSplitter) | {timings['decode_s']:.1f} s |",
        f"| detect (Detector x 2) | {timings['detect_s']:.1f} s |",
        f"| merge | {timings['merge_s']:.2f} s |",
        f"| 3D model, stored (ModelAssembler) | {total - stage_seen.get('storing', total):.1f} s, "
        f"{model['filesize_mb']:.0f} MB |",
        f"| total through HTTP (upload to stored model) | {total:.1f} s |",
        f"| peak memory of the Ray processes (PSS) | {memory.peak:,.0f} MB |",
    ]
    for row in rows:
        print(row, flush=True)
    return rows


def main() -> int:
    """Run the benchmark and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--legacy-case", action="store_true", help="also the 88,000-tree checklist tile")
    args = parser.parse_args()

    import ray
    from ray import serve

    os.environ.setdefault("GENERATED_MODELS_DIR", "/tmp/tree-detection-bench-models")
    # The legacy checklist tile has ~88,000 trees, above the default MAX_TREES_LIMIT (60,000).
    os.environ.setdefault("MAX_TREES_LIMIT", "100000")
    start_ray()
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        print(
            "| image | detector replicas | (a) treecore, median / p95 s | (b) Serve over HTTP, median / p95 s "
            "| b/a | tiles |"
        )
        print("|---|---|---|---|---|---|")
        latency_table(url, args.sizes, args.runs)
        print("\n| concurrent clients (1024 x 1024) | requests/s | p50 s | p95 s | errors |")
        print("|---|---|---|---|---|")
        for clients in args.clients:
            concurrency_row(url, clients, args.seconds)
        if args.legacy_case:
            print("\n| legacy checklist tile (4951 x 4886 m, 0.5 m per pixel) | result |")
            print("|---|---|")
            legacy_case(url)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
