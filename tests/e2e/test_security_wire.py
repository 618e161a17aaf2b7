"""Deny by default, through a real mitmdump: headers, methods, endpoints and bodies.

Each test plants secrets where an attacker (or an accident) would put them and asserts on
what reached the fake upstream, the client, the store and the log.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path

import httpx2 as httpx
import pytest

from support.fake_upstream import Reply
from support.harness import CALLER_KEY, GATEWAY_KEY

pytestmark = pytest.mark.e2e
MODEL = "claude-sonnet-4-6"
GITHUB_PAT = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"
AWS_KEY_ID = "AKIA" + "Q3EXAMPLE7Z2K4TB"
FAKE_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWc"


def client(gw) -> httpx.Client:
    return httpx.Client(proxy=gw.proxy_url(), verify=ssl.create_default_context(cafile=gw.ca_path), timeout=60)


def message_body(**extra) -> dict:
    return {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], **extra}


def everything_at_rest(gw, store: Path) -> bytes:
    data = gw.log().encode()
    for p in store.rglob("*"):
        if p.is_file():
            data += p.read_bytes()
    return data


@pytest.fixture
def recorded(gateway_factory, tmp_path):
    store = tmp_path / "store"
    gw = gateway_factory(
        f'[gateway]\nallowed_endpoints = ["POST /v1/messages", "POST /v1/messages/count_tokens", '
        f'"GET /v1/models*", "POST /v1/files"]\n[recording]\nstore = "{store}"\n'
    )
    return gw, store


def test_request_headers_pass_by_allowlist_with_values_masked(recorded, upstream):
    gw, store = recorded
    sent = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": f"tools-2024-04-04,{GITHUB_PAT}",
        "user-agent": f"my-agent/1.0 {AWS_KEY_ID}",
        "x-stainless-os": f"Linux {GITHUB_PAT}",
        "x-claude-code-session-id": f"session-{GITHUB_PAT}",
        "x-custom-debug": GITHUB_PAT,
        "cookie": f"session={CALLER_KEY}",
        "anthropic-api-key": CALLER_KEY,
        "x-forwarded-token": FAKE_JWT,
        "x-api-key": CALLER_KEY,
        "content-type": "application/json",
    }
    with client(gw) as c:
        r = c.post("https://api.anthropic.com/v1/messages", json=message_body(), headers=sent)
        c.post("https://api.anthropic.com/v1/messages", json=message_body(), headers=sent)
    assert r.status_code == 200, r.text
    first, second = upstream.requests.messages()
    got = {k.lower(): v for k, v in first.headers.items()}
    wire = json.dumps(got)
    for leaked in (GITHUB_PAT, AWS_KEY_ID, CALLER_KEY, FAKE_JWT):
        assert leaked not in wire
    assert got["x-api-key"] == GATEWAY_KEY
    assert "x-custom-debug" not in got and "cookie" not in got and "anthropic-api-key" not in got
    assert "x-forwarded-token" not in got
    assert got["anthropic-version"] == "2023-06-01"
    assert got["anthropic-beta"].startswith("tools-2024-04-04,[MASKED:github-pat:")
    assert got["user-agent"].startswith("my-agent/1.0 [MASKED:aws-access-key-id:")
    # deterministic: the same session header groups the same session upstream
    assert (
        got["x-claude-code-session-id"] == {k.lower(): v for k, v in second.headers.items()}["x-claude-code-session-id"]
    )
    gw.stop()
    at_rest = everything_at_rest(gw, store)
    for leaked in (GITHUB_PAT, AWS_KEY_ID, CALLER_KEY, FAKE_JWT):
        assert leaked.encode() not in at_rest
    assert b"x-custom-debug" in at_rest  # the record names what was dropped


def test_response_headers_pass_by_allowlist(recorded, upstream):
    gw, _ = recorded
    upstream.enqueue(
        Reply.text(
            "ok",
            extra_headers={
                "x-internal-trace": GITHUB_PAT,
                "set-cookie": "a=b",
                "request-id": f"req-{GITHUB_PAT}",
                "anthropic-ratelimit-requests-remaining": "41",
            },
        )
    )
    with client(gw) as c:
        r = c.post("https://api.anthropic.com/v1/messages", json=message_body(), headers={"x-api-key": "x"})
    assert r.status_code == 200
    assert GITHUB_PAT not in json.dumps(dict(r.headers))
    assert "x-internal-trace" not in r.headers and "set-cookie" not in r.headers
    assert r.headers["anthropic-ratelimit-requests-remaining"] == "41"
    assert r.headers["request-id"].startswith("req-[MASKED:github-pat:")
    assert r.headers["x-gatehouse-exchange-id"].startswith("gx_")


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/v1/messages", 403),  # messages is POST only
        ("PUT", "/v1/messages", 403),
        ("DELETE", "/v1/models/x", 403),
        ("POST", "/v1/models", 403),  # models is GET only
        ("POST", "/v1/messages/batches", 403),
    ],
)
def test_methods_and_endpoints_by_allowlist(recorded, upstream, method, path, status):
    gw, _ = recorded
    with client(gw) as c:
        r = c.request(method, f"https://api.anthropic.com{path}", json=message_body(), headers={"x-api-key": "x"})
    assert r.status_code == status, r.text
    assert r.json()["type"] == "error"
    assert not [q for q in upstream.requests if q.path.split("?")[0] == path]


def test_a_get_with_a_body_is_refused(recorded, upstream):
    gw, _ = recorded
    with client(gw) as c:
        r = c.request(
            "GET",
            "https://api.anthropic.com/v1/models",
            content=json.dumps({"x": GITHUB_PAT}),
            headers={"content-type": "application/json"},
        )
        ok = c.get("https://api.anthropic.com/v1/models")
    assert r.status_code == 400 and "with a body" in r.json()["error"]["message"]
    assert ok.status_code == 200
    assert all(GITHUB_PAT.encode() not in q.body for q in upstream.requests)


def test_bodies_on_other_allowed_endpoints_are_scanned(recorded, upstream):
    gw, store = recorded
    with client(gw) as c:
        r = c.post("https://api.anthropic.com/v1/files", json={"purpose": f"note {GITHUB_PAT}", GITHUB_PAT: 1})
        bad = c.post(
            "https://api.anthropic.com/v1/files",
            content=b"\x00binary " + GITHUB_PAT.encode(),
            headers={"content-type": "application/octet-stream"},
        )
    assert r.status_code == 404  # the fake's answer: the request went through, masked
    [files] = [q for q in upstream.requests if q.path == "/v1/files"]
    assert GITHUB_PAT.encode() not in files.body and b"[MASKED:github-pat:" in files.body
    assert bad.status_code == 400 and bad.json()["type"] == "error"
    gw.stop()
    assert GITHUB_PAT.encode() not in everything_at_rest(gw, store)


def test_every_field_of_a_messages_request_is_scanned(recorded, upstream):
    """The fields masking used to skip: metadata, tools, stop sequences, MCP servers, URL
    sources, object keys, unknown blocks and fields, a text/plain base64 document, and a secret
    split across two adjacent text blocks."""
    gw, store = recorded
    half = len(GITHUB_PAT) // 2
    body = message_body(
        metadata={"user_id": f"u-{GITHUB_PAT}"},
        stop_sequences=[GITHUB_PAT],
        tools=[
            {
                "name": "deploy",
                "description": f"uses {GITHUB_PAT}",
                "input_schema": {"type": "object", "properties": {GITHUB_PAT: {"type": "string"}}},
            }
        ],
        mcp_servers=[
            {"type": "url", "url": "https://mcp.example.com/sse", "name": "x", "authorization_token": GITHUB_PAT}
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"the token is {GITHUB_PAT[:half]}"},
                    {"type": "text", "text": f"{GITHUB_PAT[half:]} and more"},
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "text/plain",
                            "data": base64.b64encode(f"TOKEN={GITHUB_PAT}\n".encode()).decode(),
                        },
                    },
                    {"type": "image", "source": {"type": "url", "url": f"https://example.com/{GITHUB_PAT}.png"}},
                    {"type": "future_block", "payload": {"nested": [GITHUB_PAT]}},
                    {"type": "text", "text": "x", "extra_field": GITHUB_PAT},
                ],
            }
        ],
    )
    with client(gw) as c:
        r = c.post("https://api.anthropic.com/v1/messages", json=body, headers={"x-api-key": "x"})
    assert r.status_code == 200, r.text
    [req] = upstream.requests.messages()
    sent = req.body.decode()
    assert GITHUB_PAT not in sent
    assert GITHUB_PAT[:half] not in sent or GITHUB_PAT[half:] not in sent
    doc = json.loads(sent)["messages"][0]["content"][2]["source"]["data"]
    assert GITHUB_PAT not in base64.b64decode(doc).decode()
    gw.stop()
    assert GITHUB_PAT.encode() not in everything_at_rest(gw, store)


def test_error_bodies_and_sse_error_events_are_masked(recorded, upstream):
    gw, store = recorded
    upstream.enqueue(Reply.error(400, "invalid_request_error", f"bad token {GITHUB_PAT}"))
    upstream.enqueue(
        Reply.text(
            "partial answer",
            error_mid_stream=3,
            mid_stream_error={"type": "error", "error": {"type": "api_error", "message": f"leak {GITHUB_PAT}"}},
        )
    )
    with client(gw) as c:
        err = c.post("https://api.anthropic.com/v1/messages", json=message_body(), headers={"x-api-key": "x"})
        streamed = c.post(
            "https://api.anthropic.com/v1/messages", json=message_body(stream=True), headers={"x-api-key": "x"}
        )
    assert err.status_code == 400 and GITHUB_PAT not in err.text and "[MASKED:github-pat:" in err.text
    assert GITHUB_PAT not in streamed.text and "event: error" in streamed.text
    gw.stop()
    assert GITHUB_PAT.encode() not in everything_at_rest(gw, store)


def test_refused_requests_leave_no_secret_at_rest(recorded, upstream):
    gw, store = recorded
    with client(gw) as c:
        r1 = c.post(f"https://api.anthropic.com/v1/nope/{GITHUB_PAT}", json=message_body())
        r2 = c.post(
            "https://api.anthropic.com/v1/messages",
            json=message_body(model=f"claude-{GITHUB_PAT}"),
            headers={"content-type": "text/plain"},
        )
        r3 = c.request(AWS_KEY_ID, "https://api.anthropic.com/v1/messages")
    assert r1.status_code == 403 and r2.status_code == 400 and r3.status_code in (400, 403)
    for r in (r1, r2, r3):
        assert GITHUB_PAT not in r.text and AWS_KEY_ID not in r.text
    gw.stop()
    at_rest = everything_at_rest(gw, store)
    assert GITHUB_PAT.encode() not in at_rest and AWS_KEY_ID.encode() not in at_rest


def test_json_nested_200000_deep_is_a_400_and_the_gateway_keeps_serving(recorded, upstream):
    gw, _ = recorded
    deep = '{"model":"' + MODEL + '","max_tokens":5,"messages":' + "[" * 200_000 + "]" * 200_000 + "}"
    with client(gw) as c:
        r = c.post("https://api.anthropic.com/v1/messages", content=deep, headers={"content-type": "application/json"})
        ok = c.post("https://api.anthropic.com/v1/messages", json=message_body())
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text[:300]
    assert ok.status_code == 200
    assert len(upstream.requests.messages()) == 1


def test_claude_code_with_nonessential_traffic_keeps_working(gateway, upstream, tmp_path):
    """Deny by default must not break Claude Code's own calls: with nonessential traffic on, it
    also posts event logging and reads feature flags on the API host. With the default policy
    they pass the gateway (the fake upstream answers them) with their bodies scanned."""
    from support.harness import run_claude

    work = tmp_path / "cc"
    work.mkdir()
    r = run_claude(gateway, work, f"remember {GITHUB_PAT} and say hi", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=None)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    seen = {(q.method, q.path.split("?")[0]) for q in upstream.requests}
    assert ("POST", "/v1/messages") in seen and ("GET", "/api/claude_code/policy_limits") in seen, seen
    for q in upstream.requests:
        assert GITHUB_PAT.encode() not in q.body, q.path
        assert GITHUB_PAT not in json.dumps(dict(q.headers))
    # nothing the CLI sent to the API host was refused by the gateway
    assert "<< 403" not in gateway.log() and "<< 400" not in gateway.log(), gateway.log()[-3000:]
