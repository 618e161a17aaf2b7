"""An event of the audit page: a refusal, a gateway start or an unreadable record, with the
decision that refused it and a link to its session when it has one."""

from __future__ import annotations

from typing import Any

from gatehouse.recording.canonical import parse_json
from gatehouse.report.callers import describe_client, describe_identity
from gatehouse.report.decisions import decision_view
from gatehouse.report.links import session_slug
from gatehouse.report.recorded import as_object, request_time


def audit_event(key: str, kind: str, session: str | None, data: bytes) -> dict[str, Any]:
    try:
        rec = parse_json(data)
        if not isinstance(rec, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        return {"key": key, "kind": "unreadable", "at": None, "href": None, "exchange_id": None, "decision": None}
    req = as_object(rec.get("request"))
    resp = as_object(rec.get("response"))
    gw = as_object(rec.get("gateway"))
    decisions = [decision_view(d) for d in rec.get("decisions") or [] if isinstance(d, dict)]
    deny = next((d for d in decisions if d.outcome in ("denied", "blocked")), decisions[-1] if decisions else None)
    body = as_object(req.get("body"))
    xid = rec.get("exchange_id") if isinstance(rec.get("exchange_id"), str) else None
    return {
        "key": key,
        "kind": rec.get("kind") if kind != "unreadable" else kind,
        "at": request_time(rec),
        "exchange_id": xid,
        "href": f"sessions/{session_slug(session)}.html#{xid}" if session else None,
        "identity": describe_identity(rec.get("identity")),
        "client": describe_client(rec.get("client"), as_object(req.get("headers"))),
        "method": req.get("method"),
        "host": req.get("host"),
        "path": req.get("path"),
        "model": req.get("model") or body.get("model"),
        "status": resp.get("status"),
        "decision": deny,
        "gateway": gw,
        "key_id": rec.get("key_id"),
        "previous": rec.get("previous"),
    }
