"""Model storage: one interface, two backends (a local folder; Azure Blob block blobs with read-only SAS URLs).

Both are atomic: a reader sees the whole model or nothing. Locally a temporary file is renamed into place;
on Azure the parts are staged as blocks and committed once (uncommitted blocks are discarded by the service).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

#: Blob and file names we write: a plain name with an extension, no path parts.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Read-only SAS lifetime, seconds.
SAS_LIFETIME_S = 3600
#: A staged block's largest size (Azure allows 4000 MiB; smaller blocks retry faster).
MAX_BLOCK_BYTES = 64 * 1024 * 1024
#: A user delegation key is requested for this long and renewed when less than RENEW_BEFORE_S remains.
DELEGATION_KEY_LIFETIME_S = 6 * 3600
RENEW_BEFORE_S = 15 * 60


class StorageError(Exception):
    """Model storage failed: unreachable, credentials refused, or the local folder not writable (HTTP 503)."""


@dataclass(frozen=True)
class StoredModel:
    """A stored file: its name, where to download it, its size in bytes, and seconds until the URL expires."""

    name: str
    url: str
    size_bytes: int
    expires_in_s: int | None


class ModelStore(Protocol):
    """Where large models go."""

    def save(self, name: str, parts: Iterable[bytes], *, content_type: str) -> StoredModel:
        """Store the concatenated parts under `name`, atomically."""
        ...

    def describe(self) -> str:
        """Where models go, for people (never a secret)."""
        ...


def check_name(name: str) -> str:
    """A plain file name (letters, digits, '.', '_', '-'; no path parts, no '..').

    Args:
        name: the name.

    Returns:
        The name.

    Raises:
        ValueError: anything else.
    """
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"{name!r} is not a plain file name")
    return name


class LocalModelStore:
    """A local folder (GENERATED_MODELS_DIR): temp file, fsync, rename; files older than the retention removed."""

    def __init__(self, root: Path, url_prefix: str, *, retention_s: int = 24 * 3600) -> None:
        """A local store.

        Args:
            root: the folder (created when missing).
            url_prefix: URL path the service serves the folder under, e.g. "/download".
            retention_s: stored models older than this are removed on the next save (disk stays bounded).
        """
        self.root, self.url_prefix, self.retention_s = Path(root), url_prefix.rstrip("/"), retention_s

    def describe(self) -> str:
        """The folder."""
        return f"local folder {self.root}"

    def _prune(self) -> None:
        cutoff = time.time() - self.retention_s
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()

    def save(self, name: str, parts: Iterable[bytes], *, content_type: str) -> StoredModel:
        """Write parts to a temporary file in the folder, then rename it to `name`.

        Args:
            name: file name.
            parts: byte parts in order (an error while producing them leaves nothing behind).
            content_type: unused locally (the download route sets it).

        Returns:
            The stored model; its URL is relative to the service (url_prefix/name).

        Raises:
            StorageError: the folder cannot be written (full disk, permissions, read-only).
        """
        check_name(name)
        temp: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._prune()
            fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.root)
            size = 0
            with os.fdopen(fd, "wb") as handle:
                for part in parts:
                    handle.write(part)
                    size += len(part)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.root / name)
            temp = None
        except OSError as exc:
            raise StorageError(f"the local model folder {self.root} is not writable: {exc.strerror or exc}") from None
        finally:
            if temp is not None:
                Path(temp).unlink(missing_ok=True)
        return StoredModel(name, f"{self.url_prefix}/{name}", size, self.retention_s)

    def open_path(self, name: str) -> Path:
        """The path of a stored file, for the download route.

        Args:
            name: file name.

        Returns:
            The path.

        Raises:
            ValueError: not a plain name.
            FileNotFoundError: no such file.
        """
        path = self.root / check_name(name)
        if not path.is_file():
            raise FileNotFoundError(name)
        return path


def _block_id(index: int) -> str:
    # Every block id of a blob must have the same length: a fixed-width counter.
    return base64.b64encode(f"block-{index:08d}".encode()).decode()


def _split(parts: Iterable[bytes], limit: int) -> Iterator[bytes]:
    for part in parts:
        for start in range(0, len(part), limit):
            yield part[start : start + limit]


def storage_error(exc: Exception, where: str) -> StorageError:
    """Turn an Azure SDK error into a StorageError that says which failure it was (no secrets).

    Args:
        exc: the SDK's exception.
        where: the account URL.

    Returns:
        The StorageError to raise.
    """
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(exc, ClientAuthenticationError) or getattr(exc, "status_code", None) in (401, 403):
        return StorageError(f"Azure Blob Storage at {where} refused the credentials (check the key or the role)")
    if isinstance(exc, ServiceRequestError):
        return StorageError(f"Azure Blob Storage at {where} is unreachable: {type(exc).__name__}")
    if isinstance(exc, HttpResponseError):
        return StorageError(f"Azure Blob Storage at {where} failed: HTTP {exc.status_code} {exc.reason}")
    return StorageError(f"Azure Blob Storage at {where} failed: {type(exc).__name__}")


class AzureModelStore:
    """One container of a storage account: block blobs committed once, read-only SAS URLs for an hour."""

    def __init__(
        self,
        service: Any,
        container: str,
        *,
        account_key: str | None,
        block_bytes: int = MAX_BLOCK_BYTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """A store over a BlobServiceClient.

        Args:
            service: azure.storage.blob.BlobServiceClient.
            container: container name (created at first use when missing).
            account_key: signs SAS URLs; None: a user delegation key is requested (workload identity).
            block_bytes: largest staged block.
            clock: now, in UTC (tests move it).
        """
        self.service, self.container, self.block_bytes, self.clock = service, container, block_bytes, clock
        self._account_key = account_key
        self._delegation_key: Any = None
        self._delegation_expiry: datetime | None = None
        self._lock = threading.Lock()
        self._container_ready = False

    @classmethod
    def from_connection_string(cls, connection_string: str, container: str) -> AzureModelStore:
        """A store signed with the account key of a connection string (legacy; Azurite in tests)."""
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(connection_string, **_client_options())
        return cls(service, container, account_key=service.credential.account_key)

    @classmethod
    def from_account_url(cls, account_url: str, container: str, credential: Any = None) -> AzureModelStore:
        """A store with Entra ID auth (DefaultAzureCredential: workload identity on AKS); SAS by user delegation."""
        from azure.storage.blob import BlobServiceClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return cls(
            BlobServiceClient(account_url, credential=credential, **_client_options()), container, account_key=None
        )

    def describe(self) -> str:
        """Container and account URL (never a key)."""
        return f"Azure Blob container {self.container} at {self.service.url}"

    def _ensure_container(self) -> None:
        if self._container_ready:
            return
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.service.create_container(self.container)
        self._container_ready = True

    def _stage(self, blob: Any, block_id: str, chunk: bytes) -> None:
        from azure.core.exceptions import ResourceNotFoundError

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
        """
        with self._lock:
            now = self.clock()
            if self._delegation_expiry is None or self._delegation_expiry - now < timedelta(seconds=RENEW_BEFORE_S):
                start = now - timedelta(minutes=5)
                expiry = now + timedelta(seconds=DELEGATION_KEY_LIFETIME_S)
                self._delegation_key = self.service.get_user_delegation_key(start, expiry)
                self._delegation_expiry = expiry
            return self._delegation_key

    def sas_url(self, name: str) -> str:
        """A read-only URL of one blob, valid for SAS_LIFETIME_S (from 5 minutes ago, for clock skew).

        Args:
            name: blob name.

        Returns:
            https://.../container/name?<sas>.
        """
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = self.clock()
        signer: dict[str, Any] = (
            {"account_key": self._account_key} if self._account_key else {"user_delegation_key": self.delegation_key()}
        )
        token = generate_blob_sas(
            account_name=self.service.account_name,
            container_name=self.container,
            blob_name=name,
            permission=BlobSasPermissions(read=True),
            start=now - timedelta(minutes=5),
            expiry=now + timedelta(seconds=SAS_LIFETIME_S),
            **signer,
        )
        return f"{self.service.get_blob_client(self.container, name).url}?{token}"

    def save(self, name: str, parts: Iterable[bytes], *, content_type: str) -> StoredModel:
        """Stage every part as blocks of one block blob, commit once, return a read-only SAS URL.

        Args:
            name: blob name.
            parts: byte parts in order (if producing them fails, nothing is committed).
            content_type: the blob's Content-Type.

        Returns:
            The stored model with its SAS URL.

        Raises:
            StorageError: unreachable, credentials refused, or another storage failure.
        """
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContentSettings

        check_name(name)
        try:
            self._ensure_container()
            blob = self.service.get_blob_client(self.container, name)
            blocks, size = [], 0
            for index, chunk in enumerate(_split(parts, self.block_bytes)):
                block_id = _block_id(index)
                self._stage(blob, block_id, chunk)
                blocks.append(block_id)
                size += len(chunk)
            settings = ContentSettings(content_type=content_type, content_disposition=f'attachment; filename="{name}"')
            blob.commit_block_list(blocks, content_settings=settings)
            url = self.sas_url(name)
        except AzureError as exc:
            raise storage_error(exc, self.service.url) from None
        return StoredModel(name, url, size, SAS_LIFETIME_S)

    def read_text(self, container: str, name: str) -> str | None:
        """A blob's text, or None when the container or blob does not exist (base models from tree-models).

        Args:
            container: container name.
            name: blob name.

        Returns:
            The text or None.
        """
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return str(self.service.get_blob_client(container, check_name(name)).download_blob().readall().decode())
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise storage_error(exc, self.service.url) from None


