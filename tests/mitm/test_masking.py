"""The Masking addon through mitmproxy's own test harness (taddons, tflow): hooks, refusals,
streamed and buffered responses, findings on the flow, and bad input."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import logging
import pickle
import random
import time
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons, tflow, tutils

from gatehouse.exchange import METADATA_KEY
from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.mitm import masking as masking_addon
from gatehouse.mitm import requestjson
from gatehouse.mitm.flowutil import exchange_of
from gatehouse.mitm.masking import Masking
from gatehouse.wire.assembler import assemble_message
from gatehouse.wire.pipeline import SsePipeline
from gatehouse.wire.sse import encode_event, parse_sse
from support.flows import api_flow, api_response, fire
from support.secrets import FINGERPRINT_KEY, fake_secret, masking_section, rules_only
from support.sse_events import encode, ending, message_start, text_block, tool_block
from support.threads import calls_in_threads

SECRET = fake_secret("aws-access-key-id", random.Random(42))
PAT = fake_secret("github-pat", random.Random(43))


@pytest.fixture
def addon() -> Masking:
    return Masking(Masker(parse_masking(None), FINGERPRINT_KEY))


@pytest.fixture
def tctx(addon):
    with taddons.context(addon) as ctx:
        yield ctx


def body_with_secret(secret: str = SECRET, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        **extra,
        "system": f"deploy with {secret}",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is wrong here?"},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"AWS_ACCESS_KEY_ID={secret}\n"},
                ],
            }
        ],
    }


def metadata_text(f) -> str:
    ex = f.metadata.get(METADATA_KEY)
    return json.dumps(dataclasses.asdict(ex), default=str) if ex is not None else ""


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/messages",
        "/v1/messages?beta=true",
        "/v1/messages/count_tokens",
        "/v1/messages/count_tokens?beta=true",
        "/gateway-base/v1/messages",
    ],
)
def test_request_on_inspected_endpoints_is_masked(tctx, addon, path, caplog):
    caplog.set_level(logging.DEBUG)
    f = api_flow(path=path, body=body_with_secret())
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is None
    sent = json.loads(f.request.content)
    assert SECRET not in f.request.text
    assert sent["system"].startswith("deploy with [MASKED:aws-access-key-id:")
    assert sent["messages"][0]["content"][1]["content"].startswith("AWS_ACCESS_KEY_ID=[MASKED:aws-access-key-id:")
    assert int(f.request.headers["content-length"]) == len(f.request.content)
    ex = exchange_of(f)
    assert sorted(x.where for x in ex.request_findings) == ["messages[0].content[1].content", "system"]
    [d] = [d for d in ex.decisions if d.stage == "masking"]
    assert (d.action, d.detail["count"], d.detail["rules"]) == ("mask", 2, {"aws-access-key-id": 2})
    # never the value: not on the flow's metadata, not in the logs
    assert SECRET not in metadata_text(f) and SECRET not in caplog.text


def test_clean_request_is_left_byte_for_byte(tctx, addon):
    raw = b'{"model":"m",  "messages":[{"role":"user","content":"hello"}]}'
    f = api_flow(body=raw)
    fire(tctx, addon, HttpRequestHook(f))
    assert f.request.content == raw
    assert METADATA_KEY not in f.metadata or not exchange_of(f).request_findings


@pytest.mark.parametrize(
    "path, method",
    [
        ("/v1/models", "GET"),
        ("/v1/messages/batches", "POST"),
        ("/api/claude_code/settings", "POST"),
        ("/api/event_logging/v2/batch", "POST"),
        ("/v1/messages", "PUT"),
    ],
)
def test_bodies_on_every_endpoint_and_method_are_inspected(tctx, addon, path, method):
    """Deny by default: not a list of endpoints that are masked, but every body there is."""
    f = api_flow(method, path, {"events": [{"note": f"key {SECRET}", SECRET: "as a key"}]})
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is None and SECRET not in f.request.text
    assert "[MASKED:aws-access-key-id:" in f.request.text
    g = api_flow(method, path, b"not json " + SECRET.encode())
    fire(tctx, addon, HttpRequestHook(g))
    assert g.response is not None and g.response.status_code == 400
    assert SECRET not in g.response.text


def test_a_bodiless_request_passes(tctx, addon):
    f = api_flow("GET", "/v1/models")
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is None


@pytest.mark.parametrize(
    "path, findings",
    [
        (f"/v1/models/{SECRET}", 1),
        ("/v1/models/" + "".join(f"%{b:02X}" for b in SECRET.encode()), 1),  # every byte percent-encoded
        (f"/v1/messages?beta=true&note=key+{SECRET[:4]}%{ord(SECRET[4]):02x}{SECRET[5:]}", 1),  # one byte encoded
        (f"/v1/messages?x={SECRET}&y=2", 1),
        ("/v1/models/claude%20x?beta=true", 0),
    ],
)
def test_secrets_in_the_url_are_masked_even_percent_encoded(tctx, addon, path, findings):
    from urllib.parse import unquote

    f = api_flow("GET", path)
    fire(tctx, addon, HttpRequestHeadersHook(f))
    assert SECRET not in unquote(f.request.path)
    found = exchange_of(f).request_findings if METADATA_KEY in f.metadata else []
    assert len(found) == findings
    if not findings:
        assert f.request.path == path  # an unchanged URL keeps its bytes


@pytest.mark.parametrize(
    "content, ctype, words",
    [
        (b'{"model": "m", "messages": [', "application/json", "not valid JSON"),
        (b'{"model": "m"}', "text/plain", "Content-Type 'text/plain'"),
        (b'{"model": "m", "system": "\xff\xfe"}', "application/json", "not UTF-8"),
        (b"[" * 200_000 + b"]" * 200_000, "application/json", "nested too deeply"),
        (b'[{"role": "user"}]', "application/json", "not a JSON object"),
        (b"", "application/json", "not valid JSON"),
    ],
)
def test_unparseable_request_is_refused_with_400(tctx, addon, content, ctype, words):
    f = api_flow(body=content, headers=[("content-type", ctype)])
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is not None and f.response.status_code == 400
    err = json.loads(f.response.content)
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert words in err["error"]["message"]
    assert f.response.headers["x-should-retry"] == "false"
    ex = exchange_of(f)
    assert ex.refused and any(d.stage == "masking" and d.action == "deny" for d in ex.decisions)


def test_unparseable_request_is_forwarded_when_the_policy_says_so(tctx):
    pol = masking_section('[masking]\non_unparseable = "forward"\n')
    addon = Masking(Masker(pol, FINGERPRINT_KEY))
    f = api_flow(body=b"{broken " + SECRET.encode())
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is None and f.request.content == b"{broken " + SECRET.encode()
    assert any(d.action == "forward" for d in exchange_of(f).decisions)
    assert exchange_of(f).request_streams is None  # not parsed: the recorder reads the body itself


def test_deep_but_parseable_json_is_masked_or_refused_never_forwarded_unmasked(tctx, addon):
    for depth in (50, 400, 900, 990):
        inner = json.dumps({"type": "text", "text": SECRET})
        content = (
            '{"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","content":'
            + "[" * depth
            + inner
            + "]" * depth
            + '}, {"type": "text", "text": "'
            + SECRET
            + '"}]}]}'
        )
        f = api_flow(body=content.encode())
        fire(tctx, addon, HttpRequestHook(f))
        assert f.response is not None or SECRET not in f.request.text, depth


def test_twenty_megabyte_body(tctx, addon):
    chunk = "x = compute(value)  # ordinary code line\n" * 25_000
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": chunk} for i in range(20)]
                + [{"type": "text", "text": f"and finally {SECRET}"}],
            }
        ],
    }
    raw = json.dumps(body).encode()
    assert len(raw) > 20_000_000
    f = api_flow(body=raw)
    t = time.perf_counter()
    fire(tctx, addon, HttpRequestHook(f))
    elapsed = time.perf_counter() - t
    assert f.response is None
    assert SECRET.encode() not in f.request.content
    assert [x.where for x in exchange_of(f).request_findings] == ["messages[0].content[20].text"]
    assert elapsed < 20, elapsed


def test_streaming_request_asks_for_an_uncompressed_stream(tctx, addon):
    f = api_flow(body={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    f.request.headers["accept-encoding"] = "gzip, br, zstd"
    fire(tctx, addon, HttpRequestHook(f))
    assert f.request.headers["accept-encoding"] == "identity"
    assert exchange_of(f).request_streams is True  # handed to the recorder
    g = api_flow(body={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    g.request.headers["accept-encoding"] = "gzip"
    fire(tctx, addon, HttpRequestHook(g))
    assert g.request.headers["accept-encoding"] == "gzip"
    assert exchange_of(g).request_streams is False
    # Any endpoint's body may ask for a stream (the recorder spools its request first); only the
    # Messages API's is asked for uncompressed.
    h = api_flow(path="/v1/complete", body={"model": "m", "prompt": "hi", "stream": True})
    h.request.headers["accept-encoding"] = "gzip"
    fire(tctx, addon, HttpRequestHook(h))
    assert h.request.headers["accept-encoding"] == "gzip"
    assert exchange_of(h).request_streams is True


def test_an_internal_failure_refuses_and_never_forwards(tctx, monkeypatch, caplog):
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)

    def boom(body):
        raise RuntimeError(f"failed near {SECRET}")

    monkeypatch.setattr(masker, "mask_request", boom)
    addon = Masking(masker)
    f = api_flow(body=body_with_secret())
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is not None and f.response.status_code == 400
    assert "RuntimeError" in f.response.text and SECRET not in f.response.text
    assert exchange_of(f).refused
    assert "masking failed (RuntimeError" in caplog.text and SECRET not in caplog.text


def test_an_internal_failure_is_refused_even_when_unparseable_bodies_are_forwarded(tctx, monkeypatch):
    from gatehouse.policy.reader import Section

    policy = parse_masking(Section({"on_unparseable": "forward"}, "policy.toml", "masking"))
    masker = Masker(policy, FINGERPRINT_KEY)

    def boom(body):
        raise RuntimeError("bug")

    monkeypatch.setattr(masker, "mask_request", boom)
    addon = Masking(masker, policy)
    f = api_flow(body=body_with_secret())
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is not None and f.response.status_code == 400
    assert exchange_of(f).refused


def test_flow_refused_earlier_is_left_alone(tctx, addon):
    f = api_flow(body=b"{broken")
    f.response = api_response(b'{"type":"error"}', status=403)
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response.status_code == 403


def test_masking_off_does_nothing(tctx):
    addon = Masking(Masker(rules_only(), FINGERPRINT_KEY))
    f = api_flow(body=b"{broken " + SECRET.encode())
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is None
    unconfigured = Masking()
    fire(tctx, unconfigured, HttpRequestHook(f))
    assert f.response is None


# --------------------------------------------------------------------------------------------
# Streamed responses
# --------------------------------------------------------------------------------------------


def sse_with_secret() -> bytes:
    rng = random.Random(1)
    return encode(
        [
            message_start(),
            *text_block(0, f"Your key is {SECRET}.", rng),
            *tool_block(1, "Bash", {"command": f"gh auth login --with-token {PAT}"}, rng),
            *ending("tool_use"),
        ]
    )


def streamed_flow(tctx, addon: Masking, ctype: str = "text/event-stream") -> tuple[http.HTTPFlow, SsePipeline]:
    """A streaming request through `addon`, answered with an event stream: the flow and the
    pipeline its response goes through."""
    f = api_flow(body=body_with_secret(stream=True))
    fire(tctx, addon, HttpRequestHook(f))
    f.response = api_response(b"", ctype=ctype)
    fire(tctx, addon, HttpResponseHeadersHook(f))
    pipe = f.response.stream
    assert isinstance(pipe, SsePipeline)
    return f, pipe


def test_event_stream_goes_through_the_pipeline(tctx, addon):
    f, pipe = streamed_flow(tctx, addon, "text/event-stream; charset=utf-8")
    data = sse_with_secret()
    out = b""
    for i in range(0, len(data), 33):
        r = pipe(data[i : i + 33])
        assert r != b""
        out += r if isinstance(r, bytes) else b"".join(r)
    out += pipe(b"")
    fire(tctx, addon, HttpResponseHook(f))  # mitmproxy calls it after the stream ends
    assert SECRET.encode() not in out and PAT.encode() not in out
    msg = assemble_message(parse_sse(out))
    assert msg["content"][1]["input"]["command"].startswith("gh auth login --with-token [MASKED:github-pat:")
    ex = exchange_of(f)
    assert sorted(x.where for x in ex.response_findings) == ["content[0].text", "content[1].input.command"]
    assert [d.detail["side"] for d in ex.decisions if d.stage == "masking"] == ["request", "response"]
    fire(tctx, addon, HttpResponseHook(f))  # reported once only
    assert len(ex.response_findings) == 2
    assert SECRET not in metadata_text(f) and PAT not in metadata_text(f)


def streamed_text(data: bytes) -> str:
    """The text deltas' text in an SSE body, in order."""
    return "".join(d.get("delta", {}).get("text", "") for _, d in parse_sse(data))


