"""Raw-wire clients for end-to-end tests: CONNECT tunnels, TLS written byte by byte, raw
HTTP/1.1 requests, and a gateway trusting the local dev issuer (with its tokens).

For tests that must control exactly which bytes reach the gateway, where an SDK would hide it.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

API = "api.anthropic.com"
BODY = '{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
# Looks like a token; a reply must never quote it back.
FAKE_JWT = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6ImdhdGVob3VzZS1kZXYifQ."
    "c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMDEyMzQ1Njc4OQ"
)
PAUSE = 0.1  # between the first write and the rest: mitmproxy sees the first write alone


def post(path: str = "/v1/messages", body: str = BODY, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {API}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n{body}"
    ).encode()


def tunnel(gw, host: str = API, port: int = 443, token: str | None = None) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=15)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    auth = ""
    if token:
        auth = "Proxy-Authorization: Basic " + base64.b64encode(f"gatehouse:{token}".encode()).decode() + "\r\n"
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
    reply = raw.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return raw


def tls(gw, raw: socket.socket, host: str = API, alpn: list[str] | None = None) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=gw.ca_path)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx.wrap_socket(raw, server_hostname=host)


def read_all(sock, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, OSError):
        pass
    return data


class BioClient:
    """A TLS client over a MemoryBIO, so the test decides how its ClientHello is written."""

    def __init__(self, gw, sock: socket.socket, host: str = API) -> None:
        ctx = ssl.create_default_context(cafile=gw.ca_path)
        self.sock, self.inc, self.out = sock, ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=host)

    def client_hello(self) -> bytes:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.out.read()

    def _pump(self) -> None:
        if pending := self.out.read():
            self.sock.sendall(pending)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the gateway")
        self.inc.write(data)

    def finish_handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._pump()
        if pending := self.out.read():
            self.sock.sendall(pending)

    def request(self, data: bytes) -> bytes:
        self.obj.write(data)
        self.sock.sendall(self.out.read())
        buf = b""
        while True:
            try:
                chunk = self.obj.read(65536)
                if not chunk:
                    return buf
                buf += chunk
                if _complete(buf):
                    return buf
            except ssl.SSLWantReadError:
                self._pump()
            except ssl.SSLZeroReturnError:
                return buf


def send_split(sock: socket.socket, first: bytes, rest: bytes) -> None:
    """Two writes, `PAUSE` apart: the gateway reads `first` alone."""
    sock.sendall(first)
    time.sleep(PAUSE)
    sock.sendall(rest)


def post_after_split_hello(gw, n: int) -> bytes:
    """Through a fresh tunnel: the ClientHello's first `n` bytes, a pause, the rest, then (TLS
    done) `post()`; the raw reply."""
    sock = tunnel(gw)
    client = BioClient(gw, sock)
    hello = client.client_hello()
    send_split(sock, hello[:n], hello[n:])
    client.finish_handshake()
    reply = client.request(post())
    sock.close()
    return reply


def _complete(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_and_json(reply: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:]))
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_anthropic_error(reply: bytes, status: int, etype: str) -> dict:
    code, headers, doc = status_and_json(reply)
    assert code == status, reply[:300]
    assert headers["content-type"] == "application/json"
    assert doc["type"] == "error" and doc["error"]["type"] == etype and doc["error"]["message"]
    return doc


# -- a gateway with the local development issuer -----------------------------------------------

DEV_POLICY = """
[gateway]
state_dir = "{state}"

[[issuers]]
name = "dev"
issuer = "gatehouse-dev"
audience = "gatehouse"
algorithms = ["EdDSA"]
jwks_file = "{state}/dev-issuer.jwks.json"

[groups.developers]
models = ["claude-*"]
"""


def gatehouse_token(policy: Path, *args: str) -> str:
    """A token from the local dev issuer (`gatehouse token ... --print`), e.g. "--sub", "alice"."""
    gatehouse = Path(sys.executable).parent / "gatehouse"
    r = subprocess.run(
        [str(gatehouse), "token", "--policy", str(policy), *args, "--print"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return r.stdout.strip()


def dev_issuer_gateway(gateway_factory, extra: str = "", *, start: bool = True):
    """A gateway (started unless `start=False`) trusting the local dev issuer, as the quick
    start does; returns it and its state folder (the issuer's key and JWKS live there)."""
    gw = gateway_factory("", start=False)
    state = gw.policy_path.parent / "state"
    gw.policy_path.write_text(DEV_POLICY.format(state=state) + extra)
    return (gw.start() if start else gw), state


def dev_gateway(gateway_factory, extra: str = ""):
    """A started dev-issuer gateway and a token of alice's in group developers."""
    gw, _ = dev_issuer_gateway(gateway_factory, extra, start=False)
    token = gatehouse_token(gw.policy_path, "--sub", "alice", "--groups", "developers")
    return gw.start(), token
