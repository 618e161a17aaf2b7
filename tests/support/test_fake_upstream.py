"""Tests of the fake Anthropic upstream: real clients (the anthropic SDK, raw sockets, the Claude
Code CLI) talk to it directly, no proxy in between. Everything is on loopback and bounded in time.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam
from cryptography import x509

from support.fake_upstream import (
    DEFAULT_TEXT,
    FakeUpstream,
    Gate,
    ReceivedRequest,
    Reply,
    assemble_message,
    claude_code_tool_responder,
    complete_message,
    encode_sse,
    parse_sse,
    sse_events,
)
from support.harness import stop_process
from support.tls_certs import client_ssl_context, make_ca, make_server_cert, write_mitmproxy_ca

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
TIMEOUT = 10.0  # seconds, for every client call


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server
    assert not server.errors, f"responder raised: {server.errors}"


@pytest.fixture
def tls_up() -> Iterator[FakeUpstream]:
    with FakeUpstream(tls=True) as server:
        yield server


def sdk(up: FakeUpstream, **kwargs: object) -> anthropic.Anthropic:
    if up.ca_cert_path:
        # httpx2 deprecates verify=<path>; an SSL context trusting only the fake's CA is the
        # supported form.
        kwargs["http_client"] = anthropic.DefaultHttpxClient(verify=client_ssl_context(up.ca_cert_path))
    return anthropic.Anthropic(base_url=up.base_url, api_key="sk-ant-test", max_retries=0, timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]


def raw_request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str], bytes]:
    """Send one request on a fresh socket with `Connection: close`; return the status line, the
    lower-cased headers and the raw body bytes (still chunk-encoded)."""
    head = {"host": f"127.0.0.1:{port}", "connection": "close", "content-length": str(len(body)), **(headers or {})}
    data = f"{method} {path} HTTP/1.1\r\n".encode()
    data += b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    raw_head, _, raw_body = received.partition(b"\r\n\r\n")
    status, *lines = raw_head.decode().split("\r\n")
    parsed = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, parsed, raw_body


def dechunk(body: bytes) -> tuple[list[bytes], bool]:
    """Split a chunked body into its chunks; the flag says whether the 0-size terminator came."""
    chunks: list[bytes] = []
    rest = body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks, True
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    return chunks, False


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `fn` in a daemon thread; its result lands in out["value"], or out["error"]."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


# --------------------------------------------------------------------------------------------
# the Messages API through the SDK
# --------------------------------------------------------------------------------------------


def test_buffered_default_answer_echoes_model_and_records_request(up: FakeUpstream) -> None:
    raw = sdk(up).messages.with_raw_response.create(model="claude-test-model", max_tokens=50, messages=HELLO)
    message = raw.parse()
    assert message.model == "claude-test-model"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["content-type"] == "application/json"
    assert re.fullmatch(r"req_fake_[0-9a-f]+", raw.headers["request-id"])

    [request] = up.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    # SDK 2.x sends the API key as a bearer token, not x-api-key.
    assert request.headers["authorization"] == "Bearer sk-ant-test"
    assert request.headers["anthropic-version"]
    assert request.json()["messages"] == HELLO
    assert request.is_messages and not request.wants_stream and not request.tls


def test_streaming_text_over_tls(tls_up: FakeUpstream) -> None:
    assert tls_up.base_url.startswith("https://127.0.0.1:")
    assert Path(tls_up.ca_cert_path or "").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    tls_up.enqueue(Reply.text("The quick brown fox jumps over the lazy dog.", chunk_chars=5))
    with sdk(tls_up).messages.stream(model="m-stream", max_tokens=50, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces[0] == "The q" and len(pieces) == 9
    text = "The quick brown fox jumps over the lazy dog."
    assert "".join(pieces) == final.content[0].text == text  # type: ignore[union-attr]
    assert final.model == "m-stream" and final.stop_reason == "end_turn"
    [request] = tls_up.requests
    assert request.tls and request.wants_stream


def test_beta_path_is_served(up: FakeUpstream) -> None:
    # Claude Code (the TypeScript SDK) adds ?beta=true; the Python SDK does not, so ask for it.
    message = sdk(up).beta.messages.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": "hello"}], extra_query={"beta": "true"}
    )
    assert message.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]
    assert up.requests[0].path == "/v1/messages?beta=true"
    assert up.requests[0].route == "/v1/messages"
    assert up.requests[0].query == {"beta": ["true"]}


def test_sse_wire_format_one_event_per_chunk(up: FakeUpstream) -> None:
    up.enqueue(Reply.text("abcdefghij", chunk_chars=4))
    body = json.dumps({"model": "m", "max_tokens": 5, "stream": True, "messages": HELLO}).encode()
    status, headers, raw = raw_request(up.port, "POST", "/v1/messages", body, {"content-type": "application/json"})
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["request-id"].startswith("req_fake_")
    chunks, terminated = dechunk(raw)
    assert terminated
    names = []
    for chunk in chunks:  # each chunk is exactly one `event: X\ndata: {json}\n\n`
        match = re.fullmatch(rb"event: (\w+)\ndata: (\{.*\})\n\n", chunk)
        assert match, chunk
        name, data = match.group(1).decode(), json.loads(match.group(2))
        assert data["type"] == name
        names.append(name)
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    events = parse_sse(b"".join(chunks))
    assert events[0][1]["message"]["content"] == []
    assert events[0][1]["message"]["stop_reason"] is None
    assert [e[1]["delta"]["text"] for e in events if e[0] == "content_block_delta"] == ["abcd", "efgh", "ij"]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] >= 1


def test_tool_use_streamed_as_input_json_delta(up: FakeUpstream) -> None:
    tool_input = {
        "command": "ls -la /tmp && echo 'naïve \"quoted\"'",
        "timeout": 5000,
        "nested": {"list": [1, 2, {"k": None}]},
    }
    up.enqueue(Reply.tool_use("Bash", tool_input, id="toolu_fixed", text="Let me look.", json_chunk_chars=3))
    partials: list[str] = []
    with sdk(up).messages.stream(model="m", max_tokens=50, messages=HELLO) as stream:
        for event in stream:
            if event.type == "input_json":
                partials.append(event.partial_json)
        final = stream.get_final_message()
    assert len(partials) > 10
    assert json.loads("".join(partials)) == tool_input
    assert final.stop_reason == "tool_use"
    text, tool = final.content
    assert text.type == "text" and text.text == "Let me look."
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("toolu_fixed", "Bash", tool_input)


def test_thinking_and_signature_preserved_buffered_and_streamed(up: FakeUpstream) -> None:
    blocks = [
        {
            "type": "thinking",
            "thinking": "The user greets me; I should greet back politely.",
            "signature": "EqQBCkYIBxgCKkB+sig/with+base64==",
        },
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
        {"type": "text", "text": "Hello!"},
    ]
    up.enqueue(Reply.message(blocks), Reply.message(blocks, chunk_chars=7))
    client = sdk(up)
    buffered = client.messages.create(model="m", max_tokens=50, messages=HELLO)
    with client.messages.stream(model="m", max_tokens=50, messages=HELLO) as stream:
        kinds = {event.type for event in stream}
        streamed = stream.get_final_message()
    assert {"thinking", "signature", "text"} <= kinds
    for message in (buffered, streamed):
        dumped = [b.model_dump(exclude_none=True) for b in message.content]
        assert [{k: v for k, v in b.items() if k != "parsed_output"} for b in dumped] == blocks
        assert message.stop_reason == "end_turn"


def test_error_mid_stream_raises_in_sdk(up: FakeUpstream) -> None:
    up.enqueue(Reply.text("x" * 40, chunk_chars=4, error_mid_stream=5))
    client = sdk(up)
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model="m", max_tokens=50, messages=HELLO) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert "overloaded_error" in str(info.value)
    assert received == ["xxxx", "xxxx"]  # events 0-4: start, ping, block start, two deltas
    # The connection was closed after the error; the next request still works.
    assert client.messages.create(model="m", max_tokens=5, messages=HELLO).content


def test_pause_before_event_until_released(up: FakeUpstream) -> None:
    gate = Gate(timeout=20)
    # Events: 0 message_start, 1 ping, 2 block start, 3 "Hello,", 4 " world", ...
    up.enqueue(Reply.text("Hello, world", chunk_chars=6, pause_before_event=4, gate=gate))
    received: list[str] = []
    first = threading.Event()

    def consume() -> str:
        with sdk(up).messages.stream(model="m", max_tokens=50, messages=HELLO) as stream:
            for text in stream.text_stream:
                received.append(text)
                first.set()
            return stream.get_final_message().content[0].text  # type: ignore[union-attr]

    thread, out = run_in_thread(consume)
    assert gate.wait_reached(TIMEOUT)
    assert first.wait(TIMEOUT), "the client did not receive the first text before release"
    time.sleep(0.2)  # the stream must stay blocked
    assert received == ["Hello,"] and not gate.released
    gate.release()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert out.get("value") == "Hello, world", out
    assert received == ["Hello,", " world"]


def test_pause_by_event_name_with_implicit_gate(up: FakeUpstream) -> None:
    reply = Reply.text("abc", pause_before_event="message_delta")
    assert reply.gate is not None
    up.enqueue(reply)
    body = json.dumps({"model": "m", "max_tokens": 5, "stream": True, "messages": HELLO}).encode()
    thread, out = run_in_thread(lambda: raw_request(up.port, "POST", "/v1/messages", body))
    assert reply.gate.wait_reached(TIMEOUT)
    reply.gate.release()
    thread.join(TIMEOUT)
    _, _, raw = out["value"]
    names = [name for name, _ in parse_sse(b"".join(dechunk(raw)[0]))]
    assert names[-2:] == ["message_delta", "message_stop"]


def test_stop_unblocks_a_paused_stream(up: FakeUpstream) -> None:
    reply = Reply.text("abc", pause_before_event=3)
    up.enqueue(reply)

    def consume() -> None:
        with sdk(up).messages.stream(model="m", max_tokens=5, messages=HELLO) as stream:
            list(stream.text_stream)

    thread, out = run_in_thread(consume)
    assert reply.gate is not None and reply.gate.wait_reached(TIMEOUT)
    started = time.monotonic()
    up.stop()
    assert time.monotonic() - started < 5
    thread.join(TIMEOUT)
    assert not thread.is_alive() and "error" in out  # the client saw the connection drop


def test_gzip_json_and_sse(up: FakeUpstream) -> None:
    body = json.dumps({"model": "m", "max_tokens": 5, "messages": HELLO}).encode()
    up.enqueue(Reply.text("zipped", gzip=True), Reply.text("plain", gzip=True))
    _, headers, raw = raw_request(up.port, "POST", "/v1/messages", body, {"accept-encoding": "gzip, br, zstd"})
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(raw)
    assert json.loads(gzip.decompress(raw))["content"][0]["text"] == "zipped"
    # Not accepted by the client: sent uncompressed.
    _, headers, raw = raw_request(up.port, "POST", "/v1/messages", body, {"accept-encoding": "identity, gzip;q=0"})
    assert "content-encoding" not in headers
    assert json.loads(raw)["content"][0]["text"] == "plain"

    # Through the SDK (httpx decodes), buffered and streamed (a gzip member flushed per event).
    up.enqueue(Reply.text("sdk zipped", gzip=True), Reply.text("sdk streamed", gzip=True))
    client = sdk(up)
    raw_response = client.messages.with_raw_response.create(model="m", max_tokens=5, messages=HELLO)
    assert raw_response.headers["content-encoding"] == "gzip"
    assert raw_response.parse().content[0].text == "sdk zipped"  # type: ignore[union-attr]
    with client.messages.stream(model="m", max_tokens=5, messages=HELLO) as stream:
        assert stream.response.headers["content-encoding"] == "gzip"
        assert stream.get_final_message().content[0].text == "sdk streamed"  # type: ignore[union-attr]


def test_request_bodies_content_length_and_chunked(up: FakeUpstream) -> None:
    payload = json.dumps({"model": "m", "max_tokens": 5, "messages": HELLO}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", up.port, timeout=TIMEOUT)
    try:
        conn.putrequest("POST", "/v1/messages?beta=true")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("X-Api-Key", "sk-first")
        conn.putheader("X-Api-Key", "sk-second")
        conn.putheader("Content-Length", str(len(payload)))
        conn.endheaders(payload)
        assert conn.getresponse().read()
        # Same keep-alive connection, chunked body in three pieces.
        pieces = [payload[:10], payload[10:30], payload[30:]]
        conn.request(
            "POST", "/v1/messages", body=iter(pieces), encode_chunked=True, headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["type"] == "message"
    finally:
        conn.close()
    first, second = up.requests
    assert first.body == payload and not first.chunked
    assert first.header_values("x-api-key") == ["sk-first", "sk-second"]
    assert first.headers["x-api-key"] == "sk-first, sk-second"
    assert second.body == payload and second.chunked
    assert second.headers["transfer-encoding"] == "chunked"
    assert second.json()["model"] == "m"


def test_side_routes(up: FakeUpstream) -> None:
    client = sdk(up)
    count = client.messages.count_tokens(model="m", messages=HELLO)
    assert count.input_tokens > 0
    models = client.models.list()
    assert [m.id for m in models.data] and all(m.type == "model" for m in models.data)
    assert client.models.retrieve(models.data[0].id).id == models.data[0].id
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("no-such-model")

    for path in ("/api/claude_code/policy_limits", "/api/claude_code/settings"):
        status, headers, body = raw_request(up.port, "GET", path)
        assert status == "HTTP/1.1 200 OK" and json.loads(body) == {}

    status, headers, body = raw_request(up.port, "GET", "/v1/nothing-here")
    assert status.startswith("HTTP/1.1 404")
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "not_found_error"
    assert error["request_id"] == headers["request-id"]
    assert [r.route for r in up.requests][-3:] == [
        "/api/claude_code/policy_limits",
        "/api/claude_code/settings",
        "/v1/nothing-here",
    ]


def test_queue_order_errors_and_default(up: FakeUpstream) -> None:
    up.enqueue(
        Reply.error(529, "overloaded_error", "Overloaded", extra_headers={"x-should-retry": "false"}),
        Reply.text("second"),
    )
    client = sdk(up)
    with pytest.raises(anthropic.OverloadedError) as info:
        client.messages.create(model="m", max_tokens=5, messages=HELLO, stream=True)
    assert info.value.status_code == 529
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}  # type: ignore[index]
    assert info.value.body["request_id"] == info.value.response.headers["request-id"]  # type: ignore[index]
    # count_tokens does not consume queued replies.
    client.messages.count_tokens(model="m", messages=HELLO)
    assert up.pending_replies == 1
    for expected in ("second", DEFAULT_TEXT):
        message = client.messages.create(model="m", max_tokens=5, messages=HELLO)
        assert message.content[0].text == expected  # type: ignore[union-attr]


def test_responder_first_then_queue_and_errors_surface() -> None:
    with FakeUpstream() as up:

        def responder(request: ReceivedRequest) -> Reply | None:
            content = request.json()["messages"][-1]["content"]
            if content == "boom":
                raise RuntimeError("responder bug")
            return Reply.text("scripted") if content == "script me" else None

        up.responder = responder
        up.enqueue(Reply.text("queued"))
        client = sdk(up)

        def ask(text: str) -> str:
            message = client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": text}])
            return message.content[0].text  # type: ignore[union-attr]

        assert ask("script me") == "scripted"
        assert ask("other") == "queued"
        with pytest.raises(anthropic.InternalServerError, match="responder bug"):
            ask("boom")
        assert len(up.errors) == 1
        up.reset()
        assert ask("script me") == DEFAULT_TEXT and len(up.requests) == 1


def test_raw_sse_sent_exactly(up: FakeUpstream) -> None:
    message = complete_message({"content": [{"type": "text", "text": "raw"}], "model": "m"})
    events = sse_events(message)
    raw = encode_sse(events).replace(b"\n", b"\r\n")
    up.enqueue(Reply.sse(raw), Reply.sse([raw[:7], raw[7:50], raw[50:]]))
    for expected_chunks in (None, [raw[:7], raw[7:50], raw[50:]]):
        _, headers, body = raw_request(up.port, "POST", "/v1/messages", b"{}")
        chunks, terminated = dechunk(body)
        assert terminated and b"".join(chunks) == raw
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        if expected_chunks is None:
            assert all(c.endswith(b"\r\n\r\n") for c in chunks) and len(chunks) == len(events)
        else:
            assert chunks == expected_chunks
    # The SDK reads CRLF-framed SSE too.
    up.enqueue(Reply.sse(raw))
    with sdk(up).messages.stream(model="m", max_tokens=5, messages=HELLO) as stream:
        assert stream.get_final_message().content[0].text == "raw"  # type: ignore[union-attr]


def test_drop_after_event_leaves_the_body_unfinished(up: FakeUpstream) -> None:
    up.enqueue(Reply.text("abcdef", chunk_chars=2, drop_after_event=4))
    body = json.dumps({"model": "m", "max_tokens": 5, "stream": True, "messages": HELLO}).encode()
    _, _, raw = raw_request(up.port, "POST", "/v1/messages", body)
    chunks, terminated = dechunk(raw)
    assert not terminated and len(chunks) == 4


def test_delays_and_no_delayed_ack_stall(up: FakeUpstream) -> None:
    up.enqueue(Reply.text("abcdef", chunk_chars=1, delay_between_events=0.03))
    client = sdk(up)
    started = time.monotonic()
    with client.messages.stream(model="m", max_tokens=5, messages=HELLO) as stream:
        stream.get_final_message()
    assert time.monotonic() - started >= 0.03 * 10  # 11 events, 10 gaps
    # Sequential streamed responses on a keep-alive connection: without TCP_NODELAY each one
    # would wait ~40 ms for a delayed ACK between the header and body writes.
    client.messages.create(model="m", max_tokens=5, messages=HELLO)  # warm the connection
    started = time.monotonic()
    for _ in range(10):
        with client.messages.stream(model="m", max_tokens=5, messages=HELLO) as stream:
            stream.get_final_message()
    assert time.monotonic() - started < 0.35


def test_api_key_enforced_when_configured() -> None:
    with FakeUpstream(api_key="sk-gateway") as up:
        with pytest.raises(anthropic.AuthenticationError):
            sdk(up).messages.create(model="m", max_tokens=5, messages=HELLO)
        client = anthropic.Anthropic(base_url=up.base_url, api_key="sk-gateway", max_retries=0, timeout=TIMEOUT)
        assert client.messages.create(model="m", max_tokens=5, messages=HELLO).content
        body = json.dumps({"model": "m", "max_tokens": 5, "messages": HELLO}).encode()
        status, _, _ = raw_request(up.port, "POST", "/v1/messages", body, {"x-api-key": "sk-gateway"})
        assert status == "HTTP/1.1 200 OK"


# --------------------------------------------------------------------------------------------
# SSE helpers and certificates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_chars,json_chunk_chars", [(1, 1), (3, 5), (1000, 1000)])
def test_sse_helpers_round_trip(chunk_chars: int, json_chunk_chars: int) -> None:
    message = complete_message(
        {
            "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "hmm… ✓", "signature": "c2ln"},
                {"type": "text", "text": "Here: ünïcode 🎉 text"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "Edit",
                    "input": {"file_path": "/a b", "old_string": "x\n", "new_string": '"y"'},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "Noop", "input": {}},
            ],
            "usage": {"input_tokens": 12, "output_tokens": 34},
        }
    )
    events = sse_events(message, chunk_chars=chunk_chars, json_chunk_chars=json_chunk_chars)
    assert [n for n, _ in events[:2]] == ["message_start", "ping"]
    assert [n for n, _ in events[-2:]] == ["message_delta", "message_stop"]
    assert parse_sse(encode_sse(events)) == [(n, d) for n, d in events]
    assert assemble_message(events) == message
    assert message["stop_reason"] == "tool_use"
    signature_events = [d for _, d in events if d.get("delta", {}).get("type") == "signature_delta"]
    assert signature_events == [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}}
    ]
    with pytest.raises(ValueError):
        assemble_message([*events[:3], ("error", {"type": "error"})])


def test_tls_certificates_verify_with_strict_python_defaults(tmp_path: Path) -> None:
    ca = make_ca()
    server = make_server_cert(ca, ["localhost", "gatehouse.test"], ["127.0.0.1", "::1"])
    sans = server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "gatehouse.test"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert make_server_cert(make_ca(key_type="rsa"), key_type="rsa").cert.signature_hash_algorithm

    ca_cert = write_mitmproxy_ca(tmp_path / "mitm", ca)
    assert (tmp_path / "mitm" / "mitmproxy-ca.pem").read_bytes().startswith(b"-----BEGIN PRIVATE")
    assert ca_cert.read_bytes() == ca.cert_pem

    with FakeUpstream(tls=True) as up:
        ctx = client_ssl_context(up.ca_cert_path or "")
        assert ctx.verify_flags & ssl.VERIFY_X509_STRICT  # Python 3.13+: the strict checks apply
        for name in ("localhost", "127.0.0.1"):
            with socket.create_connection(("127.0.0.1", up.port), timeout=TIMEOUT) as sock:
                with ctx.wrap_socket(sock, server_hostname=name) as tls:
                    assert tls.selected_alpn_protocol() in (None, "http/1.1")
        # A client that does not trust the CA is refused.
        with socket.create_connection(("127.0.0.1", up.port), timeout=TIMEOUT) as sock:
            with pytest.raises(ssl.SSLCertVerificationError):
                ssl.create_default_context().wrap_socket(sock, server_hostname="localhost")


# --------------------------------------------------------------------------------------------
# Claude Code
# --------------------------------------------------------------------------------------------


def _request(body: dict[str, object]) -> ReceivedRequest:
    raw = json.dumps(body).encode()
    return ReceivedRequest("POST", "/v1/messages?beta=true", {}, (), raw)


def test_claude_code_tool_responder_decisions() -> None:
    respond = claude_code_tool_responder("echo hi", description="Say hi")
    tools = [{"name": "Bash", "input_schema": {}}, {"name": "Read", "input_schema": {}}]
    user = {"role": "user", "content": [{"type": "text", "text": "run the check"}]}

    first = respond(_request({"model": "m", "tools": tools, "messages": [user]}))
    assert first is not None and first.msg is not None
    [tool] = first.msg["content"]
    assert tool["name"] == "Bash" and tool["input"] == {"command": "echo hi", "description": "Say hi"}
    assert first.msg["stop_reason"] is None  # filled as tool_use by complete_message
    assert complete_message(first.msg)["stop_reason"] == "tool_use"

    for content in ("hi\n", [{"type": "text", "text": "hi\n"}]):
        result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool["id"], "content": content}]}
        second = respond(
            _request(
                {"model": "m", "tools": tools, "messages": [user, {"role": "assistant", "content": [tool]}, result]}
            )
        )
        assert second is not None and second.msg is not None
        assert second.msg["content"] == [{"type": "text", "text": "The command printed: hi"}]

    # Side requests carry no tools: title generation asks for JSON matching a schema.
    title = respond(
        _request(
            {
                "model": "m",
                "tools": [],
                "messages": [user],
                "output_config": {
                    "format": {
                        "type": "json_schema",
                        "schema": {
                            "type": "object",
                            "properties": {"title": {"type": "string"}},
                            "required": ["title"],
                            "additionalProperties": False,
                        },
                    }
                },
            }
        )
    )
    assert title is not None and title.msg is not None
    assert json.loads(title.msg["content"][0]["text"]).keys() == {"title"}
    quota = respond(_request({"model": "m", "max_tokens": 1, "messages": [user]}))
    assert quota is not None and quota.msg is not None and quota.msg["content"][0]["text"]
    # Other endpoints fall through to the defaults.
    assert respond(ReceivedRequest("GET", "/v1/models", {}, (), b"")) is None


def claude_bin() -> str:
    path = os.environ.get("GATEHOUSE_CLAUDE_BIN") or str(REPO / ".tools" / "node" / "node_modules" / ".bin" / "claude")
    if not os.path.exists(path):
        reason = f"Claude Code CLI not found at {path} (run `make claude-cli` or set GATEHOUSE_CLAUDE_BIN)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.mark.e2e
def test_claude_code_cli_runs_a_bash_turn_against_the_fake(tmp_path: Path) -> None:
    claude = claude_bin()
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with FakeUpstream() as up:
        up.responder = claude_code_tool_responder("echo gatehouse-$((6*7))")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ANTHROPIC_BASE_URL": up.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "HOME": str(home),
            "DISABLE_AUTOUPDATER": "1",
        }
        try:
            proc = subprocess.run(
                [claude, "-p", "run the check", "--allowedTools", "Bash", "--output-format", "json"],
                env=env,
                cwd=work,
                capture_output=True,
                text=True,
                timeout=180,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"claude timed out; the fake received {up.requests!r}; stderr: {e.stderr!r}")
        requests = up.requests.snapshot()
        assert not up.errors
    log = "\n".join(f"{r.method} {r.path} {len(r.body)} bytes" for r in requests)
    assert proc.returncode == 0, f"stdout={proc.stdout}\nstderr={proc.stderr}\n{log}"

    turns = [r for r in requests if r.is_messages and r.json().get("tools")]
    assert len(turns) >= 2, log
    first, second = turns[0], turns[-1]
    assert first.path == "/v1/messages?beta=true"
    assert first.headers["x-api-key"] == "sk-ant-test"
    assert first.wants_stream and not first.tool_results()
    [result] = second.tool_results()
    assert "gatehouse-42" in json.dumps(result["content"])
    assert not result.get("is_error")

    output = json.loads(proc.stdout)
    assert output["is_error"] is False
    assert "The command printed: gatehouse-42" in output["result"]
    assert first.headers["x-claude-code-session-id"] == output["session_id"]


# --------------------------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------------------------


def test_standalone_command_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.fake_upstream", "--tls", "--cert-dir", str(tmp_path)],
        cwd=TESTS_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        thread, _ = run_in_thread(
            lambda: lines.extend([proc.stdout.readline().strip(), proc.stdout.readline().strip()])
        )  # type: ignore[union-attr]
        thread.join(TIMEOUT)
        assert len(lines) == 2, f"no banner; stderr: {proc.stderr}"
        base_url, ca_path = lines
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", base_url)
        assert ca_path == str(tmp_path / "ca.pem")
        client = anthropic.Anthropic(
            base_url=base_url,
            api_key="k",
            max_retries=0,
            timeout=TIMEOUT,
            http_client=anthropic.DefaultHttpxClient(verify=client_ssl_context(ca_path)),
        )
        message = client.messages.create(model="standalone", max_tokens=5, messages=HELLO)
        assert message.model == "standalone"
    finally:
        stop_process(proc, TIMEOUT)
    assert proc.returncode == 0
    assert (tmp_path / "ca.pem").exists()  # --cert-dir is kept
