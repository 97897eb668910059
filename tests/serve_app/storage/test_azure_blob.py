"""AzureModelStore against a real Azurite: uploads, SAS URLs, atomicity, outages, credentials, containers."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from serve_app.errors import status_for
from serve_app.storage import SAS_LIFETIME_S, AzureModelStore, ModelTooLargeError, StorageError, blob_models
from tests.serve_app.azurite import ACCOUNT_KEY, Azurite
from tests.serve_app.storage.conftest import FakeEntraCredential

pytestmark = pytest.mark.azurite


class Boom(RuntimeError):
    """Raised by a parts iterable half-way (a bug mid-generation)."""


def new_container() -> str:
    return f"models-{uuid.uuid4().hex[:12]}"


def admin(server: Azurite) -> BlobServiceClient:
    """A plain SDK client of the emulator, to look behind the store's back."""
    return BlobServiceClient.from_connection_string(server.connection_string)


def sas_times(url: str) -> tuple[datetime, datetime]:
    query = parse_qs(urlsplit(url).query)
    start, end = (datetime.fromisoformat(query[field][0].replace("Z", "+00:00")) for field in ("st", "se"))
    return start, end


def test_multi_part_upload_downloads_whole_with_its_headers(azurite: Azurite) -> None:
    container = new_container()
    store = AzureModelStore.from_connection_string(azurite.connection_string, container)
    store.block_bytes, store.min_block_bytes = 4096, 1024
    parts = [b"# header\n", b"v 1 2 3\n" * 2000, b"f 1 2 3\n" * 10]  # the middle one is 16,000 bytes: 4 blocks
    stored = store.save("scene.obj", iter(parts), content_type="model/obj")
    assert (stored.name, stored.size_bytes, stored.expires_in_s) == ("scene.obj", 16089, SAS_LIFETIME_S)
    with httpx.Client() as fresh:  # nothing but the URL
        response = fresh.get(stored.url)
    assert response.status_code == 200 and response.content == b"".join(parts)
    assert response.headers["content-type"] == "model/obj"
    assert response.headers["content-disposition"] == 'attachment; filename="scene.obj"'
    committed, uncommitted = admin(azurite).get_blob_client(container, "scene.obj").get_block_list("all")
    assert [block.size for block in committed] == [4096, 4096, 4096, 3721, 80] and not uncommitted
    assert len({len(block.id) for block in committed}) == 1


