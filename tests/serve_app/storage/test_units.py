"""Storage logic without a server: block cutting, error messages, the user delegation key cache, make_store."""

from __future__ import annotations

import pickle
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import UserDelegationKey

from serve_app.settings import Settings
from serve_app.storage import (
    CLOCK_SKEW_S,
    DELEGATION_KEY_LIFETIME_S,
    MAX_BLOCK_BYTES,
    MIN_BLOCK_BYTES,
    RENEW_BEFORE_S,
    SAS_LIFETIME_S,
    AzureModelStore,
    LocalModelStore,
    StorageError,
    make_store,
    storage_error,
)
from serve_app.storage.azure import blocks

ACCOUNT_URL = "https://account.blob.core.example/"
FAKE_KEY = "a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleQ=="


def test_storage_error_pickles_with_its_message() -> None:
    error = pickle.loads(pickle.dumps(StorageError("Azure Blob Storage at x is unreachable: refused")))
    assert type(error) is StorageError and str(error) == "Azure Blob Storage at x is unreachable: refused"


def test_the_documented_limits() -> None:
    assert MAX_BLOCK_BYTES == 100 * 1024 * 1024 and SAS_LIFETIME_S == 3600
    assert RENEW_BEFORE_S >= SAS_LIFETIME_S + 600  # a SAS never outlives its key
    assert DELEGATION_KEY_LIFETIME_S - RENEW_BEFORE_S >= 3 * 3600  # the key is not fetched for every save


# ---- blocks(): the parts re-cut into blocks ----


@pytest.mark.parametrize("seed", range(30))
def test_blocks_keep_the_bytes_and_the_limits(seed: int) -> None:
    rng = random.Random(seed)
    parts = [rng.randbytes(rng.choice([0, 1, 5, 40, 99, 100, 101, 350])) for _ in range(rng.randint(0, 12))]
    min_bytes, max_bytes = rng.choice([(1, 1), (10, 100), (64, 64), (100, 10), (30, 1000)])
    out = list(blocks(iter(parts), min_bytes=min_bytes, max_bytes=max_bytes))
    assert b"".join(out) == b"".join(parts)
    assert all(0 < len(block) <= max_bytes for block in out)
    assert all(len(block) >= min(min_bytes, max_bytes) for block in out[:-1])


def test_blocks_split_a_part_over_the_largest_block() -> None:
    big = bytes(250 * 1024 * 1024)
    sizes = [len(b) for b in blocks([b"a" * 10, big, b"z" * 10], min_bytes=MIN_BLOCK_BYTES, max_bytes=MAX_BLOCK_BYTES)]
    assert sizes == [MAX_BLOCK_BYTES, MAX_BLOCK_BYTES, 50 * 1024 * 1024 + 10, 10]


def test_blocks_pass_a_fitting_part_through_without_a_copy() -> None:
    part = b"x" * 1000
    assert next(blocks([part], min_bytes=10, max_bytes=1000)) is part


# ---- save() against a stand-in client: the calls made ----


class FakeBlob:
    def __init__(self, service: FakeService, name: str) -> None:
        self.service, self.name = service, name
        self.url = f"{ACCOUNT_URL}{service.container}/{name}"

    def stage_block(self, block_id: str, data: bytes, length: int) -> None:
        assert len(data) == length
        self.service.calls.append(("stage_block", block_id, length))

    def commit_block_list(self, ids: list[str], content_settings: Any) -> None:
        self.service.calls.append(("commit_block_list", list(ids), content_settings))


class FakeService:
    """Stands in for BlobServiceClient (no Entra ID in Azurite's default mode; a clock we can move)."""

    url = ACCOUNT_URL
    account_name = "account"
    container = "generated-models"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.key_requests: list[tuple[datetime, datetime]] = []

    def create_container(self, name: str) -> None:
        self.calls.append(("create_container", name))

    def get_blob_client(self, container: str, name: str) -> FakeBlob:
        return FakeBlob(self, name)

    def get_user_delegation_key(self, start: datetime, expiry: datetime) -> UserDelegationKey:
        self.key_requests.append((start, expiry))
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "oid", "tid"
        key.signed_start, key.signed_expiry = f"{start:%Y-%m-%dT%H:%M:%SZ}", f"{expiry:%Y-%m-%dT%H:%M:%SZ}"
        key.signed_service, key.signed_version, key.value = "b", "2025-07-05", FAKE_KEY
        return key


