"""Base tree models in the tree-models blob container, through the HTTP API, on a real Azurite.

The app is the in-process one (create_app over LocalStages); its ModelBuilder reads the container the way the
ModelAssembler deployment does when Azure storage is configured.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from fastapi.testclient import TestClient

from serve_app.assembly import ModelBuilder
from serve_app.catalog import REMOTE_TTL_S
from serve_app.settings import Settings
from serve_app.stages import LocalStages
from serve_app.storage import MAX_BASE_MODEL_BYTES, AzureModelStore, BlobModels, LocalModelStore
from tests.serve_app.azurite import Azurite
from tests.serve_app.conftest import local_app
from treecore.basemodels import DEFAULT_MODELS_DIR, list_models

pytestmark = pytest.mark.azurite

#: A unit square in the XY plane: the smallest OBJ the builder accepts (it needs a horizontal extent).
SQUARE_OBJ = b"mtllib custom.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nusemtl leaf\nf 1 2 3 4\n"
CUSTOM_MTL = b"newmtl leaf\nKd 0.100 0.800 0.200\n"
TRIANGLE_OBJ = b"v 0 0 0\nv 2 0 0\nv 0 3 1\nusemtl bark\nf 1 2 3\n"
TREES = [{"x": 5.0 * i, "y": 3.0, "diameter": 3.0} for i in range(3)]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _upload(connection_string: str, container: str, files: dict[str, bytes]) -> None:
    client = BlobServiceClient.from_connection_string(connection_string).get_container_client(container)
    if not client.exists():
        client.create_container()
    for name, data in files.items():
        client.upload_blob(name, data, overwrite=True)


def _delete(connection_string: str, container: str, name: str) -> None:
    BlobServiceClient.from_connection_string(connection_string).get_blob_client(container, name).delete_blob()


@pytest.fixture
def models_container() -> str:
    """A fresh tree-models container name (created by the first upload)."""
    return f"tree-models-{uuid.uuid4().hex[:12]}"


def _client(connection_string: str, models_container: str, *, clock: Clock | None = None, **remote: Any) -> TestClient:
    store = AzureModelStore.from_connection_string(connection_string, f"generated-{uuid.uuid4().hex[:12]}")
    builder = ModelBuilder(
        store, remote_models=BlobModels(store, models_container, **remote), clock=clock or Clock(), workers=1
    )
    settings = Settings(azure_connection_string=connection_string, large_model_threshold=50)
    return TestClient(local_app(settings, LocalStages(builder, max_pixels=10**7)))


@pytest.fixture
def client(azurite: Azurite, models_container: str) -> Iterator[TestClient]:
    """The in-process app with Azure storage on the session's Azurite and its own tree-models container."""
    with _client(azurite.connection_string, models_container) as test_client:
        yield test_client


def _blob_models(body: dict[str, Any]) -> list[str]:
    return [m["name"] for m in body["models"] if m["source"] == "blob"]


def test_blob_model_is_listed_downloaded_and_generated(
    client: TestClient, azurite: Azurite, models_container: str
) -> None:
    noise = {
        "notes.txt": b"not a model",
        "orphan.mtl": CUSTOM_MTL,  # an MTL alone is not a model
        "bad name.obj": SQUARE_OBJ,  # not a valid model name
        "folder/nested.obj": SQUARE_OBJ,  # path-like
        "twice.obj.obj": SQUARE_OBJ,  # its name would be "twice.obj", which names twice.obj
        "-dash.obj": SQUARE_OBJ,
    }
    _upload(azurite.connection_string, models_container, {"custom.obj": SQUARE_OBJ, "custom.mtl": CUSTOM_MTL, **noise})
    body = client.get("/tree-models").json()
    package = list_models(DEFAULT_MODELS_DIR)
    assert [(m["name"], m["source"]) for m in body["models"]] == [(n, "package") for n in package] + [
        ("custom", "blob")
    ]
    custom = body["models"][-1]
    assert custom["obj_url"].endswith("/tree-models/custom.obj") and custom["mtl_url"].endswith(
        "/tree-models/custom.mtl"
    )

    local = client.get("/tree-models/tree_lowpoly.obj")
    for url, data, media in (
        (custom["obj_url"], SQUARE_OBJ, "model/obj"),
        (custom["mtl_url"], CUSTOM_MTL, "model/mtl"),
    ):
        response = client.get(url)
        assert response.status_code == 200 and response.content == data  # byte-identical
        assert response.headers["content-type"] == media
        name = url.rpartition("/")[2]
        assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert local.headers["content-disposition"] == 'attachment; filename="tree_lowpoly.obj"'  # the same shape

    scene = client.post("/generate-model", params={"base_model": "custom"}, json={"trees": TREES})
    assert scene.status_code == 200, scene.text
    assert b"mtllib custom.mtl\n" in scene.content and scene.content.count(b"\no tree_") == 3
    mtl = client.get(scene.headers["x-mtl-url"])
    assert mtl.status_code == 200 and mtl.content == CUSTOM_MTL

    zipped = client.post("/generate-model", json={"trees": TREES, "base_model": "custom", "format": "zip"})
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        mtl_member = next(n for n in archive.namelist() if n.endswith(".mtl"))
        assert archive.read(mtl_member) == CUSTOM_MTL
    glb = client.post("/generate-model", json={"trees": TREES, "base_model": "custom", "format": "glb"})
    assert glb.status_code == 200 and glb.content[:4] == b"glTF"


