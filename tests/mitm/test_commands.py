"""The Commands addon (gatehouse.mitm.commands) and the approvals API addon through mitmproxy's
hook dispatch: which responses are buffered, what a blocked call becomes in a buffered JSON or
SSE body, the judge a stream gets, held calls released by a decision, and the API's answers."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook
from mitmproxy.test import taddons

from gatehouse.approvals.notify import Notifier
from gatehouse.approvals.service import ApprovalService
from gatehouse.approvals.store import ApprovalStore
from gatehouse.commands.judge import call_sha256
from gatehouse.exchange import Identity
from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.mitm import commands as commands_addon
from gatehouse.mitm.approvals import ApprovalsApi
from gatehouse.mitm.commands import OFFLOAD_INPUT_CHARS, Commands
from gatehouse.mitm.flowutil import exchange_of
from gatehouse.mitm.masking import Masking
from gatehouse.recording.stores import LocalStore
from gatehouse.wire.assembler import assemble_message
from gatehouse.wire.pipeline import SsePipeline
from gatehouse.wire.sse import parse_sse
from support.flows import ISSUER, api_flow, api_response, fire, gateway_state, identify
from support.secrets import FINGERPRINT_KEY, rules_only
from support.sse_events import encode, ending, ev, message_start, text_block, tool_block
from support.threads import calls_in_threads

RULES = (
    ISSUER
    + """
[approvals]
approvers = ["security"]
timeout_seconds = 5
on_timeout = "deny"

[commands]

[[commands.rules]]
id = "no-rm"
tool = "Bash"
field = "command"
pattern = 'rm -rf /'
action = "block"
message = "Never."

[[commands.rules]]
id = "hold-deploy"
tool = "Bash"
field = "command"
pattern = '^deploy'
action = "approve"
message = "Deploys need an approver."
groups = ["developers"]
"""
)

BOB = Identity(issuer="https://login.example.com", subject="bob", email="bob@example.com", groups=("security",))


@pytest.fixture
def tctx():
    with taddons.context() as ctx:
        yield ctx


@pytest.fixture
def state(tmp_path):
    st = gateway_state(tmp_path, RULES)
    st.approvals = ApprovalService(
        ApprovalStore(LocalStore(tmp_path / "store")), st.require_policy().approvals, notifier=Notifier(None)
    )
    return st


def approve_when_filed(state) -> threading.Thread:
    """Bob approves the first request filed (in a thread: the hold runs in the test's loop)."""

    def approve() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = state.approvals.pending()
            if pending:
                req = pending[0].request
                state.approvals.decide(req.id, BOB, "approve", reason="ok", input_sha256=req.input_sha256)
                return
            time.sleep(0.05)

    t = threading.Thread(target=approve)
    t.start()
    return t


def message(*blocks: dict, stop_reason: str = "tool_use") -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": list(blocks),
            "stop_reason": stop_reason,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    ).encode()


def bash(command: str, i: int = 0) -> dict:
    return {"type": "tool_use", "id": f"toolu_{i}", "name": "Bash", "input": {"command": command}}


def test_a_blocked_call_in_a_buffered_json_message_becomes_a_notice(tctx, state):
    addon = Commands(state)
    flow = api_flow(response=api_response(message(bash("ls; rm -rf /", 0), bash("ls", 1))))
    identify(flow, "sre")
    fire(tctx, addon, HttpRequestHook(flow), HttpResponseHeadersHook(flow), HttpResponseHook(flow))
    doc = json.loads(flow.response.content)
    assert [b["type"] for b in doc["content"]] == ["text", "tool_use"]
    assert "no-rm" in doc["content"][0]["text"] and "Never." in doc["content"][0]["text"]
    assert doc["stop_reason"] == "tool_use"
    verdicts = [(d.action, d.rule) for d in exchange_of(flow).decisions if d.stage == "commands"]
    assert verdicts == [("block", "no-rm"), ("allow", "default")]


