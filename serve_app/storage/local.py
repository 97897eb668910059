"""Local model storage: a folder of one node (GENERATED_MODELS_DIR), written atomically, read back by /download.

ONE NODE ONLY. The folder is the disk of the machine (the pod) the process runs on; the service's download
route reads the same folder on its own node. With more than one node (a Ray cluster of several pods, or of
several machines without a shared folder) a download can miss a file another node wrote: use Azure Blob
storage there. The Kubernetes manifests never combine this store with more than one pod
(tests/k8s/test_manifests.py), and make_store logs it when it picks this store.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from serve_app.storage.types import Download, NotStoredError, StorageError, StoredModel, check_name
from treecore.files import TEMP_SUFFIX, atomic_writer, is_plain_name

#: cleanup_temp() removes temporary files older than this (a crashed writer's leftovers).
STALE_TEMP_S = 3600
#: Bytes per chunk a download is read in.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


class _FileChunks(Iterator[bytes]):
    """An open file's bytes in chunks; closed at the end, on close(), or when dropped unread.

    The file is opened before the first chunk is asked for, so one removed meanwhile (retention) or replaced
    by a new save is still read whole, at the size the response announced.
    """

    def __init__(self, handle: BinaryIO, chunk_bytes: int) -> None:
        self._handle, self._chunk_bytes = handle, chunk_bytes

    def __next__(self) -> bytes:
        chunk = self._handle.read(self._chunk_bytes) if not self._handle.closed else b""
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Close the file (a client that went away reads no more)."""
        self._handle.close()

    def __del__(self) -> None:
        self.close()


class LocalModelStore:
    """A local folder of ONE node (see the module docstring): temp file, fsync, rename; old files removed."""

    def __init__(self, root: Path, url_prefix: str, *, retention_s: int | None = 24 * 3600) -> None:
        """A local store.

        Args:
            root: the folder (created at the first save when missing).
            url_prefix: URL path the service serves the folder under, e.g. "/download".
            retention_s: stored models older than this are removed at the next save, so the disk stays
                bounded; it is also the `expires_in_s` of what is stored. None: keep files, expires_in_s None.
        """
        self.root, self.url_prefix, self.retention_s = Path(root), url_prefix.rstrip("/"), retention_s

    def __repr__(self) -> str:
        return f"LocalModelStore({self.describe()})"

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
        """Write the parts to `name` in the folder atomically and durably (treecore.files.atomic_writer).

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
        size, producing = 0, False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._prune()
            with atomic_writer(self.root / name) as handle:
                iterator = iter(parts)
                while True:
                    producing = True
                    part = next(iterator, None)
                    producing = False
                    if part is None:
                        break
                    handle.write(part)
                    size += len(part)
        except OSError as exc:
            if producing:  # the producer's own OSError (e.g. reading a base model): not ours to translate
                raise
            raise self._unwritable(exc) from exc
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

    def open_download(self, name: str, *, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES) -> Download:
        """A stored file of this node's folder, opened for the download route.

        Args:
            name: file name (only a plain name is looked up; temporary files never are).
            chunk_bytes: bytes per chunk.

        Returns:
            Its size and its bytes in chunks.

        Raises:
            NotStoredError: not a plain name, or no such file in the folder (expired, never made, or written
                on another node: this store is one node only).
        """
        missing = NotStoredError(f"no stored model {name!r} (expired, or never made)")
        if not is_plain_name(name):
            raise missing
        path = self.root / name
        try:
            if not path.is_file():  # absent, or a folder (or a fifo, which open() would wait on)
                raise missing
            handle = path.open("rb")
        except OSError:  # unreadable, or removed just now
            raise missing from None
        return Download(name, os.fstat(handle.fileno()).st_size, _FileChunks(handle, chunk_bytes))
