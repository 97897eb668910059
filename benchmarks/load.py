"""A bounded load test on loopback: many concurrent small detections, then a few large ones.

Starts its own Ray (2 CPUs, 2 GB object store) and Serve with serve_config.yaml's limits (Ingress
max_ongoing_requests + max_queued_requests, Detector queue), warms every replica up, then runs load rounds
(a counted, time-limited burst of small images from an async client, then a few large ones) and prints
requests/s, latency percentiles, status counts, and the Ray processes' private heap after warm-up and after
each round: memory that returns to the warm baseline round after round is not leaking.

    .venv/bin/python benchmarks/load.py [--clients 200] [--seconds 15] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_pipeline import (  # noqa: E402
    PeakMemory,
    _free_port,
    p95,
    ray_private_mb,
    ray_pss_mb,
    start_ray,
)
from scripts.make_sample import make_scene  # noqa: E402
from scripts.processes import memory_mb, ray_processes  # noqa: E402


def private_by_process() -> dict[str, float]:
    """RssAnon per Ray process of this benchmark, MB, by its process title."""
    return {f"{title[:60]} ({pid})": memory_mb(pid) for pid, title in ray_processes().items()}


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (nearest rank), q in [0, 1]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def burst(url: str, png: bytes, size_m: float, clients: int, seconds: float, limit: int) -> dict[str, object]:
    """`clients` concurrent clients posting back to back until `seconds` pass or `limit` requests were sent."""
    statuses: collections.Counter[int | str] = collections.Counter()
    latencies: list[float] = []
    sent = 0
    deadline = time.monotonic() + seconds
    data = {"real_width": str(size_m), "real_height": str(size_m), "min_diameter": "2", "cluster_threshold": "0"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one_client() -> None:
            nonlocal sent
            while time.monotonic() < deadline and sent < limit:
                sent += 1
                started = time.perf_counter()
                try:
                    response = await client.post(
                        f"{url}/detect-trees", files={"image": ("t.png", png, "image/png")}, data=data
                    )
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

        started = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.monotonic() - started
    return {"sent": sent, "elapsed": elapsed, "statuses": dict(statuses), "latencies": latencies}


def row(name: str, result: dict[str, object]) -> str:
    """One markdown table row."""
    lat = result["latencies"]
    assert isinstance(lat, list)
    ok = len(lat)
    elapsed = float(result["elapsed"])  # type: ignore[arg-type]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items(), key=str))  # type: ignore[union-attr]
    return (
        f"| {name} | {result['sent']} | {ok / elapsed:.1f} | {percentile(lat, 0.5):.2f} | {p95(lat) if lat else 0:.2f} "
        f"| {percentile(lat, 0.99):.2f} | {statuses} |"
    )


def main() -> int:
    """Run the load test and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--limit", type=int, default=3000, help="most requests in the small burst")
    parser.add_argument("--rounds", type=int, default=2, help="load rounds (memory is read after each)")
    parser.add_argument("--settle", type=float, default=10, help="seconds to wait before reading memory")
    args = parser.parse_args()

    import ray
    import yaml
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "serve_config.yaml").read_text())
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    options = {}
    for name, spec in deployments.items():
        opts = {k: spec[k] for k in ("max_ongoing_requests", "max_queued_requests", "ray_actor_options") if k in spec}
        opts["num_replicas"] = 2 if name == "Detector" else spec.get("num_replicas", 1)
        options[name] = opts

    start_ray()
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(bind_graph(AppArgs(), options=options), name="tree-detection", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        small, large = make_scene(512), make_scene(4096)
        time.sleep(3)
        memory_rows = [("cold: started, no request yet", ray_private_mb())]
        # Warm-up: every replica has decoded, detected and answered once at each size (imports, caches,
        # thread pools and glibc arenas reach their working size); this is the baseline the load returns to.
        asyncio.run(burst(url, small, 51.2, 8, 60, 16))
        asyncio.run(burst(url, large, 409.6, 2, 120, 4))
        time.sleep(args.settle)
        baseline, private_baseline = ray_pss_mb(), ray_private_mb()
        memory_rows.append(("warm baseline: after 16 small and 4 large requests", private_baseline))
        print("| burst | requests sent | ok requests/s | p50 s | p95 s | p99 s | statuses |")
        print("|---|---|---|---|---|---|---|")
        results = []
        with PeakMemory() as memory:
            for round_no in range(1, args.rounds + 1):
                small_result = asyncio.run(burst(url, small, 51.2, args.clients, args.seconds, args.limit))
                print(row(f"round {round_no}: {args.clients} clients, 512 x 512", small_result), flush=True)
                large_result = asyncio.run(burst(url, large, 409.6, 4, args.seconds, 12))
                print(row(f"round {round_no}: 4 clients, 4096 x 4096", large_result), flush=True)
                results += [small_result, large_result]
                time.sleep(args.settle)
                memory_rows.append((f"{args.settle:.0f} s after load round {round_no}", ray_private_mb()))
        after = ray_pss_mb()
        print(f"\nRay processes' PSS: {baseline:,.0f} MB warm, peak {memory.peak:,.0f} MB, {after:,.0f} MB after")
        print("\n| private heap (RssAnon) of the Ray processes | MB | vs warm baseline |")
        print("|---|---|---|")
        for label, mb in memory_rows:
            print(f"| {label} | {mb:,.0f} | {mb - private_baseline:+,.0f} MB ({mb / private_baseline:.2f}x) |")
        for name, mb in sorted(private_by_process().items(), key=lambda item: -item[1])[:8]:
            print(f"  private heap after: {name} {mb:,.0f} MB")
        health = httpx.get(f"{url}/health", timeout=10).status_code
        print(f"/health after the load: {health}")
        for result in results:
            if any(str(code).startswith("5") and code != 503 for code in result["statuses"]):  # type: ignore[union-attr]
                print("FAILED: a 5xx other than 503 under load")
                return 1
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
