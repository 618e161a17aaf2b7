"""Durable writes: exclusive, complete under their name, and directories created owner-only."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from gatehouse.common import durable
from gatehouse.common.durable import (
    FileSystemSync,
    create_exclusive,
    makedirs_durable,
    replace_durable,
    write_exclusive,
)
from support.syncfs import failing_syncfs


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_makedirs_durable_creates_every_missing_folder_owner_only(tmp_path: Path) -> None:
    makedirs_durable(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    makedirs_durable(tmp_path / "a" / "b")  # exists: nothing to do


def test_write_exclusive_never_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "d" / "x.json"
    assert write_exclusive(path, b"one", mode=0o400) is True
    assert write_exclusive(path, b"two", mode=0o400) is False
    assert path.read_bytes() == b"one" and mode(path) == 0o400 and mode(path.parent) == 0o700
    assert os.listdir(path.parent) == ["x.json"]


def test_create_exclusive_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert create_exclusive(path, b"first", mode=0o600) is True
    assert create_exclusive(path, b"second", mode=0o600) is False
    assert path.read_bytes() == b"first" and mode(path) & 0o077 == 0


def test_replace_durable_swaps_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "head.json"
    replace_durable(path, b"old", mode=0o600)
    replace_durable(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["head.json"]


def test_replace_durable_sets_the_mode_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    replace_durable(path, b"public", mode=0o644)
    assert mode(path) == 0o644
    replace_durable(path, b"private", mode=0o600)
    assert path.read_bytes() == b"private" and mode(path) == 0o600


def test_concurrent_replacers_each_leave_one_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "head.json"
    payloads = [bytes([65 + i]) * 100_000 for i in range(8)]
    start = threading.Barrier(len(payloads))
    errors: list[BaseException] = []

    def replace(data: bytes) -> None:
        start.wait()
        try:
            for _ in range(20):
                replace_durable(path, data, mode=0o600)
        except BaseException as e:  # a collision on a shared temporary name shows up here
            errors.append(e)

    threads = [threading.Thread(target=replace, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["head.json"]


def test_a_failed_replace_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "head.json"
    replace_durable(path, b"old", mode=0o600)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        replace_durable(path, b"new", mode=0o600)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["head.json"]


@pytest.mark.skipif(not FileSystemSync.available(), reason="no syncfs(2) here")
def test_file_system_sync_syncs_each_file_system_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = durable._SYNCFS
    assert real is not None
    synced: list[int] = []

    def syncfs(fd: int) -> int:
        synced.append(os.fstat(fd).st_dev)
        return real(fd)

    monkeypatch.setattr(durable, "_SYNCFS", syncfs)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with FileSystemSync.open([tmp_path / "a", tmp_path / "b", tmp_path]) as fs:
        assert fs is not None
        (tmp_path / "a" / "x").write_bytes(b"x")
        fs.sync()
    assert synced == [tmp_path.stat().st_dev]  # three folders, one file system: one call


def test_file_system_sync_reports_a_failed_write_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable, "_SYNCFS", failing_syncfs())
    fs = FileSystemSync.open([tmp_path])
    assert fs is not None
    with fs, pytest.raises(OSError) as e:
        fs.sync()
    assert e.value.errno == errno.EIO


def test_without_syncfs_there_is_no_file_system_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable, "_SYNCFS", None)
    assert not FileSystemSync.available()
    assert FileSystemSync.open([tmp_path]) is None
