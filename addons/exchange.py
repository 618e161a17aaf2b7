"""What the gateway knows and decided about one exchange (one HTTP request/response).

Each addon writes its part onto one `Exchange` kept at ``flow.metadata["gatehouse"]``;
the recorder reads it at the end. Nothing secret goes in here (no token, no API key,
no unmasked value): mitmproxy copies flow metadata into flow dumps. The one exception is
`sse_pipeline`, the response's stream object, which holds the masker and any text it holds
back: the gateway refuses every flow dump option at start-up (gatehouse.mitm.protocols).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gatehouse.wire.apierrors import ApiError

if TYPE_CHECKING:  # the pipeline imports this module (Finding)
    from gatehouse.wire.pipeline import SsePipeline

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
    # Set by the masking addon when it makes an SsePipeline the response's stream: the recorder
    # takes from it the message the client received (after masking) and unreported findings.
    sse_pipeline: SsePipeline | None = None

    def decide(self, stage: str, action: str, reason: str = "", rule: str | None = None, **detail: Any) -> Decision:
        d = Decision(stage, action, reason, rule, dict(detail))
        self.decisions.append(d)
        return d