def test_a_package_model_wins_a_name_clash(
    client: TestClient, azurite: Azurite, models_container: str, tmp_path: Path
) -> None:
    _upload(
        azurite.connection_string, models_container, {"tree_lowpoly.obj": SQUARE_OBJ, "tree_lowpoly.mtl": CUSTOM_MTL}
    )
    body = client.get("/tree-models").json()
    assert [m["source"] for m in body["models"] if m["name"] == "tree_lowpoly"] == ["package"]
    assert _blob_models(body) == []
    for ext in ("obj", "mtl"):
        served = client.get(f"/tree-models/tree_lowpoly.{ext}").content
        assert served == (DEFAULT_MODELS_DIR / f"tree_lowpoly.{ext}").read_bytes()
    # Generation takes the packaged model too: the same scene as a service without blob storage.
    request = {"trees": TREES, "base_model": "tree_lowpoly"}
    package_only = LocalStages(ModelBuilder(LocalModelStore(tmp_path, "/download"), workers=1), max_pixels=10**7)
    with TestClient(local_app(Settings(generated_models_dir=tmp_path), package_only)) as plain:
        expected = plain.post("/generate-model", json=request)
    scene = client.post("/generate-model", json=request)
    assert scene.status_code == expected.status_code == 200 and scene.content == expected.content


def test_blob_model_without_mtl_gets_the_plain_materials_its_scenes_use(
    client: TestClient, azurite: Azurite, models_container: str
) -> None:
    _upload(azurite.connection_string, models_container, {"plain.obj": TRIANGLE_OBJ})
    assert _blob_models(client.get("/tree-models").json()) == ["plain"]
    mtl = client.get("/tree-models/plain.mtl")
    assert mtl.status_code == 200 and mtl.headers["content-type"] == "model/mtl"
    assert mtl.content.startswith(b"newmtl bark\n")
    scene = client.post("/generate-model", json={"trees": TREES, "base_model": "plain"})
    assert scene.status_code == 200 and client.get(scene.headers["x-mtl-url"]).content == mtl.content


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (b"v 0 0 zero\nv 1 0 0\nv 0 0 1\nf 1 2 3\n", "line 1: not a number"),
        (b"v 0 0 0\nv 1 0 0\nv 0 0 1\nf 1 2 9\n", "vertex index 9 out of range"),
        (b"v 0 0 0\nv 1 0 0\n", "no faces"),
        (b"v 0 0 0\nv 0 1 0\nv 0 2 0\nf 1 2 3\n", "no horizontal extent"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "unknown statement"),
    ],
)
def test_malformed_blob_model_is_a_clear_422_at_generation(
    client: TestClient, azurite: Azurite, models_container: str, obj: bytes, says: str
) -> None:
    _upload(azurite.connection_string, models_container, {"broken.obj": obj})
    assert _blob_models(client.get("/tree-models").json()) == ["broken"]  # listing does not parse models
    assert client.get("/tree-models/broken.obj").content == obj  # the owner can fetch what they uploaded
    for fmt in ("obj", "glb"):
        response = client.post("/generate-model", json={"trees": TREES, "base_model": "broken", "format": fmt})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "blob tree model broken.obj cannot be used" in detail and says in detail, detail
    assert client.post("/generate-model", json={"trees": TREES}).status_code == 200  # the default still works