def test_with_masking_off_an_event_stream_still_streams_unchanged(tctx):
    """No rules: nothing is masked, but the answer is still streamed event by event (not
    buffered to its end, as mitmproxy does a response nobody streams), through the pipeline
    the commands addon judges tool calls in and the recorder reads the message from."""
    addon = Masking()
    addon.configure_masker(None, rules_only())  # as the policy loader does: no rules, no masker
    f, pipe = streamed_flow(tctx, addon)
    assert f.request.headers["accept-encoding"] == "identity"  # so that it can stream
    assert exchange_of(f).request_streams is True
    data = sse_with_secret()
    events = data.split(b"\n\n")
    out = b""
    sent_text = ""
    for event in events[:-1]:
        r = pipe(event + b"\n\n")
        out += r if isinstance(r, bytes) else b"".join(r)
        sent_text += streamed_text(event + b"\n\n")
        if b"text_delta" in event:
            # Released as it came: with no rules, nothing is held back.
            assert streamed_text(out) == sent_text
    assert sent_text
    out += pipe(b"")
    fire(tctx, addon, HttpResponseHook(f))
    # The same message (a tool block is re-framed as one delta once whole, as always).
    assert assemble_message(parse_sse(out)) == assemble_message(parse_sse(data))
    assert SECRET in assemble_message(parse_sse(out))["content"][0]["text"]  # masking is off
    assert exchange_of(f).response_findings == []
    assert exchange_of(f).streamed_message == assemble_message(parse_sse(data))