def blob_models(store: AzureModelStore, container: str) -> Callable[[str], tuple[str, str | None] | None]:
    """Base tree models from a container: name -> (<name>.obj text, <name>.mtl text or None), None if absent.

    Args:
        store: the Azure store (its client and credentials are used).
        container: the tree-models container.

    Returns:
        The lookup function.
    """

    def lookup(stem: str) -> tuple[str, str | None] | None:
        obj = store.read_text(container, f"{stem}.obj")
        return None if obj is None else (obj, store.read_text(container, f"{stem}.mtl"))

    return lookup


def _client_options() -> dict[str, Any]:
    # Fail in seconds when storage is down. The storage SDK's own default retry waits 15 s, then 18 s, ...
    # (ExponentialRetry(initial_backoff=15, increment_base=3)): a request would hang for a minute.
    from azure.storage.blob import ExponentialRetry

    retry = ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=2, random_jitter_range=0.5)
    return {"connection_timeout": 5, "read_timeout": 120, "retry_policy": retry}


def make_store(
    *,
    connection_string: str | None,
    account_url: str | None,
    container: str,
    local_dir: Path,
    url_prefix: str,
    retention_s: int = 24 * 3600,
) -> ModelStore:
    """The configured store: a connection string wins, then an account URL, else the local folder.

    Args:
        connection_string: AZURE_STORAGE_CONNECTION_STRING.
        account_url: AZURE_STORAGE_ACCOUNT_URL (workload identity).
        container: container of generated models.
        local_dir: GENERATED_MODELS_DIR.
        url_prefix: the service's download route for local files.
        retention_s: local files older than this are removed.

    Returns:
        The store.
    """
    if connection_string:
        return AzureModelStore.from_connection_string(connection_string, container)
    if account_url:
        return AzureModelStore.from_account_url(account_url, container)
    return LocalModelStore(local_dir, url_prefix, retention_s=retention_s)