def test_path_like_and_unknown_names_are_refused_with_blob_storage(
    client: TestClient, azurite: Azurite, models_container: str
) -> None:
    _upload(azurite.connection_string, models_container, {"custom.obj": SQUARE_OBJ, "custom.exe": b"MZ"})
    for bad in ("nope.obj", "nope.mtl", "custom.exe", "..%2F..%2Fetc%2Fpasswd", "%2e%2e.obj", ".hidden.obj", "custom"):
        response = client.get(f"/tree-models/{bad}")
        assert response.status_code == 404, (bad, response.text)
    assert "no tree model file nope.obj" in client.get("/tree-models/nope.obj").json()["detail"]
    for name in ("../custom", "folder/custom", "nope"):
        response = client.post("/generate-model", json={"trees": TREES, "base_model": name})
        assert response.status_code == 404, (name, response.text)


def test_a_blob_model_over_the_size_limit_is_413(azurite: Azurite, models_container: str) -> None:
    assert MAX_BASE_MODEL_BYTES == 64 * 1024 * 1024
    big = SQUARE_OBJ + b"# padding\n" * 200  # 2 kB, over the 1 kB limit of this app
    _upload(azurite.connection_string, models_container, {"big.obj": big, "small.obj": SQUARE_OBJ})
    with _client(azurite.connection_string, models_container, max_bytes=1000) as client:
        assert _blob_models(client.get("/tree-models").json()) == ["big", "small"]
        response = client.get("/tree-models/big.obj")
        assert response.status_code == 413 and "more than 1000" in response.json()["detail"]
        generated = client.post("/generate-model", json={"trees": TREES, "base_model": "big"})
        assert generated.status_code == 413 and "big.obj" in generated.json()["detail"]
        assert client.get("/tree-models/small.obj").content == SQUARE_OBJ


def test_listing_and_blob_models_are_read_again_after_the_ttl(azurite: Azurite, models_container: str) -> None:
    clock = Clock()
    _upload(azurite.connection_string, models_container, {"custom.obj": SQUARE_OBJ})
    with _client(azurite.connection_string, models_container, clock=clock) as client:
        assert _blob_models(client.get("/tree-models").json()) == ["custom"]
        first = client.post("/generate-model", json={"trees": TREES, "base_model": "custom"}).content
        _upload(azurite.connection_string, models_container, {"custom.obj": TRIANGLE_OBJ, "later.obj": SQUARE_OBJ})
        assert _blob_models(client.get("/tree-models").json()) == ["custom"]  # cached listing
        assert client.post("/generate-model", json={"trees": TREES, "base_model": "custom"}).content == first
        clock.now += REMOTE_TTL_S
        assert _blob_models(client.get("/tree-models").json()) == ["custom", "later"]
        replaced = client.post("/generate-model", json={"trees": TREES, "base_model": "custom"})
        assert replaced.status_code == 200 and replaced.content != first and b"usemtl bark" in replaced.content

        _delete(azurite.connection_string, models_container, "custom.obj")
        clock.now += REMOTE_TTL_S
        assert _blob_models(client.get("/tree-models").json()) == ["later"]
        gone = client.post("/generate-model", json={"trees": TREES, "base_model": "custom"})
        assert gone.status_code == 404, gone.text


def test_with_azurite_stopped_the_listing_is_503_and_packaged_models_still_work(
    own_azurite: Azurite, models_container: str
) -> None:
    clock = Clock()
    _upload(own_azurite.connection_string, models_container, {"custom.obj": SQUARE_OBJ})
    with _client(own_azurite.connection_string, models_container, clock=clock) as client:
        before = client.post("/generate-model", json={"trees": TREES, "base_model": "custom"})
        assert before.status_code == 200
        own_azurite.stop()
        listing = client.get("/tree-models")
        assert listing.status_code == 503, listing.text
        detail = listing.json()["detail"]
        assert "Azure Blob Storage" in detail and "unreachable" in detail and "AccountKey" not in detail
        assert client.get("/tree-models/custom.obj").status_code == 503
        assert client.get("/tree-models/tree_lowpoly.obj").status_code == 200  # packaged: no storage needed
        assert client.post("/generate-model", json={"trees": TREES}).status_code == 200
        clock.now += REMOTE_TTL_S  # time to read custom again, but the storage is down: the copy we have serves
        again = client.post("/generate-model", json={"trees": TREES, "base_model": "custom"})
        assert again.status_code == 200 and again.content == before.content
        own_azurite.start()  # in memory: the emulator comes back empty
        body = client.get("/tree-models").json()
        assert _blob_models(body) == [] and [m["name"] for m in body["models"]] == list_models(DEFAULT_MODELS_DIR)
