"""Which client session an exchange belongs to, as recorded in its ``session`` field.

Claude Code names its session in a header; other clients may put a ``session_id`` into
``metadata.user_id``; for the rest, a caller's exchanges are one session until an idle gap
(`SessionTracker`, in memory). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any

from gatehouse.recording.canonical import parse_json

# Longest client-supplied id (session, agent) kept in a record.
MAX_ID_LEN = 200
# Without a session id from the client, a caller's exchanges are one session until this gap.
DEFAULT_IDLE_GAP_SECONDS = 30 * 60


class SessionTracker:
    """Sessions for clients that send no session id: one caller's exchanges until an idle gap.

    In memory, per gateway process: replicas behind a load balancer each cut their own
    sessions for such clients (Claude Code always sends its id, so this is the fallback).
    """

    def __init__(self, idle_gap: float = DEFAULT_IDLE_GAP_SECONDS, max_callers: int = 100_000) -> None:
        self.idle_gap = idle_gap
        self.max_callers = max_callers
        self._last: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def session_for(self, caller: str, at: float) -> str:
        with self._lock:
            found = self._last.pop(caller, None)
            # An exchange that started before the caller's last one is in that session too.
            if found and at - found[1] <= self.idle_gap:
                sid, last = found[0], max(found[1], at)
            else:
                digest = hashlib.sha256(f"{caller}\n{at:.6f}".encode()).hexdigest()[:24]
                sid, last = f"idle-{digest}", at
            self._last[caller] = (sid, last)
            if len(self._last) > self.max_callers:
                self._last.pop(next(iter(self._last)))  # the least recently seen caller
            return sid


def _clip(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_ID_LEN]


def derive_session(
    headers: Mapping[str, str], body: Any, identity: Mapping[str, Any] | None, at: float, tracker: SessionTracker | None
) -> dict[str, Any]:
    """The client session of an exchange: Claude Code's header, else ``metadata.user_id``'s
    ``session_id``, else the caller plus an idle gap."""
    session = {
        "id": None,
        "source": None,
        "agent_id": _clip(headers.get("x-claude-code-agent-id")),
        "parent_agent_id": _clip(headers.get("x-claude-code-parent-agent-id")),
    }
    sid = _clip(headers.get("x-claude-code-session-id"))
    if sid:
        session.update(id=sid, source="header")
        return session
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        user_id = body["metadata"].get("user_id")
        if isinstance(user_id, str) and user_id.startswith("{"):
            try:
                parsed = parse_json(user_id)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and _clip(parsed.get("session_id")):
                session.update(id=_clip(parsed["session_id"]), source="metadata")
                return session
    if identity:
        caller = f"{identity.get('issuer', '')}\n{identity.get('subject', '')}"
    else:
        caller = "anonymous"
    caller += "\n" + (headers.get("user-agent") or "")
    tracker = tracker or SessionTracker()
    session.update(id=tracker.session_for(caller, at), source="idle")
    return session
