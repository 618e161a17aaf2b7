"""Error responses in the Anthropic API's own shape.

Clients (Claude Code, the SDKs) print `error.message` from this shape, so every
refusal the gateway makes is one of these, never a bare proxy status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# The API's documented status for each error type.
STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


@dataclass(frozen=True)
class ApiError:
    """A refusal to send to the client instead of (or in place of) the upstream's answer."""

    type: str
    message: str
    status: int = 0
    # A policy refusal will not change on retry; SDKs honour this header.
    should_retry: bool = False
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in STATUS_BY_TYPE:
            raise ValueError(f"unknown Anthropic error type {self.type!r}")
        if not self.status:
            object.__setattr__(self, "status", STATUS_BY_TYPE[self.type])

    def body(self, request_id: str | None = None) -> bytes:
        doc = {"type": "error", "error": {"type": self.type, "message": self.message}}
        if request_id:
            doc["request_id"] = request_id
        return json.dumps(doc).encode()

    def headers(self) -> dict[str, str]:
        h = {"content-type": "application/json", "x-should-retry": "true" if self.should_retry else "false"}
        h.update(self.extra_headers)
        return h


def invalid_request(message: str) -> ApiError:
    return ApiError("invalid_request_error", message)


def authentication(message: str) -> ApiError:
    return ApiError("authentication_error", message)


def permission(message: str) -> ApiError:
    return ApiError("permission_error", message)


def not_found(message: str) -> ApiError:
    return ApiError("not_found_error", message)


def too_large(message: str) -> ApiError:
    return ApiError("request_too_large", message)


def api_error(message: str, *, should_retry: bool = False) -> ApiError:
    return ApiError("api_error", message, should_retry=should_retry)
