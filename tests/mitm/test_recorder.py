"""The Recorder addon with mitmproxy's test helpers (taddons, tflow): no proxy process."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow, tutils

from gatehouse.exchange import Finding, Identity
from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.mitm import requestjson
from gatehouse.mitm.flowutil import exchange_of, refuse
from gatehouse.mitm.masking import Masking
from gatehouse.mitm.recorder import Recorder
from gatehouse.recording.config import RecordingPolicy
from gatehouse.recording.layout import checkpoint_key
from gatehouse.recording.reader import expand_request_body, iter_records, response_message
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import STATE_KEY_FILE, SigningKey
from gatehouse.recording.spool import read_spooled
from gatehouse.recording.stores import LocalStore
from gatehouse.recording.verify import verify_store
from gatehouse.wire.apierrors import permission
from gatehouse.wire.jsonbody import loads_spanned
from gatehouse.wire.pipeline import SsePipeline
from support.records import SECRET, FakeMasker, assistant_message
from support.s3_server import S3Server
from support.sse_events import encode, ev, message_start

API_KEY = "sk-ant-api03-" + "k" * 40
PROXY_TOKEN = "eyJhbGciOiJFUzI1NiJ9.proxy-token-payload.sig"


def request_body(stream: bool = False, text: str = "hello") -> bytes:
    return json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "stream": stream,
            "system": "You are Claude Code.",
            "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": text}],
        }
    ).encode()


def make_flow(*, stream: bool = False, text: str = "hello", response: bool = True) -> http.HTTPFlow:
    req = tutils.treq(
        method=b"POST",
        scheme=b"https",
        host="api.anthropic.com",
        port=443,
        path=b"/v1/messages?beta=true",
        headers=http.Headers(
            [
                (b"content-type", b"application/json"),
                (b"x-api-key", API_KEY.encode()),
                (b"authorization", f"Bearer {PROXY_TOKEN}".encode()),
                (b"user-agent", b"claude-cli/2.1.0"),
                (b"x-claude-code-session-id", b"sess-42"),
            ]
        ),
        content=request_body(stream, text),
        timestamp_start=time.time(),
        timestamp_end=time.time(),
    )
    f = tflow.tflow(req=req)
    ex = exchange_of(f)
    ex.identity = Identity(
        issuer="https://idp.example", subject="alice", email="alice@example.com", groups=("eng",), token_id="jti-1"
    )
    ex.decide("access", "allow", "group eng may use claude-sonnet-4-5")
    if response:
        f.response = tutils.tresp(
            headers=http.Headers([(b"content-type", b"application/json"), (b"request-id", b"req_abc")]),
            content=json.dumps(assistant_message("hi there")).encode(),
            timestamp_start=time.time(),
            timestamp_end=time.time(),
        )
    return f


def stream_through(flow: http.HTTPFlow, message: dict[str, Any], findings: list[Finding]) -> None:
    """What the masking addon does with a response it streams: the response's stream is its
    pipeline and, once the stream ended, the message the client received and the pipeline's
    findings are on the Exchange."""
    assert flow.response is not None
    flow.response.stream = lambda data: data
    ex = exchange_of(flow)
    ex.streamed_message = message
    ex.response_findings.extend(findings)


_LOOP: list[asyncio.AbstractEventLoop] = []


@pytest.fixture(autouse=True)
def tctx() -> Iterator[taddons.context]:
    """One mitmproxy test context (and event loop) per test; `run` drives coroutines on it."""
    with taddons.context() as ctx:
        _LOOP.append(ctx.master.event_loop)
        yield ctx
        _LOOP.pop()
        # mitmproxy's log handler posts to this loop; detach it before the loop closes.
        ctx.master._legacy_log_events.uninstall()


@pytest.fixture
def state(tmp_path: Path, tctx: taddons.context) -> Iterator[Path]:
    yield tmp_path / "state"
    Recording.forget(tmp_path / "state" / "spool")


def policy_for(tmp_path: Path, **kw: Any) -> RecordingPolicy:
    kw.setdefault("store", str(tmp_path / "recordings"))
    return RecordingPolicy(**kw)


def configured(tmp_path: Path, state: Path, masker: Any = None, **kw: Any) -> Recorder:
    rec = Recorder()
    rec.configure_recording(
        policy_for(tmp_path, **kw), state_dir=state, masker=masker, policy_sha256="f" * 64, gateway_version="0.1.0"
    )
    return rec


def run(coro: Any) -> Any:
    return _LOOP[-1].run_until_complete(coro)


def spooled_records(state: Path) -> list[dict[str, Any]]:
    """The records durable in the spool (its segments), in the order they were written."""
    return [json.loads(data) for key, data in read_spooled(state / "spool") if key.startswith("records/")]


def stored(rec: Recorder, tmp_path: Path) -> LocalStore:
    assert rec.recording is not None and rec.recording.uploader.flush(10)
    return LocalStore(tmp_path / "recordings")


# -- the normal path -------------------------------------------------------------------------------


def test_buffered_exchange_is_spooled_before_the_hook_returns(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state)
    rec.recording.uploader.stop()  # so the spool, not the store, must hold it
    f = make_flow()

    async def go() -> None:
        await rec.request(f)
        await rec.response(f)

    run(go())
    kinds = [r["kind"] for r in spooled_records(state)]
    assert kinds == ["start", "exchange"]
    r = spooled_records(state)[-1]
    assert r["exchange_id"] == exchange_of(f).exchange_id
    assert r["identity"]["subject"] == "alice" and r["session"] == {
        "id": "sess-42",
        "source": "header",
        "agent_id": None,
        "parent_agent_id": None,
    }
    assert r["response"]["request_id"] == "req_abc" and r["response"]["message"]["usage"]["output_tokens"] == 20
    assert r["decisions"][0]["stage"] == "access" and r["gateway"] == {"version": "0.1.0", "policy_sha256": "f" * 64}
    assert r["timing"]["ttfb_ms"] is not None

    rec.recording.uploader.start()
    store = stored(rec, tmp_path)
    rec.done()
    assert verify_store(store).ok
    full = list(iter_records(store, kinds=("exchange",)))[0]
    assert expand_request_body(full, store)["messages"] == [{"role": "user", "content": "hello"}]
    assert response_message(full, store)["content"][0]["text"] == "hi there"


def test_a_buffered_request_is_recorded_as_it_went_upstream(tmp_path: Path, state: Path) -> None:
    """A buffered request (the masking addon says so) goes upstream at once: its part of the
    record is built meanwhile, from the request as it was when it left, and spooled with the
    response before the response is released."""
    rec = configured(tmp_path, state)
    rec.recording.uploader.stop()
    f = make_flow(response=False)
    exchange_of(f).request_streams = False

    async def go() -> None:
        await rec.request(f)
        assert [r["kind"] for r in spooled_records(state) if r["kind"] != "start"] == []
        f.request.content = request_body(text="changed after it went upstream")
        f.response = make_flow().response
        await rec.response(f)

    run(go())
    assert [r["kind"] for r in spooled_records(state)] == ["start", "exchange"]
    rec.recording.uploader.start()
    store = stored(rec, tmp_path)
    full = list(iter_records(store, kinds=("exchange",)))[0]
    assert expand_request_body(full, store)["messages"] == [{"role": "user", "content": "hello"}]


def test_a_buffered_response_is_withheld_when_its_request_part_cannot_be_built(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, on_record_failure="refuse")
    f = make_flow(response=False)
    exchange_of(f).request_streams = False

    def broken(*args: Any) -> None:
        raise ValueError("cannot build")

    rec._build_captured = broken  # type: ignore[method-assign]
    run(rec.request(f))
    f.response = make_flow().response
    run(rec.response(f))
    assert f.response.status_code == 500 and b"cannot record this exchange" in f.response.content


def test_a_flow_that_errs_waits_for_its_request_part(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state)
    f = make_flow(response=False)
    exchange_of(f).request_streams = False
    run(rec.request(f))
    f.error = tflow.terr("Connection refused.")
    run(rec.error(f))
    r = spooled_records(state)[-1]
    assert r["kind"] == "exchange" and r["request"]["model"] == "claude-sonnet-4-5" and r["response"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_the_masking_addons_parse_is_recorded_as_the_recorder_would_parse(
    tmp_path: Path, state: Path, stream: bool
) -> None:
    """`requestjson`: an earlier addon's parse of a body forwarded unchanged; the record made
    with it is the record made without it, and a parse of another text is not used."""
    bodies = []
    for offer in ("none", "same", "other"):
        rec = configured(tmp_path / offer, state / offer)
        rec.recording.uploader.stop()
        f = make_flow(stream=stream, text="hello", response=False)
        exchange_of(f).request_streams = stream
        if offer == "same":
            requestjson.remember(f, f.request.raw_content, requestjson.parse(f.request.raw_content))
        elif offer == "other":
            other = loads_spanned(request_body(stream, text="not what went upstream").decode())
            requestjson.remember(f, f.request.raw_content, requestjson.ParsedRequest(other.value, other))

        async def go(rec: Recorder = rec, f: http.HTTPFlow = f) -> None:
            await rec.request(f)
            f.response = make_flow().response
            await rec.response(f)

        run(go())
        rec.recording.uploader.start()
        store = stored(rec, tmp_path / offer)
        full = list(iter_records(store, kinds=("exchange",)))[0]
        bodies.append(expand_request_body(full, store))
        rec.done()
        Recording.forget(state / offer / "spool")
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["messages"] == [{"role": "user", "content": "hello"}]


def test_a_recorder_that_does_not_record_still_drops_the_shared_parse() -> None:
    """The recorder is the parse's last reader: with recording off it is not kept (megabytes of
    objects on a late turn) while the upstream answers."""
    f = make_flow(text="hello", response=False)
    requestjson.remember(f, f.request.raw_content, requestjson.parse(f.request.raw_content))
    run(Recorder().request(f))
    assert requestjson.cached(f) is None


def test_streamed_request_is_spooled_before_it_goes_upstream(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state)
    rec.recording.uploader.stop()
    f = make_flow(stream=True, response=False)
    run(rec.request(f))
    assert [r["kind"] for r in spooled_records(state)] == ["start", "request"]
    assert spooled_records(state)[-1]["request"]["stream"] is True

    f.response = tutils.tresp(
        headers=http.Headers([(b"content-type", b"text/event-stream"), (b"request-id", b"req_s")]), content=b""
    )
    stream_through(f, assistant_message("streamed answer"), [Finding("aws-access-key-id", "content[0].text", "3f9a1c")])
    run(rec.response(f))
    final = spooled_records(state)[-1]
    assert final["kind"] == "exchange" and final["response"]["streamed"] is True
    assert final["response"]["encoding"] == "sse" and final["response"]["request_id"] == "req_s"
    assert final["findings"]["response"] == [
        {"rule": "aws-access-key-id", "where": "content[0].text", "fingerprint": "3f9a1c"}
    ]
    assert final["request"]["messages"] == spooled_records(state)[-2]["request"]["messages"]

    # The findings the masking addon moved to the Exchange are recorded once.
    g = make_flow(stream=True)
    stream_through(g, assistant_message("hi there"), [Finding("r", "w", "f")])
    run(rec.response(g))
    assert spooled_records(state)[-1]["findings"]["response"] == [{"rule": "r", "where": "w", "fingerprint": "f"}]


def test_refused_flow_is_recorded_as_an_audit_event(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state)
    f = make_flow(response=False)
    refuse(f, permission("model claude-opus-4 is not allowed for your groups"), "access", rule="groups.eng.models")

    async def go() -> None:
        await rec.request(f)  # an earlier addon answered: nothing spooled here
        await rec.response(f)

    run(go())
    store = stored(rec, tmp_path)
    (r,) = list(iter_records(store, kinds=("refusal", "exchange", "request")))
    assert r["kind"] == "refusal" and r["response"]["status"] == 403
    assert r["response"]["body"]["error"]["type"] == "permission_error"
    assert r["timing"]["first_byte"] is None
    assert [d["action"] for d in r["decisions"]] == ["allow", "deny"]


def test_error_without_response_is_recorded(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state)
    f = make_flow(response=False)
    f.error = tflow.terr("connection to upstream refused")

    async def go() -> None:
        await rec.request(f)
        await rec.error(f)
        await rec.error(f)  # once only

    run(go())
    store = stored(rec, tmp_path)
    (r,) = list(iter_records(store, kinds=("exchange",)))
    assert r["response"] is None and r["errors"] == ["connection to upstream refused"]


# -- failures --------------------------------------------------------------------------------------


def break_spool(state: Path) -> None:
    shutil.rmtree(state / "spool")
    (state / "spool").write_text("no longer a directory")


def test_unwritable_spool_with_refuse_refuses_requests(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, on_record_failure="refuse")
    rec.probe_interval = 0  # probe on every request (default: at most once a second)
    break_spool(state)
    f = make_flow(response=False)
    run(rec.request(f))
    assert f.response is not None and f.response.status_code == 500
    body = json.loads(f.response.content)
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "cannot record this exchange" in body["error"]["message"]
    assert f.response.headers["x-should-retry"] == "false"
    assert exchange_of(f).decisions[-1].stage == "recording"
    run(rec.response(f))  # the refusal itself cannot be spooled: no second refusal, no crash

    # Unusable already at start-up: the gateway starts (a warning), then refuses.
    Recording.forget(state / "spool")
    late = configured(tmp_path, state, on_record_failure="refuse")
    g = make_flow(response=False)
    run(late.request(g))
    assert g.response is not None and g.response.status_code == 500

    # The spool comes back: requests pass again.
    (state / "spool").unlink()
    late.probe_interval = 0
    h = make_flow(response=False)
    run(late.request(h))
    assert h.response is None


def test_a_streamed_request_is_refused_when_its_record_cannot_be_spooled_even_between_probes(
    tmp_path: Path, state: Path
) -> None:
    rec = configured(tmp_path, state, on_record_failure="refuse")
    rec.probe_interval = 3600  # the start-up probe said the spool works; none is due since
    break_spool(state)
    f = make_flow(stream=True, response=False)
    run(rec.request(f))
    assert f.response is not None and f.response.status_code == 500
    assert b"cannot record this exchange" in f.response.content


def test_a_streamed_record_spooled_shows_the_spool_works_again(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, on_record_failure="refuse")
    rec.recording.uploader.stop()  # so the spool, not the store, holds the request record
    rec.probe_interval = 0
    break_spool(state)
    refused = make_flow(response=False)
    run(rec.request(refused))
    assert refused.response is not None and refused.response.status_code == 500

    # The spool comes back; no probe is due for an hour.
    (state / "spool").unlink()
    rec.probe_interval = 3600
    streamed = make_flow(stream=True, response=False)
    run(rec.request(streamed))
    assert streamed.response is None  # its request record was spooled: it goes upstream
    assert [r["kind"] for r in spooled_records(state)][-1] == "request"
    buffered = make_flow(response=False)
    exchange_of(buffered).request_streams = False
    run(rec.request(buffered))
    assert buffered.response is None  # that write showed the spool works: not refused


def test_a_write_that_began_before_a_spool_failure_does_not_say_it_works(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, on_record_failure="refuse")
    rec.probe_interval = 3600
    append = rec.recording.append

    def failing_meanwhile(built: Any) -> Any:
        # While this write is under way, another flow's write fails (a full disk).
        other = make_flow(response=False)
        rec._failed(other, exchange_of(other), OSError(28, "No space left on device"), can_refuse=True)
        return append(built)

    rec.recording.append = failing_meanwhile  # type: ignore[method-assign]
    streamed = make_flow(stream=True, response=False)
    run(rec.request(streamed))
    assert streamed.response is None  # its own record was spooled
    rec.recording.append = append  # type: ignore[method-assign]
    buffered = make_flow(response=False)
    exchange_of(buffered).request_streams = False
    run(rec.request(buffered))
    assert buffered.response is not None and buffered.response.status_code == 500  # not sent


def test_unwritable_spool_with_continue_passes_and_says_so(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, on_record_failure="continue")
    rec.probe_interval = 0
    break_spool(state)
    f = make_flow()
    run(rec.request(f))
    original = f.response
    run(rec.response(f))
    assert f.response is original
    assert exchange_of(f).decisions[-1].stage == "recording" and exchange_of(f).decisions[-1].action == "error"


def test_buffered_response_is_withheld_when_its_record_cannot_be_spooled(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, on_record_failure="refuse")
    f = make_flow()
    run(rec.request(f))
    break_spool(state)
    run(rec.response(f))
    assert f.response.status_code == 500 and b"cannot record this exchange" in f.response.content


def test_hooks_do_not_block_the_event_loop(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state)
    slow_append = rec.recording.append

    def slow(built: Any) -> Any:
        time.sleep(0.3)  # a slow disk
        return slow_append(built)

    rec.recording.append = slow  # type: ignore[method-assign]
    lags: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)

    async def go() -> None:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        flows = [make_flow(text=f"m{i}") for i in range(4)]
        await asyncio.gather(*(rec.response(f) for f in flows))
        stop.set()
        await tick

    run(go())
    assert lags and max(lags) < 0.25  # blocking would show 0.3 s or more


# -- secrets ---------------------------------------------------------------------------------------


def all_bytes(*roots: Path) -> bytes:
    return b"".join(p.read_bytes() for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


def test_no_secret_at_rest(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, masker=FakeMasker())
    flows = [make_flow(text=f"deploy with {SECRET}"), make_flow(stream=True, text=f"again {SECRET}", response=False)]
    flows[0].response.content = json.dumps(assistant_message(f"use {SECRET} carefully")).encode()
    flows[1].response = tutils.tresp(headers=http.Headers([(b"content-type", b"text/event-stream")]), content=b"")
    thinking = assistant_message("hi there")
    thinking["content"] = [
        {"type": "thinking", "thinking": f"the key is {SECRET}", "signature": "sig=="},
        {"type": "text", "text": "ok"},
    ]
    stream_through(flows[1], thinking, [])

    async def go() -> None:
        for f in flows:
            await rec.request(f)
            await rec.response(f)

    run(go())
    stored(rec, tmp_path)
    rec.done()
    data = all_bytes(tmp_path / "recordings", state)
    assert data, "nothing recorded?"
    for needle in (API_KEY, PROXY_TOKEN, SECRET, "proxy-token-payload"):
        assert needle.encode() not in data, needle
    assert b"[MASKED:aws-access-key-id:abc123]" in data
    # The signing key stays in the state directory, mode 0600, and nowhere in the store.
    key_pem = (state / STATE_KEY_FILE).read_bytes()
    assert (state / STATE_KEY_FILE).stat().st_mode & 0o077 == 0
    assert key_pem not in all_bytes(tmp_path / "recordings")


def real_masker() -> Masker:
    return Masker(parse_masking(None), b"k" * 32)


def test_no_secret_at_rest_with_the_real_masker(tmp_path: Path, state: Path) -> None:
    secret = "AKIAZ7Q4XK2M9PLR3TWB"
    rec = configured(tmp_path, state, masker=real_masker())
    f = make_flow(text=f"my key is {secret}")
    f.response.content = json.dumps(assistant_message(f"echo {secret}")).encode()
    run(rec.request(f))
    run(rec.response(f))
    stored(rec, tmp_path)
    data = all_bytes(tmp_path / "recordings", state)
    assert secret.encode() not in data and b"[MASKED:" in data


def test_buffered_sse_is_reassembled_with_the_real_parser(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, masker=real_masker())
    thinking_secret = "AKIAZ7Q4XK2M9PLR3TWB"

    body = encode(
        [
            message_start(),
            ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""}),
            ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": f"key {thinking_secret}"}),
            ev("content_block_stop", index=0),
            ev("ping"),
            ev(
                "content_block_start",
                index=1,
                content_block={"type": "tool_use", "id": "tu_1", "name": "Bash", "input": {}},
            ),
            ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"command": "l'}),
            ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": 's -la"}'}),
            ev("content_block_stop", index=1),
            ev("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 42}),
            ev("message_stop"),
        ]
    )
    f = make_flow(stream=True)
    f.response = tutils.tresp(headers=http.Headers([(b"content-type", b"text/event-stream")]), content=body)
    run(rec.request(f))
    run(rec.response(f))
    store = stored(rec, tmp_path)
    (r,) = list(iter_records(store, kinds=("exchange",)))
    msg = response_message(r, store)
    assert r["response"]["encoding"] == "sse" and msg["stop_reason"] == "tool_use"
    assert msg["usage"]["output_tokens"] == 42
    assert msg["content"][1] == {"type": "tool_use", "id": "tu_1", "name": "Bash", "input": {"command": "ls -la"}}
    assert thinking_secret not in msg["content"][0]["thinking"]  # the record masks thinking too
    assert r["findings"]["record"] and thinking_secret.encode() not in all_bytes(tmp_path / "recordings")


def streamed_through_masking(tmp_path: Path, state: Path) -> tuple[Recorder, Masking, http.HTTPFlow, SsePipeline]:
    """A streaming flow the recorder has seen the request of, whose response the real masking
    addon streams through its pipeline (returned, for the test to feed)."""
    masker = real_masker()
    masking = Masking(masker)
    rec = configured(tmp_path, state, masker=masker)
    f = make_flow(stream=True, response=False)
    run(rec.request(f))
    f.response = tutils.tresp(headers=http.Headers([(b"content-type", b"text/event-stream")]), content=b"")
    masking.responseheaders(f)
    return rec, masking, f, f.response.stream


def test_the_masking_addons_stream_reaches_the_record_through_the_exchange(tmp_path: Path, state: Path) -> None:
    secret = "AKIAZ7Q4XK2M9PLR3TWB"
    rec, masking, f, pipeline = streamed_through_masking(tmp_path, state)
    assert isinstance(pipeline, SsePipeline) and exchange_of(f).streamed_message is None  # handed over at the end
    sent = pipeline(
        encode(
            [
                message_start(),
                ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
                ev("content_block_delta", index=0, delta={"type": "text_delta", "text": f"use {secret} now"}),
                ev("content_block_stop", index=0),
                ev("message_stop"),
            ]
        )
    )
    pipeline(b"")
    run(masking.response(f))  # moves the pipeline's findings to the Exchange
    run(rec.response(f))
    store = stored(rec, tmp_path)
    (r,) = list(iter_records(store, kinds=("exchange",)))
    msg = response_message(r, store)
    assert r["response"]["encoding"] == "sse" and r["response"]["streamed"] is True
    assert msg["content"] == pipeline.assembled["content"] and msg["content"][0]["text"].startswith("use [MASKED:")
    assert secret.encode() not in (sent if isinstance(sent, bytes) else b"".join(sent))
    assert [x["where"] for x in r["findings"]["response"]] == ["content[0].text"]  # once, from the Exchange


def test_a_stream_the_client_left_is_recorded_as_far_as_it_went(tmp_path: Path, state: Path) -> None:
    secret = "AKIAZ7Q4XK2M9PLR3TWB"
    rec, masking, f, pipeline = streamed_through_masking(tmp_path, state)
    pipeline(
        encode(
            [
                message_start(),
                ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
                ev("content_block_delta", index=0, delta={"type": "text_delta", "text": f"use {secret} now, and "}),
                ev("content_block_stop", index=0),
                ev("content_block_start", index=1, content_block={"type": "text", "text": ""}),
            ]
        )
    )
    # The client went away: mitmproxy never ends the stream, and calls `error` instead of `response`.
    f.error = tflow.terr("Client disconnected.")
    masking.error(f)
    run(rec.error(f))
    store = stored(rec, tmp_path)
    (r,) = list(iter_records(store, kinds=("exchange",)))
    msg = response_message(r, store)
    assert r["response"]["encoding"] == "sse" and r["response"]["streamed"] is True
    assert msg["content"] == pipeline.assembled["content"] and msg["content"][0]["text"].startswith("use [MASKED:")
    assert [x["where"] for x in r["findings"]["response"]] == ["content[0].text"]
    assert r["errors"] == ["Client disconnected."]
    assert secret.encode() not in all_bytes(tmp_path / "recordings")


def test_whether_a_request_streams_comes_from_the_masking_addon(tmp_path: Path, state: Path) -> None:
    """The masking addon parsed the body already and says whether it asks for a stream; the
    recorder parses it itself only on a flow the addon did not parse (masking off, passthrough)."""
    rec = configured(tmp_path, state)
    rec.recording.uploader.stop()
    masking = Masking(real_masker())
    f = make_flow(stream=True, response=False)
    run(masking.request(f))
    assert exchange_of(f).request_streams is True
    run(rec.request(f))
    assert [r["kind"] for r in spooled_records(state)] == ["start", "request"]
    g = make_flow(stream=True, response=False)
    exchange_of(g).request_streams = False  # the addon's word is taken over the body's
    run(rec.request(g))
    h = make_flow(stream=False, response=False)
    exchange_of(h).request_streams = True
    run(rec.request(h))
    assert [r["kind"] for r in spooled_records(state)] == ["start", "request", "request"]
    assert spooled_records(state)[-1]["exchange_id"] == exchange_of(h).exchange_id


# -- configuration and lifecycle ---------------------------------------------------------------------


def test_reconfigure_and_reload_keep_one_uploader_and_one_chain(tmp_path: Path, state: Path) -> None:
    first = configured(tmp_path, state)
    run(first.response(make_flow()))
    thread = first.recording.uploader._thread
    chain = first.recording.journal.chain_id
    first.done()  # mitmproxy calls done on a script reload...
    second = configured(tmp_path, state)  # ...then the reloaded script configures a new instance
    run(second.response(make_flow()))
    assert second.recording is first.recording and second.recording.journal.chain_id == chain
    uploaders = [t for t in threading.enumerate() if t.name == "gatehouse-uploader"]
    assert len([t for t in uploaders if t is second.recording.uploader._thread]) == 1
    assert thread is None or not thread.is_alive() or thread is second.recording.uploader._thread
    configured(tmp_path, state)  # a policy reload while running
    assert [
        t
        for t in threading.enumerate()
        if t.name == "gatehouse-uploader"
        and t is not second.recording.uploader._thread
        and t.is_alive()
        and t is thread
    ] == []
    store = stored(second, tmp_path)
    second.done()
    result = verify_store(store)
    assert result.ok and result.chains == 1 and result.records == 3


def test_policy_moving_the_spool_retires_the_old_one(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state)
    run(rec.response(make_flow()))
    old = rec.recording
    rec.configure_recording(
        policy_for(tmp_path, spool_dir=tmp_path / "spool2"),
        state_dir=state,
        policy_sha256="e" * 64,
        gateway_version="0.1.0",
    )
    try:
        assert rec.recording is not old and not old.uploader.running
        assert old.spool.pending() == []  # the old spool was flushed, its chain checkpointed
        run(rec.response(make_flow()))
        store = stored(rec, tmp_path)
        result = verify_store(store)
        assert result.ok and result.chains == 2 and result.checkpoints == 1
    finally:
        Recording.forget(tmp_path / "spool2")


def test_done_writes_a_checkpoint_and_flushes(tmp_path: Path, state: Path) -> None:
    rec = configured(tmp_path, state, checkpoint_interval_seconds=3600)
    run(rec.response(make_flow()))
    rec.done()
    store = LocalStore(tmp_path / "recordings")
    assert list(store.list("checkpoints/")) == [checkpoint_key(rec.recording.journal.chain_id, 1)]
    assert rec.recording.spool.pending() == []


def test_configured_signing_key_and_bad_key(tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = SigningKey.generate()
    monkeypatch.setenv("GATEHOUSE_RECORDING_KEY", key.private_pem().decode())
    rec = configured(tmp_path, state, signing_key_env="GATEHOUSE_RECORDING_KEY")
    assert rec.recording.journal.key.key_id == key.key_id
    Recording.forget(state / "spool")
    monkeypatch.setenv("GATEHOUSE_RECORDING_KEY", "garbage")
    with pytest.raises(exceptions.OptionsError, match=r"\[recording\] environment variable GATEHOUSE_RECORDING_KEY"):
        configured(tmp_path, state, signing_key_env="GATEHOUSE_RECORDING_KEY")


def test_bucket_without_object_lock_stops_start_up(s3: S3Server, tmp_path: Path, state: Path) -> None:
    bucket = f"plain-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=False)
    with pytest.raises(exceptions.OptionsError, match="does not have Object Lock enabled"):
        configured(
            tmp_path,
            state,
            store=f"s3://{bucket}/gh",
            s3_endpoint_url=s3.endpoint_url,
            object_lock_mode="COMPLIANCE",
            retention_days=1,
        )
    with pytest.raises(exceptions.OptionsError, match="does not exist"):
        configured(tmp_path, state, store="s3://missing-bucket/gh", s3_endpoint_url=s3.endpoint_url)


def test_s3_recording_end_to_end_in_process(s3: S3Server, tmp_path: Path, state: Path) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    rec = configured(
        tmp_path,
        state,
        store=f"s3://{bucket}/gh",
        s3_endpoint_url=s3.endpoint_url,
        object_lock_mode="GOVERNANCE",
        retention_days=2,
    )
    for i in range(3):
        f = make_flow(text=f"turn {i}")
        run(rec.request(f))
        run(rec.response(f))
    rec.done()
    from gatehouse.recording.stores import open_store

    store = open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode="GOVERNANCE")
    result = verify_store(store)
    assert result.ok, [str(p) for p in result.problems]
    assert result.records == 4 and result.retention_checked > 0
