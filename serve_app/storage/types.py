"""What every model store shares: the errors, StoredModel, Download, the ModelStore protocol, the name check.

StorageError              the storage failed: unreachable, credentials refused, folder not writable (503)
└── ModelTooLargeError    a stored base model file is larger than the service reads (413)
NotStoredError            no stored file by that name here (404; a treecore UnknownModelError)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from treecore.errors import UnknownModelError
from treecore.files import MAX_NAME_LENGTH, is_plain_name


class StorageError(Exception):
    """Model storage failed: unreachable, credentials refused, container problem, or local folder not writable.

    One message argument (it pickles across Ray processes); the service maps it to HTTP 503.
    """


class ModelTooLargeError(StorageError):
    """A stored base model file is larger than the service reads (the service maps it to HTTP 413)."""


class NotStoredError(UnknownModelError):
    """No stored file by that name: expired, never made, or not served by this store (HTTP 404)."""


@dataclass(frozen=True)
class StoredModel:
    """A stored file: its name, where to download it, its size in bytes, and seconds until the URL expires.

    `companions` are the files stored with it that it needs (an OBJ's MTL), each with its own URL and expiry.
    """

    name: str
    url: str
    size_bytes: int
    expires_in_s: int | None
    companions: tuple[StoredModel, ...] = ()


@dataclass(frozen=True)
class Download:
    """A stored file being read: its name, its size in bytes, and its bytes in chunks (read as they are taken)."""

    name: str
    size_bytes: int
    chunks: Iterator[bytes] = field(repr=False)


class ModelStore(Protocol):
    """Where large models go, and where the service's download route reads them back."""

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

    def open_download(self, name: str) -> Download:
        """A stored file for the service's own download route (GET /download/{name}).

        Args:
            name: the file name (anything: only a plain name of a stored file is found).

        Returns:
            The file's size and bytes.

        Raises:
            NotStoredError: no such stored file, not a plain name, or a store whose downloads are its own URLs
                (Azure: the SAS URL in StoredModel.url).
        """
        ...

    def describe(self) -> str:
        """Where models go, for people (never a secret).

        Returns:
            e.g. "local folder /x" or "Azure Blob container generated-models at https://....".
        """
        ...


def check_name(name: str) -> str:
    """A plain file name (treecore.files.is_plain_name: the one name rule), for a file or a blob.

    Args:
        name: the name.

    Returns:
        The name, unchanged.

    Raises:
        ValueError: anything else (path parts, '..', empty, control characters, percent-escapes, too long).
    """
    if not is_plain_name(name):
        raise ValueError(f"{name!r} is not a plain file name (at most {MAX_NAME_LENGTH} characters)")
    return name
