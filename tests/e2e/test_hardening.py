"""Paths around the checks, found in review: each must be refused, never forwarded uninspected."""

from __future__ import annotations

import socket
import ssl

import pytest

from support.harness import GATEWAY_KEY, read_response

pytestmark = pytest.mark.e2e

GITHUB_PAT = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"
BODY = '{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"' + GITHUB_PAT + '"}]}'


def tls_request(gw, request: bytes, host: str = "api.anthropic.com", port: int = 443) -> bytes:
    """CONNECT, TLS to the gateway's certificate for `host`, one raw HTTP/1.1 request."""
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=15)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile=gw.ca_path)
    s = ctx.wrap_socket(raw, server_hostname=host)
    s.sendall(request)
    try:
        return read_response(s)
    finally:
        s.close()


def post(path: str, body: str = BODY, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: api.anthropic.com\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n{body}"
    ).encode()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/../messages",
        "/v1/models/..%2fmessages",
        "/v1/models/%2e%2e/messages",
        "/api/claude_code/../../v1/messages",
        "//v1/messages",
        "/v1\\messages",
    ],
)
def test_ambiguous_paths_are_refused(gateway, upstream, path):
    reply = tls_request(gateway, post(path))
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert not upstream.requests.messages() and not [r for r in upstream.requests if r.method == "POST"]


def test_duplicate_json_keys_are_refused(gateway, upstream):
    body = (
        '{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"'
        + GITHUB_PAT
        + '"}],"messages":[{"role":"user","content":"hi"}]}'
    )
    reply = tls_request(gateway, post("/v1/messages", body))
    assert reply.startswith(b"HTTP/1.1 400") and b"twice" in reply
    assert not upstream.requests.messages()


def test_plain_http_to_the_api_host_is_refused(gateway, upstream):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as s:
        s.sendall(post("http://api.anthropic.com/v1/messages"))
        reply = read_response(s)
    assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
    assert not upstream.requests.messages()


def test_sni_cannot_open_a_passthrough_tunnel_to_the_api(gateway_factory, upstream):
    gw = gateway_factory('[gateway]\npassthrough_hosts = ["statsig.anthropic.com"]\n')
    # CONNECT to the API host, SNI naming the passthrough host: still intercepted (our CA answers).
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=15)
    raw.sendall(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n")
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile=gw.ca_path)
    ctx.check_hostname = False
    s = ctx.wrap_socket(raw, server_hostname="statsig.anthropic.com")  # verifies: the gateway's own CA
    s.sendall(post("/v1/messages"))
    data = read_response(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 200")
    [req] = upstream.requests.messages()
    assert GITHUB_PAT.encode() not in req.body and req.headers["x-api-key"] == GATEWAY_KEY


def test_compressed_request_body_is_refused(gateway, upstream):
    import gzip

    body = gzip.compress(BODY.encode())
    req = (
        b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\ncontent-type: application/json\r\n"
        b"content-encoding: gzip\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    reply = tls_request(gateway, req)
    assert reply.startswith(b"HTTP/1.1 400") and b"compressed" in reply
    assert not upstream.requests.messages()


def test_stream_large_bodies_is_refused_at_startup(gateway_factory):
    gw = gateway_factory("", start=False, extra_args=["--set", "stream_large_bodies=1k"])
    code, out = gw.run_to_exit()
    assert code != 0 and "stream_large_bodies" in out


def test_failure_while_choosing_the_stream_path_never_leaks_the_body(gateway_factory, upstream, tmp_path):
    """An internal error in masking's responseheaders refuses the response; mitmproxy must not
    fill the refusal with the upstream's (unmasked) body."""
    from support.fake_upstream import Reply

    inject = tmp_path / "inject_failure.py"
    inject.write_text(
        "from gatehouse.wire import pipeline\n"
        "def broken(*args, **kwargs):\n    raise RuntimeError('injected failure')\n"
        "pipeline.SsePipeline.__init__ = broken\n"
    )
    gw = gateway_factory("", extra_args=["-s", str(inject)])
    upstream.enqueue(Reply.text(f"leak {GITHUB_PAT} here", chunk_chars=8))
    stream_body = BODY.replace('"max_tokens":5,', '"max_tokens":5,"stream":true,')
    reply = tls_request(gw, post("/v1/messages", stream_body))
    assert reply.startswith(b"HTTP/1.1 500"), reply[:300]
    assert GITHUB_PAT.encode() not in reply and b"leak" not in reply
    assert b"masking failed" in reply
