"""What a request really costs in memory, stage by stage: the figures behind serve_app/admission.py's estimate.

    .venv/bin/python benchmarks/admission_memory.py [--sizes 2048 4096 6000] [--gsd 0.1 0.5]

Each probe runs in a fresh process (so one probe's freed heap cannot hide the next one's): it warms up on a small
input, resets the kernel's peak-RSS mark (`/proc/self/clear_refs` 5), runs the stage once on inputs made before
the reset, and reports VmHWM - VmRSS-before (bytes the stage added at its peak). Stages:

- decode: `split_image` (the TileSplitter's decode of a PNG into the (H, W, 3) uint8 image), per image pixel;
- detect <method>: `detect_tile` of one tile holding the whole image (the Detector's temporaries), per tile pixel;
- obj / glb: `ModelBuilder.build` of an inline scene, per tree.

The replicas run with serve_config.yaml's malloc settings (MALLOC_MMAP_THRESHOLD_ etc.); the probes set the same.
`--serve` instead posts one image, then two at once, through a real Serve (2 Detector replicas) and prints the
peak of the Ray processes' summed PSS over their warm idle (sampled every 0.2 s: brief peaks are missed).

Measured 2026-12-02 on the 2-core, 24 GiB machine (shared), `--sizes 1024 3000 6000 --gsd 0.1 0.5` (bytes per
unit of the warm call: what a replica that has run such a call adds; the first call adds the heatmap
network's workspace, about 70 MB, once):

| stage | 1 MP | 9 MP | 36 MP | warm bytes per unit |
|---|---|---|---|---|
| decode (PNG, per image pixel) | 6.2 MB | 54 MB | 216 MB | 6.0 |
| detect heatmap 0.1 m (per tile pixel) | 2.3 MB | 15 MB | 54 MB | 1.5-2.2 |
| detect heatmap 0.5 m | 24.7 MB | 118 MB | 470 MB | 13.1 (23.5 at 1 MP) |
| detect heatmap 1.0 m (enlarged 2x) | 69 MB | 578 MB | 2305 MB | 64.0 |
| detect watershed 0.1 / 0.5 m | 33 MB | 284-286 MB | 1138-1147 MB | 31.5-31.9 |
| detect legacy 0.1 / 0.5 m | 9.7-9.8 MB | 82 MB | 327 MB | 9.1-9.4 |
| OBJ inline (per tree; 5,000 / 20,000 trees) | | | | 9,270 / 5,794 |
| zip inline (20,000 trees, cold) | | | | 4,265 |
| GLB inline (5,000 / 20,000 trees) | | | | 293 / 194 |

Through Serve (`--serve --sizes 4096 6000 --gsd 0.5`), one request / two at once over a warm idle of 1.3-1.6 GB:
heatmap 16.8 MP 193 / 384 MB, 36 MP 326 / 694 MB; legacy 16.8 MP 200 / 234 MB, 36 MP 389 / 588 MB.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _probe(stage: str, size: int, gsd: float, method: str) -> dict[str, Any]:
    """In this (fresh) process: the stage's peak bytes over the RSS before it."""
    from scripts.make_sample import make_scene
    from serve_app.stages import split_image
    from treecore.detect import detect_tile
    from treecore.imageio import decode_image
    from treecore.types import DetectionParams, Tile, Window

    if stage == "decode":
        params = DetectionParams(real_width=size * gsd, real_height=size * gsd)
        data = make_scene(size)
        split_image(make_scene(256), params, 1, max_pixels=2**40)  # warm-up

        def run() -> None:
            split_image(data, params, 1, max_pixels=2**40)

        pixels = size * size
    elif stage == "detect":
        params = DetectionParams(real_width=size * gsd, real_height=size * gsd, method=method)
        image = decode_image(make_scene(size), max_pixels=2**40)
        whole = Window(0, 0, size, size)
        small = decode_image(make_scene(256), max_pixels=2**40)
        small_params = DetectionParams(real_width=256 * gsd, real_height=256 * gsd, method=method)
        detect_tile(small, Tile(0, Window(0, 0, 256, 256), Window(0, 0, 256, 256)), small_params)

        def run() -> None:
            detect_tile(image, Tile(0, whole, whole), params)

        pixels = size * size
    else:
        from serve_app.assembly import ModelBuilder
        from serve_app.storage import LocalModelStore
        from treecore.types import Tree

        trees = [Tree(i, float(i % 300) * 2, float(i // 300) * 2, 3.0, 0.0, 0.0, 30.0) for i in range(size)]
        builder = ModelBuilder(LocalModelStore(Path("/tmp/admission-probe"), "/download"), workers=2)
        builder.build(trees[:10], "tree_lowpoly", store=False, name="warm", fmt=stage)  # type: ignore[arg-type]

        def run() -> None:
            builder.build(trees, "tree_lowpoly", store=False, name="probe", fmt=stage)  # type: ignore[arg-type]

        pixels = size
    added = []
    for _ in range(2):  # cold (first call at this size), then warm (as in a replica that has run such a call)
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # as the replicas do after each call
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        run()
        added.append((_status_kb("VmHWM") - before) * 1024)
    return {
        "stage": stage,
        "method": method,
        "size": size,
        "gsd": gsd,
        "units": pixels,
        "cold": added[0],
        "warm": added[1],
    }


def serve_probe(sizes: list[int], gsd: float, methods: list[str]) -> None:
    """One request at a time (then two at once) through a real Serve: peak PSS of all Ray processes over idle."""
    import tempfile

    import httpx
    import ray
    from ray import serve

    from benchmarks.serve_pipeline import PeakMemory, ray_pss_mb
    from scripts.make_sample import make_scene
    from scripts.render_serve_config import serve_config_env_vars
    from serve_app.builder import AppArgs, bind_graph

    os.environ.update(serve_config_env_vars())
    temp = tempfile.mkdtemp(prefix="ray-am-", dir="/tmp")
    ray.init(
        num_cpus=2,
        object_store_memory=1_000_000_000,
        _temp_dir=temp,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": serve_config_env_vars()},
    )
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        no_cpu = {"ray_actor_options": {"num_cpus": 0}}
        options = {name: no_cpu for name in ("Ingress", "TileSplitter", "ModelAssembler")}
        options["Detector"] = {"num_replicas": 2, "max_ongoing_requests": 1, **no_cpu}
        serve.run(bind_graph(AppArgs(), options=options), name="probe", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        for size in sizes:
            png = make_scene(size)
            for method in methods:
                form = {"real_width": str(size * gsd), "real_height": str(size * gsd), "method": method}

                def post(_: int, png: bytes = png, form: dict[str, str] = form) -> int:
                    files = {"image": ("t.png", png, "image/png")}
                    return httpx.post(f"{url}/detect-trees", files=files, data=form, timeout=600).status_code

                post(0)
                time.sleep(2)
                idle = ray_pss_mb()
                for clients in (1, 2):
                    with PeakMemory() as peak, ThreadPoolExecutor(clients) as pool:
                        codes = list(pool.map(post, range(clients)))
                    print(
                        f"serve {method:<10} {size}^2 at {gsd} m, png {len(png) / 1e6:.0f} MB, {clients} at once: "
                        f"{codes} peak {peak.peak - idle:.0f} MB over idle {idle:.0f} MB",
                        flush=True,
                    )
                    time.sleep(2)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    """Run every probe in its own process and print one table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--gsd", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--trees", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help="the end-to-end probe through a real Serve instead")
    args = parser.parse_args()
    if args.serve:
        serve_probe(args.sizes, args.gsd[-1], ["heatmap", "legacy"])
        return 0
    if args.probe:
        stage, size, gsd, method = args.probe
        print(json.dumps(_probe(stage, int(size), float(gsd), method)))
        return 0
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "1048576",
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_TRIM_THRESHOLD_": "33554432",
        "OMP_NUM_THREADS": "1",
    }
    jobs = [("decode", s, 0.1, "heatmap") for s in args.sizes]
    jobs += [("detect", s, g, m) for m in ("heatmap", "watershed", "legacy") for g in args.gsd for s in args.sizes]
    jobs += [("detect", s, 1.0, "heatmap") for s in args.sizes]
    jobs += [(fmt, n, 0.0, "-") for fmt in ("obj", "zip", "glb") for n in args.trees]
    print(
        f"{'stage':<8} {'method':<10} {'size':>6} {'gsd m':>6} {'units':>10} "
        f"{'cold MB':>8} {'warm MB':>8} {'warm B/unit':>11}"
    )
    for stage, size, gsd, method in jobs:
        out = subprocess.run(
            [sys.executable, __file__, "--probe", stage, str(size), str(gsd), method],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(
            f"{stage:<8} {method:<10} {size:>6} {gsd:>6} {row['units']:>10} "
            f"{row['cold'] / 1e6:>8.1f} {row['warm'] / 1e6:>8.1f} {row['warm'] / row['units']:>11.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
