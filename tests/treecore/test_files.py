"""treecore.files: the one name rule (at its boundary), the one durable write, and that there is only one of each."""

from __future__ import annotations

import ast
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from treecore.basemodels import MAX_MODEL_NAME_LENGTH, check_model_name
from treecore.errors import UnknownModelError
from treecore.files import MAX_NAME_LENGTH, TEMP_SUFFIX, atomic_writer, is_plain_name, write_atomic

ROOT = Path(__file__).resolve().parents[2]


class Boom(RuntimeError):
    """Raised half-way through a write."""


# ---- the name rule ----


def test_the_limit_is_128_and_a_model_name_leaves_room_for_its_extension() -> None:
    assert MAX_NAME_LENGTH == 128 and MAX_MODEL_NAME_LENGTH == 124


@pytest.mark.parametrize("length", [1, 2, MAX_NAME_LENGTH - 1, MAX_NAME_LENGTH])
def test_names_up_to_the_limit_are_plain(length: int) -> None:
    assert is_plain_name("a" * length)


@pytest.mark.parametrize("length", [0, MAX_NAME_LENGTH + 1, MAX_NAME_LENGTH + 100])
def test_names_past_the_limit_are_not(length: int) -> None:
    assert not is_plain_name("a" * length)


@pytest.mark.parametrize(
    "name",
    ["../x", "a/b", "a\\b", "..", "a..b", ".hidden", "-rf", "_x", "a.obj\n", "a\nb", "a\x00b", "a b", "%2e%2e",
     "scène.obj", "ａ", "a:b", "a*b"],
)  # fmt: skip
def test_what_is_never_a_plain_name(name: str) -> None:
    assert not is_plain_name(name)


def test_a_temporary_file_name_is_never_plain_and_fits_any_filesystem(tmp_path: Path) -> None:
    longest = "a" * MAX_NAME_LENGTH
    with atomic_writer(tmp_path / longest) as handle:
        (temp,) = [p.name for p in tmp_path.iterdir()]
        handle.write(b"x")
    assert temp.startswith(f".{longest}.") and temp.endswith(TEMP_SUFFIX) and not is_plain_name(temp)
    assert len(temp.encode()) < 255  # NAME_MAX of ext4, xfs, overlayfs, tmpfs


@pytest.mark.parametrize("length", [MAX_MODEL_NAME_LENGTH - 1, MAX_MODEL_NAME_LENGTH])
def test_model_names_up_to_the_limit_are_valid(length: int) -> None:
    stem = "m" * length
    assert check_model_name(stem) == stem == check_model_name(f"{stem}.obj")
    assert is_plain_name(f"{stem}.obj") and is_plain_name(f"{stem}.mtl")


@pytest.mark.parametrize("name", ["m" * (MAX_MODEL_NAME_LENGTH + 1), "tree\n", "tree.", "a..b", ".obj"])
def test_model_names_whose_files_would_not_be_plain_are_refused(name: str) -> None:
    with pytest.raises(UnknownModelError, match="not a valid tree model name"):
        check_model_name(name)


# ---- the durable write ----


def test_write_atomic_writes_bytes_or_parts_with_mode_0644(tmp_path: Path) -> None:
    assert write_atomic(tmp_path / "a.txt", b"hello") == 5
    assert write_atomic(tmp_path / "b.txt", iter([b"he", b"", b"llo"])) == 5
    for name in ("a.txt", "b.txt"):
        assert (tmp_path / name).read_bytes() == b"hello"
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_failure_half_way_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "scene.obj"
    write_atomic(target, b"old")

    def parts() -> Iterator[bytes]:
        yield b"new"
        raise Boom("half-way")

    with pytest.raises(Boom):
        write_atomic(target, parts())
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["scene.obj"]


@pytest.mark.parametrize("call", ["fsync", "replace", "fchmod"])
def test_a_disk_error_propagates_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    def fail(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, call, fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "x.obj", b"x" * 100)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_the_file_and_then_its_folder_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomic(tmp_path / "x.obj", b"x")
    assert synced == ["file", "folder"]


def test_a_folder_that_cannot_be_fsynced_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "folders cannot be fsynced here")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomic(tmp_path / "x.obj", b"x")
    assert (tmp_path / "x.obj").read_bytes() == b"x"


# ---- one of each ----


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            names.add(f"{node.func.value.id}.{node.func.attr}")
    return names


def test_there_is_one_durable_write_and_one_name_rule() -> None:
    durable = {"tempfile.mkstemp", "tempfile.NamedTemporaryFile", "os.replace", "os.rename", "os.fsync"}
    for package in ("treecore", "serve_app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            if where == "treecore/files.py":
                continue
            assert not _calls(path) & durable, f"{where} writes files durably itself: use treecore.files.atomic_writer"
            # A file or blob name rule of its own: use treecore.files.is_plain_name.
            assert "A-Za-z0-9" not in path.read_text(encoding="utf-8"), f"{where} has a name rule of its own"
