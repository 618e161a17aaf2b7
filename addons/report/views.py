"""The view model of a session page: what the templates show, built by `sessions.SessionBuilder`
from the session's records. Tool calls carry the gateway's decisions about them; the session
row is what the index lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gatehouse.recording.canonical import iso_time
from gatehouse.recording.verify import Problem
from gatehouse.report.decisions import DecisionView


@dataclass
class ToolCall:
    id: str
    name: str
    input: Any
    exchange_index: int
    decisions: list[DecisionView] = field(default_factory=list)
    removed: bool = False  # the gateway replaced it on the wire (blocked, denied...)
    result: dict[str, Any] | None = None  # {"text", "notes", "is_error", "exchange_index"}

    @property
    def outcome(self) -> str:
        """The last verdict that settles the call: blocked, denied, approved, held or allowed."""
        final = "recorded"
        for d in self.decisions:
            if d.outcome in ("blocked", "denied", "approved", "held", "allowed"):
                if final == "approved" and d.outcome == "allowed":
                    continue
                final = d.outcome
        return final

    @property
    def approved(self) -> bool:
        return any(d.outcome == "approved" for d in self.decisions)

    @property
    def shell_command(self) -> str | None:
        if isinstance(self.input, dict) and isinstance(self.input.get("command"), str):
            return self.input["command"]
        return None


@dataclass
class Block:
    """One content block as the page shows it."""

    type: str  # text | thinking | redacted_thinking | tool_use | tool_result | media | other
    text: str = ""
    tool: ToolCall | None = None
    tool_use_id: str | None = None
    is_error: bool = False
    notes: list[str] = field(default_factory=list)
    attached: bool = False  # a tool_result shown with its call


@dataclass
class MessageView:
    role: str
    blocks: list[Block]


@dataclass
class ContextPart:
    kind: str  # system | tools
    ref: str
    number: int
    text: str = ""  # system prompt as text
    tools: list[dict[str, Any]] = field(default_factory=list)  # {"name", "description", "schema"}
    first_exchange: int = 0


@dataclass
class ExchangeView:
    index: int
    exchange_id: str
    kind: str  # exchange | request (no response recorded) | refusal
    record_keys: list[str]
    at: float | None
    method: str
    path: str
    is_messages: bool
    model: str | None
    response_model: str | None
    status: int | None
    streamed: bool
    ttfb_ms: float | None
    duration_ms: float | None
    request_id: str | None
    usage: dict[str, int]
    stop_reason: str | None
    identity: dict[str, Any]
    client: dict[str, Any]
    agent_id: str | None
    conversation: int | None
    new_messages: list[MessageView]
    prefix_len: int
    total_messages: int
    response: MessageView | None
    response_message: dict[str, Any] | None  # as recorded (for the transcript)
    response_index: int | None  # its place in the conversation, when it joined one
    response_body: Any
    decisions: list[DecisionView]  # those not about a tool call
    tool_calls: list[ToolCall]
    removed_calls: list[ToolCall]
    system: ContextPart | None
    tools: ContextPart | None
    params: dict[str, Any]
    errors: list[str]
    problems: list[Problem]

    @property
    def refused(self) -> bool:
        return self.kind == "refusal"

    @property
    def refusal(self) -> DecisionView | None:
        for d in self.decisions:
            if d.outcome in ("denied", "blocked"):
                return d
        return None

    @property
    def tokens(self) -> str:
        if not self.usage:
            return ""
        return f"{self.usage.get('input_tokens', 0):,} in / {self.usage.get('output_tokens', 0):,} out"


@dataclass
class SessionView:
    id: str
    slug: str
    exchanges: list[ExchangeView]
    context: list[ContextPart]
    conversations: list[dict[str, Any]]
    users: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    agents: list[str]
    start: float | None
    end: float | None
    models: list[str]
    usage: dict[str, int]
    masks: int
    distinct_secrets: int
    blocked: int
    approved: int
    held: int
    refused: int
    problems: list[Problem]
    integrity_checked: bool
    trust: str

    @property
    def duration_ms(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start) * 1000

    @property
    def integrity_text(self) -> str:
        if not self.integrity_checked:
            return "not checked"
        if not self.problems:
            return "verified" if self.trust in ("policy", "file") else "verified (store keys)"
        checks = sorted({p.check for p in self.problems})
        return f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}: {', '.join(checks)}"

    def index_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "href": f"sessions/{self.slug}.html",
            "users": [{"subject": u["subject"], "email": u["email"], "name": u["name"]} for u in self.users],
            "clients": [c["label"] for c in self.clients],
            "ci": any(c["ci"] for c in self.clients) or any(u.get("ci") for u in self.users),
            "start": iso_time(self.start),
            "end": iso_time(self.end),
            "duration_ms": self.duration_ms,
            "exchanges": sum(1 for x in self.exchanges if x.kind != "refusal"),
            "models": self.models,
            "tokens_in": self.usage.get("input_tokens", 0),
            "tokens_out": self.usage.get("output_tokens", 0),
            "tokens_cache_read": self.usage.get("cache_read_input_tokens", 0),
            "tokens_cache_write": self.usage.get("cache_creation_input_tokens", 0),
            "masks": self.masks,
            "secrets": self.distinct_secrets,
            "blocked": self.blocked,
            "approved": self.approved,
            "held": self.held,
            "refused": self.refused,
            "agents": len(self.agents),
            "integrity": {"ok": not self.problems, "checked": self.integrity_checked, "text": self.integrity_text},
        }
