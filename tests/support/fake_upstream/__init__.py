"""A fake Anthropic API upstream for end-to-end tests, demos and benchmarks.

It speaks enough of the Claude API for the Anthropic SDKs and the Claude Code CLI: `POST
/v1/messages` (JSON or SSE, `?beta=true` allowed), `POST /v1/messages/count_tokens`, `GET
/v1/models[/{id}]`, `/api/claude_code/*` (an empty object), and a 404 in the Anthropic error shape
for everything else. It records every request it receives, so a test can assert on exactly what
left the gateway.

    with FakeUpstream(tls=True) as up:
        up.enqueue(Reply.text("hi", chunk_chars=1), Reply.error(529, "overloaded_error", "busy"))
        ...                                         # point the gateway at up.base_url
        assert up.requests[0].headers["x-api-key"] == GATEWAY_KEY

Which reply a request gets: `up.responder(request)` if set and it returns a `Reply`; otherwise for
`POST /v1/messages` the next queued reply (`up.enqueue`), else a short default text answer that
echoes the request's model; other paths get their built-in answers.

Only the standard library and `cryptography` (through `support.tls_certs`) are used, so that the
fake never shares code, or bugs, with the gateway under test. The names below are its public
API; the modules are: `server` (FakeUpstream), `httpserver` (the HTTP/1.1 wire), `received`
(what arrived), `replies` (what to answer), `messages` and `sse` (the API's objects and
streams), `responders` (Claude Code), and `__main__` (the command line:
`PYTHONPATH=tests python -m support.fake_upstream --help`).
"""

from __future__ import annotations

from support.fake_upstream.messages import DEFAULT_MODEL, DEFAULT_TEXT, MODELS, complete_message, error_body
from support.fake_upstream.received import ReceivedRequest, RequestLog
from support.fake_upstream.replies import Gate, Reply, Responder
from support.fake_upstream.responders import (
    claude_code_tool_responder,
    example_for_schema,
    is_claude_code_main_request,
    text_reply_for,
)
from support.fake_upstream.server import FakeUpstream
from support.fake_upstream.sse import assemble_message, encode_sse, encode_sse_event, parse_sse, sse_events

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TEXT",
    "MODELS",
    "FakeUpstream",
    "Gate",
    "ReceivedRequest",
    "Reply",
    "RequestLog",
    "Responder",
    "assemble_message",
    "claude_code_tool_responder",
    "complete_message",
    "encode_sse",
    "encode_sse_event",
    "error_body",
    "example_for_schema",
    "is_claude_code_main_request",
    "parse_sse",
    "sse_events",
    "text_reply_for",
]
