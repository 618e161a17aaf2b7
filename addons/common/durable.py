"""Durable file writes: what is written here is on disk, under its name, before the call returns.

A file's data is fsynced before it gets its name, and the directory that holds the name is
fsynced after: a crash never leaves a named file without its data, nor loses a name the
caller was told exists. Used by the recording spool and local store, the state files and the dev issuer's JWKS.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make `path`'s entries (files created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _synced_temp(path: Path, data: bytes, mode: int) -> Path:
    """A new temporary file beside `path` (unique name, ``.tmp-`` prefix, which the spool and
    the local store skip) holding `data` with file mode `mode`, fsynced; removed on failure."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    tmp = Path(name)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def makedirs_durable(path: Path) -> None:
    """mkdir -p, fsyncing each parent whose entries changed (a new directory is not durable
    until its parent's directory entry is)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)  # conversation content: owner only
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def write_exclusive(path: Path, data: bytes, *, mode: int) -> bool:
    """Create `path` with `data` atomically and durably; False if it already exists.

    The data goes to a temporary file first, fsynced, then is hard-linked to its name: the
    link fails if the name exists (exclusive), and a reader never sees a partial file.
    """
    makedirs_durable(path.parent)
    tmp = _synced_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return True


def create_exclusive(path: Path, data: bytes, *, mode: int) -> bool:
    """Create `path` (O_EXCL) with `data`, fsynced; False if it already exists.

    Needs no hard links (it works on any file system a state directory may be on), but a
    reader racing the creation can see the file before its data: `write_exclusive` cannot.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return True


def replace_durable(path: Path, data: bytes, *, mode: int) -> None:
    """Replace `path` with `data` (file mode `mode`): a reader sees the old bytes or the new
    ones, and after a crash the file holds one of them.

    The temporary file has a unique name in `path`'s directory (os.replace does not cross file
    systems), so concurrent replacers of one file never write into each other's temporary
    file: the last replace wins whole. A failed write removes its temporary file.
    """
    tmp = _synced_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
