"""The mitmdump log never shows a token or a secret: mitmproxy's own lines about malformed
requests, identity's lines about refusals, and the Dumper's flow lines, end to end."""

from __future__ import annotations

import base64
import socket

import pytest

from support.harness import read_response
from support.rawwire import API, dev_gateway, read_all, tls, tunnel

pytestmark = pytest.mark.e2e

GITHUB_PAT = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"


def raw_proxy(gw, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as s:
        s.sendall(data)
        return read_all(s, timeout=3)


def test_log_never_shows_a_valid_token_or_a_refused_requests_secret(gateway_factory, upstream):
    gw, token = dev_gateway(gateway_factory)
    basic = base64.b64encode(f"gatehouse:{token}".encode()).decode()

    # Malformed requests carrying a valid token, inside an authenticated tunnel and to the proxy.
    malformed = [
        f"POST /v1/messages?key={token} HTTP/1.1 trailing junk\r\nHost: {API}\r\n\r\n",
        f"POST /v1/messages HTTP/1.1\r\nHost: {API}\r\nBearer {token}: x\r\n\r\n",
        f"POST /v1/messages HTTP/1.1\r\nHost: {API}\r\ntransfer-encoding: chunked\r\n\r\n{token}\r\nhi\r\n0\r\n\r\n",
    ]
    for request in malformed:
        s = tls(gw, tunnel(gw, token=token))
        s.sendall(request.encode())
        reply = read_response(s)
        s.close()
        assert reply.startswith(b"HTTP/1.1 400") and token.encode() not in reply
    reply = raw_proxy(
        gw, f"GET http://{API}/?t={token} HTTP/1.1 junk\r\nProxy-Authorization: Basic {basic}\r\n\r\n".encode()
    )
    assert reply.startswith(b"HTTP/1.1 400") and token.encode() not in reply

    # Refused requests whose target carries a GitHub PAT (logged before masking ever ran).
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as s:
        s.sendall(
            f"CONNECT {GITHUB_PAT}.example.com:443 HTTP/1.1\r\nHost: {GITHUB_PAT}.example.com:443\r\n\r\n".encode()
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 407")
    reply = raw_proxy(
        gw,
        f"GET http://{GITHUB_PAT}.example.com/v1/{GITHUB_PAT} HTTP/1.1\r\n"
        f"Host: {GITHUB_PAT}.example.com\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 4")
    s = tls(gw, tunnel(gw))  # no credentials: identity refuses inside the tunnel
    s.sendall(f"GET /v1/{GITHUB_PAT}/models HTTP/1.1\r\nHost: {GITHUB_PAT}.example.com\r\n\r\n".encode())
    assert read_response(s).startswith(b"HTTP/1.1 401")
    s.close()

    gw.stop()  # everything flushed
    log = gw.log()
    assert token not in log
    for part in token.split("."):
        assert part not in log
    assert GITHUB_PAT not in log and GITHUB_PAT[4:20] not in log
    # ...while the lines still say what happened.
    assert "Bad HTTP request line" in log
    assert "identity: refused CONNECT [MASKED:" in log
    assert "identity: refused GET" in log and "/v1/[MASKED:" in log
    assert not upstream.requests.messages()


def test_injected_api_key_never_reaches_the_log(gateway_factory, upstream, tmp_path):
    """A key with no known shape (so only the policy's key source can tell it is one)."""
    key = "opaque-gateway-key-Zx81Qm4Lr7Tw2Vb9"
    key_file = tmp_path / "claude-key"
    key_file.write_text(key + "\n")
    gw = gateway_factory(f'[credentials]\napi_key_file = "{key_file}"\n')
    s = tls(gw, tunnel(gw))
    s.sendall(f"POST /v1/messages?k={key} HTTP/1.1 junk\r\nHost: {API}\r\n\r\n".encode())
    assert read_response(s).startswith(b"HTTP/1.1 400")
    s.close()
    s = tls(gw, tunnel(gw))
    s.sendall(f"GET /v1/{key} HTTP/1.1\r\nHost: {API}\r\n\r\n".encode())
    read_response(s)
    s.close()
    gw.stop()
    log = gw.log()
    assert key not in log and key[:12] not in log and key[-12:] not in log
    assert "Bad HTTP request line" in log and "[REDACTED:gateway-key]" in log
