"""The gateway-held Claude API key: which one applies to a caller, and reading it.

A key file is read on every request, on the event loop: its content is cached and re-read only
when a stat of the file says it changed (see `_FileKeys`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from gatehouse.credentials.config import KeySource
from gatehouse.exchange import Identity
from gatehouse.policy.loader import Policy


class MissingKey(Exception):
    """No key could be read from the configured source. The message names the source, never a value."""


def key_source_for(policy: Policy, identity: Identity | None) -> tuple[KeySource, str | None]:
    """The key source for this caller and the group whose override chose it (None: the default)."""
    if identity is not None and policy.credentials.groups:
        mine = set(identity.groups)
        for group, source in policy.credentials.groups.items():
            if group in mine:
                return source, group
    return policy.credentials.default, None


def read_key(source: KeySource, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if source.env:
        value = environ.get(source.env, "").strip()
        if not value:
            raise MissingKey(f"the gateway has no Claude API key: environment variable {source.env} is not set")
        return value
    assert source.file is not None
    try:
        value = _file_keys.read(source.file)
    except OSError as e:
        raise MissingKey(f"the gateway has no Claude API key: cannot read {source.file} ({e.strerror})") from None
    if not value:
        raise MissingKey(f"the gateway has no Claude API key: {source.file} is empty")
    return value


def _read(path: Path) -> str:
    return path.read_text().strip()


# A file modified this recently may change again within the file system's timestamp resolution
# without its stat changing (same size): its content is not trusted from the cache until older.
_RACY_NS = 2_000_000_000


class _FileKeys:
    """Key file contents by path, each with the stat it was read under.

    A read costs one stat while the file is unchanged; a changed device, inode, size, mtime or
    ctime (a rotation by rename, an edit in place, a chmod) re-reads it; a file that cannot be
    stat'ed (removed) raises the OSError a read would, and is forgotten.
    """

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, ...], str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _signature(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self, path: Path) -> str:
        try:
            before = os.stat(path)
        except OSError:
            with self._lock:
                self._cache.pop(path, None)
            raise
        sig = self._signature(before)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == sig:
            return cached[1]
        value = _read(path)
        # Cached only if the file did not change while it was read and is not racily new.
        after = os.stat(path)
        recent = time.time_ns() - after.st_mtime_ns < _RACY_NS
        with self._lock:
            if self._signature(after) == sig and not recent:
                self._cache[path] = (sig, value)
            else:
                self._cache.pop(path, None)
        return value


_file_keys = _FileKeys()
