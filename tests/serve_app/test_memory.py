"""Memory under repeated large uploads: the replicas run with serve_config.yaml's malloc settings, and the
ingress's private heap returns to its warm baseline instead of keeping each burst's high-water mark."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from scripts.make_sample import GSD_M, make_scene
from scripts.processes import memory_mb, ray_processes
from scripts.render_serve_config import serve_config_env_vars

pytestmark = pytest.mark.serve

SIZE_PX = 3072
#: Largest growth of the ingress's heap over 8 more large uploads after warm-up. Without the malloc settings
#: it grew by 86 MB here (and from 100 MB to 500 MB over 48 uploads of 4096²); with them, by a few MB.
MAX_GROWTH_MB = 40


def _replica_pid(deployment: str) -> int:
    """The pid of this test session's replica of `deployment` of the app at / (not another session's Ray)."""
    title = f"ray::ServeReplica:tree-detection:{deployment}"
    pid = next((pid for pid, name in ray_processes().items() if name.startswith(title)), None)
    assert pid is not None, f"no {deployment} replica below this test process"
    return pid


def test_replicas_run_with_the_configured_malloc_settings(serve_url: str) -> None:
    wanted = serve_config_env_vars()
    assert "MALLOC_MMAP_THRESHOLD_" in wanted
    for deployment in ("Ingress", "Detector", "TileSplitter"):
        environ = Path(f"/proc/{_replica_pid(deployment)}/environ").read_bytes().split(b"\0")
        env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
        assert {key: env.get(key) for key in wanted} == wanted, deployment


def test_large_uploads_do_not_ratchet_the_ingress_heap(serve_url: str) -> None:
    png = make_scene(SIZE_PX, seed=3)
    size_m = str(SIZE_PX * GSD_M)
    form = {"real_width": size_m, "real_height": size_m, "min_diameter": "2", "cluster_threshold": "0"}

    def post(_: int) -> int:
        files = {"image": ("scene.png", png, "image/png")}
        return httpx.post(f"{serve_url}/detect-trees", files=files, data=form, timeout=300).status_code

    ingress = _replica_pid("Ingress")
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(post, range(4))) == [200] * 4  # warm-up: imports, buffers, thread pools
        warm_mb = memory_mb(ingress)
        assert list(pool.map(post, range(8))) == [200] * 8
    after_mb = memory_mb(ingress)
    print(f"ingress heap {warm_mb:.0f} MB -> {after_mb:.0f} MB")
    assert after_mb - warm_mb < MAX_GROWTH_MB, f"ingress heap {warm_mb:.0f} MB -> {after_mb:.0f} MB"


def test_the_image_and_make_run_give_ray_the_same_malloc_settings() -> None:
    root = Path(__file__).resolve().parents[2]
    dockerfile, run_local = (root / "Dockerfile").read_text(), (root / "scripts" / "run-local.sh").read_text()
    for key, value in serve_config_env_vars().items():
        assert f"{key}={value}" in dockerfile, f"Dockerfile ENV lacks {key}={value}"
        assert f"{key}={value}" in run_local, f"scripts/run-local.sh lacks {key}={value}"
