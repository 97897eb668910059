"""Azure Blob model storage: block blobs committed once, read-only SAS URLs of one blob for an hour.

Two ways in: a connection string with an account key (the key signs the SAS; Azurite in tests), or an account
URL with Entra ID (DefaultAzureCredential: workload identity on AKS; the SAS is signed with a user delegation
key, cached and renewed before it runs out). Downloads are the SAS URLs (from Blob Storage, not through us).
"""

from __future__ import annotations

import base64
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    LinearRetry,
    generate_blob_sas,
)

from serve_app.storage.types import Download, ModelTooLargeError, NotStoredError, StorageError, StoredModel, check_name

#: Read-only SAS lifetime, seconds.
SAS_LIFETIME_S = 3600
#: SAS and delegation keys start this long in the past, so a server whose clock is ahead accepts them.
CLOCK_SKEW_S = 5 * 60
#: Largest staged block: a bigger part is split (Azure allows 4000 MiB; smaller blocks retry faster).
MAX_BLOCK_BYTES = 100 * 1024 * 1024
#: Smaller parts are joined into blocks of at least this size (a blob holds at most 50,000 blocks, and
#: every block is one request).
MIN_BLOCK_BYTES = 4 * 1024 * 1024
#: A user delegation key is requested for this long ...
DELEGATION_KEY_LIFETIME_S = 7 * 3600
#: ... and requested again when less than this remains: a SAS cannot outlive the key that signed it, so
#: every SAS we sign keeps its full SAS_LIFETIME_S, with 10 minutes to spare.
RENEW_BEFORE_S = SAS_LIFETIME_S + 10 * 60
#: Client-side network settings: a stopped storage fails in about 3 s (3 attempts), an unreachable host in
#: about 30 s (3 connect timeouts), not minutes. (The SDK's default retry waits 15 s, then 18 s, ...)
CONNECTION_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
RETRY_TOTAL = 2
RETRY_BACKOFF_S = 1.5
#: Largest base model file (OBJ or MTL) read from the tree-models container; larger ones are refused.
MAX_BASE_MODEL_BYTES = 64 * 1024 * 1024
#: Blob names read when listing a container: one listing request (a page holds up to 5000).
MAX_LISTED_BLOBS = 5000
#: Error codes that are about the container rather than the account or the credentials.
_CONTAINER_CODES = frozenset(
    {"ContainerNotFound", "ContainerBeingDeleted", "ContainerDisabled", "InvalidResourceName", "OutOfRangeInput"}
)
_SECRETS = re.compile(r"(?i)(sig|accountkey|sharedaccesssignature)=[^&;\s'\"]+")


def client_options() -> dict[str, Any]:
    """Keyword arguments for BlobServiceClient: a short connect timeout, two quick retries.

    Returns:
        connection_timeout, read_timeout and retry_policy.
    """
    # The SDK annotates backoff and jitter as int; they are used as floats (random.uniform).
    retry = LinearRetry(backoff=RETRY_BACKOFF_S, retry_total=RETRY_TOTAL, random_jitter_range=0.5)  # type: ignore[arg-type]
    return {"connection_timeout": CONNECTION_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S, "retry_policy": retry}


def _without_query(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query="", fragment=""))


def _reason(exc: BaseException) -> str:
    # "<urllib3.connection.HTTPConnection object at 0x7f..>: Failed to establish ...: [Errno 111] Connection
    # refused" -> "Failed to establish ...: [Errno 111] Connection refused"; never a signature or a key.
    text = re.sub(r"<[^>]* object at 0x[0-9a-f]+>:?\s*", "", str(exc).splitlines()[0] if str(exc) else "")
    text = _SECRETS.sub(r"\1=<redacted>", text).strip()
    if len(text) > 200:
        text = text[:197] + "..."
    return text or type(exc).__name__