def test_a_blocked_call_in_a_buffered_sse_body_is_replaced_at_its_index(tctx, state):
    addon = Commands(state)
    rng = random.Random(1)
    body = encode(
        [message_start(), *text_block(0, "ok", rng), *tool_block(1, "Bash", {"command": "rm -rf /"}, rng), *ending()]
    )
    flow = api_flow(response=api_response(body, "text/event-stream"))
    identify(flow, "sre")
    fire(tctx, addon, HttpRequestHook(flow), HttpResponseHeadersHook(flow), HttpResponseHook(flow))
    msg = assemble_message(parse_sse(flow.response.content))
    assert [b["type"] for b in msg["content"]] == ["text", "text"]
    assert msg["stop_reason"] == "end_turn"


def test_callers_an_approve_rule_can_match_are_buffered_others_get_a_stream_judge(tctx, state):
    addon = Commands(state)
    dev, sre = api_flow(), api_flow()
    identify(dev, "developers")
    identify(sre, "sre")
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    for f in (dev, sre):
        fire(tctx, addon, HttpRequestHook(f))
        f.response = api_response(b"", "text/event-stream")
        f.response.stream = SsePipeline(masker)  # what Masking does unless buffer_response is set
        fire(tctx, addon, HttpResponseHeadersHook(f))
    assert exchange_of(dev).buffer_response and not exchange_of(sre).buffer_response
    assert sre.response.stream.judge_tool_use is not None
    stream = [message_start(), *tool_block(0, "Bash", {"command": "rm -rf /"}, random.Random(1)), *ending("tool_use")]
    out = sre.response.stream(encode(stream))
    out = (out if isinstance(out, bytes) else b"".join(out)) + sre.response.stream(b"")
    assert b"Gatehouse blocked" in out and b'tool_use"' not in out.split(b"message_delta")[0]


def test_with_masking_off_a_streamed_call_is_still_judged(tctx, state):
    """Masking off (no rules: the policy loader gives it no masker): the Masking addon still
    puts the stream through the pipeline, and the judge blocks the call in it."""
    masking = Masking()
    masking.configure_masker(None, rules_only())
    commands = Commands(state)
    flow = api_flow(body={"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": True, "messages": []})
    identify(flow, "sre")
    for addon in (masking, commands):
        fire(tctx, addon, HttpRequestHook(flow))
    flow.response = api_response(b"", "text/event-stream")
    for addon in (masking, commands):
        fire(tctx, addon, HttpResponseHeadersHook(flow))
    stream = [message_start(), *tool_block(0, "Bash", {"command": "rm -rf /"}, random.Random(1)), *ending("tool_use")]
    out = flow.response.stream(encode(stream))
    out = (out if isinstance(out, bytes) else b"".join(out)) + flow.response.stream(b"")
    msg = assemble_message(parse_sse(out))
    assert [b["type"] for b in msg["content"]] == ["text"] and "no-rm" in msg["content"][0]["text"]


def test_a_held_call_is_released_by_an_approval(tctx, state):
    addon = Commands(state)
    flow = api_flow()
    identify(flow, "developers")
    fire(tctx, addon, HttpRequestHook(flow))
    assert exchange_of(flow).buffer_response
    flow.response = api_response(message(bash("deploy web")))

    t = approve_when_filed(state)
    fire(tctx, addon, HttpResponseHeadersHook(flow), HttpResponseHook(flow))
    t.join()
    doc = json.loads(flow.response.content)
    assert doc["content"][0]["type"] == "tool_use" and doc["stop_reason"] == "tool_use"
    actions = [(d.stage, d.action) for d in exchange_of(flow).decisions]
    assert ("commands", "approve") in actions and ("approvals", "approve") in actions
    # the approval was spent on this response
    digest = call_sha256("Bash", {"command": "deploy web"})
    assert state.approvals.claim_call_grant(exchange_of(flow).identity, "Bash", digest, "gx_other") is None


def test_the_approvals_api_is_answered_by_the_gateway(tctx, state):
    api = ApprovalsApi(state)
    flow = api_flow("GET", "/v1/approvals", host="gatehouse.internal", body=b"")
    exchange_of(flow).identity = BOB
    fire(tctx, api, HttpRequestHook(flow))
    assert flow.response.status_code == 200
    assert json.loads(flow.response.content) == {"approvals": []}

    anonymous = api_flow("GET", "/v1/approvals", host="gatehouse.internal", body=b"")
    fire(tctx, api, HttpRequestHook(anonymous))
    assert anonymous.response.status_code == 401
    assert json.loads(anonymous.response.content)["type"] == "error"


