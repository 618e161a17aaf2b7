"""The record itself: canonical JSON, blobs, sessions, signatures, schema."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from gatehouse.recording import records
from gatehouse.recording.records import (
    ExchangeInput,
    RecordError,
    RequestInput,
    ResponseInput,
    SessionTracker,
    SigningKey,
)
from support.records import FakeMasker, SECRET

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "addons" / "schemas" / "record.schema.json"




def messages_request(messages: list[dict[str, Any]], *, stream: bool = False, system: str = "You are Claude Code." * 50,
                     extra_headers: list[tuple[str, str]] | None = None, session_header: bool = True) -> RequestInput:
    body = {
        "model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": stream, "system": system,
        "tools": [{"name": "Bash", "description": "run a command", "input_schema": {"type": "object"}}],
        "messages": messages,
        "metadata": {"user_id": json.dumps({"device_id": "dev1", "account_uuid": "acc1", "session_id": "meta-sess"})},
    }
    headers = [("content-type", "application/json"), ("user-agent", "claude-cli/2.1.0 (external, cli)"),
               ("x-app", "cli"), ("anthropic-version", "2023-06-01"),
               ("anthropic-beta", "claude-code-20250219, interleaved-thinking-2025-05-14"),
               ("x-api-key", "sk-ant-api03-SHOULD-NEVER-BE-RECORDED"),
               ("authorization", "Bearer eyJ.should.never"), ("proxy-authorization", "Basic dXNlcjpwYXNz"),
               ("cookie", "session=secret"), ("x-stainless-lang", "js")]
    if session_header:
        headers.append(("x-claude-code-session-id", "hdr-sess"))
    headers += extra_headers or []
    return RequestInput("POST", "https", "api.anthropic.com", 443, "/v1/messages?beta=true", headers,
                        json.dumps(body).encode())


def assistant(text: str, **extra: Any) -> dict[str, Any]:
    msg = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
           "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 100, "output_tokens": 20}}
    msg.update(extra)
    return msg


def json_response(doc: dict[str, Any], status: int = 200) -> ResponseInput:
    return ResponseInput(status, [("content-type", "application/json"), ("request-id", "req_011"),
                                  ("anthropic-ratelimit-requests-remaining", "99"), ("set-cookie", "x=y")],
                         json.dumps(doc).encode())


def exchange(req: RequestInput, resp: ResponseInput | None, kind: str = "exchange", **kw: Any) -> ExchangeInput:
    return ExchangeInput(kind=kind, exchange_id="gx_0001", request=req, response=resp, request_at=1000.0,
                         first_byte_at=1000.5, end_at=1002.0, **kw)


def build(inp: ExchangeInput, **kw: Any) -> records.BuiltRecord:
    kw.setdefault("masker", None)
    return records.build_record(inp, gateway_version="0.1.0", policy_sha256="ab" * 32, **kw)


def seal(body: dict[str, Any], seq: int = 1) -> dict[str, Any]:
    data, _ = records.seal_record(body, chain_id="20250101T000000Z-0badcafe", seq=seq, prev="sha256:" + "0" * 64,
                                  at=1003.0, key=SigningKey.generate())
    return json.loads(data)


# -- canonical JSON -----------------------------------------------------------------------------

def test_canonical_json_is_sorted_compact_ascii_and_round_trips() -> None:
    doc = {"b": [1, 2.5, -0.0, "é", "\ud800"], "a": {"z": None, "y": True}}
    data = records.canonical_json(doc)
    assert data == b'{"a":{"y":true,"z":null},"b":[1,2.5,-0.0,"\\u00e9","\\ud800"]}'
    assert records.canonical_json(records.parse_json(data)) == data
    assert records.is_canonical(data)
    assert not records.is_canonical(b'{"b":1, "a":2}')


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        records.canonical_json({"x": float("nan")})
    with pytest.raises(ValueError):
        records.parse_json(b'{"x": NaN}')


def test_store_keys_parse_back() -> None:
    chain = records.new_chain_id(0)
    assert records.is_chain_id(chain) and chain.startswith("19700101T000000Z-")
    assert records.parse_key(records.record_key(chain, 7)) == records.ParsedKey("record", chain, 7)
    assert records.parse_key(records.checkpoint_key(chain, 7)).kind == "checkpoint"
    assert records.parse_key(records.checkpoint_key(chain, 7, prune=True)).kind == "prune"
    hx = "ab" + "c" * 62
    assert records.blob_key("sha256:" + hx) == f"blobs/sha256/ab/{hx}.json"
    assert records.parse_key(records.blob_key(hx)).hex == hx
    assert records.parse_key(f"blobs/sha256/cd/{hx}.json") is None  # wrong fan-out folder
    assert records.parse_key("records/x/1.json") is None
    with pytest.raises(RecordError):
        records.ref_hex("md5:abc")


# -- building -----------------------------------------------------------------------------------

def test_system_tools_and_each_message_become_blobs_in_order() -> None:
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "yo"}]},
            {"role": "user", "content": "again"}]
    built = build(exchange(messages_request(msgs), json_response(assistant("answer"))))
    req = built.body["request"]
    assert req["model"] == "claude-sonnet-4-5" and req["stream"] is False
    assert [records.parse_json(built.blobs[records.ref_hex(r)]) for r in req["messages"]] == msgs
    assert records.parse_json(built.blobs[records.ref_hex(req["system"])]).startswith("You are Claude Code.")
    assert records.parse_json(built.blobs[records.ref_hex(req["tools"])])[0]["name"] == "Bash"
    assert "messages" not in req["body"] and "system" not in req["body"] and req["body"]["max_tokens"] == 1024
    for hx, data in built.blobs.items():
        assert records.sha256_ref(data) == "sha256:" + hx and records.is_canonical(data)


def test_assistant_content_is_the_same_blob_as_next_turns_message() -> None:
    first = build(exchange(messages_request([{"role": "user", "content": "hi"}]), json_response(assistant("ans"))))
    resp = first.body["response"]
    assert resp["message"]["stop_reason"] == "end_turn" and "content" not in resp["message"]
    assert resp["message"]["usage"] == {"input_tokens": 100, "output_tokens": 20}
    assert resp["request_id"] == "req_011"
    next_turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "ans"}]},
                 {"role": "user", "content": "more"}]
    second = build(exchange(messages_request(next_turn), json_response(assistant("ans2"))))
    assert second.body["request"]["messages"][1] == resp["content"]
    # Same system prompt and tools: same blobs.
    assert second.body["request"]["system"] == first.body["request"]["system"]


def test_auth_headers_are_never_recorded() -> None:
    built = build(exchange(messages_request([{"role": "user", "content": "hi"}]), json_response(assistant("a"))))
    everything = records.canonical_json(built.body) + b"".join(built.blobs.values())
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
        "user_agent": "claude-cli/2.1.0 (external, cli)", "app": "cli", "anthropic_version": "2023-06-01",
        "anthropic_beta": ["claude-code-20250219", "interleaved-thinking-2025-05-14"]}
    assert built.body["response"] is None and built.body["timing"]["end"] is None


def test_masker_masks_everything_including_thinking_and_decisions() -> None:
    msgs = [{"role": "user", "content": f"my key is {SECRET}"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": f"the user key {SECRET}", "signature": "sig"},
                                              {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": f"echo {SECRET}"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": SECRET}]}]
    resp = assistant("ok", content=[{"type": "thinking", "thinking": f"again {SECRET}", "signature": "s2"},
                                    {"type": "text", "text": "done"}])
    inp = exchange(messages_request(msgs), json_response(resp),
                   decisions=[{"stage": "commands", "action": "block", "reason": f"saw {SECRET}", "at": 1001.0}],
                   errors=[f"upstream said {SECRET}"])
    built = build(inp, masker=FakeMasker())
    everything = records.canonical_json(built.body) + b"".join(built.blobs.values())
    assert SECRET.encode() not in everything
    assert b"[MASKED:aws-access-key-id:abc123]" in everything
    assert built.body["masked"] is True
    assert len(built.body["findings"]["record"]) == 7
    assert built.body["decisions"][0]["at"] == "1970-01-01T00:16:41.000000Z"


def test_sse_response_uses_the_pipeline_message_or_the_assembler() -> None:
    req = messages_request([{"role": "user", "content": "hi"}], stream=True)
    sse_headers = [("content-type", "text/event-stream"), ("request-id", "req_sse")]
    streamed = ResponseInput(200, sse_headers, None, streamed=True, assembled=assistant("streamed"),
                             findings=[{"rule": "r", "where": "content[0].text", "fingerprint": "f"}])
    built = build(exchange(req, streamed))
    resp = built.body["response"]
    assert resp["encoding"] == "sse" and resp["streamed"] is True and resp["size"] is None
    assert records.parse_json(built.blobs[records.ref_hex(resp["content"])])["content"][0]["text"] == "streamed"
    assert built.body["findings"]["response"] == [{"rule": "r", "where": "content[0].text", "fingerprint": "f"}]

    body = b"event: message_start\ndata: {}\n\n"
    seen: list[bytes] = []

    def assembler(data: bytes) -> dict[str, Any]:
        seen.append(data)
        return assistant("buffered")

    buffered = build(exchange(req, ResponseInput(200, sse_headers, body)), sse_assembler=assembler)
    assert seen == [body] and buffered.body["response"]["message"]["id"] == "msg_01"

    def broken(data: bytes) -> dict[str, Any]:
        raise ValueError("bad stream")

    fallback = build(exchange(req, ResponseInput(200, sse_headers, body)), sse_assembler=broken)
    assert fallback.body["response"]["encoding"] == "text" and fallback.body["response"]["body"].startswith("event:")


def test_error_refusal_and_other_bodies() -> None:
    err = {"type": "error", "error": {"type": "permission_error", "message": "model not allowed"}, "request_id": "req_e"}
    inp = exchange(messages_request([{"role": "user", "content": "x"}]), json_response(err, 403), kind="refusal",
                   decisions=[{"stage": "access", "action": "deny", "reason": "model", "rule": None, "detail": {}, "at": 1.5}])
    built = build(inp)
    assert built.body["kind"] == "refusal" and built.body["response"]["body"] == err
    assert built.body["response"]["status"] == 403

    big = RequestInput("POST", "https", "api.anthropic.com", 443, "/v1/files", [("content-type", "text/plain")],
                       b"y" * (records.INLINE_BODY_LIMIT + 10))
    built = build(exchange(big, ResponseInput(200, [], b"\xff\xfe binary")))
    assert built.body["request"]["encoding"] == "text" and "body_blob" in built.body["request"]
    assert built.body["response"]["encoding"] == "binary" and built.body["response"]["body"] is None
    get = RequestInput("GET", "https", "api.anthropic.com", 443, "/api/claude_code/settings", [], None)
    built = build(exchange(get, json_response({"settings": {}})))
    assert built.body["request"]["encoding"] == "none" and built.body["response"]["body"] == {"settings": {}}


def test_record_validates_against_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    ident = {"issuer": "https://idp", "subject": "alice", "issuer_name": "corp", "email": "a@x", "name": None,
             "groups": ["eng"], "token_id": "jti1", "expires_at": None}
    cases = [
        exchange(messages_request([{"role": "user", "content": "x"}]), json_response(assistant("a")), identity=ident),
        exchange(messages_request([{"role": "user", "content": "x"}], stream=True), None, kind="request"),
        exchange(RequestInput("GET", "https", "h", 443, "/", [], None), None, errors=["upstream unreachable"]),
    ]
    for inp in cases:
        validator.validate(seal(build(inp, masker=FakeMasker()).body))
    start = records.start_record_body(previous={"chain": "20250101T000000Z-0badcafe", "seq": 3,
                                                "hash": "sha256:" + "1" * 64},
                                      gateway_version="0.1.0", policy_sha256=None, node="n", key_id="0" * 16,
                                      retention_days=30)
    validator.validate(seal(start, seq=0))
    cp = records.make_checkpoint(chain_id="20250101T000000Z-0badcafe", seq=3, head="sha256:" + "2" * 64,
                                 key=SigningKey.generate(), at=5.0)
    validator.validate(json.loads(cp))


# -- sessions -----------------------------------------------------------------------------------

def test_session_from_header_then_metadata_then_idle_gap() -> None:
    req = messages_request([{"role": "user", "content": "x"}], extra_headers=[
        ("x-claude-code-agent-id", "agent-2"), ("x-claude-code-parent-agent-id", "agent-1")])
    s = build(exchange(req, None, kind="request")).body["session"]
    assert s == {"id": "hdr-sess", "source": "header", "agent_id": "agent-2", "parent_agent_id": "agent-1"}
    req = messages_request([{"role": "user", "content": "x"}], session_header=False)
    assert build(exchange(req, None, kind="request")).body["session"]["id"] == "meta-sess"

    tracker = SessionTracker(idle_gap=60)
    ident = {"issuer": "i", "subject": "bob"}
    at = lambda t: records.derive_session({}, None, ident, t, tracker)["id"]  # noqa: E731
    a, b, c = at(0.0), at(30.0), at(85.0)
    assert a == b == c and a.startswith("idle-")
    assert at(200.0) != a  # an idle gap of more than 60 s starts a new session
    assert records.derive_session({}, None, {"issuer": "i", "subject": "eve"}, 200.0, tracker)["id"] != at(201.0)
    assert records.derive_session({"x-claude-code-session-id": "s" * 500}, None, None, 0, tracker)["id"] == "s" * 200


# -- keys and signatures ------------------------------------------------------------------------

def test_seal_and_check_signature() -> None:
    key = SigningKey.generate()
    doc = {"kind": "x", "n": 1}
    data = records.seal(doc, key)
    parsed = json.loads(data)
    trusted = {key.key_id: key.public_key}
    assert records.check_signature(parsed, trusted) is None
    parsed["n"] = 2
    assert "does not verify" in records.check_signature(parsed, trusted)
    assert "not a trusted key" in records.check_signature(json.loads(data), {})
    assert records.check_signature({"n": 1}, trusted) == "no signature"


def test_signing_key_sources(tmp_path: Path) -> None:
    generated = records.load_signing_key(state_dir=tmp_path / "state")
    path = tmp_path / "state" / records.STATE_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert records.load_signing_key(state_dir=tmp_path / "state").key_id == generated.key_id  # stable

    pem = tmp_path / "k.pem"
    pem.write_bytes(generated.private_pem())
    os.chmod(pem, 0o600)
    assert records.load_signing_key(key_file=pem).key_id == generated.key_id
    os.chmod(pem, 0o644)
    with pytest.raises(RecordError, match="readable by group or others"):
        records.load_signing_key(key_file=pem)

    import base64

    from cryptography.hazmat.primitives import serialization
    seed = generated._private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                            serialization.NoEncryption())
    env = {"REC_KEY": base64.b64encode(seed).decode()}
    assert records.load_signing_key(key_env="REC_KEY", environ=env).key_id == generated.key_id
    with pytest.raises(RecordError, match="REC_KEY .* is not set"):
        records.load_signing_key(key_env="REC_KEY", environ={})
    with pytest.raises(RecordError, match="not an Ed25519 private key"):
        records.load_signing_key(key_env="REC_KEY", environ={"REC_KEY": "not a key"})
    assert "REC_KEY" in repr(records.load_signing_key(key_env="REC_KEY", environ=env))
    assert base64.b64encode(seed).decode() not in repr(generated)
    assert re.fullmatch(r"[0-9a-f]{16}", generated.key_id)
    assert records.key_id_of(records.load_public_key(generated.public_pem())) == generated.key_id


# -- the [recording] policy section -----------------------------------------------------------------

def parse(toml: str, tmp_path: Path) -> Any:
    import tomllib

    from gatehouse.policy.reader import Section
    from gatehouse.recording.config import parse_recording

    path = tmp_path / "policy.toml"
    path.write_text(toml)
    root = Section(tomllib.loads(toml), path)
    return parse_recording(root.section("recording"), base_dir=tmp_path)


def test_recording_policy_defaults_and_paths(tmp_path: Path) -> None:
    from gatehouse.recording.config import RecordingPolicy, parse_recording

    default = parse("", tmp_path)
    assert default == RecordingPolicy(store=str(tmp_path / "recordings"))
    assert default.on_record_failure == "refuse" and default.refuse_on_failure and not default.is_s3
    assert default.spool_path(tmp_path / "state") == tmp_path / "state" / "spool"
    assert parse_recording(None).store.endswith("/recordings")

    p = parse('[recording]\nstore = "rec"\nspool_dir = "sp"\nsigning_key_file = "k.pem"\npublic_keys = ["a.pub"]\n'
              'on_record_failure = "continue"\ncheckpoint_interval_seconds = 5\nretention_days = 30\n', tmp_path)
    assert p.store == str(tmp_path / "rec") and p.spool_dir == tmp_path / "sp"
    assert p.signing_key_file == tmp_path / "k.pem" and p.public_keys == (tmp_path / "a.pub",)
    assert (p.on_record_failure, p.checkpoint_interval_seconds, p.retention_days) == ("continue", 5, 30)

    s3 = parse('[recording]\nstore = "s3://bucket/pre/fix/"\nobject_lock_mode = "GOVERNANCE"\nretention_days = 7\n'
               's3_endpoint_url = "http://127.0.0.1:9000"\nkms_key_id = "alias/x"\nsigning_key_env = "K"\n', tmp_path)
    assert s3.store == "s3://bucket/pre/fix" and s3.is_s3 and s3.object_lock_mode == "GOVERNANCE"


@pytest.mark.parametrize(("toml", "message"), [
    ('store = "s3://"', "recording.store: an S3 store is s3://bucket"),
    ('store = "gs://bucket"', "recording.store: must be a directory or s3://bucket/prefix"),
    ('object_lock_mode = "COMPLIANCE"\nretention_days = 3', "recording.object_lock_mode: applies to an S3 store only"),
    ('store = "s3://b"\nobject_lock_mode = "COMPLIANCE"', "recording.object_lock_mode: needs retention_days"),
    ('store = "s3://b"\nobject_lock_mode = "STRICT"\nretention_days = 3', "must be one of 'COMPLIANCE', 'GOVERNANCE'"),
    ('kms_key_id = "k"', "recording.kms_key_id: applies to an S3 store only"),
    ('store = "s3://b"\ns3_endpoint_url = "localhost:9000"', "recording.s3_endpoint_url: must be an http:// or https:// URL"),
    ('signing_key_file = "a"\nsigning_key_env = "B"', "set either signing_key_file or signing_key_env"),
    ('on_record_failure = "ignore"', "recording.on_record_failure: must be one of 'refuse', 'continue'"),
    ('retention_days = 0', "recording.retention_days: must be at least 1"),
    ('checkpoint_interval_seconds = 0', "must be at least 1"),
    ('stroe = "x"', "recording.stroe: unknown key"),
])
def test_recording_policy_errors_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    from gatehouse.policy.reader import PolicyError

    with pytest.raises(PolicyError) as e:
        parse("[recording]\n" + toml + "\n", tmp_path)
    assert message in str(e.value) and str(e.value).startswith(str(tmp_path / "policy.toml"))
