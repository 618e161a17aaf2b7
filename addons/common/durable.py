"""Durable file writes: what is written here is on disk, under its name, before the call returns.

A file's data is fsynced before it gets its name, and the directory that holds the name is
fsynced after: a crash never leaves a named file without its data, nor loses a name the
caller was told exists. Used by the recording spool and local store, the state files and the dev issuer's JWKS.

A batch of many small files (the local store's uploads) can instead be made durable with one
``syncfs`` per file system (`FileSystemSync`): an fsync per file and per directory costs a
journal commit each on ext4, and those compete with the spool's appends for the disk.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterable
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


def makedirs_durable(path: Path, *, fsync_parents: bool = True) -> None:
    """mkdir -p, owner-only, fsyncing each parent whose entries changed (a new directory is not
    durable until its parent's directory entry is). `fsync_parents=False`: the caller makes the
    whole file system durable afterwards (`FileSystemSync`)."""
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
        if fsync_parents:
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


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(2)`` where it reports write-back errors to its caller (Linux 5.8 and
    later; before, it could return 0 after a failed write-back), else None."""
    if sys.platform != "linux":
        return None
    try:
        major, minor = (int(n) for n in platform.release().split(".")[:2])
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (ValueError, OSError, AttributeError):
        return None
    if (major, minor) < (5, 8):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()


# File systems whose ``syncfs`` puts data and metadata on stable storage. On others (most FUSE
# mounts, vfat, network and overlay file systems) it may return 0 without doing what fsync
# does, or without reporting a lower layer's error: they keep the per-file fsyncs.
SYNCFS_FILE_SYSTEMS = frozenset({"ext4", "xfs", "btrfs", "tmpfs"})
_FS_TYPES: dict[int, str | None] = {}


def _fs_type(dev: int) -> str | None:
    """The type of the mounted file system with device number `dev` (/proc/self/mountinfo),
    or None when no mount has it (a btrfs subvolume's own number, for one)."""
    if dev not in _FS_TYPES:
        want = f"{os.major(dev)}:{os.minor(dev)}"
        found = None
        try:
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[2] == want and " - " in line:
                    found = line.split(" - ", 1)[1].split()[0]
                    break
        except OSError:
            pass
        _FS_TYPES[dev] = found
    return _FS_TYPES[dev]


class FileSystemSync:
    """Makes everything written on the file systems holding some directories durable, with one
    ``syncfs`` each: file data, new names, new directories, other processes' writes too.

    Open it before the writes it is to cover: ``syncfs`` reports a write-back error that
    happened since its descriptor was opened. `FileSystemSync.open` returns None where the
    system has no such call, or a file system is not one whose ``syncfs`` is known to be as
    good as fsync (`SYNCFS_FILE_SYSTEMS`): the caller fsyncs each file and directory instead."""

    def __init__(self, fds: dict[int, int]) -> None:
        self._fds = fds  # device number -> a descriptor of a directory on it

    @staticmethod
    def available() -> bool:
        return _SYNCFS is not None

    @classmethod
    def open(cls, dirs: Iterable[Path]) -> FileSystemSync | None:
        """One descriptor per file system among `dirs` (which must exist); None without syncfs
        or on a file system outside `SYNCFS_FILE_SYSTEMS`."""
        if _SYNCFS is None:
            return None
        fs = cls({})
        try:
            for d in dirs:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    dev = os.fstat(fd).st_dev
                except BaseException:
                    os.close(fd)
                    raise
                if dev in fs._fds:
                    os.close(fd)
                    continue
                fs._fds[dev] = fd
                if _fs_type(dev) not in SYNCFS_FILE_SYSTEMS:
                    fs.close()
                    return None
        except BaseException:
            fs.close()
            raise
        return fs

    def covers(self, dirs: Iterable[Path]) -> bool:
        """Whether every one of `dirs` is on a file system this syncs."""
        return all(os.stat(d).st_dev in self._fds for d in dirs)

    def sync(self) -> None:
        """Wait until everything written on these file systems is on disk; OSError if any
        write-back failed since `open`."""
        assert _SYNCFS is not None
        for fd in self._fds.values():
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno() or errno.EIO
                raise OSError(err, os.strerror(err))

    def close(self) -> None:
        fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass  # closing a directory descriptor loses nothing

    def __enter__(self) -> FileSystemSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
