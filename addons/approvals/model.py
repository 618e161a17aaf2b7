"""The documents of an approval: the request, each approver's vote, the outcome, a grant's claim,
and `Status`, what one request amounts to when they are read together.

All are plain data with ``to_dict()`` / ``from_dict()``; on the store they are canonical JSON
(`gatehouse.approvals.store`). A person is an ``Identity.to_dict()``; a person's key, for "the
same requester" and "distinct approvers", is ``(issuer, subject)``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from gatehouse.exchange import Identity

KINDS = ("tool_call", "access")
DECISIONS = ("approve", "deny")
STATES = ("pending", "approved", "denied", "expired")

# "ga_" + 12 hex digits of milliseconds (sortable by creation) + 16 random hex digits.
APPROVAL_ID = re.compile(r"^ga_[0-9a-f]{28}$")


def new_approval_id(now: float) -> str:
    """A sortable, unguessable id, like `gatehouse.exchange.new_exchange_id`: ``ga_018c...``."""
    return f"ga_{int(now * 1000):012x}{secrets.token_hex(8)}"


def id_time(approval_id: str) -> float:
    """When the request with this id was created (epoch seconds, to the millisecond)."""
    return int(approval_id[3:15], 16) / 1000.0


def person_of(identity: Identity) -> dict[str, Any]:
    return identity.to_dict()


def person_key(person: dict[str, Any] | Identity) -> tuple[str, str]:
    if isinstance(person, Identity):
        return (person.issuer, person.subject)
    return (str(person.get("issuer", "")), str(person.get("subject", "")))


def person_name(person: dict[str, Any] | None) -> str:
    """How a person is named in messages: the email, else the subject."""
    if not person:
        return "someone"
    return str(person.get("email") or person.get("subject") or "someone")


@dataclass
class ApprovalRequest:
    id: str
    kind: str  # "tool_call" | "access"
    requester: dict[str, Any]  # Identity.to_dict()
    session: str | None
    exchange_id: str | None
    tool: str  # tool name; access: the target, e.g. "model claude-opus-4-1" or "POST /v1/files"
    input: Any  # masked tool input; access: {"model": ...} or {"method": ..., "path": ...}
    input_sha256: str
    rule: str
    message: str
    approvers: list[str]  # groups
    approvals_required: int
    mode: str  # hold | retry
    created: float
    expires: float  # after this, no decision is accepted
    grant_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ApprovalRequest:
        return cls(
            id=str(d["id"]),
            kind=str(d["kind"]),
            requester=dict(d["requester"]),
            session=d.get("session"),
            exchange_id=d.get("exchange_id"),
            tool=str(d["tool"]),
            input=d.get("input"),
            input_sha256=str(d["input_sha256"]),
            rule=str(d.get("rule", "")),
            message=str(d.get("message", "")),
            approvers=[str(g) for g in d.get("approvers", [])],
            approvals_required=int(d.get("approvals_required", 1)),
            mode=str(d.get("mode", "hold")),
            created=float(d["created"]),
            expires=float(d["expires"]),
            grant_seconds=float(d.get("grant_seconds", 0)),
        )


@dataclass
class Vote:
    approval_id: str
    decision: str  # "approve" | "deny"
    approver: dict[str, Any]  # Identity.to_dict()
    reason: str
    input_sha256: str  # the call the approver saw
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vote:
        return cls(
            approval_id=str(d["approval_id"]),
            decision=str(d["decision"]),
            approver=dict(d["approver"]),
            reason=str(d.get("reason", "")),
            input_sha256=str(d.get("input_sha256", "")),
            at=float(d["at"]),
        )


@dataclass
class Outcome:
    """The decision that completed a request. Written once: the first completing decision wins."""

    approval_id: str
    state: str  # "approved" | "denied"
    decided_at: float
    decided_by: list[dict[str, Any]]  # the approvers whose votes completed it
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Outcome:
        return cls(
            approval_id=str(d["approval_id"]),
            state=str(d["state"]),
            decided_at=float(d["decided_at"]),
            decided_by=[dict(p) for p in d.get("decided_by", [])],
            reason=str(d.get("reason", "")),
        )


@dataclass
class Claim:
    """The use of a tool-call grant: the exchange that let the approved call through. Written once."""

    approval_id: str
    exchange_id: str | None
    requester: dict[str, Any]
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Claim:
        return cls(
            approval_id=str(d["approval_id"]),
            exchange_id=d.get("exchange_id"),
            requester=dict(d.get("requester", {})),
            at=float(d["at"]),
        )


@dataclass
class Status:
    request: ApprovalRequest
    state: str  # pending | approved | denied | expired
    votes: list[Vote] = field(default_factory=list)
    decided_at: float | None = None
    decided_by: list[dict[str, Any]] = field(default_factory=list)  # the votes that completed the decision
    reason: str = ""
    uses: int = 0  # grant claims made (tool_call: at most 1)

    @property
    def grant_expires(self) -> float | None:
        """Until when an approval can be used; None unless approved."""
        if self.state != "approved" or self.decided_at is None:
            return None
        return self.decided_at + self.request.grant_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.to_dict(),
            "state": self.state,
            "votes": [v.to_dict() for v in self.votes],
            "decided_at": self.decided_at,
            "decided_by": [dict(p) for p in self.decided_by],
            "reason": self.reason,
            "uses": self.uses,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Status:
        return cls(
            request=ApprovalRequest.from_dict(d["request"]),
            state=str(d["state"]),
            votes=[Vote.from_dict(v) for v in d.get("votes", [])],
            decided_at=None if d.get("decided_at") is None else float(d["decided_at"]),
            decided_by=[dict(p) for p in d.get("decided_by", [])],
            reason=str(d.get("reason", "")),
            uses=int(d.get("uses", 0)),
        )