def test_the_approvals_api_says_when_no_rule_asks_anyone(tctx, tmp_path):
    api = ApprovalsApi(gateway_state(tmp_path, ""))
    flow = api_flow("GET", "/v1/approvals", host="gatehouse.internal", body=b"")
    fire(tctx, api, HttpRequestHook(flow))
    assert flow.response.status_code == 404
    assert "no approve rule" in json.loads(flow.response.content)["error"]["message"]


def test_one_approval_releases_one_of_two_identical_held_calls(tctx, state):
    addon = Commands(state)
    flow = api_flow()
    identify(flow, "developers")
    fire(tctx, addon, HttpRequestHook(flow))
    flow.response = api_response(message(bash("deploy web", 0), bash("deploy web", 1)))

    t = approve_when_filed(state)
    fire(tctx, addon, HttpResponseHeadersHook(flow), HttpResponseHook(flow))
    t.join()
    doc = json.loads(flow.response.content)
    assert [b["type"] for b in doc["content"]] == ["tool_use", "text"]  # the grant is spent once
    assert "approval" in doc["content"][1]["text"].lower()


def test_a_cut_short_tool_input_is_blocked(tctx, state):
    addon = Commands(state)
    # The input's JSON is cut short, as max_tokens does: the SDKs still partial-parse it.
    body = encode(
        [
            message_start(),
            ev(
                "content_block_start",
                index=0,
                content_block={"type": "tool_use", "id": "t", "name": "Bash", "input": {}},
            ),
            ev(
                "content_block_delta",
                index=0,
                delta={"type": "input_json_delta", "partial_json": '{"command": "rm -rf /tmp'},
            ),
            ev("content_block_stop", index=0),
            *ending("max_tokens"),
        ]
    )
    flow = api_flow(response=api_response(body, "text/event-stream"))
    identify(flow, "sre")
    fire(tctx, addon, HttpRequestHook(flow), HttpResponseHeadersHook(flow), HttpResponseHook(flow))
    msg = assemble_message(parse_sse(flow.response.content))
    assert [b["type"] for b in msg["content"]] == ["text"], msg
    assert "not a complete JSON object" in msg["content"][0]["text"]


def test_a_hold_without_decision_turns_into_a_retry_notice_by_default(tctx, tmp_path):
    st = gateway_state(tmp_path, RULES.replace('timeout_seconds = 5\non_timeout = "deny"', "timeout_seconds = 1"))
    st.approvals = ApprovalService(
        ApprovalStore(LocalStore(tmp_path / "store")), st.require_policy().approvals, notifier=Notifier(None)
    )
    addon = Commands(st)
    flow = api_flow()
    identify(flow, "developers")
    fire(tctx, addon, HttpRequestHook(flow))
    flow.response = api_response(message(bash("deploy web")))
    fire(tctx, addon, HttpResponseHeadersHook(flow), HttpResponseHook(flow))
    [block] = json.loads(flow.response.content)["content"]
    [pending] = st.approvals.pending()
    assert block["type"] == "text" and pending.request.id in block["text"]
    assert "gatehouse approvals approve" in block["text"]
    assert [(d.stage, d.action) for d in exchange_of(flow).decisions][-1] == ("approvals", "retry")


@pytest.mark.parametrize("chars", [200, OFFLOAD_INPUT_CHARS + 100])
def test_a_long_call_in_a_buffered_body_is_judged_off_the_event_loop(tctx, state, monkeypatch, chars):
    """A long heredoc takes milliseconds to judge: over `OFFLOAD_INPUT_CHARS` it is judged on a
    worker thread, so that other flows keep being served; a short one on the loop. Either
    way the verdict stands."""
    on_worker = calls_in_threads(monkeypatch, commands_addon, "judge_call")
    command = "cat > notes.md <<'EOF'\n" + "x" * chars + "\nEOF\nrm -rf /"
    flow = api_flow(response=api_response(message(bash(command, 0))))
    identify(flow, "sre")
    fire(tctx, Commands(state), HttpRequestHook(flow), HttpResponseHeadersHook(flow), HttpResponseHook(flow))
    assert json.loads(flow.response.content)["content"][0]["type"] == "text"  # blocked: no-rm
    assert on_worker == [chars > OFFLOAD_INPUT_CHARS]