def storage_error(exc: Exception, where: str, container: str | None = None) -> StorageError:
    """Turn an Azure SDK error into a StorageError that says which failure it was (never a secret).

    Args:
        exc: the SDK's (or azure.identity's) exception.
        where: the account URL.
        container: the container the call was about, if any.

    Returns:
        The StorageError to raise.
    """
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # StorageErrorCode members -> "AuthenticationFailed", ...
    detail = f" (HTTP {status}{f' {code}' if code else ''})" if status else ""
    if isinstance(exc, ClientAuthenticationError) and status is None:  # no token: azure.identity failed
        return StorageError(f"Azure Blob Storage at {where} refused the credentials: no token ({_reason(exc)})")
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return StorageError(
            f"Azure Blob Storage at {where} refused the credentials or is not authorised{detail}"
            " (check the account key, or the identity's role on the container)"
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return StorageError(f"Azure Blob Storage at {where} is unreachable: {_reason(exc)}")
    if code in _CONTAINER_CODES and container is not None:
        return StorageError(f"Azure Blob container {container!r} at {where} cannot be used{detail}")
    if isinstance(exc, HttpResponseError) and status:
        return StorageError(f"Azure Blob Storage at {where} failed{detail}")
    return StorageError(f"Azure Blob Storage at {where} failed: {type(exc).__name__}")


def blocks(parts: Iterable[bytes], *, min_bytes: int, max_bytes: int) -> Iterator[bytes]:
    """The concatenated parts re-cut into blocks: none larger than max_bytes, all but the last >= min_bytes.

    Args:
        parts: byte parts in order (an error producing them propagates).
        min_bytes: smaller parts are joined up to this size (capped at max_bytes).
        max_bytes: larger parts are split.

    Returns:
        An iterator of blocks (empty parts skipped; nothing at all for no bytes).
    """
    min_bytes = max(1, min(min_bytes, max_bytes))
    pending = bytearray()
    for part in parts:
        view = memoryview(part)
        start = 0
        if pending:
            start = min(len(view), max_bytes - len(pending))
            pending += view[:start]
            if len(pending) < min_bytes:
                continue  # the part is used up and the block is not full yet
            yield bytes(pending)
            pending = bytearray()
        while len(view) - start >= min_bytes:
            end = min(start + max_bytes, len(view))
            yield part if (start, end) == (0, len(view)) and isinstance(part, bytes) else bytes(view[start:end])
            start = end
        pending += view[start:]
    if pending:
        yield bytes(pending)


class AzureModelStore:
    """One container of a storage account: block blobs committed once, read-only SAS URLs for an hour."""

    def __init__(
        self,
        service: Any,
        container: str,
        *,
        account_key: str | None,
        block_bytes: int = MAX_BLOCK_BYTES,
        min_block_bytes: int = MIN_BLOCK_BYTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """A store over a BlobServiceClient (usually made by from_connection_string or from_account_url).

        Args:
            service: azure.storage.blob.BlobServiceClient (or a stand-in with the same methods).
            container: container name (created at first use when missing).
            account_key: signs SAS URLs; None: a user delegation key does (Entra ID credential).
            block_bytes: largest staged block.
            min_block_bytes: smaller parts are joined into blocks of at least this size.
            clock: now, in UTC (tests move it).
        """
        self.service, self.container, self.clock = service, container, clock
        self.block_bytes, self.min_block_bytes = block_bytes, min_block_bytes
        self.account_url = _without_query(str(service.url))
        self._account_key = account_key
        self._delegation_key: Any = None
        self._delegation_expiry: datetime | None = None
        self._lock = threading.Lock()
        self._container_ready = False

    def __repr__(self) -> str:
        return f"AzureModelStore({self.describe()})"

    @classmethod
    def from_connection_string(cls, connection_string: str, container: str, **client_kwargs: Any) -> AzureModelStore:
        """A store whose SAS URLs are signed with the account key of a connection string.

        Args:
            connection_string: "...;AccountName=...;AccountKey=...;..." (Azurite in tests).
            container: container name.
            **client_kwargs: extra BlobServiceClient options (override client_options()).

        Returns:
            The store (nothing contacted yet).

        Raises:
            ValueError: malformed, without an AccountKey, or a key that is not base64 (the message never
                contains the string).
        """
        try:
            service = BlobServiceClient.from_connection_string(connection_string, **client_options(), **client_kwargs)
        except ValueError:
            raise ValueError("the Azure Storage connection string is malformed") from None
        key = getattr(service.credential, "account_key", None)
        if not key:
            raise ValueError("the Azure Storage connection string has no AccountKey (needed to sign download URLs)")
        try:
            base64.b64decode(key, validate=True)
        except ValueError:
            raise ValueError("the AccountKey of the Azure Storage connection string is not base64") from None
        return cls(service, container, account_key=key)

    @classmethod
    def from_account_url(
        cls, account_url: str, container: str, credential: Any = None, **client_kwargs: Any
    ) -> AzureModelStore:
        """A store with Entra ID auth whose SAS URLs are signed with a user delegation key.

        Args:
            account_url: https://<account>.blob.core.windows.net (no SAS in it).
            container: container name.
            credential: a TokenCredential; None: azure.identity.DefaultAzureCredential (workload identity).
            **client_kwargs: extra BlobServiceClient options (override client_options()).

        Returns:
            The store (nothing contacted yet).
        """
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        options = {**client_options(), **client_kwargs}
        return cls(
            BlobServiceClient(_without_query(account_url), credential=credential, **options),
            container,
            account_key=None,
        )

    def describe(self) -> str:
        """Where models go (never a key).

        Returns:
            "Azure Blob container <container> at <account url>".
        """
        return f"Azure Blob container {self.container} at {self.account_url}"

    def _error(self, exc: Exception) -> StorageError:
        return storage_error(exc, self.account_url, self.container)

    def _ensure_container(self) -> None:
        if self._container_ready:
            return
        try:
            self.service.create_container(self.container)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            # Allowed to write blobs but not to create containers: the container may well exist, and the
            # first staged block says precisely what is wrong if it does not.
            if exc.status_code != 403:
                raise
        self._container_ready = True

    def _stage(self, blob: Any, block_id: str, chunk: bytes) -> None:
        try:
            blob.stage_block(block_id, chunk, length=len(chunk))
        except ResourceNotFoundError as exc:
            # The container went away since we created it (deleted by someone, or a fresh emulator): again.
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                raise
            self._container_ready = False
            self._ensure_container()
            blob.stage_block(block_id, chunk, length=len(chunk))

    def delegation_key(self) -> Any:
        """The user delegation key, requested again when less than RENEW_BEFORE_S of it remains.

        Returns:
            azure.storage.blob.UserDelegationKey.

        Raises:
            azure.core.exceptions.AzureError: the request failed (save() turns it into a StorageError).
        """
        with self._lock:
            now = self.clock()
            if self._delegation_expiry is None or self._delegation_expiry - now < timedelta(seconds=RENEW_BEFORE_S):
                start = now - timedelta(seconds=CLOCK_SKEW_S)
                expiry = now + timedelta(seconds=DELEGATION_KEY_LIFETIME_S)
                self._delegation_key = self.service.get_user_delegation_key(start, expiry)
                self._delegation_expiry = expiry
            return self._delegation_key

    def sas_url(self, name: str) -> str:
        """A read-only URL of one blob, valid for SAS_LIFETIME_S (from CLOCK_SKEW_S ago).

        Args:
            name: blob name.

        Returns:
            <account url>/<container>/<name>?<sas> (HTTPS-only when the account URL is HTTPS).

        Raises:
            azure.core.exceptions.AzureError: the user delegation key could not be had.
        """
        now = self.clock()
        signer: dict[str, Any] = (
            {"account_key": self._account_key} if self._account_key else {"user_delegation_key": self.delegation_key()}
        )
        token = generate_blob_sas(
            account_name=self.service.account_name,
            container_name=self.container,
            blob_name=name,
            permission=BlobSasPermissions(read=True),
            start=now - timedelta(seconds=CLOCK_SKEW_S),
            expiry=now + timedelta(seconds=SAS_LIFETIME_S),
            protocol="https" if self.account_url.startswith("https:") else None,
            **signer,
        )
        return f"{_without_query(self.service.get_blob_client(self.container, name).url)}?{token}"

    def save(self, name: str, parts: Iterable[bytes], *, content_type: str) -> StoredModel:
        """Stage the parts as blocks of one block blob, commit once, return a read-only SAS URL.

        Args:
            name: blob name (see check_name).
            parts: byte parts in order. If producing them raises, nothing is committed (staged blocks are
                never visible and the service discards them) and the error propagates unchanged.
            content_type: the blob's Content-Type (downloads are sent as attachments named `name`).

        Returns:
            The stored model with its SAS URL, valid for SAS_LIFETIME_S.

        Raises:
            StorageError: unreachable, credentials refused, container problem, or another storage failure.
            ValueError: not a plain file name.
        """
        check_name(name)
        # Block ids must all have the same length within a blob; the SDK base64-encodes them. A random
        # prefix per save keeps two concurrent saves of one name from committing each other's blocks.
        prefix = uuid.uuid4().hex[:16]
        try:
            self._ensure_container()
            if not self._account_key:
                self.delegation_key()  # before any block: a refused key leaves nothing committed
            blob = self.service.get_blob_client(self.container, name)
            ids, size = [], 0
            for index, chunk in enumerate(blocks(parts, min_bytes=self.min_block_bytes, max_bytes=self.block_bytes)):
                block_id = f"{prefix}-{index:08d}"
                self._stage(blob, block_id, chunk)
                ids.append(block_id)
                size += len(chunk)
            settings = ContentSettings(content_type=content_type, content_disposition=f'attachment; filename="{name}"')
            blob.commit_block_list(ids, content_settings=settings)
            url = self.sas_url(name)
        except AzureError as exc:
            raise self._error(exc) from None
        return StoredModel(name, url, size, SAS_LIFETIME_S)

    def delete(self, name: str) -> None:
        """Delete a committed blob of the container; a missing one is not an error.

        Raises:
            StorageError: unreachable, credentials refused, or another storage failure.
            ValueError: not a plain file name.
        """
        check_name(name)
        try:
            self.service.get_blob_client(self.container, name).delete_blob()
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise self._error(exc) from None

    def open_download(self, name: str) -> Download:
        """Not served by the service: a stored model's download URL is the SAS URL of its blob.

        Clients read it from Blob Storage directly; a large model never passes through the Serve proxy.

        Raises:
            NotStoredError: always.
        """
        raise NotStoredError("models are stored in Azure Blob Storage here: use the download_url you were given")

    def read_bytes(self, container: str, name: str, *, max_bytes: int = MAX_BASE_MODEL_BYTES) -> bytes | None:
        """A blob's bytes, or None when the container or the blob does not exist.

        Used for base tree models (OBJ + MTL) in the tree-models container.

        Args:
            container: container name.
            name: blob name (see check_name).
            max_bytes: larger blobs are refused.

        Returns:
            The bytes, or None.

        Raises:
            ModelTooLargeError: the blob has more than max_bytes.
            StorageError: unreachable, credentials refused, or another storage failure.
            ValueError: not a plain file name.
        """
        check_name(name)
        try:
            download = self.service.get_blob_client(container, name).download_blob()
            if download.size > max_bytes:
                raise ModelTooLargeError(f"blob {container}/{name} has {download.size} bytes, more than {max_bytes}")
            return bytes(download.readall())
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise storage_error(exc, self.account_url, container) from None

    def read_text(self, container: str, name: str, *, max_bytes: int = MAX_BASE_MODEL_BYTES) -> str | None:
        """A blob's text (UTF-8, undecodable bytes replaced), or None (see read_bytes).

        Args:
            container: container name.
            name: blob name (see check_name).
            max_bytes: larger blobs are refused.

        Returns:
            The text, or None.

        Raises:
            ModelTooLargeError: the blob has more than max_bytes.
            StorageError: unreachable, credentials refused, or another storage failure.
            ValueError: not a plain file name.
        """
        data = self.read_bytes(container, name, max_bytes=max_bytes)
        return None if data is None else data.decode("utf-8", errors="replace")

    def list_names(self, container: str, *, limit: int = MAX_LISTED_BLOBS) -> list[str]:
        """Names of the blobs in a container, at most `limit`; [] when the container does not exist.

        Args:
            container: container name.
            limit: names read at most (the listing stops there).

        Returns:
            Blob names in the service's (lexicographic) order.

        Raises:
            StorageError: unreachable, credentials refused, or another storage failure.
        """
        names: list[str] = []
        try:
            for blob in self.service.get_container_client(container).list_blobs(results_per_page=min(limit, 5000)):
                names.append(str(blob.name))
                if len(names) >= limit:
                    break
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise storage_error(exc, self.account_url, container) from None
        return names


class BlobModels:
    """Base tree models in a container: `<name>.obj` blobs, each with an optional `<name>.mtl`.

    Calling it looks one model up (what ModelBuilder generates with); `names` and `read` list the container
    and read one file as it is (what GET /tree-models serves).
    """

    def __init__(self, store: AzureModelStore, container: str, *, max_bytes: int = MAX_BASE_MODEL_BYTES) -> None:
        """Models in one container.

        Args:
            store: the Azure store (its client and credentials are used).
            container: the tree-models container.
            max_bytes: larger files are refused (ModelTooLargeError).
        """
        self.store, self.container, self.max_bytes = store, container, max_bytes

    def __call__(self, stem: str) -> tuple[str, str | None] | None:
        """(<stem>.obj text, <stem>.mtl text or None), or None when there is no <stem>.obj."""
        obj = self.store.read_text(self.container, f"{stem}.obj", max_bytes=self.max_bytes)
        if obj is None:
            return None
        return obj, self.store.read_text(self.container, f"{stem}.mtl", max_bytes=self.max_bytes)

    def names(self) -> list[str]:
        """The container's blob names (at most MAX_LISTED_BLOBS; [] when it does not exist)."""
        return self.store.list_names(self.container)

    def read(self, filename: str) -> bytes | None:
        """One file's bytes as stored, or None when absent."""
        return self.store.read_bytes(self.container, filename, max_bytes=self.max_bytes)


def blob_models(store: AzureModelStore, container: str) -> BlobModels:
    """Base tree models from a container: look one up by name (OBJ text, MTL text or None), list, read files.

    Args:
        store: the Azure store (its client and credentials are used).
        container: the tree-models container.

    Returns:
        The models (calling them with a name is the lookup: None when absent).
    """
    return BlobModels(store, container)
