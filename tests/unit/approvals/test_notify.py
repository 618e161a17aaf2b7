"""Announcing a request (gatehouse.approvals.notify): the log line, and the webhook POST, sent
from a thread, retried, never raising, and never logging the webhook's secret."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gatehouse.approvals.model import ApprovalRequest
from gatehouse.approvals.notify import Notifier, announcement, call_summary, slack_escape
from support.harness import free_port


def request(**overrides: Any) -> ApprovalRequest:
    doc: dict[str, Any] = dict(
        id="ga_" + "0" * 12 + "1" * 16,
        kind="tool_call",
        requester={"issuer": "https://idp", "subject": "alice", "email": "alice@example.com", "groups": ["dev"]},
        session=None,
        exchange_id="gx_1",
        tool="Bash",
        input={"command": "rm -rf build"},
        input_sha256="a" * 64,
        rule="rm-rf",
        message="Deleting folders needs an SRE.",
        approvers=["sre"],
        approvals_required=1,
        mode="hold",
        created=1_750_000_000.0,
        expires=1_750_000_300.0,
        grant_seconds=3600.0,
    )
    doc.update(overrides)
    return ApprovalRequest(**doc)


class Hook:
    """A webhook on 127.0.0.1 answering with the statuses in `answers`, then 200."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                hook.bodies.append(json.loads(body))
                hook.headers.append(dict(self.headers))
                code = hook.answers.pop(0) if hook.answers else 200
                self.send_response(code)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/s3cr3t?token=hunter2"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_500_then_200():
    hook = Hook([500])
    yield hook
    hook.close()


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_text_says_who_asks_what_why_and_how_to_approve():
    text = announcement(request())
    assert "alice@example.com asks to run Bash: rm -rf build" in text
    assert "rule rm-rf: Deleting folders needs an SRE." in text
    assert "sre" in text
    assert f"gatehouse approvals approve {request().id}" in text
    access = announcement(request(kind="access", tool="model claude-opus-4-1", input={"model": "claude-opus-4-1"}))
    assert "asks access to model claude-opus-4-1" in access


def test_call_summary_is_one_short_line():
    assert call_summary("Bash", {"command": "ls\n  -la"}) == "Bash: ls -la"
    assert call_summary("Write", {"file_path": "/x", "content": "y"}) == "Write: /x"
    assert call_summary("mcp__t", {"b": 1, "a": 2}) == 'mcp__t: {"a":2,"b":1}'
    long = call_summary("Bash", {"command": "x" * 500})
    assert len(long) == 200 and long.endswith("…")


def test_slack_control_characters_are_escaped():
    assert slack_escape("<!channel> a & b <http://x|y>") == "&lt;!channel&gt; a &amp; b &lt;http://x|y&gt;"


def test_a_failed_post_is_retried_and_delivered_once(hook_500_then_200: Hook, caplog):
    caplog.set_level(logging.INFO, logger="gatehouse.approvals.notify")
    notifier = Notifier(hook_500_then_200.url, backoff=0.05)
    start = time.monotonic()
    notifier.announce(request(input={"command": "echo <!here>"}))
    assert time.monotonic() - start < 0.5  # the caller does not wait for the webhook
    wait_for(lambda: notifier.delivered == 1)
    notifier.close()
    bodies = hook_500_then_200.bodies
    assert len(bodies) == 2 and bodies[0] == bodies[1]  # one 500, then the same text delivered once
    assert set(bodies[0]) == {"text"}
    assert "gatehouse approvals approve ga_" in bodies[0]["text"] and "&lt;!here&gt;" in bodies[0]["text"]
    assert hook_500_then_200.headers[0]["Content-Type"] == "application/json"
    logs = caplog.text
    assert "alice@example.com asks to run Bash" in logs  # the log line
    assert "attempt 1 of 3" in logs and "HTTP 500" in logs
    assert "s3cr3t" not in logs and "hunter2" not in logs and "/services/" not in logs
    assert "http://127.0.0.1" in logs


def test_an_unreachable_webhook_gives_up_quietly(caplog):
    caplog.set_level(logging.INFO, logger="gatehouse.approvals.notify")
    notifier = Notifier(f"http://127.0.0.1:{free_port()}/hook/s3cr3t", backoff=0.01, timeout=1.0)
    notifier.announce(request())
    wait_for(lambda: notifier.failed == 1)
    notifier.close()
    assert caplog.text.count("failed (attempt") == 3 and "giving up" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_a_client_error_is_not_retried():
    hook = Hook([404])
    try:
        notifier = Notifier(hook.url, backoff=0.01)
        notifier.announce(request())
        wait_for(lambda: notifier.failed == 1)
        notifier.close()
        assert len(hook.bodies) == 1
    finally:
        hook.close()


def test_without_a_url_only_the_log_line():
    notifier = Notifier(None)
    notifier.announce(request())
    assert notifier._thread is None
