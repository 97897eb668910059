"""A COG job by blob name, window by window, through a real Ray Serve against a real Azurite.

    .venv/bin/python benchmarks/cog_job.py --sizes 8192 4096 [--mosaic /tmp/rtest/big/mosaic_1gp.tif]
        [--detectors 2] [--tile-megapixels 4]

Each size is a synthetic square COG (scripts/make_mosaic.py: 0.5 m per pixel, JPEG, known trees; `--mosaic`
takes an existing one with its .trees.csv instead) uploaded to Azurite with azure-storage-blob, then detected by
POST /jobs with `image_ref` (the blob name): the Ingress reads the header, the JobRunner plans tiles, each
Detector reads its own window plus halo with HTTP range requests. Printed per size: wall time of the job
(POST to succeeded), megapixels per second, the peak RSS of each replica process (psutil, sampled every
0.2 s), and the recall of the known trees (a detection within max(2 m, half the crown) of a drawn centre),
by crown size, with the precision (detections within 4 m of a drawn centre). Ray gets 2 CPUs (the Detectors
one each), a 1 GB object store and a temporary folder of its own, removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.make_mosaic import Mosaic, write_mosaic, write_truth  # noqa: E402
from scripts.render_serve_config import serve_config_env_vars  # noqa: E402
from serve_app.settings import Settings  # noqa: E402
from tests.serve_app.azurite import Azurite  # noqa: E402

#: Crown size classes of the recall table, metres (the drawn crowns are 2-9 m).
SIZE_CLASSES = ((2.0, 4.0), (4.0, 6.0), (6.0, 9.01))
#: Detection parameters: the heatmap method (the default) with the smallest crowns allowed.
#: A detection is correct (precision) within this many metres of a drawn centre.
PRECISION_RADIUS_M = 4.0
FORM = {"min_diameter": "1.5", "max_diameter": "15", "cluster_threshold": "0"}


class RssSampler:
    """The peak RSS of every Serve replica process (by its process title), sampled in a thread."""

    def __init__(self, period_s: float = 0.2) -> None:
        """A sampler; start() it, then stop() it."""
        self.period_s, self.peak_bytes = period_s, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> dict[str, int]:
        """Stop; the peak RSS, bytes, per "deployment#pid"."""
        self._stop.set()
        self._thread.join()
        return dict(self.peak_bytes)

    def _run(self) -> None:
        while not self._stop.is_set():
            for process in psutil.process_iter(["pid", "cmdline"]):
                try:
                    title = " ".join(process.info["cmdline"] or ())
                    if "ServeReplica:cog:" not in title:
                        continue
                    name = title.split("ServeReplica:cog:", 1)[1].split()[0].split(".")[0]
                    key = f"{name}#{process.info['pid']}"
                    self.peak_bytes[key] = max(self.peak_bytes.get(key, 0), process.memory_info().rss)
                except (psutil.Error, IndexError):
                    continue
            self._stop.wait(self.period_s)


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make(side: int, folder: Path) -> tuple[Path, Path]:
    """A square JPEG COG of `side` pixels at 0.5 m and its truth CSV."""
    path = folder / f"mosaic_{side}.tif"
    started = time.perf_counter()
    write_mosaic(Mosaic(side, side, 0.5), path, compress="jpeg")
    truth = folder / f"mosaic_{side}.tif.trees.csv"
    write_truth(Mosaic(side, side, 0.5), truth)
    print(f"made {path} ({side * side / 1e6:.0f} MP) in {time.perf_counter() - started:.0f} s", flush=True)
    return path, truth


def recall_table(trees: list[dict[str, Any]], truth_csv: Path) -> dict[str, float]:
    """Recall per crown size class and overall, and precision (pixel coordinates, 0.5 m per pixel)."""
    with truth_csv.open() as handle:
        rows = [(float(r["pixel_x"]), float(r["pixel_y"]), float(r["diameter_m"])) for r in csv.DictReader(handle)]
    truth = np.array(rows)
    found = np.array([(t["pixel_x"], t["pixel_y"]) for t in trees]) if trees else np.zeros((0, 2))
    radius_px = np.maximum(2.0, truth[:, 2] / 2) / 0.5
    distance, _ = cKDTree(found).query(truth[:, :2], k=1) if len(found) else (np.full(len(truth), np.inf), None)
    hit = distance <= radius_px
    table = {"recall": float(hit.mean())}
    for low, high in SIZE_CLASSES:
        chosen = (truth[:, 2] >= low) & (truth[:, 2] < high)
        table[f"recall {low:g}-{min(high, 9):g} m"] = float(hit[chosen].mean()) if chosen.any() else float("nan")
    near, _ = cKDTree(truth[:, :2]).query(found, k=1) if len(found) else (np.zeros(0), None)
    table["precision"] = float((near <= PRECISION_RADIUS_M / 0.5).mean()) if len(found) else float("nan")
    table["truth"], table["found"] = float(len(truth)), float(len(found))
    return table


def run_one(url: str, blob: str, pixels: int) -> dict[str, Any]:
    """One job by blob name, timed, with the replicas' peak RSS."""
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    created = httpx.post(f"{url}/jobs", data={"image_ref": blob, **FORM}, timeout=120)
    created.raise_for_status()
    status_url = created.json()["status_url"]
    while True:
        job = httpx.get(status_url, timeout=60).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    wall = time.perf_counter() - started
    peaks = sampler.stop()
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job['state']}: {job.get('error')}")
    return {"wall_s": wall, "mp_per_s": pixels / 1e6 / wall, "peaks": peaks, "result": job["result"]}