def test_with_masking_off_a_request_is_read_for_a_stream_only(tctx):
    """Masking off: a Messages request is parsed to know whether it streams (its answer must come
    uncompressed, and the recorder spools it first), and the parse is left for the recorder;
    nothing is refused or changed."""
    addon = Masking()
    addon.configure_masker(None, rules_only())
    buffered = api_flow(body=body_with_secret())
    fire(tctx, addon, HttpRequestHook(buffered))
    assert exchange_of(buffered).request_streams is False
    assert "accept-encoding" not in buffered.request.headers
    assert requestjson.take(buffered) is not None  # for the recorder: not parsed again
    assert SECRET.encode() in buffered.request.raw_content
    broken = api_flow(body=b'{"stream": true, ' + SECRET.encode())
    fire(tctx, addon, HttpRequestHook(broken))
    assert broken.response is None and exchange_of(broken).request_streams is None
    assert requestjson.take(broken) is None


def test_stream_with_a_content_length_is_re_framed(tctx, addon):
    f = api_flow(body=body_with_secret(stream=True))
    f.response = api_response(b"", ctype="text/event-stream", content_length="1234")
    fire(tctx, addon, HttpResponseHeadersHook(f))
    assert isinstance(f.response.stream, SsePipeline)
    assert "content-length" not in f.response.headers
    assert f.response.headers["transfer-encoding"] == "chunked"


