"""The Serve pipeline against treecore in one process: latency, ratio, concurrency, side by side with a one-process
FastAPI stand-in of the legacy backend, and the legacy 88,000-tree case.

Starts its own local Ray (2 CPUs by default, 1 GB object store, session files in its own /tmp folder) and Serve
on a free port, and shuts both down; the stand-in is a uvicorn subprocess on another free port.

    .venv/bin/python benchmarks/serve_pipeline.py                 # latency table (1 and 2 replicas) + concurrency
    .venv/bin/python benchmarks/serve_pipeline.py --side-by-side  # only the stand-in comparison (issue #15)
    .venv/bin/python benchmarks/serve_pipeline.py --legacy-case --num-cpus 6 --skip-latency
                                                                  # the 4951 x 4886 m, ~88,000-tree tile

(a) is `decode_image` + `detect_trees` in this process, one tile (the fastest way to run treecore on one core);
(b) is POST /detect-trees over HTTP with the same bytes. Memory is the summed proportional set size (PSS) of
the Ray processes, so shared object-store pages are counted once.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from fastapi import FastAPI, Form, UploadFile
from fastapi.responses import JSONResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.make_sample import make_scene  # noqa: E402
from scripts.processes import memory_mb, ray_processes  # noqa: E402
from scripts.render_serve_config import serve_config_env_vars  # noqa: E402
from treecore.detect import detect_trees  # noqa: E402
from treecore.imageio import decode_image  # noqa: E402
from treecore.report import result_to_dict  # noqa: E402
from treecore.types import DetectionParams  # noqa: E402

FORM = {"min_diameter": "2", "cluster_threshold": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_ray(num_cpus: int = 2) -> str:
    """A local Ray for a benchmark: `num_cpus` logical CPUs, a 1 GB object store, session files in a folder of its
    own (returned: remove it after ray.shutdown), and serve_config.yaml's runtime_env variables for every Ray
    process (replicas and the HTTP proxy), as the image and `make run` give them."""
    import ray

    os.environ.update(serve_config_env_vars())
    temp = tempfile.mkdtemp(prefix="ray-bench-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    ray.init(
        num_cpus=num_cpus,
        object_store_memory=1_000_000_000,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp,
        runtime_env={"env_vars": serve_config_env_vars()},
    )
    return temp


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


#: One HTTP client per thread, kept alive as a browser or front end keeps its connections: creating an httpx
#: client (its TLS context) costs about 30-60 ms of CPU on this machine, which `httpx.post` pays on every call.
_CLIENTS = threading.local()


def _client() -> httpx.Client:
    client: httpx.Client | None = getattr(_CLIENTS, "client", None)
    if client is None:
        client = _CLIENTS.client = httpx.Client()
    return client


def post_detect(
    url: str, png: bytes, size_m: float, timeout: float | None = 600, form: dict[str, str] | None = None
) -> dict[str, Any]:
    """One POST /detect-trees on this thread's kept-alive client; raises on a non-200."""
    files = {"image": ("tile.png", png, "image/png")}
    data = {**FORM, "real_width": str(size_m), "real_height": str(size_m), **(form or {})}
    response = _client().post(f"{url}/detect-trees", files=files, data=data, timeout=timeout)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _config_deployment(name: str) -> dict[str, Any]:
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "serve_config.yaml").read_text())
    deployments = config["applications"][0]["deployments"]
    found: dict[str, Any] = next(d for d in deployments if d["name"] == name)
    return found


