"""What the gateway knows and decided about one exchange (one HTTP request/response).

Each addon writes its part onto one `Exchange` kept at ``flow.metadata["gatehouse"]``;
the recorder reads it at the end. Only plain data goes in here, and nothing secret (no token,
no API key, no unmasked value, no masker): mitmproxy deep-copies flow metadata whenever it copies
a flow (`Flow.get_state`, `copy`, `backup`) and writes it into flow dumps. Live objects, such as
the response's stream pipeline, stay on the flow's own attributes.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from gatehouse.wire.apierrors import ApiError

METADATA_KEY = "gatehouse"
EXCHANGE_ID_HEADER = "x-gatehouse-exchange-id"


def new_exchange_id() -> str:
    """A sortable, unguessable id: millisecond time then 64 random bits, e.g. ``gx_018c...``."""
    return f"gx_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Identity:
    """A verified caller. `token_id` is the token's `jti`, or a hash of the token: never the token."""

    issuer: str
    subject: str
    issuer_name: str = ""
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()
    token_id: str = ""
    expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = list(self.groups)
        return d


@dataclass
class Decision:
    """One thing the gateway decided, e.g. ``Decision("access", "deny", "endpoint not allowed")``."""

    stage: str  # identity | access | credentials | masking | commands | approvals | recording
    action: str  # allow | deny | mask | block | approve | hold | error | ...
    reason: str = ""
    rule: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Finding:
    """A masked secret: which rule, where (a JSON path like ``messages[3].content[1].content``), fingerprint."""

    rule: str
    where: str
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Exchange:
    exchange_id: str = field(default_factory=new_exchange_id)
    identity: Identity | None = None
    # Set by Access for a host the policy tunnels untouched (plain HTTP to a passthrough host):
    # the only flows the inspecting addons leave alone.
    passthrough: bool = False
    decisions: list[Decision] = field(default_factory=list)
    request_findings: list[Finding] = field(default_factory=list)
    response_findings: list[Finding] = field(default_factory=list)
    # Set when the gateway itself answered (a refusal); the recorder stores it as an audit event.
    refused: bool = False
    # The refusal the client gets (a message, never content), kept so that it can be put back
    # if mitmproxy fills the response with the upstream's body afterwards.
    refusal: ApiError | None = None
    errors: list[str] = field(default_factory=list)
    # Set by the masking addon once it has parsed the request body: whether it asks for a streamed
    # response. None: not parsed (masking off, a passthrough flow, a body forwarded uninspected).
    request_streams: bool | None = None
    # Set by the commands addon once the request is known: an `approve` rule may apply to this
    # caller, so the response must be buffered (a streamed response cannot wait for a human:
    # mitmproxy's stream modifier is synchronous). Masking then does not stream it.
    buffer_response: bool = False
    # Set by the masking addon when a response it streamed ended or broke off: what the client
    # received of it, the message reassembled from the events as sent (after masking; so far,
    # when the stream broke off). Its findings are in `response_findings` by then; the recorder
    # records this message.
    streamed_message: dict[str, Any] | None = None

    def decide(self, stage: str, action: str, reason: str = "", rule: str | None = None, **detail: Any) -> Decision:
        d = Decision(stage, action, reason, rule, dict(detail))
        self.decisions.append(d)
        return d
