"""Model storage: one interface, two backends (a local folder here; Azure Blob in serve_app.storage_azure).

Both are atomic: a reader sees the whole model or nothing. Locally a temporary file in the same folder is
fsynced and renamed into place; on Azure the parts are staged as blocks and committed once (uncommitted
blocks are never visible and are discarded by the service). Every storage failure is a `StorageError` whose
message says which failure it was (the service answers 503); none contains a key or a SAS signature.

The Azure names (`AzureModelStore`, `blob_models`, `SAS_LIFETIME_S`, ...) can be imported from here too;
they are loaded on first use, so importing this module does not import the Azure SDK.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # re-exported lazily by __getattr__ below
    from serve_app.storage_azure import (
        CLOCK_SKEW_S,
        DELEGATION_KEY_LIFETIME_S,
        MAX_BASE_MODEL_BYTES,
        MAX_BLOCK_BYTES,
        MAX_LISTED_BLOBS,
        MIN_BLOCK_BYTES,
        RENEW_BEFORE_S,
        SAS_LIFETIME_S,
        AzureModelStore,
        BlobModels,
        blob_models,
        storage_error,
    )

__all__ = [
    "CLOCK_SKEW_S",
    "DELEGATION_KEY_LIFETIME_S",
    "MAX_BASE_MODEL_BYTES",
    "MAX_BLOCK_BYTES",
    "MAX_LISTED_BLOBS",
    "MIN_BLOCK_BYTES",
    "RENEW_BEFORE_S",
    "SAS_LIFETIME_S",
    "STALE_TEMP_S",
    "AzureModelStore",
    "BlobModels",
    "LocalModelStore",
    "ModelStore",
    "ModelTooLargeError",
    "StorageError",
    "StoredModel",
    "blob_models",
    "check_name",
    "make_store",
    "storage_error",
]

#: Blob and file names we write: a plain name, no path parts (checked with fullmatch: no trailing newline).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Suffix of the local temporary files (their names start with a dot, so they never match _NAME).
TEMP_SUFFIX = ".part"
#: cleanup_temp() removes temporary files older than this (a crashed writer's leftovers).
STALE_TEMP_S = 3600
#: Mode of stored local files (mkstemp creates 0600).
FILE_MODE = 0o644

_AZURE_NAMES = frozenset(__all__) - {
    "LocalModelStore",
    "ModelStore",
    "ModelTooLargeError",
    "STALE_TEMP_S",
    "StorageError",
    "StoredModel",
    "check_name",
    "make_store",
}


def __getattr__(name: str) -> Any:
    """The Azure names, imported from serve_app.storage_azure on first use (PEP 562).

    Args:
        name: attribute name.

    Returns:
        The attribute.

    Raises:
        AttributeError: not a name of this module.
    """
    if name in _AZURE_NAMES:
        from serve_app import storage_azure

        return getattr(storage_azure, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StorageError(Exception):
    """Model storage failed: unreachable, credentials refused, container problem, or local folder not writable.

    One message argument (it pickles across Ray processes); the service maps it to HTTP 503.
    """


class ModelTooLargeError(StorageError):
    """A stored base model file is larger than the service reads (the service maps it to HTTP 413)."""


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
        """Store the concatenated parts under `name`, atomically.

        Args:
            name: a plain file name (see check_name).
            parts: byte parts in order; if producing them raises, nothing is stored and the error propagates.
            content_type: the media type the download is served with.

        Returns:
            The stored model.

        Raises:
            StorageError: the storage failed (nothing is visible under `name`).
            ValueError: `name` is not a plain file name.
        """
        ...

    def delete(self, name: str) -> None:
        """Remove a stored file if it is there (to undo half of a two-file save).

        Raises:
            StorageError: the storage failed.
            ValueError: `name` is not a plain file name.
        """
        ...

    def describe(self) -> str:
        """Where models go, for people (never a secret).

        Returns:
            e.g. "local folder /x" or "Azure Blob container generated-models at https://....".
        """
        ...


def check_name(name: str) -> str:
    """A plain file name: 1-128 of letters, digits, '.', '_', '-', starting with a letter or digit, no '..'.

    Args:
        name: the name.

    Returns:
        The name, unchanged.

    Raises:
        ValueError: anything else (path parts, '..', empty, control characters, percent-escapes).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{name!r} is not a plain file name")
    return name