def deploy(replicas: int | None) -> None:
    """(Re)deploy the app with serve_config.yaml's args and `replicas` Detector replicas (1 CPU each), or with
    serve_config.yaml's Detector autoscaling (replicas None)."""
    import yaml
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "serve_config.yaml").read_text())
    args = AppArgs(**config["applications"][0]["args"])
    no_cpu = {"ray_actor_options": {"num_cpus": 0}}
    detector = _config_deployment("Detector")
    sizing = {"num_replicas": replicas} if replicas else {"autoscaling_config": detector["autoscaling_config"]}
    options = {
        "Ingress": no_cpu,
        "TileSplitter": no_cpu,
        "ModelAssembler": no_cpu,
        "Detector": {
            **sizing,
            "max_ongoing_requests": detector["max_ongoing_requests"],
            "max_queued_requests": detector["max_queued_requests"],
            "ray_actor_options": {"num_cpus": 1},
        },
    }
    serve.run(bind_graph(args, options=options), name="tree-detection", route_prefix="/")


def running_detectors() -> int:
    """Running Detector replicas now (serve.status)."""
    from ray import serve

    states = serve.status().applications["tree-detection"].deployments["Detector"].replica_states
    return int(dict(states).get("RUNNING", 0))


class PeakReplicas:
    """Samples running_detectors() every 0.5 s in a thread; `peak` is the largest seen."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, running_detectors())
            self._stop.wait(0.5)

    def __enter__(self) -> PeakReplicas:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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


def load(
    url: str, png: bytes, size_m: float, clients: int, seconds: float, method: str | None = None
) -> tuple[float, float, int]:
    """`clients` threads posting the same image back to back for `seconds` (after one warm-up request each).

    Returns:
        (p50 latency s, requests/s, errors).
    """
    form = {"method": method} if method else {}
    latencies: list[float] = []
    errors = 0

    def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            post_detect(url, png, size_m, form=form)
            latencies.append(time.perf_counter() - started)
        except httpx.HTTPError:
            errors += 1

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: one(), range(clients)))  # warm-up
        latencies.clear()
        deadline = time.monotonic() + seconds

        def client() -> None:
            while time.monotonic() < deadline:
                one()

        started = time.monotonic()
        list(pool.map(lambda _: client(), range(clients)))
        elapsed = time.monotonic() - started
    return (statistics.median(latencies) if latencies else float("nan")), len(latencies) / elapsed, errors


def standin_app() -> Any:
    """The legacy backend's shape: one FastAPI process that decodes and detects in the request (the event loop
    blocks while it works, as the legacy service's did), answering the same JSON."""
    app = FastAPI()

    @app.post("/detect-trees")
    async def detect(
        image: UploadFile,
        real_width: float = Form(100),  # noqa: B008
        real_height: float = Form(100),  # noqa: B008
        min_diameter: float = Form(3),  # noqa: B008
        cluster_threshold: float = Form(10),  # noqa: B008
        method: str = Form(DetectionParams().method),  # noqa: B008
    ) -> JSONResponse:
        params = DetectionParams(
            min_diameter=min_diameter,
            cluster_threshold=cluster_threshold,
            real_width=real_width,
            real_height=real_height,
            method=method,
        )
        result = detect_trees(decode_image(await image.read(), max_pixels=10**9), params)
        return JSONResponse(result_to_dict(result))

    return app


