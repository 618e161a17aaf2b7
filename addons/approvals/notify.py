"""Announcing an approval request: one log line, and a webhook POST when ``notify_url`` is set.

The webhook body is Slack-compatible (``{"text": ...}``; Slack's incoming webhooks, and the
many chat tools that copy them, accept it). It names who asks to run what, why (the rule and
its message) and the exact command that approves it. It is sent from a background thread with
a few retries: announcing never blocks the flow that asked and never raises into it.

A webhook URL is a credential (a Slack webhook URL's path is its secret): log lines name the
URL's scheme and host only.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from gatehouse.approvals.model import ApprovalRequest, person_name
from gatehouse.recording.canonical import canonical_json, iso_time, json_safe

log = logging.getLogger(__name__)

SUMMARY_CHARS = 200


def call_summary(tool: str, tool_input: Any, limit: int = SUMMARY_CHARS) -> str:
    """One short line for a call: ``Bash: rm -rf build``; the whole input as JSON when it has no
    command, path or URL field; truncated to `limit` characters."""
    detail = None
    if isinstance(tool_input, dict):
        for key in ("command", "file_path", "path", "url", "model"):
            if isinstance(tool_input.get(key), str):
                detail = tool_input[key]
                break
        if detail is None and set(tool_input) == {"method", "path"}:
            detail = f"{tool_input['method']} {tool_input['path']}"
    if detail is None:
        detail = canonical_json(json_safe(tool_input)).decode()
    text = " ".join(f"{tool}: {detail}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def approve_cli(approval_id: str) -> str:
    return f"gatehouse approvals approve {approval_id}"


def deny_cli(approval_id: str) -> str:
    return f'gatehouse approvals deny {approval_id} --reason "..."'


def what_is_asked(req: ApprovalRequest) -> str:
    if req.kind == "access":
        return f"access to {req.tool}"
    return f"to run {call_summary(req.tool, req.input)}"


def announcement(req: ApprovalRequest) -> str:
    """The text of the announcement (plain; `slack_escape` it for a webhook)."""
    who = person_name(req.requester)
    need = f"{req.approvals_required} approvals" if req.approvals_required > 1 else "an approval"
    why = f"rule {req.rule}" + (f": {req.message}" if req.message else "")
    return (
        f"Gatehouse: {who} asks {what_is_asked(req)} ({why}). "
        f"It needs {need} from {', '.join(req.approvers)} before {iso_time(req.expires)}. "
        f"Approve: {approve_cli(req.id)}   Deny: {deny_cli(req.id)}"
    )


def slack_escape(text: str) -> str:
    """Slack's three control characters, so that a command cannot mention @channel or forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def url_for_logs(url: str) -> str:
    """Scheme and host only: the path or query of a webhook URL may be its secret."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}" if parts.hostname else "the webhook"
    except ValueError:
        return "the webhook"


class Notifier:
    """`announce` logs at once and queues the webhook POST for a daemon thread."""

    def __init__(self, url: str | None, *, attempts: int = 3, backoff: float = 1.0, timeout: float = 5.0) -> None:
        self.url = url
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def announce(self, req: ApprovalRequest) -> None:
        """Never raises, never blocks on the network."""
        try:
            text = announcement(req)
            log.info(text)
            if self.url:
                self._start()
                self._queue.put_nowait((req.id, slack_escape(text)))
        except queue.Full:
            log.warning(f"gatehouse: approval {req.id}: too many notifications queued; not sent to the webhook")
        except Exception as e:  # announcing must never break the flow that asked
            log.warning(f"gatehouse: approval {req.id}: announcing failed: {type(e).__name__}: {e}")

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within `timeout`), then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="gatehouse-approvals-notify", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            approval_id, text = item
            try:
                if self._deliver(approval_id, text):
                    self.delivered += 1
                else:
                    self.failed += 1
            except Exception as e:  # the thread must outlive any one notification
                self.failed += 1
                log.warning(f"gatehouse: approval {approval_id}: notification failed: {type(e).__name__}")

    def _deliver(self, approval_id: str, text: str) -> bool:
        assert self.url is not None
        body = json.dumps({"text": text}).encode()
        where = url_for_logs(self.url)
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(
                self.url, data=body, method="POST", headers={"content-type": "application/json"}
            )
            retry = True
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    resp.read()
                return True
            except urllib.error.HTTPError as e:
                problem = f"HTTP {e.code}"
                retry = e.code >= 500 or e.code == 429
            except (urllib.error.URLError, OSError) as e:
                # Only the reason: urllib's messages may carry the URL.
                reason = getattr(e, "reason", e)
                problem = type(reason).__name__ if not isinstance(reason, str) else "unreachable"
            last = attempt == self.attempts or not retry
            log.warning(
                f"gatehouse: approval {approval_id}: notification to {where} failed "
                f"(attempt {attempt} of {self.attempts}): {problem}" + ("; giving up" if last else "; retrying")
            )
            if last:
                return False
            time.sleep(self.backoff * 2 ** (attempt - 1))
        return False
