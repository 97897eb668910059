"""File helpers for the CLI: inputs read with a clear error, outputs written atomically (temp + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from treecore.errors import TreecoreError


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename).

    Args:
        path: destination file.
        data: the bytes.

    Returns:
        The destination path. On any error the temporary file is removed and the error re-raised.
    """
    target = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def read_input(path: str | os.PathLike[str]) -> bytes:
    """Read an input file, turning an OS error into a TreecoreError that names the file.

    Args:
        path: the file.

    Returns:
        Its bytes.
    """
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TreecoreError(f"cannot read {path}: {exc.strerror}") from exc