class StandIn:
    """The stand-in in a uvicorn subprocess (this script with --standin-port), on a free port; stopped on exit."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StandIn:
        self.process = subprocess.Popen([sys.executable, __file__, "--standin-port", str(self.port)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/docs", timeout=2)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the stand-in did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


def side_by_side(url: str, sizes_mp: list[float], clients_list: list[int], seconds: float) -> list[str]:
    """Rows: method, image, clients, in-process p50, stand-in p50 and req/s, Serve p50 and req/s, ratios.

    The images are synthetic scenes at 0.3 m per pixel (the issue's 200 m tile is 667 x 667 = 0.44 MP).
    """
    rows = []
    with StandIn() as standin:
        for method in ("legacy", DetectionParams().method):
            for mp in sizes_mp:
                side = round((mp * 1e6) ** 0.5)
                png, size_m = make_scene(side), side * 0.3
                params = DetectionParams(
                    min_diameter=2, cluster_threshold=0, real_width=size_m, real_height=size_m, method=method
                )
                local = statistics.median(timed(lambda: detect_trees(decode_image(png, max_pixels=10**9), params), 7))  # noqa: B023
                for clients in clients_list:
                    a_p50, a_rps, a_err = load(standin.url, png, size_m, clients, seconds, method)
                    b_p50, b_rps, b_err = load(url, png, size_m, clients, seconds, method)
                    rows.append(
                        f"| {method} | {side} x {side} ({side * side / 1e6:.2f} MP) | {clients} | {local * 1e3:.0f} "
                        f"| {a_p50 * 1e3:.0f} / {a_rps:.1f} | {b_p50 * 1e3:.0f} / {b_rps:.1f} "
                        f"| {(b_p50 - local) * 1e3:+.0f} | {b_rps / max(a_rps, 1e-9):.2f} | {a_err + b_err} |"
                    )
                    print(rows[-1], flush=True)
    return rows


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
    """The 88,000-tree tile through POST /jobs (detect-and-generate), the Detectors autoscaling as serve_config.yaml
    says: stage times, tiles, starting and largest replica count, peak memory, model size."""
    deploy(None)
    time.sleep(2)
    starting = running_detectors()
    png = legacy_scene()
    print(f"legacy scene: {len(png) / 1e6:.1f} MB PNG", flush=True)
    files = {"image": ("legacy.png", png, "image/png")}
    data = {"real_width": "4951", "real_height": "4886", "kind": "detect-and-generate"}
    with PeakMemory() as memory, PeakReplicas() as replicas:
        started = time.perf_counter()
        created = httpx.post(f"{url}/jobs", files=files, data=data, timeout=None)
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
        f"| Detector replicas: at the start, largest seen | {starting}, {replicas.peak} |",
        f"| decode + split (TileSplitter) | {timings['decode_s']:.1f} s |",
        f"| detect (Detectors) | {timings['detect_s']:.1f} s |",
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
    parser.add_argument("--num-cpus", type=int, default=2, help="Ray's logical CPUs")
    parser.add_argument("--skip-latency", action="store_true", help="no latency and concurrency tables")
    parser.add_argument("--side-by-side", action="store_true", help="only the stand-in comparison")
    parser.add_argument("--side-sizes", type=float, nargs="+", default=[0.25, 0.5, 1, 4], help="megapixels")
    parser.add_argument("--side-clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--legacy-case", action="store_true", help="also the 88,000-tree checklist tile")
    parser.add_argument("--standin-port", type=int, help=argparse.SUPPRESS)  # the stand-in's own process
    args = parser.parse_args()
    if args.standin_port:
        import uvicorn

        uvicorn.run(standin_app(), host="127.0.0.1", port=args.standin_port, log_level="warning", access_log=False)
        return 0

    import ray
    from ray import serve

    # Stored models (the legacy case's is 253 MB) go to a folder of this run, removed at the end.
    models = tempfile.mkdtemp(prefix="tree-detection-bench-models-")
    os.environ.setdefault("GENERATED_MODELS_DIR", models)
    # The legacy checklist tile has ~88,000 trees, above the default MAX_TREES_LIMIT (60,000).
    os.environ.setdefault("MAX_TREES_LIMIT", "100000")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    temp = start_ray(args.num_cpus)
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        if not args.skip_latency and not args.side_by_side:
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
        if args.side_by_side or not args.skip_latency:
            deploy(2)
            time.sleep(2)
            print(
                "\n| method | image (0.3 m/px) | clients | in-process p50 ms | stand-in p50 ms / req/s "
                "| Serve p50 ms / req/s | Serve p50 - in-process, ms | Serve / stand-in req/s | errors |"
            )
            print("|---|---|---|---|---|---|---|---|---|")
            side_by_side(url, args.side_sizes, args.side_clients, args.seconds)
        if args.legacy_case:
            print("\n| legacy checklist tile (4951 x 4886 m, 0.5 m per pixel) | result |")
            print("|---|---|")
            legacy_case(url)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(models, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
