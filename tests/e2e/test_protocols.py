"""Only HTTP is carried, errors are answered (never crashes), and the gateway process never
leaves loopback: end to end through a real mitmdump.

Every gateway here resolves api.anthropic.com to the `api_standin` (tests/support/standin): a byte
relayed "to the real API" lands there, and the conftest fails any test whose stand-in got one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from support.harness import free_port, read_response
from support.rawwire import (
    API,
    BODY,
    FAKE_JWT,
    BioClient,
    assert_anthropic_error,
    dev_gateway,
    post,
    post_after_split_hello,
    read_all,
    send_split,
    tls,
    tunnel,
)

pytestmark = pytest.mark.e2e

# -- 1. only HTTP is carried ----------------------------------------------------------------------


def test_client_hello_split_after_every_first_write_size(gateway, upstream, api_standin):
    """The first write inside the tunnel is 1..40 bytes of a real ClientHello, then the rest:
    mitmproxy must wait for enough bytes to see TLS, never fall back to a raw TCP relay."""
    for n in range(1, 41):
        reply = post_after_split_hello(gateway, n)
        assert reply.startswith(b"HTTP/1.1 200"), (n, reply[:300])
    assert len(upstream.requests.messages()) == 40
    assert api_standin.received == b"" and api_standin.connections == 0


def test_http_request_split_after_every_first_write_size_inside_tls_without_alpn(gateway, upstream, api_standin):
    request = post()
    for n in range(1, 41):
        s = tls(gateway, tunnel(gateway))
        assert s.selected_alpn_protocol() is None
        send_split(s, request[:n], request[n:])
        reply = read_response(s)
        s.close()
        assert reply.startswith(b"HTTP/1.1 200"), (n, reply[:300])
    assert len(upstream.requests.messages()) == 40
    assert api_standin.received == b"" and api_standin.connections == 0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_unauthenticated_short_first_write_is_not_relayed(gateway_factory, upstream, api_standin, n):
    """The attack: CONNECT without credentials, a couple of bytes, then the rest: before, a raw
    relay to the real API without a token check. Now TLS is intercepted and identity answers."""
    gw, _ = dev_gateway(gateway_factory)
    assert_anthropic_error(post_after_split_hello(gw, n), 401, "authentication_error")
    # Inside the gateway's TLS too: one or two bytes of a request, then the rest.
    s = tls(gw, tunnel(gw))
    send_split(s, post()[:n], post()[n:])
    assert_anthropic_error(read_response(s), 401, "authentication_error")
    s.close()
    assert not upstream.requests.messages()
    assert api_standin.received == b"" and api_standin.connections == 0


def test_short_first_writes_then_garbage_are_never_relayed(gateway, upstream, api_standin):
    for first in (b"\x16", b"\x16\x03", b"\x00", b"P", b"\x16\x03\x05"):
        sock = tunnel(gateway)
        send_split(sock, first, b"\x00garbage that is neither TLS nor HTTP\r\n\r\n" * 4)
        reply = read_all(sock, timeout=3)
        sock.close()
        assert not reply or reply.startswith(b"HTTP/1.1 400"), (first, reply[:200])
    assert not upstream.requests.messages()
    assert api_standin.received == b"" and api_standin.connections == 0


def test_switches_cannot_turn_raw_relays_back_on(gateway_factory, upstream, api_standin):
    gw = gateway_factory("", extra_args=["--set", "rawtcp=true", "--set", "websocket=true", "--set", "http3=true"])
    for first in (b"\x16", b"PO", b"\x00\x01"):
        sock = tunnel(gw)
        send_split(sock, first, b"\x00\x01\x02 not a protocol\r\n\r\n")
        read_all(sock, timeout=2)
        sock.close()
    assert api_standin.received == b"" and api_standin.connections == 0


def test_non_http_layer_in_the_tunnel_is_closed(gateway, upstream, api_standin):
    """A CONNECT to the API host's port 53 with TLS and no ALPN inside: mitmproxy would pick its
    DNS layer (a relay of DNS messages to the real host). The gateway closes it."""
    s = tls(gateway, tunnel(gateway, port=53))
    s.sendall(post())
    assert read_all(s, timeout=3) == b""
    s.close()
    assert not upstream.requests.messages()
    assert api_standin.received == b"" and api_standin.connections == 0
    assert "closed a connection to api.anthropic.com:53" in gateway.log()


def test_websocket_upgrade_is_refused_before_upstream(gateway_factory, upstream, api_standin):
    gw, token = dev_gateway(gateway_factory)
    s = tls(gw, tunnel(gw, token=token))
    s.sendall(
        f"GET /v1/messages HTTP/1.1\r\nHost: {API}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    doc = assert_anthropic_error(read_response(s), 400, "invalid_request_error")
    s.close()
    assert "upgrade" in doc["error"]["message"].lower()
    assert not list(upstream.requests)
    assert api_standin.received == b""


@pytest.mark.parametrize(
    "args, words",
    [
        (["--ignore-hosts", "example\\.com"], "ignore_hosts"),
        (["--allow-hosts", "api\\.anthropic\\.com"], "allow_hosts"),
        (["--tcp-hosts", ".*"], "tcp_hosts"),
        (["--mode", "socks5"], "socks5"),
        (["--mode", "reverse:tcp://127.0.0.1:9"], "reverse:tcp"),
        (["--set", "hardump=-"], "hardump"),  # flow dumps hold the injected key
        (["--set", "save_stream_file=flows.mitm"], "save_stream_file"),
    ],
)
def test_options_that_relay_uninspected_stop_the_gateway(gateway_factory, args, words):
    code, out = gateway_factory("", start=False, extra_args=args).run_to_exit()
    assert code != 0 and words in out, out[-2000:]


# -- 2. never leave loopback ----------------------------------------------------------------------


@pytest.mark.reaches_api_standin
def test_api_host_resolves_to_the_standin_and_other_names_fail(gateway_factory, api_standin):
    gw = gateway_factory(
        '[gateway]\npassthrough_hosts = ["statsig.anthropic.com"]\n', upstream_url="https://api.anthropic.com"
    )
    # An upstream of api.anthropic.com:443 reaches the stand-in's port, not the real API.
    s = tls(gw, tunnel(gw))
    s.sendall(post())
    deadline = time.monotonic() + 10
    while not api_standin.received and time.monotonic() < deadline:
        time.sleep(0.05)
    s.close()
    assert api_standin.received.startswith(b"\x16\x03"), api_standin.received[:20]
    # A passthrough host is relayed as is, but its name does not resolve in tests.
    raw = tunnel(gw, host="statsig.anthropic.com")
    raw.sendall(BioClient(gw, raw, host="statsig.anthropic.com").client_hello())
    assert read_all(raw, timeout=3) == b""
    raw.close()
    assert "does not resolve in the gateway's test environment" in gw.log()


def test_standin_sitecustomize_rules(api_standin):
    """What every gateway process gets on its PYTHONPATH (tests/support/harness.py)."""
    from support.harness import STANDIN_DIR, STANDIN_ENV

    code = (
        "import socket\n"
        "print(socket.getaddrinfo('api.anthropic.com', 443, type=socket.SOCK_STREAM)[0][4])\n"
        "print(socket.getaddrinfo('localhost', 80, socket.AF_INET)[0][4][0])\n"
        "for name in ('example.com', 'statsig.anthropic.com', '8.8.8.8'):\n"
        "    try:\n"
        "        socket.getaddrinfo(name, 443)\n"
        "        print('resolved', name)\n"
        "    except socket.gaierror:\n"
        "        print('gaierror', name)\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('93.184.215.14', 443))\n"
        "except OSError as e:\n"
        "    print('refused', e.errno)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(STANDIN_DIR), STANDIN_ENV: api_standin.address}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    host, port = api_standin.address.split(":")
    assert lines[0] == str((host, int(port))) and lines[1] == "127.0.0.1"
    assert lines[2:5] == ["gaierror example.com", "gaierror statsig.anthropic.com", "gaierror 8.8.8.8"]
    assert lines[5].startswith("refused")


# -- 3. errors, not crashes -----------------------------------------------------------------------


def test_chunked_request_with_trailers_is_refused_and_the_gateway_keeps_serving(gateway, upstream):
    body = BODY.encode()
    request = (
        f"POST /v1/messages HTTP/1.1\r\nHost: {API}\r\ncontent-type: application/json\r\n"
        "transfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\nx-checksum: abc\r\n\r\n" % (len(body), body)
    s = tls(gateway, tunnel(gateway))
    s.sendall(request)
    doc = assert_anthropic_error(read_response(s), 400, "invalid_request_error")
    s.close()
    assert "trailers" in doc["error"]["message"]
    assert not upstream.requests.messages()
    # Still serving, and the same body without trailers passes.
    s = tls(gateway, tunnel(gateway))
    s.sendall(request.replace(b"0\r\nx-checksum: abc\r\n\r\n", b"0\r\n\r\n"))
    assert read_response(s).startswith(b"HTTP/1.1 200")
    s.close()
    assert "has crashed" not in gateway.log()


MALFORMED = {
    "request line": f"POST /v1/messages?t={FAKE_JWT} HTTP/1.1 trailing junk\r\nHost: {API}\r\n\r\n".encode(),
    "header name": f"POST /v1/messages HTTP/1.1\r\nHost: {API}\r\nBearer {FAKE_JWT}: x\r\n\r\n".encode(),
    "content-length": f"POST /v1/messages HTTP/1.1\r\nHost: {API}\r\ncontent-length: {FAKE_JWT}\r\n\r\n".encode(),
    "both lengths": (
        f"POST /v1/messages HTTP/1.1\r\nHost: {API}\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
    ).encode(),
    "chunk header": (
        f"POST /v1/messages HTTP/1.1\r\nHost: {API}\r\ncontent-type: application/json\r\n"
        f"transfer-encoding: chunked\r\n\r\n{FAKE_JWT}\r\nhello\r\n0\r\n\r\n"
    ).encode(),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_get_anthropic_errors_that_quote_nothing(gateway, upstream, name):
    s = tls(gateway, tunnel(gateway))
    s.sendall(MALFORMED[name])
    reply = read_response(s)
    s.close()
    assert_anthropic_error(reply, 400, "invalid_request_error")
    assert FAKE_JWT.encode() not in reply and FAKE_JWT[:20].encode() not in reply
    assert not upstream.requests.messages()


def test_malformed_request_to_the_proxy_itself_gets_a_json_error(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as s:
        s.sendall(f"GARBAGE\x01 {FAKE_JWT}\r\n\r\n".encode())
        reply = read_response(s)
    assert_anthropic_error(reply, 400, "invalid_request_error")
    assert FAKE_JWT[:20].encode() not in reply


def test_unreachable_upstream_is_a_json_502(gateway_factory):
    gw = gateway_factory("", upstream_url=f"https://127.0.0.1:{free_port()}")
    s = tls(gw, tunnel(gw))
    s.sendall(post())
    doc = assert_anthropic_error(read_response(s), 502, "api_error")
    s.close()
    assert "upstream" in doc["error"]["message"] and "127.0.0.1" not in doc["error"]["message"]


def h2_exchange(
    gw, headers: list[tuple[str, str]], body: bytes = b"", trailers: list[tuple[str, str]] | None = None
) -> tuple[dict[str, str], bytes]:
    import h2.config
    import h2.connection
    import h2.events

    s = tls(gw, tunnel(gw), alpn=["h2"])
    assert s.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=not body and not trailers)
    if body:
        conn.send_data(sid, body, end_stream=not trailers)
    if trailers:
        conn.send_headers(sid, trailers, end_stream=True)
    s.sendall(conn.data_to_send())
    resp_headers: dict[str, str] = {}
    data = b""
    s.settimeout(15)
    done = False
    while not done:
        chunk = s.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                resp_headers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        s.sendall(conn.data_to_send())
    s.close()
    return resp_headers, data


def h2_post(body: str = BODY) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", API),
        (":path", "/v1/messages"),
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
    ]


def test_http2_unreachable_upstream_is_a_json_502(gateway_factory):
    gw = gateway_factory("", upstream_url=f"https://127.0.0.1:{free_port()}")
    headers, data = h2_exchange(gw, h2_post(), BODY.encode())
    assert headers[":status"] == "502" and headers["content-type"] == "application/json", headers
    assert json.loads(data)["error"]["type"] == "api_error"


def test_http2_request_with_trailers_is_refused(gateway, upstream):
    headers, data = h2_exchange(gateway, h2_post(), BODY.encode(), trailers=[("x-checksum", "abc")])
    assert headers[":status"] == "400", headers
    assert "trailers" in json.loads(data)["error"]["message"]
    assert not upstream.requests.messages()
    headers, _ = h2_exchange(gateway, h2_post(), BODY.encode())
    assert headers[":status"] == "200"


def test_unloading_the_gateway_script_stops_the_gateway(gateway_factory, tmp_path):
    """mitmproxy reloads a script whose file changes; a failed reload would leave a plain proxy
    without identity, masking or these guards. The gateway stops instead."""
    script = tmp_path / "gateway_copy.py"
    from support.harness import GATEWAY_SCRIPT

    script.write_text(GATEWAY_SCRIPT.read_text())
    gw = gateway_factory("", start=False)
    gw.port = free_port()
    cmd = gw.command()
    cmd[cmd.index(str(GATEWAY_SCRIPT))] = str(script)
    gw.command = lambda: cmd  # type: ignore[method-assign]
    gw.start()
    time.sleep(1.0)
    script.write_text("this is not python (\n")  # the reload fails
    assert gw.proc is not None
    gw.proc.wait(timeout=30)
    assert "unloaded or reloaded while running" in gw.log()
