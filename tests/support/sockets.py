"""Sockets of the test servers on loopback (the fake upstream, the S3 relay, the API stand-in):
a listener whose accept loop notices a stop, and the set of open connections a stop cuts.

Cutting matters: a paused stream or an idle keep-alive connection would otherwise outlive the
server and keep its client (or the gateway under test) waiting.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator


def loopback_listener(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (`port` 0: a free one) whose accept() wakes every
    0.1 s, so that `accept_until` sees a stop (closing a socket does not wake a blocked accept)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    listener.settimeout(0.1)
    return listener


def accept_until(listener: socket.socket, stopped: Callable[[], bool]) -> Iterator[socket.socket]:
    """Connections accepted on `listener` until `stopped()` or the listener is closed."""
    while not stopped():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        yield conn


class OpenSockets:
    """The connections a server has open; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    def add(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets.update(sockets)

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def cut(self) -> None:
        """Shut every open connection down both ways; their owners' reads and writes fail."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
