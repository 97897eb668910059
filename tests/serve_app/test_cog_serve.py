"""POST /jobs by blob name through a real Ray Serve over HTTP, against a real Azurite: the Detectors read their own
windows from storage; the same trees as the upload; refused URLs; progress; cancel stops the outstanding windows."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from scripts.make_mosaic import Mosaic, write_mosaic
from serve_app.settings import Settings
from tests.serve_app.azurite import Azurite
from tests.serve_app.conftest import wait_job

#: 2.2 MP lossless: by blob name against the upload. Tiles of 1 MP: 3 of them (test_cog_jobs.py has 4 and 2).
SMALL = Mosaic(2000, 1100, 0.5, epsg=32633, origin=(400_000.0, 6_000_000.0), seed=5)
#: 16 MP: 16 windows on one Detector taking one at a time, so a cancel lands while most are outstanding.
LARGE = Mosaic(4000, 4000, 0.5, epsg=32633, origin=(400_000.0, 6_000_000.0), seed=6)


@pytest.fixture(scope="module")
def cogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two mosaics as DEFLATE COGs."""
    folder = tmp_path_factory.mktemp("cogs")
    paths = {"small": folder / "small.tif", "large": folder / "large.tif"}
    write_mosaic(SMALL, paths["small"], compress="deflate")
    write_mosaic(LARGE, paths["large"], compress="deflate")
    return paths


@pytest.fixture(scope="module")
def cog_url(serve_url: str, azurite: Azurite, cogs: dict[str, Path]) -> Iterator[str]:
    """An app of the session's Serve at /cog reading rasters from a fresh container in Azurite (one Detector, no
    CPU, one window at a time); removed at the end."""
    from ray import serve

    from serve_app.builder import AppArgs, bind_graph

    container = f"images-{secrets.token_hex(4)}"
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    blobs.create_container()
    for name, path in cogs.items():
        blobs.upload_blob(f"mosaics/{name}.tif", path.read_bytes(), overwrite=True)
    settings = dataclasses.replace(
        Settings.from_env(),
        azure_connection_string=azurite.connection_string,
        container_images=container,
        raster_url_hosts=("localhost", "*.internal.example"),
    )
    args = AppArgs(tile_megapixels=1.0, short_path_megapixels=0.1)
    no_cpu = {"ray_actor_options": {"num_cpus": 0}}
    options: dict[str, dict[str, Any]] = {name: no_cpu for name in ("Ingress", "TileSplitter", "ModelAssembler")}
    options["Detector"] = {"num_replicas": 1, "max_ongoing_requests": 1, **no_cpu}
    serve.run(bind_graph(args, settings=settings, options=options), name="cog", route_prefix="/cog")
    try:
        yield f"{serve_url}/cog"
    finally:
        serve.delete("cog")


def test_a_cog_by_blob_name_over_http_gives_the_uploaded_trees(cog_url: str, cogs: dict[str, Path]) -> None:
    created = httpx.post(f"{cog_url}/jobs", data={"image_ref": "mosaics/small.tif"}, timeout=60)
    assert created.status_code == 202, created.text
    job = wait_job(created.json()["status_url"], timeout=300)
    assert job["state"] == "succeeded", job
    form = {"real_width": str(SMALL.width * SMALL.mpp), "real_height": str(SMALL.height * SMALL.mpp)}
    files = {"image": ("small.tif", cogs["small"].read_bytes(), "image/tiff")}
    whole = httpx.post(f"{cog_url}/detect-trees", data=form, files=files, timeout=300)
    assert whole.status_code == 200, whole.text
    result = job["result"]
    assert len(result["trees"]) > 100
    assert result["trees"] == whole.json()["trees"]
    assert result["tile_count"] == whole.json()["tile_count"] == 3
    progress = job["progress"]
    assert progress["tiles_done"] == progress["tiles_total"] == 3
    assert progress["trees_so_far"] == len(result["trees"])


@pytest.mark.parametrize(
    "reference",
    [
        "https://localhost/mosaics/a.tif",  # allowed host, loopback address
        "https://127.0.0.1/mosaics/a.tif",  # not on the allow-list
        "https://169.254.169.254/metadata/a.tif",  # the cloud metadata address
        "https://10.0.0.7/a.tif",
        "http://localhost/a.tif",
        "file:///etc/passwd",
        "/vsicurl/https://localhost/a.tif",
    ],
)
def test_references_to_internal_addresses_are_refused_over_http(cog_url: str, reference: str) -> None:
    answer = httpx.post(f"{cog_url}/jobs", data={"image_ref": reference}, timeout=60)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]


def test_cancel_stops_the_outstanding_windows(cog_url: str) -> None:
    created = httpx.post(f"{cog_url}/jobs", data={"image_ref": "mosaics/large.tif"}, timeout=60)
    assert created.status_code == 202, created.text
    status_url = created.json()["status_url"]
    deadline = time.monotonic() + 300
    job = httpx.get(status_url, timeout=10).json()
    while job["progress"]["tiles_done"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        job = httpx.get(status_url, timeout=10).json()
    assert job["progress"]["tiles_total"] == 16
    assert job["progress"]["trees_so_far"] > 0  # trees so far, before the merge
    cancelled = httpx.delete(status_url, timeout=30).json()
    assert cancelled["state"] == "cancelled", cancelled
    done = cancelled["progress"]["tiles_done"]
    assert done < 16
    time.sleep(3)  # a window in flight when the job was cancelled is not counted; none other starts
    later = httpx.get(status_url, timeout=10).json()
    assert later["state"] == "cancelled"
    assert later["progress"]["tiles_done"] == done
    # The Detector is idle again: a new job over the small raster runs at once on it, all its windows.
    again = httpx.post(f"{cog_url}/jobs", data={"image_ref": "mosaics/small.tif"}, timeout=60)
    assert wait_job(again.json()["status_url"], timeout=120)["state"] == "succeeded"
