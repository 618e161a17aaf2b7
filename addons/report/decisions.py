"""How a recorded gateway decision is shown: its outcome for the auditor (allowed, blocked,
denied, held, approved, masked, or only noted), who decided, and which tool call it is about.

Tool-call decisions come from the commands stage (a rule's verdict on a call) and the approvals
stage (a human's answer to a held call); the same action means different things in each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatehouse.recording.canonical import iso_time
from gatehouse.report.recorded import as_object, parse_time

# What an action means for the auditor. Stage "commands" + "approve" is the rule's verdict
# (needs a human); stage "approvals" + "approve" is the human's answer.
_OUTCOMES = {
    "allow": "allowed",
    "allowed": "allowed",
    "pass": "allowed",
    "permit": "allowed",
    "block": "blocked",
    "blocked": "blocked",
    "deny": "denied",
    "denied": "denied",
    "refuse": "blocked",
    "reject": "denied",
    "rejected": "denied",
    "timeout": "denied",
    "expired": "denied",
    "timed_out": "denied",
    "hold": "held",
    "held": "held",
    "pending": "held",
    "wait": "held",
    "retry": "held",
    "approve": "approved",
    "approved": "approved",
    "grant": "approved",
    "granted": "approved",
    "mask": "masked",
    "masked": "masked",
}
_TOOL_ID_KEYS = ("tool_use_id", "tool_id", "block_id")
_BY_KEYS = ("approver", "decided_by", "by", "approved_by", "denied_by")
_HIDDEN_DETAIL_KEYS = frozenset(_TOOL_ID_KEYS + _BY_KEYS + ("tool", "tool_name", "name", "input", "tool_use"))


def decision_outcome(d: Mapping[str, Any]) -> str:
    stage = str(d.get("stage") or "")
    action = str(d.get("action") or "").lower()
    if stage == "commands" and action == "approve":
        return "held"
    if stage == "approvals" and action == "allow":
        return "approved"
    return _OUTCOMES.get(action, "info")


def _decision_tool_id(d: Mapping[str, Any]) -> str | None:
    detail = as_object(d.get("detail"))
    for k in _TOOL_ID_KEYS:
        if isinstance(detail.get(k), str):
            return detail[k]
    tu = detail.get("tool_use")
    if isinstance(tu, Mapping) and isinstance(tu.get("id"), str):
        return tu["id"]
    return None


def _person(value: Any) -> str | None:
    """An approver or requester as recorded in a decision's detail: a dict or a string."""
    if isinstance(value, Mapping):
        return value.get("email") or value.get("subject") or value.get("name") or None
    if isinstance(value, str) and value:
        return value
    return None


@dataclass
class DecisionView:
    stage: str
    action: str
    outcome: str
    reason: str
    rule: str | None
    at: float | None
    by: str | None
    detail: list[tuple[str, str]]
    tool_use_id: str | None


def decision_view(d: Mapping[str, Any]) -> DecisionView:
    detail = as_object(d.get("detail"))
    by = None
    for k in _BY_KEYS:
        if by := _person(detail.get(k)):
            break
    items = []
    for k, v in detail.items():
        if k in _HIDDEN_DETAIL_KEYS:
            continue
        if k in ("decided_at", "requested_at", "expires_at") and isinstance(v, (int, float)):
            v = iso_time(float(v))
        items.append((str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)))
    return DecisionView(
        stage=str(d.get("stage") or ""),
        action=str(d.get("action") or ""),
        outcome=decision_outcome(d),
        reason=str(d.get("reason") or ""),
        rule=d.get("rule") if isinstance(d.get("rule"), str) else None,
        at=parse_time(d.get("at")),
        by=by,
        detail=items,
        tool_use_id=_decision_tool_id(d),
    )
