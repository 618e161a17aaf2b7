"""Durable writes: exclusive, complete under their name, and directories created owner-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gatehouse.common.durable import create_exclusive, makedirs_durable, replace_durable, write_exclusive


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
    replace_durable(path, b"old")
    replace_durable(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["head.json"]