def test_stream_cut_by_an_error_still_reports_findings(tctx, addon):
    f = api_flow(body=body_with_secret(stream=True))
    f.response = api_response(b"", ctype="text/event-stream")
    fire(tctx, addon, HttpResponseHeadersHook(f))
    data = sse_with_secret()
    sent = f.response.stream(data[: data.index(b"event: message_delta")])
    f.error = tflow.terr()
    fire(tctx, addon, HttpErrorHook(f))
    ex = exchange_of(f)
    assert len(ex.response_findings) == 2
    # The message as far as the client got it is handed over for the record.
    assert ex.streamed_message is not None
    assert ex.streamed_message == assemble_message(parse_sse(sent if isinstance(sent, bytes) else b"".join(sent)))
    assert ex.streamed_message["content"][0]["text"].startswith("Your key is [MASKED:aws-access-key-id:")


def test_a_streamed_flow_copies_and_its_metadata_holds_no_masker_or_held_text(tctx, addon):
    """mitmproxy deep-copies flow metadata (get_state, copy, backup): the Exchange of a streamed
    flow is plain data, mid-stream and after, without the fingerprint key or held-back text."""
    f = api_flow(body=body_with_secret(stream=True))
    fire(tctx, addon, HttpRequestHook(f))
    f.response = api_response(b"", ctype="text/event-stream")
    fire(tctx, addon, HttpResponseHeadersHook(f))
    pipe = f.response.stream
    held = f"the key: {SECRET}"  # shorter than the hold-back window: all of it held
    assert len(held) < addon.policy.hold_back_chars
    out = pipe(
        encode(
            [
                message_start(),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                ),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": held}},
                ),
            ]
        )
    )
    assert pipe.holding and SECRET.encode() not in (out if isinstance(out, bytes) else b"".join(out))

    def copies_clean() -> None:
        state = pickle.dumps(f.get_state())
        assert FINGERPRINT_KEY not in state and SECRET.encode() not in state and b"SsePipeline" not in state
        assert f.copy().metadata[METADATA_KEY] == exchange_of(f)
        f.backup(force=True)
        ex = copy.deepcopy(exchange_of(f))
        assert ex == exchange_of(f) and ex is not exchange_of(f)
        assert SECRET not in metadata_text(f)

    copies_clean()
    assert exchange_of(f).streamed_message is None  # nothing handed over mid-stream
    rest = pipe(encode([("content_block_stop", {"type": "content_block_stop", "index": 0}), *ending()]))
    rest = (rest if isinstance(rest, bytes) else b"".join(rest)) + pipe(b"")
    fire(tctx, addon, HttpResponseHook(f))
    ex = exchange_of(f)
    assert ex.streamed_message is not None
    assert ex.streamed_message["content"][0]["text"].startswith("the key: [MASKED:aws-access-key-id:")
    assert [x.where for x in ex.response_findings] == ["content[0].text"]
    copies_clean()
    f.error = tflow.terr()
    fire(tctx, addon, HttpErrorHook(f))  # after the response hook: handed over once only
    assert [x.where for x in exchange_of(f).response_findings] == ["content[0].text"]


