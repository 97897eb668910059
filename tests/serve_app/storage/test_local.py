"""LocalModelStore: atomic saves, names, an unwritable folder, temp file cleanup, downloads."""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app.storage import LocalModelStore, NotStoredError, StorageError, StoredModel, check_name
from treecore.errors import UnknownModelError
from treecore.files import MAX_NAME_LENGTH


class Boom(RuntimeError):
    """Raised by a parts iterable half-way (a bug mid-generation)."""


def failing_parts() -> Iterator[bytes]:
    yield b"v 0 0 0\n" * 1000
    yield b"v 1 1 1\n" * 1000
    raise Boom("the generator failed half-way")


def test_save_joins_the_parts_and_returns_a_relative_url(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path / "models", "/download/")
    stored = store.save("scene.obj", [b"a" * 10, b"", b"b" * 5], content_type="model/obj")
    assert stored == StoredModel("scene.obj", "/download/scene.obj", 15, 24 * 3600)
    assert (tmp_path / "models" / "scene.obj").read_bytes() == b"a" * 10 + b"b" * 5
    assert stat.S_IMODE((tmp_path / "models" / "scene.obj").stat().st_mode) == 0o644
    assert store.describe() == f"local folder {tmp_path / 'models'}"


def test_without_retention_nothing_expires(tmp_path: Path) -> None:
    old = tmp_path / "old.obj"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 10 * 24 * 3600,) * 2)
    stored = LocalModelStore(tmp_path, "/d", retention_s=None).save("new.obj", [b"y"], content_type="model/obj")
    assert stored.expires_in_s is None and old.exists()


def test_files_past_the_retention_are_removed_at_the_next_save(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.obj", tmp_path / "fresh.obj"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(old, (time.time() - 7200,) * 2)
    LocalModelStore(tmp_path, "/d", retention_s=3600).save("new.obj", [b"y"], content_type="model/obj")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.obj", "new.obj"]


def test_a_failing_parts_iterable_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path, "/download")
    with pytest.raises(Boom):
        store.save("broken.obj", failing_parts(), content_type="model/obj")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_previous_file_whole(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path, "/download")
    store.save("scene.obj", [b"first version"], content_type="model/obj")
    with pytest.raises(Boom):
        store.save("scene.obj", failing_parts(), content_type="model/obj")
    assert [p.name for p in tmp_path.iterdir()] == ["scene.obj"]
    assert (tmp_path / "scene.obj").read_bytes() == b"first version"


def test_an_oserror_of_the_producer_is_not_a_storage_error(tmp_path: Path) -> None:
    def parts() -> Iterator[bytes]:
        yield b"x"
        raise FileNotFoundError("base model went away")

    with pytest.raises(FileNotFoundError, match="base model"):
        LocalModelStore(tmp_path, "/download").save("scene.obj", parts(), content_type="model/obj")
    assert list(tmp_path.iterdir()) == []


def _save_as(uid: int | None, folder: Path) -> str:
    """Try a save into `folder` (as user `uid` in a forked child when given: root ignores file modes); the
    StorageError's message, or "saved"."""
    if uid is None:
        try:
            LocalModelStore(folder, "/download").save("x.obj", [b"x"], content_type="model/obj")
        except StorageError as exc:
            return str(exc)
        return "saved"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to `uid`, try, report through the pipe, exit at once
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, _save_as(None, folder).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message
    return message


def test_a_read_only_folder_is_a_storage_error() -> None:
    # As root (as in CI) the save runs in a child dropped to nobody, for whom the folder's mode counts.
    nobody = 65534 if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory(prefix="store-") as top:
        os.chmod(top, 0o755)  # the child must reach the folder
        folder = Path(top) / "models"
        folder.mkdir()
        if nobody is not None:
            os.chown(folder, nobody, nobody)
        folder.chmod(0o500)
        try:
            message = _save_as(nobody, folder)
            expected = r"local model folder .* is not writable: Permission denied \(EACCES\)"
            assert re.fullmatch(expected, message), message
        finally:
            folder.chmod(0o700)
        assert list(folder.iterdir()) == []


def test_a_file_where_the_folder_should_be_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("a file, not a folder")  # fails for root too, unlike chmod
    with pytest.raises(StorageError, match="local model folder .* is not writable"):
        LocalModelStore(blocker, "/download").save("x.obj", [b"x"], content_type="model/obj")


@pytest.mark.parametrize(
    ("call", "code"),
    [("fsync", errno.ENOSPC), ("replace", errno.EROFS), ("fsync", errno.EIO)],
)
def test_disk_errors_are_storage_errors_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    def fail(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, call, fail)
    with pytest.raises(StorageError, match=rf"not writable: {os.strerror(code)} \({errno.errorcode[code]}\)"):
        LocalModelStore(tmp_path, "/download").save("x.obj", [b"x" * 100], content_type="model/obj")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


