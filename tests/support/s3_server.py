"""A real S3 endpoint on loopback for tests: the moto server, as a subprocess.

`S3Server` starts `.venv/bin/moto_server -H 127.0.0.1 -p PORT` and waits until it answers.
Clients talk to it through a small TCP relay on a port of its own (`endpoint_url`), so a
fault test can take the endpoint down (`stop()`: connections refused, open ones cut) and
bring it back (`restart()`: same URL) without losing what moto holds in memory, which a
restart of the moto process would.

    with S3Server() as s3:
        s3.create_bucket("rec", object_lock=True)
        store = open_store("s3://rec/x", endpoint_url=s3.endpoint_url)
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from support.harness import free_port, stop_process
from support.sockets import OpenSockets, accept_until, loopback_listener

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _moto_server_bin() -> str:
    candidate = Path(sys.executable).parent / "moto_server"
    if candidate.exists():
        return str(candidate)
    return str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "moto_server")


class _Relay:
    """Accepts on `port` and pipes each connection to the moto server; with `delay`, each
    chunk the server sends back waits that long first (a network's round trip)."""

    def __init__(self, port: int, target: tuple[str, int], delay: float = 0.0) -> None:
        self.port = port
        self.target = target
        self.delay = delay
        self._listener: socket.socket | None = None
        self._conns = OpenSockets()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        self._listener = loopback_listener(self.port)
        self._stopped.clear()
        self._thread = threading.Thread(target=self._accept, name="s3-relay", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        for client in accept_until(self._listener, self._stopped.is_set):
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.add(client, upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stopped.is_set():
                for key, _ in sel.select(timeout=0.1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    if self.delay and key.fileobj is b:
                        time.sleep(self.delay)
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                self._conns.discard(s)
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._conns.cut()
        if self._thread is not None:
            self._thread.join(2)


class S3Server:
    """`delay`: seconds each of the server's answers takes to come back (see `_Relay`)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.moto_port = free_port()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._relay: _Relay | None = None
        self.log_path: Path | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def start(self, timeout: float = 30.0) -> S3Server:
        env = dict(os.environ, **CREDENTIALS)
        self.proc = subprocess.Popen(
            [_moto_server_bin(), "-H", "127.0.0.1", "-p", str(self.moto_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with status {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.moto_url}/moto-api/", timeout=1).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"moto_server did not answer on {self.moto_url} within {timeout}s") from None
                time.sleep(0.1)
        self._relay = _Relay(self.port, ("127.0.0.1", self.moto_port), self.delay)
        self._relay.start()
        return self

    # -- faults --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Take the endpoint down: new connections are refused, open ones are cut."""
        if self._relay is not None:
            self._relay.stop()
            self._relay = None

    def restart(self) -> None:
        """Bring the endpoint back on the same URL, with everything moto held."""
        if self._relay is None:
            self._relay = _Relay(self.port, ("127.0.0.1", self.moto_port), self.delay)
            self._relay.start()

    @property
    def up(self) -> bool:
        return self._relay is not None

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        self.stop()
        if self.proc is not None:
            stop_process(self.proc, 5)
        self.proc = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every bucket (moto's reset API)."""
        req = urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str, *, object_lock: bool = True) -> None:
        kwargs: dict[str, Any] = {"Bucket": name}
        if object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        self.client().create_bucket(**kwargs)
