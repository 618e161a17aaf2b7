"""A session's transcript, the JSON download next to its page (sessions/<slug>.json, schema
addons/schemas/transcript.schema.json): its conversations in Messages API shape, each message
once, plus what the gateway recorded about each exchange."""

from __future__ import annotations

from typing import Any

from gatehouse.recording.canonical import iso_time
from gatehouse.report.decisions import DecisionView
from gatehouse.report.integrity import problem_json
from gatehouse.report.sessions import BlobCache
from gatehouse.report.views import SessionView

REPORT_SCHEMA = "gatehouse.transcript/1"


def transcript(view: SessionView, blobs: BlobCache, *, store_url: str, generated_at: str) -> dict[str, Any]:
    """The session as JSON: its conversations in Messages API shape plus the gateway's annotations."""

    def message(ref: str) -> Any:
        msg = blobs.get(ref)
        return msg if msg is not None else {"role": "user", "content": [], "_missing_blob": ref}

    conversations = []
    for i, conv in enumerate(view.conversations):
        conversations.append(
            {
                "index": i,
                "agent_id": conv.get("agent"),
                "system": blobs.get(conv["system"]) if conv.get("system") else None,
                "tools": blobs.get(conv["tools"]) if conv.get("tools") else None,
                "messages": [message(r) for r in conv["refs"]],
                "exchanges": conv["exchanges"],
            }
        )
    exchanges = []
    for x in view.exchanges:
        calls = []
        for c in x.tool_calls + x.removed_calls:
            calls.append(
                {
                    "id": c.id,
                    "name": c.name,
                    "input": c.input,
                    "removed_by_gateway": c.removed,
                    "outcome": c.outcome,
                    "decisions": [_decision_json(d) for d in c.decisions],
                    "result": c.result and {k: c.result[k] for k in ("text", "is_error", "exchange_id")},
                }
            )
        exchanges.append(
            {
                "exchange_id": x.exchange_id,
                "kind": x.kind,
                "records": x.record_keys,
                "request_id": x.request_id,
                "at": iso_time(x.at),
                "method": x.method,
                "path": x.path,
                "model": x.model,
                "response_model": x.response_model,
                "status": x.status,
                "streamed": x.streamed,
                "timing": {"ttfb_ms": x.ttfb_ms, "duration_ms": x.duration_ms},
                "usage": x.usage or None,
                "stop_reason": x.stop_reason,
                "identity": {k: x.identity.get(k) for k in ("subject", "email", "name", "issuer", "groups")},
                "client": {k: x.client.get(k) for k in ("label", "kind", "ci", "user_agent")},
                "agent_id": x.agent_id,
                "messages": {
                    "conversation": x.conversation,
                    "from": x.prefix_len,
                    "to": x.total_messages,
                    "response": x.response_index,
                }
                if x.is_messages and x.conversation is not None
                else None,
                "response_message": x.response_message if x.response_index is None else None,
                "response_body": x.response_body,
                "decisions": [_decision_json(d) for d in x.decisions],
                "tool_calls": calls,
                "errors": x.errors,
                "integrity": {"ok": not x.problems, "problems": [problem_json(p) for p in x.problems]},
            }
        )
    return {
        "schema": REPORT_SCHEMA,
        "generated_at": generated_at,
        "store": store_url,
        "session": {
            "id": view.id,
            "users": [{k: u.get(k) for k in ("subject", "email", "name", "issuer", "groups")} for u in view.users],
            "clients": [{k: c.get(k) for k in ("label", "kind", "ci", "user_agent")} for c in view.clients],
            "agents": view.agents,
            "start": iso_time(view.start),
            "end": iso_time(view.end),
            "duration_ms": view.duration_ms,
            "models": view.models,
            "usage": view.usage,
            "counts": {
                "exchanges": sum(1 for x in view.exchanges if x.kind != "refusal"),
                "masked_spans": view.masks,
                "distinct_secrets": view.distinct_secrets,
                "blocked": view.blocked,
                "approved": view.approved,
                "held": view.held,
                "refused": view.refused,
            },
        },
        "integrity": {
            "checked": view.integrity_checked,
            "trust": view.trust,
            "status": ("unchecked" if not view.integrity_checked else "failed" if view.problems else "verified"),
            "problems": [problem_json(p) for p in view.problems],
        },
        "conversations": conversations,
        "exchanges": exchanges,
    }


def _decision_json(d: DecisionView) -> dict[str, Any]:
    return {
        "stage": d.stage,
        "action": d.action,
        "outcome": d.outcome,
        "reason": d.reason,
        "rule": d.rule,
        "at": iso_time(d.at),
        "by": d.by,
        "tool_use_id": d.tool_use_id,
        "detail": dict(d.detail),
    }
