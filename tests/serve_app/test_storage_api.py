"""Storage through the HTTP API (unit and Azurite tests of the stores themselves: tests/serve_app/storage/)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from serve_app.assembly import ModelBuilder
from serve_app.storage import (
    AzureModelStore,
    LocalModelStore,
)
from tests.serve_app.azurite import ACCOUNT_KEY, Azurite


class Boom(RuntimeError):
    """Raised by a parts iterable half-way."""


def _failing_parts() -> Iterator[bytes]:
    yield b"v 0 0 0\n" * 1000
    raise Boom("the generator failed half-way")


def _container() -> str:
    return f"models-{uuid.uuid4().hex[:12]}"


# ---- local folder ----


# ---- Azure Blob (Azurite) ----

pytest_azurite = pytest.mark.azurite


@pytest_azurite
def test_failure_mid_upload_commits_nothing(azurite: Azurite) -> None:
    container = _container()
    store = AzureModelStore.from_connection_string(azurite.connection_string, container)
    with pytest.raises(Boom):
        store.save("half.obj", _failing_parts(), content_type="model/obj")
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    assert [b.name for b in client.list_blobs()] == []  # uncommitted blocks are not a blob


@pytest_azurite
def test_large_model_through_the_api_goes_to_blob_storage(azurite: Azurite, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serve_app.settings import Settings
    from serve_app.stages import LocalStages
    from tests.serve_app.conftest import local_app

    store = AzureModelStore.from_connection_string(azurite.connection_string, _container())
    settings = Settings(azure_connection_string=azurite.connection_string, large_model_threshold=10)
    stages = LocalStages(ModelBuilder(store), max_pixels=10**7)
    trees = [{"x": 5.0 * i, "y": 3.0, "diameter": 3.0} for i in range(25)]
    with TestClient(local_app(settings, stages)) as client:
        body = client.post("/generate-model", json={"trees": trees}).json()
        assert body["download_url"].startswith(f"http://127.0.0.1:{azurite.port}/") and body["expires_in"] == "1 hour"
        assert body["expires_in_s"] == 3600 and body["mtl_url"].startswith(f"http://127.0.0.1:{azurite.port}/")
        assert ACCOUNT_KEY not in str(body)
        scene = httpx.get(body["download_url"])
        assert scene.status_code == 200 and scene.content.count(b"\no tree_") == 25
        mtl_url = body["download_url"].replace(".obj?", ".mtl?")
        assert httpx.get(mtl_url).status_code == 403  # each SAS names one blob; the MTL has its own
        mtl = httpx.get(body["mtl_url"])  # ...which the answer gives
        assert mtl.status_code == 200 and b"newmtl" in mtl.content
        assert [f["expires_in_s"] for f in body["files"]] == [3600, 3600]
        assert client.get(f"/download/{body['filename']}").status_code == 404  # not a local file here


# ---- user delegation key (workload identity): cache and renewal ----


@pytest_azurite
def test_base_model_from_the_tree_models_container(azurite: Azurite, tmp_path: Path) -> None:
    from serve_app.storage import blob_models

    models = _container()
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    service.create_container(models)
    square = "mtllib custom.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nusemtl leaf\nf 1 2 3 4\n"
    service.get_blob_client(models, "custom.obj").upload_blob(square.encode())
    service.get_blob_client(models, "custom.mtl").upload_blob(b"newmtl leaf\nKd 0 1 0\n")
    store = AzureModelStore.from_connection_string(azurite.connection_string, _container())
    builder = ModelBuilder(LocalModelStore(tmp_path, "/d"), remote_models=blob_models(store, models))
    mesh, mtl = builder.catalog.lookup("custom")
    assert len(mesh.positions) == 4 and "newmtl leaf" in mtl
    built = builder.build([], "custom", store=False, name="scene")
    assert built.data.startswith(b"# Tree scene")
    from treecore.errors import UnknownModelError

    with pytest.raises(UnknownModelError):
        builder.catalog.lookup("absent_everywhere")


def test_storage_failure_is_503_and_leaves_nothing(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serve_app.settings import Settings
    from serve_app.stages import LocalStages
    from tests.serve_app.conftest import local_app

    blocker = tmp_path / "models"
    blocker.write_text("a file where the models folder should be")
    settings = Settings(generated_models_dir=blocker, large_model_threshold=5)
    stages = LocalStages(ModelBuilder(LocalModelStore(blocker, "/download")), max_pixels=10**7)
    with TestClient(local_app(settings, stages)) as client:
        response = client.post("/generate-model", json={"trees": [{"x": 1.0, "y": 1.0, "diameter": 2.0}] * 10})
    assert response.status_code == 503 and "not writable" in response.json()["detail"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


@pytest_azurite
def test_azurite_stopped_during_an_upload_through_the_api(own_azurite: Azurite) -> None:
    from fastapi.testclient import TestClient

    from serve_app.settings import Settings
    from serve_app.stages import LocalStages
    from tests.serve_app.conftest import local_app

    class StopsStorageMidway(ModelBuilder):
        """Stops Azurite after the first part of the scene has been staged."""

        stop = True

        def parts(self, trees: Any, mesh: Any, *, mtl_name: str) -> Iterator[bytes]:
            for index, part in enumerate(super().parts(trees, mesh, mtl_name=mtl_name)):
                if index == 2 and self.stop:
                    own_azurite.stop()
                yield part

    container = _container()
    store = AzureModelStore.from_connection_string(own_azurite.connection_string, container)
    store.block_bytes = 64 * 1024
    builder = StopsStorageMidway(store, trees_per_part=20)
    settings = Settings(azure_connection_string=own_azurite.connection_string, large_model_threshold=10)
    trees = [{"x": 5.0 * (i % 10), "y": 5.0 * (i // 10), "diameter": 3.0} for i in range(100)]
    with TestClient(local_app(settings, LocalStages(builder, max_pixels=10**7))) as client:
        response = client.post("/generate-model", json={"trees": trees})
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]
        own_azurite.start()
        # The emulator was killed, so it may come back without the container; either way no scene was
        # committed (the commit is the last call, after every part; test_failure_mid_upload_commits_nothing).
        service = BlobServiceClient.from_connection_string(own_azurite.connection_string)
        listing = service.get_container_client(container)
        if listing.exists():
            assert [b.name for b in listing.list_blobs() if b.name.endswith(".obj")] == []
        builder.stop = False
        again = client.post("/generate-model", json={"trees": trees})
        assert again.status_code == 200 and httpx.get(again.json()["download_url"]).status_code == 200


def test_disk_full_is_503_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from fastapi.testclient import TestClient

    from serve_app.settings import Settings
    from serve_app.stages import LocalStages
    from tests.serve_app.conftest import local_app

    def no_space(fd: int) -> None:  # what the kernel says when the filesystem is full at flush time
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)  # the one durable write: treecore.files.atomic_writer
    folder = tmp_path / "models"
    settings = Settings(generated_models_dir=folder, large_model_threshold=5)
    stages = LocalStages(ModelBuilder(LocalModelStore(folder, "/download")), max_pixels=10**7)
    with TestClient(local_app(settings, stages)) as client:
        response = client.post("/generate-model", json={"trees": [{"x": 1.0, "y": 1.0, "diameter": 2.0}] * 10})
        assert response.status_code == 503, response.text
        assert "No space left on device" in response.json()["detail"]
        assert client.get("/health").status_code == 200
    assert list(folder.iterdir()) == []  # no half file, no temp file


_FULL_DISK_CHILD = r"""
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from serve_app.assembly import ModelBuilder
from serve_app.stages import LocalStages
from serve_app.settings import Settings
from serve_app.api import create_app
from serve_app.catalog import LocalCatalogView
from serve_app.storage import LocalModelStore

