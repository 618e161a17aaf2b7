"""The session of an exchange: Claude Code's header, the request's metadata, else an idle gap."""

from __future__ import annotations

from typing import Any

from gatehouse.recording.records import ExchangeInput, RequestInput, build_record
from gatehouse.recording.sessions import SessionTracker, derive_session
from support.records import messages_request


def recorded_session(req: RequestInput) -> dict[str, Any]:
    inp = ExchangeInput(kind="request", exchange_id="gx_0001", request=req, request_at=1000.0)
    return build_record(inp, masker=None, gateway_version="0.1.0", policy_sha256="ab" * 32).body["session"]


def test_session_from_header_then_metadata_then_idle_gap() -> None:
    req = messages_request(
        [{"role": "user", "content": "x"}],
        extra_headers=[("x-claude-code-agent-id", "agent-2"), ("x-claude-code-parent-agent-id", "agent-1")],
    )
    s = recorded_session(req)
    assert s == {"id": "hdr-sess", "source": "header", "agent_id": "agent-2", "parent_agent_id": "agent-1"}
    req = messages_request([{"role": "user", "content": "x"}], session_header=False)
    assert recorded_session(req)["id"] == "meta-sess"

    tracker = SessionTracker(idle_gap=60)
    ident = {"issuer": "i", "subject": "bob"}
    at = lambda t: derive_session({}, None, ident, t, tracker)["id"]
    a, b, c = at(0.0), at(30.0), at(85.0)
    assert a == b == c and a.startswith("idle-")
    assert at(200.0) != a  # an idle gap of more than 60 s starts a new session
    assert derive_session({}, None, {"issuer": "i", "subject": "eve"}, 200.0, tracker)["id"] != at(201.0)
    assert derive_session({"x-claude-code-session-id": "s" * 500}, None, None, 0, tracker)["id"] == "s" * 200
