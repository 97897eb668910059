"""Files: the one rule for the names we write, the one durable write (temp + fsync + rename), input reads."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from treecore.errors import TreecoreError

#: Longest file or blob name we write or serve. 128, not 100: every name either old check accepted stays
#: valid (base model files were <= 104 characters, stored models <= 128), and the longest temporary file name
#: (".<name>.<8 random>.part", 143 characters) stays far below the 255 bytes a Linux file name may have;
#: Azure allows blob names of 1024.
MAX_NAME_LENGTH = 128
#: A plain name: a letter or digit, then letters, digits, '.', '_', '-'; no path parts, no '..' (checked apart).
_PLAIN_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")
#: Suffix of the temporary files of write_atomic (their names start with a dot, so they are never plain).
TEMP_SUFFIX = ".part"
#: Mode of the files write_atomic makes (mkstemp alone would make them 0600).
FILE_MODE = 0o644


def is_plain_name(name: str) -> bool:
    """Whether `name` is a plain file name: 1-128 of letters, digits, '.', '_', '-', a letter or digit first, no '..'.

    The one rule for every file and blob name the service writes or serves (stored models, base model files).

    Args:
        name: the name.

    Returns:
        True for a plain name; False for path parts, '..', hidden names, control characters, percent-escapes,
        non-ASCII letters, a trailing newline, the empty string or more than MAX_NAME_LENGTH characters.
    """
    return isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None and ".." not in name


def _sync_folder(folder: Path) -> None:
    # Makes a rename durable. Best effort: the file is already complete and visible, and some filesystems
    # cannot fsync a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, mode: int = FILE_MODE) -> Iterator[BinaryIO]:
    """A file handle whose bytes appear at `path` all at once, durably, when the block ends without an error.

    Writes go to a temporary file in the same folder (".<name>.<random>.part"); at the end it is flushed,
    given `mode`, fsynced and renamed over `path`, then the folder is fsynced. If the block raises, or any of
    those steps fails, the temporary file is removed, `path` is left as it was, and the error propagates.

    Args:
        path: destination file (its folder must exist).
        mode: permission bits of the file.

    Yields:
        The open temporary file (binary).

    Raises:
        OSError: the folder cannot be written (creating, writing, syncing or renaming the temporary file).
    """
    target = Path(path)
    folder = target.parent
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _sync_folder(folder)


def write_atomic(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> int:
    """Write bytes to `path` atomically and durably (see atomic_writer).

    Args:
        path: destination file.
        data: the bytes, or byte parts in order (if producing them raises, nothing changes at `path`).

    Returns:
        Bytes written.
    """
    parts: Iterable[bytes] = (data,) if isinstance(data, bytes) else data
    size = 0
    with atomic_writer(path) as handle:
        for part in parts:
            size += handle.write(part)
    return size


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
