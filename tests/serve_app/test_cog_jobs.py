"""POST /jobs by reference (image_ref): a COG in a real Azurite, detected window by window, in process.

The same answer as the raster uploaded whole, for two tile sizes; georeference from the raster; refused
references. The Serve version (over HTTP, cancel) is tests/serve_app/test_cog_serve.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from fastapi.testclient import TestClient

from scripts.make_mosaic import Mosaic, write_mosaic
from serve_app.assembly import ModelBuilder
from serve_app.raster_source import blob_gdal_options
from serve_app.settings import Settings
from serve_app.stages import LocalStages, TilePolicy
from serve_app.storage import LocalModelStore
from tests.serve_app.azurite import Azurite
from tests.serve_app.conftest import local_app, wait_job

GEOJSON = "application/geo+json"

#: 2.2 MP at 0.5 m (750 m x 550 m), lossless: a window read decodes the same blocks as the whole read.
MOSAIC = Mosaic(2000, 1100, 0.5, epsg=32633, origin=(400_000.0, 6_000_000.0), seed=5)
WIDTH_M, HEIGHT_M = MOSAIC.width * MOSAIC.mpp, MOSAIC.height * MOSAIC.mpp
#: Two tile sizes: 0.6 MP (4 tiles, with the 2 stand-in replicas) and 1.5 MP (2 tiles).
POLICIES = {"small": TilePolicy(600_000, 100_000), "large": TilePolicy(1_500_000, 100_000)}


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The mosaic as a DEFLATE COG's bytes."""
    path = tmp_path_factory.mktemp("cog") / "mosaic.tif"
    write_mosaic(MOSAIC, path, compress="deflate")
    return path.read_bytes()


@pytest.fixture(scope="module")
def images(azurite: Azurite, cog: bytes) -> str:
    """A fresh images container holding the COG as mosaics/site-a.tif."""
    container = f"images-{secrets.token_hex(4)}"
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    client.create_container()
    client.upload_blob("mosaics/site-a.tif", cog, overwrite=True)
    return container


def cog_client(tmp_path: Path, azurite: Azurite, container: str, policy: TilePolicy, **overrides: Any) -> TestClient:
    """The in-process app reading rasters from `container` in Azurite, cutting tiles by `policy`."""
    models = tmp_path / "generated"
    models.mkdir(exist_ok=True)
    settings = Settings(
        generated_models_dir=models,
        azure_connection_string=azurite.connection_string,
        container_images=container,
        **overrides,
    )
    builder = ModelBuilder(LocalModelStore(models, "/download"), workers=2)
    options = blob_gdal_options(connection_string=azurite.connection_string)
    stages = LocalStages(builder, max_pixels=settings.max_image_pixels, policy=policy, gdal_options=options)
    return TestClient(local_app(settings, stages))


@pytest.fixture
def client(tmp_path: Path, azurite: Azurite, images: str) -> Iterator[TestClient]:
    """The app with 0.6 MP tiles."""
    with cog_client(tmp_path, azurite, images, POLICIES["small"]) as test_client:
        yield test_client


def run_ref(client: TestClient, data: dict[str, str]) -> dict[str, Any]:
    """A job over a reference, waited for; its final body."""
    created = client.post("/jobs", data=data)
    assert created.status_code == 202, created.text
    job = wait_job(created.json()["status_url"], client=client)
    assert job["state"] == "succeeded", job
    return job


@pytest.mark.parametrize("size", sorted(POLICIES))
def test_a_cog_by_blob_name_gives_the_trees_of_the_same_file_uploaded(
    tmp_path: Path, azurite: Azurite, images: str, cog: bytes, size: str
) -> None:
    with cog_client(tmp_path, azurite, images, POLICIES[size]) as client:
        job = run_ref(client, {"image_ref": "mosaics/site-a.tif"})
        form = {"real_width": str(WIDTH_M), "real_height": str(HEIGHT_M)}
        whole = client.post("/detect-trees", data=form, files={"image": ("m.tif", cog, "image/tiff")})
    assert whole.status_code == 200, whole.text
    result, uploaded = job["result"], whole.json()
    assert len(result["trees"]) > 100
    assert result["trees"] == uploaded["trees"]  # bit-identical: same positions, diameters, ids
    assert result["tile_count"] == uploaded["tile_count"] == {"small": 4, "large": 2}[size]
    assert (result["image_width"], result["image_height"]) == (MOSAIC.width, MOSAIC.height)
    progress = job["progress"]
    assert progress["tiles_done"] == progress["tiles_total"] == result["tile_count"]
    assert progress["trees_so_far"] == len(result["trees"])


def test_the_rasters_georeference_sets_its_size_and_wins_over_the_form(client: TestClient) -> None:
    job = run_ref(client, {"image_ref": "mosaics/site-a.tif", "real_width": "100", "real_height": "100"})
    result = job["result"]
    assert result["meters_per_pixel_x"] == result["meters_per_pixel_y"] == pytest.approx(MOSAIC.mpp)
    assert result["parameters"]["real_width"] == pytest.approx(WIDTH_M)
    assert any("real_width and real_height ignored" in w and "1000 m x 550 m" in w for w in result["warnings"])


