"""A stand-in for libc's syncfs(2) behind `gatehouse.common.durable.FileSystemSync`, for tests."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable, Container

from gatehouse.common import durable


def failing_syncfs(on_calls: Container[int] | None = None) -> Callable[[int], int]:
    """A syncfs that fails with EIO (a write-back error) on the calls numbered in `on_calls`
    (from 1; every call when None) and runs the real one otherwise."""
    real = durable._SYNCFS
    calls = 0

    def syncfs(fd: int) -> int:
        nonlocal calls
        calls += 1
        if on_calls is None or calls in on_calls:
            ctypes.set_errno(errno.EIO)
            return -1
        assert real is not None
        return real(fd)

    return syncfs