def test_sas_is_read_only_names_one_blob_and_expires_in_an_hour(azurite: Azurite) -> None:
    store = AzureModelStore.from_connection_string(azurite.connection_string, new_container())
    stored = store.save("a.obj", [b"a"], content_type="model/obj")
    store.save("b.obj", [b"b"], content_type="model/obj")
    query = parse_qs(urlsplit(stored.url).query)
    assert (query["sp"], query["sr"]) == (["r"], ["b"])
    start, end = sas_times(stored.url)
    now = datetime.now(UTC)
    assert abs((end - now).total_seconds() - SAS_LIFETIME_S) < 60
    assert timedelta(minutes=4) < now - start < timedelta(minutes=6)  # clock skew allowance
    assert httpx.put(stored.url, content=b"overwrite", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 403
    assert httpx.delete(stored.url).status_code == 403
    assert httpx.get(stored.url.replace("/a.obj?", "/b.obj?")).status_code == 403  # signed for a.obj only
    assert httpx.get(stored.url.split("?")[0]).status_code in (403, 404)  # no anonymous access
    assert httpx.get(stored.url).content == b"a"  # still there, unchanged
    assert ACCOUNT_KEY not in stored.url


def test_a_failing_parts_iterable_commits_nothing(azurite: Azurite) -> None:
    container = new_container()
    store = AzureModelStore.from_connection_string(azurite.connection_string, container)
    store.block_bytes = store.min_block_bytes = 1000

    def parts() -> Iterator[bytes]:
        yield b"v 0 0 0\n" * 1000  # staged as 8 blocks before the failure
        raise Boom("the generator failed half-way")

    with pytest.raises(Boom):
        store.save("half.obj", parts(), content_type="model/obj")
    blobs = admin(azurite).get_container_client(container)
    assert list(blobs.list_blobs()) == []
    with pytest.raises(ResourceNotFoundError):
        blobs.get_blob_client("half.obj").get_blob_properties()


def test_a_failed_overwrite_keeps_the_previous_blob(azurite: Azurite) -> None:
    store = AzureModelStore.from_connection_string(azurite.connection_string, new_container())
    store.block_bytes = store.min_block_bytes = 100
    first = store.save("scene.obj", [b"first version"], content_type="model/obj")

    def parts() -> Iterator[bytes]:
        yield b"x" * 1000
        raise Boom("half-way")

    with pytest.raises(Boom):
        store.save("scene.obj", parts(), content_type="model/obj")
    assert httpx.get(first.url).content == b"first version"


def test_concurrent_saves_of_one_name_never_mix_blocks(azurite: Azurite) -> None:
    """Each save stages its own block ids; the first commit discards the other's uncommitted blocks."""
    store = AzureModelStore.from_connection_string(azurite.connection_string, new_container())
    store.block_bytes = store.min_block_bytes = 1000
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def parts(letter: bytes) -> Iterator[bytes]:
        for _ in range(5):
            barrier.wait(timeout=10)  # both uploads stage their blocks in lockstep
            yield letter * 1000

    def save(letter: bytes) -> None:
        try:
            results.append(store.save("same.obj", parts(letter), content_type="model/obj"))
        except StorageError as exc:
            results.append(exc)

    threads = [threading.Thread(target=save, args=(letter,)) for letter in (b"A", b"B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stored = [result for result in results if not isinstance(result, StorageError)]
    refused = [str(result) for result in results if isinstance(result, StorageError)]
    assert len(results) == 2 and stored
    assert all("HTTP 400 InvalidBlockList" in message for message in refused)
    assert httpx.get(stored[0].url).content in (b"A" * 5000, b"B" * 5000)


def test_the_container_is_created_at_first_use_and_again_if_deleted(azurite: Azurite) -> None:
    container = new_container()
    blobs = admin(azurite).get_container_client(container)
    store = AzureModelStore.from_connection_string(azurite.connection_string, container)
    assert not blobs.exists()
    store.save("one.obj", [b"1"], content_type="model/obj")
    assert blobs.exists() and blobs.get_container_properties().public_access is None  # private
    blobs.delete_container()
    stored = store.save("two.obj", [b"2"], content_type="model/obj")
    assert httpx.get(stored.url).content == b"2"
    store.save("three.obj", [b"3"], content_type="model/obj")  # exists now: created once more, not per save


def test_an_existing_container_is_used_as_it_is(azurite: Azurite) -> None:
    container = new_container()
    admin(azurite).create_container(container, metadata={"owner": "ops"})
    AzureModelStore.from_connection_string(azurite.connection_string, container).save(
        "x.obj", [b"x"], content_type="model/obj"
    )
    assert admin(azurite).get_container_client(container).get_container_properties().metadata == {"owner": "ops"}


def test_an_invalid_container_is_a_container_error(azurite: Azurite) -> None:
    store = AzureModelStore.from_connection_string(azurite.connection_string, "Not_A_Container_Name")
    with pytest.raises(StorageError, match="container 'Not_A_Container_Name' at .* cannot be used"):
        store.save("x.obj", [b"x"], content_type="model/obj")


def test_a_wrong_key_is_a_credentials_error_without_the_key(azurite: Azurite) -> None:
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    store = AzureModelStore.from_connection_string(
        azurite.connection_string.replace(ACCOUNT_KEY, wrong_key), new_container()
    )
    started = time.monotonic()
    with pytest.raises(StorageError, match="refused the credentials or is not authorised") as caught:
        store.save("x.obj", [b"x"], content_type="model/obj")
    assert time.monotonic() - started < 5  # 403 is not retried
    message = str(caught.value)
    assert wrong_key not in message and ACCOUNT_KEY not in message and "AccountKey" not in message
    assert wrong_key not in store.describe() and ACCOUNT_KEY not in repr(store)


def test_azurite_stopped_is_unreachable_within_seconds_then_recovers(own_azurite: Azurite) -> None:
    store = AzureModelStore.from_connection_string(own_azurite.connection_string, new_container())
    store.save("first.obj", [b"1"], content_type="model/obj")
    own_azurite.stop()
    started = time.monotonic()
    with pytest.raises(
        StorageError, match=f"Azure Blob Storage at http://127.0.0.1:{own_azurite.port}/.* is unreachable"
    ):
        store.save("second.obj", [b"2"], content_type="model/obj")
    assert time.monotonic() - started < 8
    own_azurite.start()  # in memory: it comes back empty, without the container
    stored = store.save("third.obj", [b"3"], content_type="model/obj")
    assert httpx.get(stored.url).content == b"3"


def test_azurite_stopped_mid_upload_commits_nothing(own_azurite: Azurite, tmp_path: Any) -> None:
    store = AzureModelStore.from_connection_string(own_azurite.connection_string, new_container())
    store.block_bytes = store.min_block_bytes = 1000

    def parts() -> Iterator[bytes]:
        yield b"a" * 3000
        own_azurite.stop()
        yield b"b" * 3000

    with pytest.raises(StorageError, match="unreachable"):
        store.save("scene.obj", parts(), content_type="model/obj")
    own_azurite.start()
    assert [c.name for c in admin(own_azurite).list_containers()] == []  # in memory: nothing at all survives


def test_read_text_of_base_models(azurite: Azurite) -> None:
    models = new_container()
    store = AzureModelStore.from_connection_string(azurite.connection_string, new_container())
    lookup = blob_models(store, models)
    assert store.read_text(models, "custom.obj") is None and lookup("custom") is None  # no container yet
    service = admin(azurite)
    service.create_container(models)
    service.get_blob_client(models, "custom.obj").upload_blob(b"mtllib custom.mtl\nv 0 0 0\n")
    assert lookup("custom") == ("mtllib custom.mtl\nv 0 0 0\n", None)
    service.get_blob_client(models, "custom.mtl").upload_blob(b"newmtl leaf\n")
    assert lookup("custom") == ("mtllib custom.mtl\nv 0 0 0\n", "newmtl leaf\n")
    assert store.read_text(models, "absent.obj") is None
    with pytest.raises(StorageError, match="more than 4"):
        store.read_text(models, "custom.obj", max_bytes=4)
    with pytest.raises(ValueError):
        store.read_text(models, "../custom.obj")


def test_list_and_read_bytes_of_base_models(azurite: Azurite) -> None:
    models = new_container()
    store = AzureModelStore.from_connection_string(azurite.connection_string, new_container())
    found = blob_models(store, models)
    assert store.list_names(models) == [] and found.names() == []  # no container yet: nothing, not an error
    admin(azurite).create_container(models)
    binary = bytes(range(256))  # read as stored: no decoding
    for name, data in (("b.obj", binary), ("a.mtl", b"newmtl x\n"), ("c/d.obj", b"v 0 0 0\n")):
        admin(azurite).get_blob_client(models, name).upload_blob(data)
    assert found.names() == ["a.mtl", "b.obj", "c/d.obj"] and store.list_names(models, limit=2) == ["a.mtl", "b.obj"]
    assert found.read("b.obj") == binary and found.read("absent.obj") is None
    with pytest.raises(ModelTooLargeError, match="has 256 bytes, more than 255"):
        store.read_bytes(models, "b.obj", max_bytes=255)
    assert status_for(ModelTooLargeError("x")) == 413 and status_for(StorageError("x")) == 503


def test_read_text_with_azurite_stopped_is_unreachable(own_azurite: Azurite) -> None:
    store = AzureModelStore.from_connection_string(own_azurite.connection_string, new_container())
    own_azurite.stop()
    with pytest.raises(StorageError, match="unreachable"):
        store.read_text("tree-models", "custom.obj")
    with pytest.raises(StorageError, match="unreachable"):
        store.list_names("tree-models")


# ---- Entra ID: Azurite with `--oauth basic` over HTTPS issues user delegation keys ----


def test_user_delegation_sas_from_a_token_credential(oauth_azurite: Azurite) -> None:
    assert oauth_azurite.tls is not None
    cert = str(oauth_azurite.tls[0])
    credential = FakeEntraCredential()
    store = AzureModelStore.from_account_url(
        oauth_azurite.account_url, new_container(), credential=credential, connection_verify=cert
    )
    assert store._account_key is None
    requests: list[Any] = []
    fetch = store.service.get_user_delegation_key
    store.service.get_user_delegation_key = lambda *args, **kwargs: requests.append(args) or fetch(*args, **kwargs)
    first = store.save("a.obj", [b"hello ", b"world"], content_type="model/obj")
    second = store.save("b.obj", [b"again"], content_type="model/obj")
    assert len(requests) == 1 and credential.calls >= 1  # one key for both SAS
    query = parse_qs(urlsplit(first.url).query)
    assert query["skoid"] == [FakeEntraCredential.object_id] and query["sktid"] == [FakeEntraCredential.tenant]
    assert (query["sp"], query["spr"]) == (["r"], ["https"])
    key_end = datetime.fromisoformat(query["ske"][0].replace("Z", "+00:00"))
    assert key_end - sas_times(first.url)[1] >= timedelta(minutes=10)
    with httpx.Client(verify=ssl.create_default_context(cafile=cert)) as fresh:
        response = fresh.get(first.url)
        assert response.status_code == 200 and response.content == b"hello world"
        assert response.headers["content-disposition"] == 'attachment; filename="a.obj"'
        assert fresh.get(second.url).content == b"again"
        assert fresh.put(first.url, content=b"x", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 403
        assert fresh.get(first.url.replace("/a.obj?", "/b.obj?")).status_code == 403