@pytest.mark.parametrize(
    "status, ctype, path, encoding, streams",
    [
        (200, "application/json", "/v1/messages", None, False),
        (200, "text/event-stream", "/v1/messages", "gzip", False),  # buffered, masked whole
        (529, "text/event-stream", "/v1/messages", None, True),  # any status
        (200, "text/event-stream", "/v1/messages/count_tokens", None, True),  # any endpoint
    ],
)
def test_every_uncompressed_event_stream_goes_through_the_pipeline(tctx, addon, status, ctype, path, encoding, streams):
    f = api_flow(path=path, body=body_with_secret())
    extra = {"content_encoding": encoding} if encoding else {}
    f.response = api_response(b"", ctype=ctype, status=status, **extra)
    fire(tctx, addon, HttpResponseHeadersHook(f))
    assert isinstance(f.response.stream, SsePipeline) is streams


def test_response_headers_are_allowlisted_and_masked(tctx, addon):
    f = api_flow(body=body_with_secret())
    f.response = api_response(
        b"{}",
        **{
            "request-id": f"req-{SECRET}",
            "x-debug-token": "abc",
            "set-cookie": "s=1",
            "anthropic-ratelimit-requests-remaining": "9",
            "x-leak": SECRET,
        },
    )
    f.response.reason = f"OK {SECRET}"
    fire(tctx, addon, HttpResponseHeadersHook(f))
    h = f.response.headers
    assert SECRET not in str(h.fields) and SECRET not in f.response.reason
    assert f.response.reason == "OK"
    assert h["request-id"].startswith("req-[MASKED:aws-access-key-id:")
    assert h["anthropic-ratelimit-requests-remaining"] == "9"
    assert "x-debug-token" not in h and "set-cookie" not in h and "x-leak" not in h
    [d] = [d for d in exchange_of(f).decisions if d.stage == "headers"]
    assert d.detail["dropped"] == ["x-debug-token", "set-cookie", "x-leak"]


# --------------------------------------------------------------------------------------------
# Buffered responses
# --------------------------------------------------------------------------------------------


def test_buffered_json_response_is_masked(tctx, addon):
    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "stop_reason": "end_turn",
        "content": [
            {"type": "thinking", "thinking": f"saw {SECRET}", "signature": "sig/" + SECRET},
            {"type": "text", "text": f"Rotate {SECRET} now."},
        ],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    f = api_flow(body=body_with_secret(), response=api_response(json.dumps(msg).encode()))
    fire(tctx, addon, HttpResponseHook(f))
    got = json.loads(f.response.content)
    assert got["content"][0] == msg["content"][0]  # thinking and its signature: unchanged
    assert got["content"][1]["text"].startswith("Rotate [MASKED:aws-access-key-id:")
    assert [x.where for x in exchange_of(f).response_findings] == ["content[1].text"]