BAD_NAMES = [
    "../x",
    "../x.obj",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "",
    "%2e%2e",
    "..",
    "a..b.obj",
    ".hidden",
    "-rf",
    "a.obj\n",
    "a\x00b",
    "scène.obj",
    "x" * (MAX_NAME_LENGTH + 1),
    "x" * 125 + ".obj",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_plain_are_refused(tmp_path: Path, name: str) -> None:
    store = LocalModelStore(tmp_path, "/download")
    with pytest.raises(ValueError, match="not a plain file name"):
        store.save(name, [b"x"], content_type="model/obj")
    with pytest.raises(NotStoredError):
        store.open_download(name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["scene.obj", "trees_2026-11-25T10-00-00_5000.obj", "A", "x" * MAX_NAME_LENGTH, "x" * 124 + ".obj", "a.b.c"]
)
def test_plain_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


def _read(store: LocalModelStore, name: str) -> tuple[int, bytes]:
    download = store.open_download(name, chunk_bytes=4)
    assert download.name == name
    return download.size_bytes, b"".join(download.chunks)


def test_open_download_reads_a_stored_file_in_chunks(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path, "/download")
    store.save("scene.obj", [b"0123456789"], content_type="model/obj")
    download = store.open_download("scene.obj", chunk_bytes=4)
    assert download.size_bytes == 10 and list(download.chunks) == [b"0123", b"4567", b"89"]
    assert _read(store, "scene.obj") == (10, b"0123456789")


def test_open_download_finds_only_stored_files(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path, "/download")
    for name in ("absent.obj", "folder.obj", ".scene.obj.abc.part", "../scene.obj"):
        with pytest.raises(NotStoredError, match="no stored model") as caught:
            store.open_download(name)
        assert isinstance(caught.value, UnknownModelError)  # the service answers 404
    (tmp_path / "folder.obj").mkdir()
    (tmp_path / ".scene.obj.abc.part").write_bytes(b"half")  # temporary files are never served
    os.mkfifo(tmp_path / "fifo.obj")  # never opened (open() would wait for a writer)
    for name in ("folder.obj", ".scene.obj.abc.part", "fifo.obj"):
        with pytest.raises(NotStoredError):
            store.open_download(name)
    with pytest.raises(NotStoredError):
        LocalModelStore(tmp_path / "never-made", "/d").open_download("scene.obj")


def test_a_download_started_before_a_new_save_or_the_retention_reads_the_file_it_opened(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path, "/download")
    store.save("scene.obj", [b"old" * 10], content_type="model/obj")
    download = store.open_download("scene.obj", chunk_bytes=7)
    store.save("scene.obj", [b"new, and longer" * 10], content_type="model/obj")  # renamed over it
    assert b"".join(download.chunks) == b"old" * 10 and download.size_bytes == 30
    again = store.open_download("scene.obj")
    store.delete("scene.obj")
    assert b"".join(again.chunks) == b"new, and longer" * 10


def test_a_download_dropped_unread_or_half_read_closes_its_file(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path, "/download")
    store.save("scene.obj", [b"x" * 100], content_type="model/obj")
    before = len(os.listdir("/proc/self/fd"))
    download = store.open_download("scene.obj")
    assert len(os.listdir("/proc/self/fd")) == before + 1
    del download  # no ResourceWarning (an error under pytest's filterwarnings): closed by us, not by the GC
    assert len(os.listdir("/proc/self/fd")) == before
    half = store.open_download("scene.obj", chunk_bytes=10)
    next(half.chunks)  # a client that goes away half-way
    del half
    assert len(os.listdir("/proc/self/fd")) == before


def test_cleanup_temp_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path, "/download")
    stale, fresh = tmp_path / ".a.obj.x1.part", tmp_path / ".b.obj.x2.part"
    old_model = tmp_path / "old.obj"
    for path in (stale, fresh, old_model):
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(old_model, (two_hours_ago, two_hours_ago))
    assert store.cleanup_temp() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.obj.x2.part", "old.obj"]
    assert store.cleanup_temp(max_age_s=0) == 1
    assert LocalModelStore(tmp_path / "absent", "/d").cleanup_temp() == 0


def test_concurrent_saves_of_one_name_never_mix(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path, "/download")
    barrier = threading.Barrier(2)
    contents = {b"A": b"", b"B": b""}

    def parts(letter: bytes) -> Iterator[bytes]:
        for _ in range(50):
            barrier.wait(timeout=10)  # both writers advance in lockstep
            yield letter * 1000

    threads = [
        threading.Thread(target=store.save, args=("same.obj", parts(letter)), kwargs={"content_type": "model/obj"})
        for letter in contents
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert (tmp_path / "same.obj").read_bytes() in (b"A" * 50_000, b"B" * 50_000)
    assert [p.name for p in tmp_path.iterdir()] == ["same.obj"]