folder = Path(sys.argv[1]) / "models"
settings = Settings(generated_models_dir=folder, large_model_threshold=1)
stages = LocalStages(ModelBuilder(LocalModelStore(folder, "/download")), max_pixels=10**7)
big = [{"x": 3.0 * (i % 40), "y": 3.0 * (i // 40), "diameter": 2.0} for i in range(2000)]
with TestClient(create_app(settings, stages, LocalCatalogView(stages.builder.catalog))) as client:
    full = client.post("/generate-model", json={"trees": big})
    left = sorted(p.name for p in folder.iterdir())
    small = client.post("/generate-model", json={"trees": big[:3]})
    download = client.get(small.json()["download_url"]) if small.status_code == 200 else None
print(json.dumps({"full": [full.status_code, full.json()], "left": left, "small": small.status_code,
                  "download": download.status_code if download else None,
                  "health": client.get("/health").status_code}))
"""


def test_a_really_full_disk_is_503_and_leaves_nothing(tmp_path: Path) -> None:
    """A real filesystem that fills up: a 256 KiB tmpfs, mounted in a user and mount namespace of a child."""
    import json
    import shutil
    import subprocess
    import sys

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode != 0:
        reason = "user namespaces are not available here (unshare -rm), so no tmpfs can be mounted"
        if os.environ.get("CI"):  # CI's machines have them: a skip there would hide a test that never runs
            pytest.fail(reason)
        pytest.skip(reason)
    script = tmp_path / "child.py"
    script.write_text(_FULL_DISK_CHILD)
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        [unshare, "-rm", "sh", "-c", 'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" "$3" "$1"', "sh",
         str(mount), sys.executable, str(script)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    status, body = result["full"]
    assert status == 503 and "No space left on device" in body["detail"], body
    assert result["left"] == []  # no half-written scene and no temp file on the full disk
    assert result["small"] == 200 and result["download"] == 200  # space is back: the next save works
    assert result["health"] == 200


def test_a_failed_mtl_takes_its_obj_back_out(tmp_path: Path) -> None:
    from serve_app.storage import StorageError
    from treecore.types import Tree

    class NoMtl(LocalModelStore):
        def save(self, name: str, parts: Any, *, content_type: str) -> Any:
            if name.endswith(".mtl"):
                raise StorageError("the MTL could not be written")
            return super().save(name, parts, content_type=content_type)

    folder = tmp_path / "models"
    builder = ModelBuilder(NoMtl(folder, "/download"))
    trees = [Tree(i + 1, 3.0 * i, 2.0, 2.0, 0, 0, 0) for i in range(30)]
    with pytest.raises(StorageError, match="MTL"):
        builder.build(trees, "tree_lowpoly", store=True, name="scene")
    assert list(folder.iterdir()) == []  # no OBJ whose mtllib names a missing file


def test_downloads_are_read_through_the_local_store(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serve_app.settings import Settings
    from serve_app.stages import LocalStages
    from tests.serve_app.conftest import local_app

    folder = tmp_path / "models"
    store = LocalModelStore(folder, "/download")
    settings = Settings(generated_models_dir=folder)
    with TestClient(local_app(settings, LocalStages(ModelBuilder(store), max_pixels=10**7))) as client:
        body = b"v 0 0 0\n" * 300_000  # more than one chunk
        store.save("scene.obj", [body], content_type="model/obj")
        store.save("scene.zip", [b"PK"], content_type="application/zip")
        download = client.get("/download/scene.obj")
        assert download.status_code == 200 and download.content == body
        assert download.headers["content-length"] == str(len(body))
        assert download.headers["content-type"].startswith("model/obj")
        assert download.headers["content-disposition"] == 'attachment; filename="scene.obj"'
        assert client.get("/download/scene.zip").headers["content-type"] == "application/zip"
        (folder / ".scene.obj.abcd.part").write_bytes(b"half")
        (folder / "notes.txt").write_bytes(b"not a model")
        for absent in (".scene.obj.abcd.part", "notes.txt", "other.obj", "scene.mtl"):
            response = client.get(f"/download/{absent}")
            assert response.status_code == 404 and "no stored model" in response.json()["detail"], absent