def test_buffered_event_stream_is_masked_even_if_compressed(tctx, addon):
    data = sse_with_secret()
    f = api_flow(
        body=body_with_secret(stream=True),
        response=api_response(gzip.compress(data), ctype="text/event-stream", content_encoding="gzip"),
    )
    fire(tctx, addon, HttpResponseHeadersHook(f))
    assert not f.response.stream  # compressed: buffered instead
    fire(tctx, addon, HttpResponseHook(f))
    out = f.response.content  # mitmproxy decodes (and re-encodes on the wire)
    assert SECRET.encode() not in out and PAT.encode() not in out
    assert len(exchange_of(f).response_findings) == 2


def test_api_errors_are_masked_and_clean_responses_untouched(tctx, addon):
    err = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    f = api_flow(body=body_with_secret(), response=api_response(err, status=529))
    fire(tctx, addon, HttpResponseHook(f))
    assert f.response.content == err
    leaky = json.dumps(
        {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad key {SECRET}"}}
    ).encode()
    e = api_flow(body=body_with_secret(), response=api_response(leaky, status=400))
    fire(tctx, addon, HttpResponseHook(e))
    assert SECRET.encode() not in e.response.content and b"[MASKED:aws-access-key-id:" in e.response.content
    clean = json.dumps({"type": "message", "content": [{"type": "text", "text": "hi"}]}).encode()
    g = api_flow(body=body_with_secret(), response=api_response(clean))
    fire(tctx, addon, HttpResponseHook(g))
    assert g.response.content == clean


def test_unparseable_response_is_replaced_by_an_error(tctx, addon):
    f = api_flow(
        body=body_with_secret(), response=api_response(b"\x00\x01" + SECRET.encode(), ctype="application/octet-stream")
    )
    fire(tctx, addon, HttpResponseHook(f))
    assert f.response.status_code == 500
    assert json.loads(f.response.content)["error"]["type"] == "api_error"
    assert SECRET.encode() not in f.response.content


def test_text_responses_are_masked_as_text(tctx, addon):
    f = api_flow(
        body=body_with_secret(), response=api_response(b"<html>" + SECRET.encode(), ctype="text/html", status=502)
    )
    fire(tctx, addon, HttpResponseHook(f))
    assert f.response.status_code == 502
    assert SECRET.encode() not in f.response.content and b"[MASKED:aws-access-key-id:" in f.response.content


def test_response_streamed_by_mitmproxy_itself_is_noted_not_parsed(tctx, addon):
    f = api_flow(body=body_with_secret(), response=api_response(b"", ctype="application/json"))
    f.response.stream = True
    fire(tctx, addon, HttpResponseHook(f))
    assert f.response.status_code == 200
    assert any(d.action == "forward" for d in exchange_of(f).decisions)


def test_encode_event_is_what_the_addon_emits():
    # A sanity link between the modules the addon glues together.
    assert encode_event("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'


@pytest.mark.parametrize("ctype", ["text/plain", "text/html", "text/event-stream+x", ""])
def test_json_escaped_secrets_in_text_responses_are_masked(tctx, addon, ctype):
    escaped = "\\u0067" + PAT[1:]  # what json.dumps could write for the first letter
    msg = b'{"type":"message","content":[{"type":"text","text":"' + escaped.encode() + b'"}]}'
    body = (b"\xef\xbb\xbf" + msg) if not ctype else msg
    f = api_flow(
        body=body_with_secret(),
        response=api_response(body, ctype=ctype)
        if ctype
        else tutils.tresp(status_code=200, headers=http.Headers(), content=body),
    )
    fire(tctx, addon, HttpResponseHook(f))
    out = f.response.content.decode("utf-8", "replace")
    assert PAT[1:] not in out and "[MASKED:github-pat:" in out


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_compressed_response_is_masked_off_the_event_loop_whatever_its_size(tctx, addon, monkeypatch, encoding):
    """A few kilobytes of gzip can decode to megabytes: a compressed body is decoded and masked
    on a worker thread, however small it is as sent; a small plain one on the loop."""
    on_worker = calls_in_threads(monkeypatch, masking_addon, "_inspect_response")
    doc = json.dumps({"type": "message", "content": [{"type": "text", "text": f"{SECRET} " + "x" * 300_000}]}).encode()
    sent = gzip.compress(doc) if encoding == "gzip" else doc[:200] + doc[-40:]
    f = api_flow(body=body_with_secret())
    f.response = api_response(sent, content_encoding=encoding)
    fire(tctx, addon, HttpResponseHook(f))
    assert on_worker == [encoding == "gzip"]
    assert SECRET not in f.response.get_content().decode()