def test_save_stages_equal_length_ids_and_commits_once_with_the_headers() -> None:
    service = FakeService()
    store = AzureModelStore(service, "generated-models", account_key=FAKE_KEY, block_bytes=100, min_block_bytes=40)
    stored = store.save("scene.obj", [b"a" * 30, b"b" * 250, b"c" * 5], content_type="model/obj")
    assert stored.size_bytes == 285 and stored.expires_in_s == SAS_LIFETIME_S
    assert service.calls[0] == ("create_container", "generated-models")
    staged = [call for call in service.calls if call[0] == "stage_block"]
    assert [call[2] for call in staged] == [100, 100, 80, 5]
    assert len({len(call[1]) for call in staged}) == 1 and len({call[1] for call in staged}) == 4
    (commit,) = [call for call in service.calls if call[0] == "commit_block_list"]
    assert commit[1] == [call[1] for call in staged] and service.calls[-1] is commit
    assert commit[2].content_type == "model/obj"
    assert commit[2].content_disposition == 'attachment; filename="scene.obj"'
    store.save("other.obj", [b"x"], content_type="model/obj")
    assert [call[0] for call in service.calls].count("create_container") == 1  # once, at first use
    next_ids = [call[1] for call in service.calls if call[0] == "stage_block"][4:]
    assert not set(next_ids) & {call[1] for call in staged}  # a fresh prefix per save


def test_sas_of_the_account_key_is_read_only_for_one_blob_for_an_hour() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    store = AzureModelStore(FakeService(), "generated-models", account_key=FAKE_KEY, clock=lambda: now)
    url = store.save("scene.obj", [b"x"], content_type="model/obj").url
    base, _, token = url.partition("?")
    query = parse_qs(token)
    assert base == f"{ACCOUNT_URL}generated-models/scene.obj"
    assert (query["sp"], query["sr"], query["spr"]) == (["r"], ["b"], ["https"])
    assert query["st"] == [f"{now - timedelta(seconds=CLOCK_SKEW_S):%Y-%m-%dT%H:%M:%SZ}"]
    assert query["se"] == [f"{now + timedelta(seconds=SAS_LIFETIME_S):%Y-%m-%dT%H:%M:%SZ}"]
    assert FAKE_KEY not in url and "skoid" not in url


def test_a_parts_error_commits_nothing() -> None:
    service = FakeService()
    store = AzureModelStore(service, "generated-models", account_key=FAKE_KEY, block_bytes=10, min_block_bytes=10)

    def parts() -> Any:
        yield b"x" * 35
        raise KeyError("bug")

    with pytest.raises(KeyError):
        store.save("scene.obj", parts(), content_type="model/obj")
    assert [call[0] for call in service.calls].count("stage_block") == 3
    assert "commit_block_list" not in [call[0] for call in service.calls]


# ---- the user delegation key: cached, renewed while every SAS keeps its full hour ----


def test_delegation_key_is_cached_and_renewed_before_a_sas_could_outlive_it() -> None:
    now = [datetime(2026, 11, 25, 12, 0, tzinfo=UTC)]
    service = FakeService()
    store = AzureModelStore(service, "generated-models", account_key=None, clock=lambda: now[0])
    first = store.delegation_key()
    assert service.key_requests == [(now[0] - timedelta(seconds=CLOCK_SKEW_S), now[0] + timedelta(hours=7))]
    expiry = service.key_requests[0][1]
    now[0] = expiry - timedelta(seconds=RENEW_BEFORE_S)
    assert store.delegation_key() is first and len(service.key_requests) == 1  # just enough left: cached
    now[0] += timedelta(seconds=1)
    assert store.delegation_key() is not first and len(service.key_requests) == 2  # renewed


def test_every_user_delegation_sas_ends_before_its_key() -> None:
    now = [datetime(2026, 11, 25, 12, 0, tzinfo=UTC)]
    service = FakeService()
    store = AzureModelStore(service, "generated-models", account_key=None, clock=lambda: now[0])
    for _ in range(24 * 6):  # a day, every 10 minutes
        query = parse_qs(store.sas_url("scene.obj").partition("?")[2])
        sas_end = datetime.fromisoformat(query["se"][0].replace("Z", "+00:00"))
        key_end = datetime.fromisoformat(query["ske"][0].replace("Z", "+00:00"))
        assert sas_end - now[0] == timedelta(seconds=SAS_LIFETIME_S)
        assert key_end - sas_end >= timedelta(minutes=10)
        assert query["skoid"] == ["oid"] and query["sp"] == ["r"]
        now[0] += timedelta(minutes=10)
    assert 4 <= len(service.key_requests) <= 6  # about every 5 h 50 min, not per SAS


