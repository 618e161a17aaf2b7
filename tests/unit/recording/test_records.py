"""The record of an exchange: blobs, allowlisted headers, masking, the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gatehouse.recording.canonical import canonical_json, parse_json, ref_hex, sha256_ref
from gatehouse.recording.chain import make_checkpoint, seal_record, start_record_body
from gatehouse.recording.records import (
    INLINE_BODY_LIMIT,
    BuiltRecord,
    ExchangeInput,
    RequestInput,
    ResponseInput,
    build_record,
)
from gatehouse.recording.signing import SigningKey
from gatehouse.wire.sse import encode_event
from support.records import SECRET, FakeMasker, assistant_message, messages_request

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "addons" / "schemas" / "record.schema.json"


def json_response(doc: dict[str, Any], status: int = 200) -> ResponseInput:
    return ResponseInput(
        status,
        [
            ("content-type", "application/json"),
            ("request-id", "req_011"),
            ("anthropic-ratelimit-requests-remaining", "99"),
            ("set-cookie", "x=y"),
        ],
        json.dumps(doc).encode(),
    )


def exchange(req: RequestInput, resp: ResponseInput | None, kind: str = "exchange", **kw: Any) -> ExchangeInput:
    return ExchangeInput(
        kind=kind,
        exchange_id="gx_0001",
        request=req,
        response=resp,
        request_at=1000.0,
        first_byte_at=1000.5,
        end_at=1002.0,
        **kw,
    )


def build(inp: ExchangeInput, **kw: Any) -> BuiltRecord:
    kw.setdefault("masker", None)
    return build_record(inp, gateway_version="0.1.0", policy_sha256="ab" * 32, **kw)


def seal(body: dict[str, Any], seq: int = 1) -> dict[str, Any]:
    data, _ = seal_record(
        body,
        chain_id="20250101T000000Z-0badcafe",
        seq=seq,
        prev="sha256:" + "0" * 64,
        at=1003.0,
        key=SigningKey.generate(),
    )
    return json.loads(data)


def test_system_tools_and_each_message_become_blobs_in_order() -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "yo"}]},
        {"role": "user", "content": "again"},
    ]
    built = build(exchange(messages_request(msgs), json_response(assistant_message("answer"))))
    req = built.body["request"]
    assert req["model"] == "claude-sonnet-4-5" and req["stream"] is False
    assert [parse_json(built.blobs[ref_hex(r)]) for r in req["messages"]] == msgs
    assert parse_json(built.blobs[ref_hex(req["system"])]).startswith("You are Claude Code.")
    assert parse_json(built.blobs[ref_hex(req["tools"])])[0]["name"] == "Bash"
    assert "messages" not in req["body"] and "system" not in req["body"] and req["body"]["max_tokens"] == 1024
    for hx, data in built.blobs.items():
        assert sha256_ref(data) == "sha256:" + hx and canonical_json(parse_json(data)) == data


def test_assistant_content_is_the_same_blob_as_next_turns_message() -> None:
    first = build(
        exchange(messages_request([{"role": "user", "content": "hi"}]), json_response(assistant_message("ans")))
    )
    resp = first.body["response"]
    assert resp["message"]["stop_reason"] == "end_turn" and "content" not in resp["message"]
    assert resp["message"]["usage"] == {"input_tokens": 100, "output_tokens": 20}
    assert resp["request_id"] == "req_011"
    next_turn = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "ans"}]},
        {"role": "user", "content": "more"},
    ]
    second = build(exchange(messages_request(next_turn), json_response(assistant_message("ans2"))))
    assert second.body["request"]["messages"][1] == resp["content"]
    # Same system prompt and tools: same blobs.
    assert second.body["request"]["system"] == first.body["request"]["system"]


def test_auth_headers_are_never_recorded() -> None:
    built = build(
        exchange(messages_request([{"role": "user", "content": "hi"}]), json_response(assistant_message("a")))
    )
    everything = canonical_json(built.body) + b"".join(built.blobs.values())
    for needle in (b"sk-ant-api03", b"eyJ.should", b"dXNlcjpwYXNz", b"session=secret", b"x=y"):
        assert needle not in everything
    headers = built.body["request"]["headers"]
    assert "x-api-key" not in headers and "authorization" not in headers and "cookie" not in headers
    assert headers["x-stainless-lang"] == "js"
    assert built.body["response"]["headers"]["anthropic-ratelimit-requests-remaining"] == "99"
    assert "set-cookie" not in built.body["response"]["headers"]


def test_client_fields() -> None:
    built = build(exchange(messages_request([{"role": "user", "content": "x"}]), None, kind="request"))
    assert built.body["client"] == {
        "user_agent": "claude-cli/2.1.0 (external, cli)",
        "app": "cli",
        "anthropic_version": "2023-06-01",
        "anthropic_beta": ["claude-code-20250219", "interleaved-thinking-2025-05-14"],
    }
    assert built.body["response"] is None and built.body["timing"]["end"] is None


def test_masker_masks_everything_including_thinking_and_decisions() -> None:
    msgs = [
        {"role": "user", "content": f"my key is {SECRET}"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": f"the user key {SECRET}", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": f"echo {SECRET}"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": SECRET}]},
    ]
    resp = assistant_message(
        "ok",
        content=[
            {"type": "thinking", "thinking": f"again {SECRET}", "signature": "s2"},
            {"type": "text", "text": "done"},
        ],
    )
    inp = exchange(
        messages_request(msgs),
        json_response(resp),
        decisions=[{"stage": "commands", "action": "block", "reason": f"saw {SECRET}", "at": 1001.0}],
        errors=[f"upstream said {SECRET}"],
    )
    built = build(inp, masker=FakeMasker())
    everything = canonical_json(built.body) + b"".join(built.blobs.values())
    assert SECRET.encode() not in everything
    assert b"[MASKED:aws-access-key-id:abc123]" in everything
    assert built.body["masked"] is True
    assert len(built.body["findings"]["record"]) == 7
    assert built.body["decisions"][0]["at"] == "1970-01-01T00:16:41.000000Z"


def test_sse_response_uses_the_pipeline_message_or_assembles_the_buffered_body() -> None:
    req = messages_request([{"role": "user", "content": "hi"}], stream=True)
    sse_headers = [("content-type", "text/event-stream"), ("request-id", "req_sse")]
    streamed = ResponseInput(200, sse_headers, None, streamed=True, assembled=assistant_message("streamed"))
    built = build(
        exchange(req, streamed, response_findings=[{"rule": "r", "where": "content[0].text", "fingerprint": "f"}])
    )
    resp = built.body["response"]
    assert resp["encoding"] == "sse" and resp["streamed"] is True and resp["size"] is None
    assert parse_json(built.blobs[ref_hex(resp["content"])])["content"][0]["text"] == "streamed"
    assert built.body["findings"]["response"] == [{"rule": "r", "where": "content[0].text", "fingerprint": "f"}]

    # Buffered (no streaming pipeline): the body as sent is assembled into the message.
    start = {k: v for k, v in assistant_message("buffered").items() if k != "content"}
    body = b"".join(
        [
            encode_event("message_start", {"type": "message_start", "message": {**start, "content": []}}),
            encode_event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            encode_event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "buffered"}},
            ),
            encode_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            encode_event("message_stop", {"type": "message_stop"}),
        ]
    )
    buffered = build(exchange(req, ResponseInput(200, sse_headers, body)))
    assert buffered.body["response"]["encoding"] == "sse" and buffered.body["response"]["message"] == start
    content = parse_json(buffered.blobs[ref_hex(buffered.body["response"]["content"])])
    assert content == {"role": "assistant", "content": [{"type": "text", "text": "buffered"}]}

    broken = b"event: message_start\ndata: {not json\n\n"
    fallback = build(exchange(req, ResponseInput(200, sse_headers, broken)))
    assert fallback.body["response"]["encoding"] == "text" and fallback.body["response"]["body"].startswith("event:")


def test_error_refusal_and_other_bodies() -> None:
    err = {
        "type": "error",
        "error": {"type": "permission_error", "message": "model not allowed"},
        "request_id": "req_e",
    }
    inp = exchange(
        messages_request([{"role": "user", "content": "x"}]),
        json_response(err, 403),
        kind="refusal",
        decisions=[{"stage": "access", "action": "deny", "reason": "model", "rule": None, "detail": {}, "at": 1.5}],
    )
    built = build(inp)
    assert built.body["kind"] == "refusal" and built.body["response"]["body"] == err
    assert built.body["response"]["status"] == 403

    big = RequestInput(
        "POST",
        "https",
        "api.anthropic.com",
        443,
        "/v1/files",
        [("content-type", "text/plain")],
        b"y" * (INLINE_BODY_LIMIT + 10),
    )
    built = build(exchange(big, ResponseInput(200, [], b"\xff\xfe binary")))
    assert built.body["request"]["encoding"] == "text" and "body_blob" in built.body["request"]
    assert built.body["response"]["encoding"] == "binary" and built.body["response"]["body"] is None
    get = RequestInput("GET", "https", "api.anthropic.com", 443, "/api/claude_code/settings", [], None)
    built = build(exchange(get, json_response({"settings": {}})))
    assert built.body["request"]["encoding"] == "none" and built.body["response"]["body"] == {"settings": {}}


@pytest.mark.parametrize(
    "ctype, body, encoding",
    [
        ("application/json; charset=utf-8", b'"a JSON string"', "json"),
        ("Application/Problem+JSON", b'"a JSON string"', "json"),
        # Any type ending in "json" is tried as JSON (broader than what the gateway accepts as
        # declared JSON, `wire.bodies.is_json_media`): the record keeps the structure when it parses.
        ("text/json", b'"a JSON string"', "json"),
        ("application/x-ndjson", b"1", "json"),
        ("application/x-ndjson", b'{"a": 1}\n{"a": 2}\n', "text"),
        ("text/plain", b'"a JSON string"', "text"),
        ("text/plain", b'{"a": 1}', "json"),  # an object or array is tried whatever the type
    ],
)
def test_bodies_are_recorded_as_json_when_the_type_ends_in_json_or_they_look_like_it(ctype, body, encoding) -> None:
    req = RequestInput("POST", "https", "api.anthropic.com", 443, "/v1/files", [("Content-Type", ctype)], body)
    built = build(exchange(req, ResponseInput(200, [("content-type", ctype)], body)))
    assert built.body["request"]["encoding"] == encoding and built.body["response"]["encoding"] == encoding


def test_record_validates_against_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    ident = {
        "issuer": "https://idp",
        "subject": "alice",
        "issuer_name": "corp",
        "email": "a@x",
        "name": None,
        "groups": ["eng"],
        "token_id": "jti1",
        "expires_at": None,
    }
    cases = [
        exchange(
            messages_request([{"role": "user", "content": "x"}]), json_response(assistant_message("a")), identity=ident
        ),
        exchange(messages_request([{"role": "user", "content": "x"}], stream=True), None, kind="request"),
        exchange(RequestInput("GET", "https", "h", 443, "/", [], None), None, errors=["upstream unreachable"]),
    ]
    for inp in cases:
        validator.validate(seal(build(inp, masker=FakeMasker()).body))
    start = start_record_body(
        previous={"chain": "20250101T000000Z-0badcafe", "seq": 3, "hash": "sha256:" + "1" * 64},
        gateway_version="0.1.0",
        policy_sha256=None,
        node="n",
        key_id="0" * 16,
        retention_days=30,
    )
    validator.validate(seal(start, seq=0))
    cp = make_checkpoint(
        chain_id="20250101T000000Z-0badcafe", seq=3, head="sha256:" + "2" * 64, key=SigningKey.generate(), at=5.0
    )
    validator.validate(json.loads(cp))