def serve_app(azurite: Azurite, container: str, detectors: int, tile_mp: float, temp: str) -> str:
    """Ray (2 CPUs), Serve on a free port, and the app at /cog; its URL."""
    import ray
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    ray.init(
        num_cpus=2,
        object_store_memory=1_000_000_000,
        _temp_dir=temp,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": serve_config_env_vars()},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = dataclasses.replace(
        Settings.from_env(), azure_connection_string=azurite.connection_string, container_images=container
    )
    no_cpu = {"ray_actor_options": {"num_cpus": 0}}
    options: dict[str, dict[str, Any]] = {n: no_cpu for n in ("Ingress", "TileSplitter", "ModelAssembler", "JobRunner")}
    options["Detector"] = {"num_replicas": detectors, "ray_actor_options": {"num_cpus": 2 / detectors}}
    args = AppArgs(tile_megapixels=tile_mp)
    serve.run(bind_graph(args, settings=settings, options=options), name="cog", route_prefix="/cog")
    return f"http://127.0.0.1:{port}/cog"


def main() -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[8192, 4096], help="square mosaics' sides, pixels")
    parser.add_argument("--mosaic", type=Path, nargs="*", default=[], help="existing COGs (with .trees.csv)")
    parser.add_argument("--detectors", type=int, default=2)
    parser.add_argument("--tile-megapixels", type=float, default=4.0)
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python", *sys.argv]), flush=True)
    work = Path(tempfile.mkdtemp(prefix="cogb-", dir="/tmp"))
    ray_temp = tempfile.mkdtemp(prefix="rcog-", dir="/tmp")
    azurite = Azurite(work / "azurite")
    azurite.location.mkdir()
    azurite.start()
    try:
        from azure.storage.blob import BlobServiceClient
        from ray import serve

        mosaics = [(p, Path(f"{p}.trees.csv")) for p in args.mosaic] + [make(s, work) for s in args.sizes]
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("images")
        blobs.create_container()
        for path, _ in mosaics:
            with path.open("rb") as handle:
                blobs.upload_blob(path.name, handle, overwrite=True, max_concurrency=4)
        url = serve_app(azurite, "images", args.detectors, args.tile_megapixels, ray_temp)
        for path, truth in mosaics:
            from treecore.raster import read_header

            header = read_header(str(path))
            run = run_one(url, path.name, header.pixels)
            table = recall_table(run["result"]["trees"], truth)
            print(
                f"\n{path.name}: {header.width} x {header.height} = {header.pixels / 1e6:.0f} MP, "
                f"{run['result']['tile_count']} tiles; wall {run['wall_s']:.1f} s, {run['mp_per_s']:.2f} MP/s "
                f"({run['mp_per_s'] / 2:.2f} MP/s per core)",
                flush=True,
            )
            for name, peak in sorted(run["peaks"].items()):
                print(f"  peak RSS {name}: {peak / 2**20:.0f} MiB")
            print("  " + ", ".join(f"{k} {v:.3f}" if v < 1.5 else f"{k} {v:.0f}" for k, v in table.items()))
        serve.shutdown()
    finally:
        import ray

        ray.shutdown()
        azurite.stop()
        shutil.rmtree(ray_temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