def test_a_failing_delegation_key_request_is_a_storage_error() -> None:
    class Refusing(FakeService):
        def get_user_delegation_key(self, start: datetime, expiry: datetime) -> UserDelegationKey:
            raise ClientAuthenticationError(message="AADSTS700016: no such application")

    service = Refusing()
    store = AzureModelStore(service, "generated-models", account_key=None)
    with pytest.raises(StorageError, match="refused the credentials: no token \\(AADSTS700016"):
        store.save("scene.obj", [b"x"], content_type="model/obj")
    assert [call[0] for call in service.calls] == ["create_container"]  # asked before any block is staged


# ---- storage_error(): which failure, never a secret ----


def http_error(status: int, code: str) -> HttpResponseError:
    error = HttpResponseError(message=f"{code} sig=SECRETSIG")
    error.status_code, error.error_code = status, code
    return error


UNREACHABLE = "is unreachable: "
REFUSED = "refused the credentials"
CONTAINER = "container 'models' at .* cannot be used"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            ServiceRequestError("<urllib3 object at 0x7f00>: [Errno 111] Connection refused sig=SECRETSIG"),
            UNREACHABLE + r"\[Errno 111\] Connection refused sig=<redacted>$",
        ),
        (ServiceResponseError("Connection aborted. AccountKey=SECRETKEY"), UNREACHABLE + "Connection aborted"),
        (ClientAuthenticationError(message="token request failed"), REFUSED + ": no token"),
        (
            http_error(403, "AuthorizationPermissionMismatch"),
            REFUSED + r" or is not authorised \(HTTP 403 AuthorizationPermissionMismatch\)",
        ),
        (http_error(401, "InvalidAuthenticationInfo"), REFUSED),
        (http_error(409, "ContainerBeingDeleted"), CONTAINER + r" \(HTTP 409 ContainerBeingDeleted\)"),
        (http_error(400, "InvalidResourceName"), CONTAINER),
        (http_error(503, "ServerBusy"), r"failed \(HTTP 503 ServerBusy\)$"),
        (ResourceNotFoundError(message="gone"), "failed: ResourceNotFoundError$"),
    ],
)
def test_storage_errors_say_which_failure(exc: Exception, expected: str) -> None:
    message = str(storage_error(exc, ACCOUNT_URL, "models"))
    assert message.startswith(("Azure Blob Storage at https://account", "Azure Blob container 'models' at https"))
    assert re.search(expected, message), message
    assert "SECRET" not in message


# ---- make_store(settings): a connection string wins, then an account URL, else the local folder ----

CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=https;AccountName=account;AccountKey={FAKE_KEY};EndpointSuffix=core.example"
)


def test_make_store_prefers_the_connection_string(tmp_path: Path) -> None:
    settings = Settings(
        azure_connection_string=CONNECTION_STRING,
        azure_account_url="https://other.blob.core.example",
        generated_models_dir=tmp_path,
    )
    store = make_store(settings)
    assert isinstance(store, AzureModelStore)
    assert store.describe() == "Azure Blob container generated-models at https://account.blob.core.example/"
    assert FAKE_KEY not in store.describe() + repr(store)


def test_make_store_with_an_account_url_uses_entra_id(tmp_path: Path) -> None:
    settings = Settings(azure_account_url="https://account.blob.core.example", container_generated_models="scenes")
    store = make_store(settings)
    assert isinstance(store, AzureModelStore) and store._account_key is None and store.container == "scenes"
    assert type(store.service.credential).__name__ == "DefaultAzureCredential"


def test_make_store_falls_back_to_the_local_folder_and_says_it_is_one_node_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(generated_models_dir=tmp_path, generated_models_retention_s=60)
    with caplog.at_level("WARNING", logger="serve_app"):
        store = make_store(settings, url_prefix="/d")
    assert isinstance(store, LocalModelStore) and store.root == tmp_path and store.retention_s == 60
    assert store.url_prefix == "/d"
    assert "this node only" in caplog.text and "AZURE_STORAGE_ACCOUNT_URL" in caplog.text


def test_make_store_does_not_warn_about_azure(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="serve_app"):
        make_store(Settings(azure_connection_string=CONNECTION_STRING))
    assert caplog.text == ""


@pytest.mark.parametrize(
    "connection_string",
    [
        "AccountName=account;AccountKey=s3cr3t-but-broken",
        "BlobEndpoint=https://account.blob.core.example;SharedAccessSignature=sv=2024&sig=s3cr3t",
    ],
)
def test_unusable_connection_strings_are_refused_without_echoing_them(connection_string: str) -> None:
    with pytest.raises(ValueError, match="connection string") as caught:
        AzureModelStore.from_connection_string(connection_string, "generated-models")
    assert "s3cr3t" not in str(caught.value) and caught.value.__cause__ is None