def test_geojson_uses_the_rasters_crs_and_transform(client: TestClient) -> None:
    job = run_ref(client, {"image_ref": "mosaics/site-a.tif", "format": "geojson"})
    geojson = job["result"]
    assert geojson["type"] == "FeatureCollection"
    assert "32633" in str(geojson.get("crs", geojson.get("properties", "")))
    e0, n0 = MOSAIC.origin
    for feature in geojson["features"]:
        x, y = feature["geometry"]["coordinates"]
        assert e0 <= x <= e0 + WIDTH_M and n0 - HEIGHT_M <= y <= n0


@pytest.mark.parametrize(
    ("data", "files", "message"),
    [
        ({}, None, "no image"),
        ({"image_ref": "mosaics/site-a.tif"}, {"image": ("a.png", b"x", "image/png")}, "not both"),
        ({"image_ref": "../secret.tif"}, None, "not a blob name"),
        ({"image_ref": "https://127.0.0.1/a.tif"}, None, "allow-list"),
        ({"image_ref": "http://example.org/a.tif"}, None, "https://"),
    ],
)
def test_bad_references_are_refused_with_a_422(
    client: TestClient, data: dict[str, str], files: dict[str, Any] | None, message: str
) -> None:
    answer = client.post("/jobs", data=data, files=files)
    assert answer.status_code == 422, answer.text
    assert message in answer.text


def test_a_url_to_an_internal_address_is_refused_even_when_its_host_is_allowed(
    tmp_path: Path, azurite: Azurite, images: str
) -> None:
    hosts = ("localhost", "169.254.169.254", "10.1.2.3")
    with cog_client(tmp_path, azurite, images, POLICIES["small"], raster_url_hosts=hosts) as client:
        for host in hosts:
            answer = client.post("/jobs", data={"image_ref": f"https://{host}/mosaics/a.tif"})
            assert answer.status_code == 422, answer.text
            assert "internal or non-public address" in answer.text


def test_a_missing_blob_is_a_400_before_any_job_starts(client: TestClient) -> None:
    answer = client.post("/jobs", data={"image_ref": "mosaics/none.tif"})
    assert answer.status_code == 400, answer.text
    assert "could not be opened" in answer.text


def test_the_images_container_and_the_url_allow_list_are_read_from_the_environment() -> None:
    env = {"AZURE_STORAGE_CONTAINER_IMAGES": "mosaics", "RASTER_URL_HOSTS": " acct.blob.core.windows.net, *.x.org ,"}
    settings = Settings.from_env(env)
    assert settings.container_images == "mosaics"
    assert settings.raster_url_hosts == ("acct.blob.core.windows.net", "*.x.org")
    assert (Settings.from_env({}).container_images, Settings.from_env({}).raster_url_hosts) == ("images", ())


def test_detect_trees_by_reference_answers_the_trees_of_the_upload(client: TestClient, cog: bytes) -> None:
    form = {"real_width": str(WIDTH_M), "real_height": str(HEIGHT_M)}
    whole = client.post("/detect-trees", data=form, files={"image": ("m.tif", cog, "image/tiff")})
    by_ref = client.post("/detect-trees", data={"image_ref": "mosaics/site-a.tif"})
    assert whole.status_code == by_ref.status_code == 200, by_ref.text
    assert by_ref.json()["trees"] == whole.json()["trees"] and len(whole.json()["trees"]) > 100
    assert by_ref.json()["tile_count"] == whole.json()["tile_count"] == 4
    geojson = client.post("/detect-trees", data={"image_ref": "mosaics/site-a.tif"}, headers={"Accept": GEOJSON})
    assert geojson.status_code == 200 and geojson.json()["type"] == "FeatureCollection"
    assert len(geojson.json()["features"]) == len(whole.json()["trees"])
    e0, n0 = MOSAIC.origin
    x, y = geojson.json()["features"][0]["geometry"]["coordinates"]
    assert e0 <= x <= e0 + WIDTH_M and n0 - HEIGHT_M <= y <= n0  # the raster's own CRS and transform


def test_detect_trees_by_reference_refuses_what_jobs_refuse_and_rasters_over_the_pixel_limit(
    tmp_path: Path, azurite: Azurite, images: str, cog: bytes
) -> None:
    with cog_client(tmp_path, azurite, images, POLICIES["small"], max_image_pixels=1_000_000) as client:
        too_large = client.post("/detect-trees", data={"image_ref": "mosaics/site-a.tif"})
        assert too_large.status_code == 413 and "POST /jobs" in too_large.json()["detail"], too_large.text
        both = client.post(
            "/detect-trees", data={"image_ref": "mosaics/site-a.tif"}, files={"image": ("m.tif", cog, "image/tiff")}
        )
        assert both.status_code == 422 and "not both" in both.json()["detail"]
        inner = client.post("/detect-trees", data={"image_ref": "https://127.0.0.1/a.tif"})
        assert inner.status_code == 422, inner.text
        missing = client.post("/detect-trees", data={"image_ref": "mosaics/none.tif"})
        assert missing.status_code == 400, missing.text