class LocalModelStore:
    """A local folder (GENERATED_MODELS_DIR): temp file, fsync, rename; files older than the retention removed."""

    def __init__(self, root: Path, url_prefix: str, *, retention_s: int | None = 24 * 3600) -> None:
        """A local store.

        Args:
            root: the folder (created at the first save when missing).
            url_prefix: URL path the service serves the folder under, e.g. "/download".
            retention_s: stored models older than this are removed at the next save, so the disk stays
                bounded; it is also the `expires_in_s` of what is stored. None: keep files, expires_in_s None.
        """
        self.root, self.url_prefix, self.retention_s = Path(root), url_prefix.rstrip("/"), retention_s

    def describe(self) -> str:
        """Where models go.

        Returns:
            "local folder <root>".
        """
        return f"local folder {self.root}"

    def _unwritable(self, exc: OSError) -> StorageError:
        code = errno.errorcode.get(exc.errno or 0)
        reason = exc.strerror or str(exc) or type(exc).__name__
        return StorageError(f"local model folder {self.root} is not writable: {reason}{f' ({code})' if code else ''}")

    def cleanup_temp(self, max_age_s: float = STALE_TEMP_S) -> int:
        """Remove temporary files a crashed or killed writer left behind.

        Args:
            max_age_s: only temporary files not modified for this long are removed (a running save keeps
                writing to its own, so it is never touched).

        Returns:
            How many files were removed.
        """
        cutoff, removed = time.time() - max_age_s, 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.root.glob(f".*{TEMP_SUFFIX}"):
                with contextlib.suppress(OSError):
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed

    def _prune(self) -> None:
        self.cleanup_temp()
        if self.retention_s is None:
            return
        cutoff = time.time() - self.retention_s
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                if not path.name.startswith(".") and path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()

    def save(self, name: str, parts: Iterable[bytes], *, content_type: str) -> StoredModel:
        """Write the parts to a temporary file in the folder, fsync it, then rename it to `name`.

        Args:
            name: file name (see check_name).
            parts: byte parts in order. If producing them raises, the temporary file is removed and the
                error propagates unchanged (it is not a storage failure).
            content_type: unused locally (the download route sets the media type).

        Returns:
            The stored model; its URL is relative to the service (url_prefix/name).

        Raises:
            StorageError: the folder cannot be written (disk full, permissions, read-only filesystem, ...).
            ValueError: not a plain file name.
        """
        check_name(name)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._prune()
            fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=self.root)
        except OSError as exc:
            raise self._unwritable(exc) from exc
        size, producing, done = 0, False, False
        iterator = iter(parts)
        try:
            with os.fdopen(fd, "wb") as handle:
                while True:
                    producing = True
                    part = next(iterator, None)
                    producing = False
                    if part is None:
                        break
                    handle.write(part)
                    size += len(part)
                handle.flush()
                os.fchmod(handle.fileno(), FILE_MODE)
                os.fsync(handle.fileno())
            os.replace(temp, self.root / name)
            done = True
        except OSError as exc:
            if producing:  # the producer's own OSError (e.g. reading a base model): not ours to translate
                raise
            raise self._unwritable(exc) from exc
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
        self._sync_folder()
        return StoredModel(name, f"{self.url_prefix}/{name}", size, self.retention_s)

    def delete(self, name: str) -> None:
        """Remove a stored file; a missing one is not an error.

        Raises:
            StorageError: the folder cannot be written.
            ValueError: not a plain file name.
        """
        try:
            (self.root / check_name(name)).unlink(missing_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from exc

    def _sync_folder(self) -> None:
        # Make the rename durable. Best effort: the file is already complete and visible.
        with contextlib.suppress(OSError):
            folder = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def open_path(self, name: str) -> Path:
        """The path of a stored file, for the download route.

        Args:
            name: file name (see check_name; temporary files never match).

        Returns:
            The path.

        Raises:
            ValueError: not a plain file name.
            FileNotFoundError: no such file.
        """
        path = self.root / check_name(name)
        if not path.is_file():
            raise FileNotFoundError(name)
        return path


def make_store(
    *,
    connection_string: str | None,
    account_url: str | None,
    container: str,
    local_dir: Path,
    url_prefix: str,
    retention_s: int | None = 24 * 3600,
) -> ModelStore:
    """The configured store: a connection string wins, then an account URL, else the local folder.

    Args:
        connection_string: AZURE_STORAGE_CONNECTION_STRING (with an AccountKey; signs SAS URLs with it).
        account_url: AZURE_STORAGE_ACCOUNT_URL (DefaultAzureCredential, e.g. workload identity on AKS;
            SAS URLs signed with a user delegation key).
        container: container of generated models (created at first use when missing).
        local_dir: GENERATED_MODELS_DIR.
        url_prefix: the service's download route for local files.
        retention_s: local files older than this are removed (see LocalModelStore).

    Returns:
        The store. Nothing is contacted yet: storage problems show at the first save.

    Raises:
        ValueError: a malformed connection string (the message never contains it).
    """
    if connection_string:
        from serve_app.storage_azure import AzureModelStore

        return AzureModelStore.from_connection_string(connection_string, container)
    if account_url:
        from serve_app.storage_azure import AzureModelStore

        return AzureModelStore.from_account_url(account_url, container)
    return LocalModelStore(local_dir, url_prefix, retention_s=retention_s)
